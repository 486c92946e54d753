"""Prometheus metrics on the REST port, as TF-Serving's ``--monitoring_config_file`` enables.

TF-Serving reads a ``MonitoringConfig`` text proto::

    prometheus_config {
      enable: true,
      path: "/monitoring/prometheus/metrics"
    }

and then answers ``GET <path>`` on its REST port with its metrics in
Prometheus' text format (version 0.0.4). This server reads the same file and
serves, under TF-Serving's names and labels, so one scrape config and one
dashboard work for both:

* ``:tensorflow:serving:request_count{model_name, status}``: Predict requests
  answered, by status (``OK``, ``INVALID_ARGUMENT``, ...), gRPC and REST;
* ``:tensorflow:serving:request_latency{model_name, API, entrypoint}``: their
  latency in microseconds, a histogram with TF-Serving's buckets (10 us x 1.8^i);
* ``:tensorflow:cc:saved_model:load_attempt_count{model_path, status}``: version
  loads, ``success`` or ``fail``;

and, this server only (TF-Serving has no such series; its ModelService status
says the same), ``:dmi_tf:serving:model_version{model_name, version, state}``,
1 for every version the server knows with its state (``AVAILABLE``,
``LOADING``, ``END``), so an alert can watch which version serves.

The tensorflow_serving pip package does not ship the MonitoringConfig proto,
so the file is read by a parser of just its two fields.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import re
import threading

from tensorflow_serving.apis import get_model_status_pb2

#: TF-Serving's default path (when ``path`` is empty).
DEFAULT_PATH = "/monitoring/prometheus/metrics"
#: Prometheus' text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: TF-Serving's request latency buckets: 33 exponential upper bounds from 10 us, factor 1.8.
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))

_TOKEN = re.compile(
    r'\s*(?:(#[^\n]*)|([A-Za-z_][A-Za-z0-9_]*|-?[0-9][0-9.]*)|("(?:[^"\\]|\\.)*")|([{}:,;]))')


@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
    """``prometheus_config``: whether metrics are served, and where on the REST port."""

    enable: bool = False
    path: str = DEFAULT_PATH


def parse_monitoring_config(text: str, source: str = "monitoring config") -> MonitoringConfig:
    """A ``MonitoringConfig`` text proto -> :class:`MonitoringConfig`.

    Raises:
      ValueError: not that text proto (the message names what was found and where).
    """
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"{source}: cannot parse {text[position:position + 30].strip()!r}; "
                             'expected prometheus_config { enable: true path: "/..." }')
        position = match.end()
        if not match.group(1):  # comments
            tokens.append(match.group(2) or match.group(3) or match.group(4))
    tokens = [t for t in tokens if t not in (",", ";")]
    fields: dict[str, str] = {}
    if tokens:
        if tokens[:2] not in (["prometheus_config", "{"], ["prometheus_config", ":"]) or \
                tokens[-1] != "}":
            raise ValueError(f"{source}: expected one prometheus_config {{ ... }} block, found "
                             f"{' '.join(tokens[:4])!r}")
        body = tokens[3:-1] if tokens[1] == ":" else tokens[2:-1]
        if tokens[1] == ":" and tokens[2] != "{":
            raise ValueError(f"{source}: prometheus_config must be a {{ ... }} block")
        if len(body) % 3 or any(body[i + 1] != ":" for i in range(0, len(body), 3)):
            raise ValueError(f"{source}: expected 'enable: true' and 'path: \"/...\"' inside "
                             f"prometheus_config, found {' '.join(body)!r}")
        for i in range(0, len(body), 3):
            name, value = body[i], body[i + 2]
            if name not in ("enable", "path"):
                raise ValueError(f"{source}: unknown field {name!r} in prometheus_config "
                                 "(it has enable and path)")
            fields[name] = value
    enable = fields.get("enable", "false")
    if enable not in ("true", "false", "True", "False", "1", "0"):
        raise ValueError(f"{source}: enable must be true or false, got {enable}")
    path = fields.get("path", '""')
    if not (path.startswith('"') and path.endswith('"')):
        raise ValueError(f"{source}: path must be a quoted string, got {path}")
    path = path[1:-1] or DEFAULT_PATH
    if not path.startswith("/"):
        raise ValueError(f"{source}: path {path!r} must start with /")
    return MonitoringConfig(enable in ("true", "True", "1"), path)


def read_monitoring_config(path: str) -> MonitoringConfig:
    """Reads ``--monitoring_config_file``; ValueError names the file and the problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read --monitoring_config_file {path}: "
                         f"{e.strerror or e}") from None
    return parse_monitoring_config(text, path)


class Metrics:
    """Request counts and latency histograms, kept for the server's lifetime (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()
        # (model_name, API, entrypoint) -> [bucket counts..., +Inf count], sum of us
        self._buckets: dict[tuple, list[int]] = {}
        self._sums: collections.Counter = collections.Counter()

    def record(self, model_name: str, api: str, entrypoint: str, status: str,
               seconds: float) -> None:
        """One request of ``api`` (``predict``) over ``entrypoint`` (``GRPC`` / ``REST``)."""
        micros = seconds * 1e6
        key = (model_name, api, entrypoint)
        with self._lock:
            self._counts[(model_name, status)] += 1
            buckets = self._buckets.setdefault(key, [0] * (len(LATENCY_BUCKETS_US) + 1))
            buckets[bisect.bisect_left(LATENCY_BUCKETS_US, micros)] += 1
            self._sums[key] += micros

    def render(self, models) -> str:
        """The Prometheus text of every series (``models``: name -> ``versions.Model``)."""
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            counts = sorted(self._counts.items())
            histograms = sorted((k, list(v), self._sums[k]) for k, v in self._buckets.items())
        for (model, status), n in counts:
            labels = _labels(model_name=model, status=status)
            lines.append(f":tensorflow:serving:request_count{labels} {n}")
        lines.append("# TYPE :tensorflow:serving:request_latency histogram")
        for (model, api, entrypoint), buckets, total in histograms:
            labels = {"model_name": model, "API": api, "entrypoint": entrypoint}
            cumulative = 0
            for bound, n in zip((*LATENCY_BUCKETS_US, float("inf")), buckets, strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else f"{bound:.6g}"
                lines.append(f":tensorflow:serving:request_latency_bucket"
                             f"{_labels(**labels, le=le)} {cumulative}")
            lines.append(f":tensorflow:serving:request_latency_sum{_labels(**labels)} {total:.6g}")
            lines.append(f":tensorflow:serving:request_latency_count{_labels(**labels)} "
                         f"{cumulative}")
        lines.append("# TYPE :tensorflow:cc:saved_model:load_attempt_count counter")
        for model in models.values():
            for (path, status), n in sorted(model.load_attempts.items()):
                lines.append(f":tensorflow:cc:saved_model:load_attempt_count"
                             f"{_labels(model_path=path, status=status)} {n}")
        lines.append("# TYPE :dmi_tf:serving:model_version gauge")
        for name, model in sorted(models.items()):
            for version, state in sorted(dict(model.states).items()):
                labels = _labels(model_name=name, version=str(version),
                                 state=state_name(state.state))
                lines.append(f":dmi_tf:serving:model_version{labels} 1")
        return "\n".join(lines) + "\n"


def state_name(state: int) -> str:
    return get_model_status_pb2.ModelVersionStatus.State.Name(state)


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"
