"""A local model server that speaks TensorFlow Serving's gRPC and REST APIs.

This is **not** TensorFlow Serving. It is a small Python stand-in for local
development, tests, and ScaNN exports that the stock server cannot load: it
serves ``tensorflow.serving.PredictionService`` (``Predict``,
``GetModelMetadata``) and ``ModelService`` (``GetModelStatus``) from the
``tensorflow-serving-api`` protos, with TF-Serving's flag names, directory
layout, version policy (newest version, swapped in after it loaded and warmed
up) and error statuses, so a client written against it works against
TF-Serving unchanged. Anything TF-Serving would reject, it rejects with the
same gRPC status; the messages add what to fix.

    python -m serving.server --model_base_path MODEL_BASE/dmi --model_name dmi --port 8500 \
        [--rest_api_port 8501] [--enable_batching --max_batch_size 64 --batch_timeout_micros 1000]

What it does not do: Classify / Regress / MultiInference (UNIMPLEMENTED),
version policies other than "latest 1", model-config reloads over RPC, TLS.
It listens on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format, text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving import tensors

__all__ = ["BatchingOptions", "ModelServer", "ServingError", "main"]

log = logging.getLogger("serving.server")

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF-Serving's limit; more fails the load
INT32_MAX = 2**31 - 1  # TF-Serving's gRPC message size limit
_VERSION_DIR = re.compile(r"^[0-9]+$")
_State = get_model_status_pb2.ModelVersionStatus.State
_WINDOW = 100_000  # most requests kept for one log line
DEFAULT_GRPC_THREADS = 256


class ServingError(Exception):
    """A request error with the gRPC status TF-Serving gives for it."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


# --------------------------------------------------------------------------- servables


@dataclasses.dataclass(frozen=True)
class _TensorInfo:
    dtype: int
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown size

    @classmethod
    def from_proto(cls, info: meta_graph_pb2.TensorInfo) -> _TensorInfo:
        if info.tensor_shape.unknown_rank:
            return cls(info.dtype, None)
        return cls(info.dtype, tuple(int(d.size) for d in info.tensor_shape.dim))

    def describe(self) -> str:
        shape = "unknown rank" if self.shape is None else (
            "[" + ", ".join("None" if s < 0 else str(s) for s in self.shape) + "]")
        return f"{tensors.DTYPE_NAMES.get(self.dtype, self.dtype)} {shape}"


def _read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    saved_model = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    if os.path.isfile(pb):
        with open(pb, "rb") as f:
            saved_model.ParseFromString(f.read())
    elif os.path.isfile(pb + "txt"):
        with open(pb + "txt", encoding="utf-8") as f:
            text_format.Parse(f.read(), saved_model)
    else:
        raise FileNotFoundError(f"{path} has no saved_model.pb: not a SavedModel directory")
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path} has no MetaGraph tagged 'serve'")


def _needs_scann(path: str) -> bool:
    # ScaNN's ops live in the "Scann>" namespace; they must be registered
    # (by importing scann) before such a SavedModel loads.
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        return b"Scann>" in f.read()


class Servable:
    """One loaded model version: its SignatureDefs and callable signatures."""

    def __init__(self, name: str, version: int, path: str):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = _read_signature_defs(path)
        if _needs_scann(path):
            try:
                from scann import scann_ops  # noqa: F401  (registers the Scann> ops)
            except ImportError as e:
                raise RuntimeError(
                    f"{path} uses ScaNN ops; install scann (pip install 'scann[tf]') "
                    f"to serve it: {e}") from e
        self._loaded = tf.saved_model.load(path, tags=["serve"])
        self._functions = dict(self._loaded.signatures)
        self.inputs = {
            key: {alias: _TensorInfo.from_proto(info) for alias, info in sig.inputs.items()}
            for key, sig in self.signature_defs.items() if key in self._functions
        }
        self.outputs = {
            key: {alias: _TensorInfo.from_proto(info) for alias, info in sig.outputs.items()}
            for key, sig in self.signature_defs.items() if key in self._functions
        }

    def run(self, signature: str, inputs: dict[str, np.ndarray],
            output_aliases: Iterable[str]) -> dict[str, np.ndarray]:
        """Calls a signature on decoded, validated inputs; errors carry a gRPC status."""
        feeds = {
            alias: tf.constant(value, dtype=tf.as_dtype(self.inputs[signature][alias].dtype))
            for alias, value in inputs.items()
        }
        try:
            outputs = self._functions[signature](**feeds)
        except tf.errors.OpError as e:
            code = grpc.StatusCode.INTERNAL
            for status in grpc.StatusCode:
                if status.value[0] == e.error_code:
                    code = status
            raise ServingError(code, f"{e.message} (signature {signature!r})") from None
        except (TypeError, ValueError) as e:
            raise _invalid(f"signature {signature!r} rejected the inputs: {e}") from None
        return {alias: outputs[alias].numpy() for alias in output_aliases}


# --------------------------------------------------------------------------- batching


@dataclasses.dataclass
class BatchingOptions:
    """TF-Serving's ``BatchingParameters`` (the fields this server honours).

    Defaults are TF-Serving's: ``max_batch_size`` 1000, no timeout, one batch
    thread per core, 10 enqueued batches, no large-batch splitting, no padding.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 10
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False

    _INT_FIELDS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                   "max_enqueued_batches")
    _BOOL_FIELDS = ("pad_variable_length_inputs", "enable_large_batch_splitting")
    _IGNORED = ("thread_pool_name", "max_execution_batch_size", "allowed_batch_sizes")

    @classmethod
    def from_text(cls, text: str, source: str = "batching parameters") -> BatchingOptions:
        """Parses a BatchingParameters text proto (``max_batch_size { value: 128 }`` ...).

        The proto itself is not in the ``tensorflow-serving-api`` wheel, so the
        file is read field by field; an unknown field is an error naming it.
        """
        options = cls()
        body = re.sub(r"#[^\n]*", "", text)
        wrapped = r"(\w+)\s*:?\s*\{\s*value\s*:\s*([^\s}]+)\s*\}"
        plain = r"(\w+)\s*:\s*([^\s{}]+)"
        for match in re.finditer(f"{wrapped}|{plain}", body):
            field = match.group(1) or match.group(3)
            value = match.group(2) or match.group(4)
            if field in cls._INT_FIELDS:
                setattr(options, field, int(value))
            elif field in cls._BOOL_FIELDS:
                setattr(options, field, value.lower() == "true")
            elif field not in cls._IGNORED:
                raise ValueError(f"{source}: unknown BatchingParameters field {field!r}")
        if re.sub(f"{wrapped}|{plain}", "", body).strip():
            raise ValueError(f"{source}: cannot parse {body.strip()!r} as BatchingParameters")
        return options


class _Task:
    __slots__ = ("cancelled", "future", "inputs", "key", "rows")

    def __init__(self, key, inputs: dict[str, np.ndarray], rows: int):
        self.key = key
        self.inputs = inputs
        self.rows = rows
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.cancelled = False


class _Batch:
    __slots__ = ("deadline", "key", "rows", "tasks")

    def __init__(self, key, deadline: float):
        self.key = key
        self.tasks: list[_Task] = []
        self.rows = 0
        self.deadline = deadline


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.shape[1:] == shape:
        return array
    # TF-Serving pads with the tensor's first element (batching_util.cc's
    # PadTensor), so clients start each history with "" to pad with padding.
    fill = array.flat[0] if array.size else (b"" if array.dtype == object else 0)
    out = np.full((array.shape[0], *shape), fill, dtype=array.dtype)
    out[(slice(None), *(slice(0, s) for s in array.shape[1:]))] = array
    return out


def concat_inputs(parts: list[dict[str, np.ndarray]], pad: bool) -> dict[str, np.ndarray]:
    """Concatenates several requests' inputs along the batch dimension.

    Inputs whose other dimensions differ are padded at the end of each
    dimension with the first element of each request's tensor when ``pad`` is
    set, exactly as TF-Serving's ``pad_variable_length_inputs``; otherwise it
    is an error.
    """
    merged = {}
    for alias in parts[0]:
        arrays = [p[alias] for p in parts]
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) > 1:
            if not pad:
                raise _invalid(
                    f"input {alias!r} has different shapes {sorted(shapes)} in one batch and "
                    "pad_variable_length_inputs is off; turn it on in the batching parameters")
            target = tuple(max(s[i] for s in shapes) for i in range(len(arrays[0].shape) - 1))
            arrays = [_pad_to(a, target) for a in arrays]
        merged[alias] = np.concatenate(arrays, axis=0)
    return merged


class Batcher:
    """Server-side batching of concurrent requests, as TF-Serving's batch scheduler.

    Requests for the same servable and signature join one open batch. A batch
    thread takes the oldest batch once it is full (``max_batch_size`` rows) or
    its ``batch_timeout_micros`` has passed; until a thread is free it keeps
    accepting requests, so batches grow with load. At most
    ``max_enqueued_batches`` batches wait; beyond that a request fails with
    UNAVAILABLE, as in TF-Serving (clients retry it).
    """

    def __init__(self, options: BatchingOptions,
                 run: Callable[[object, dict[str, np.ndarray]], dict[str, np.ndarray]]):
        self.options = options
        self._run = run
        self._cv = threading.Condition()
        self._batches: collections.deque[_Batch] = collections.deque()
        self._stopping = False
        self._draining = False  # shutting down: run batches without waiting for timeouts
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(max(1, options.num_batch_threads))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key, inputs: dict[str, np.ndarray], rows: int) -> list[_Task]:
        """Queues a request; returns its tasks (several when it is split)."""
        limit = self.options.max_batch_size
        if rows > limit and not self.options.enable_large_batch_splitting:
            raise _invalid(
                f"Task size {rows} is larger than maximum input batch size {limit}: send at "
                f"most {limit} rows per request (or enable_large_batch_splitting)")
        tasks = [
            _Task(key, {a: v[start:start + limit] for a, v in inputs.items()},
                  min(limit, rows - start))
            for start in range(0, rows, limit)
        ]
        with self._cv:
            if self._stopping:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            for task in tasks:
                batch = next((b for b in reversed(self._batches)
                              if b.key == key and b.rows + task.rows <= limit), None)
                if batch is None:
                    if len(self._batches) >= self.options.max_enqueued_batches:
                        raise ServingError(
                            grpc.StatusCode.UNAVAILABLE,
                            "The batch scheduling queue to which this task was submitted is "
                            "full; retry later or raise max_enqueued_batches")
                    batch = _Batch(key, time.monotonic()
                                   + self.options.batch_timeout_micros / 1e6)
                    self._batches.append(batch)
                batch.tasks.append(task)
                batch.rows += task.rows
            self._cv.notify()
        return tasks

    def _take(self) -> _Batch | None:
        with self._cv:
            while True:
                now = time.monotonic()
                for batch in self._batches:
                    if (batch.rows >= self.options.max_batch_size or batch.deadline <= now
                            or self._draining):
                        self._batches.remove(batch)
                        # A waiting peer may now find another batch ready.
                        self._cv.notify()
                        return batch
                if self._stopping:
                    return None
                wait = min((b.deadline for b in self._batches), default=None)
                self._cv.wait(None if wait is None else max(0.0, wait - now))

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            tasks = [t for t in batch.tasks if not t.cancelled]
            for task in batch.tasks:
                if task.cancelled:
                    task.future.cancel()
            if not tasks:
                continue
            self._execute(batch.key, tasks)

    def _execute(self, key, tasks: list[_Task]) -> None:
        try:
            merged = concat_inputs([t.inputs for t in tasks],
                                   self.options.pad_variable_length_inputs)
            outputs = self._run(key, merged)
        except Exception as e:
            if len(tasks) > 1:
                # One request's failure must not fail its batch-mates: run each alone.
                for task in tasks:
                    self._execute(key, [task])
            else:
                tasks[0].future.set_exception(e)
            return
        start = 0
        for task in tasks:
            task.future.set_result({a: v[start:start + task.rows] for a, v in outputs.items()})
            start += task.rows

    def drain(self) -> None:
        """From now on batches run as soon as a thread is free; requests are still accepted."""
        with self._cv:
            self._draining = True
            self._cv.notify_all()

    def stop(self) -> None:
        """Runs what is queued, then ends the batch threads."""
        with self._cv:
            self._stopping = self._draining = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join()


# --------------------------------------------------------------------------- models


@dataclasses.dataclass
class _VersionState:
    state: int
    error: str = ""
    code: grpc.StatusCode = grpc.StatusCode.OK


class Model:
    """One model name: its versions on disk, the one served, and its batcher.

    Version policy is TF-Serving's default ("latest 1"): the highest numbered
    directory under the base path is loaded (and warmed up) in the
    background while the previous one keeps serving; then it is swapped in.
    Requests already holding the old version finish on it. A version that
    fails to load is reported by GetModelStatus and the old one stays.
    """

    def __init__(self, name: str, base_path: str, batching: BatchingOptions | None,
                 warmup: bool = True):
        self.name = name
        self.base_path = base_path
        self.warmup = warmup
        self.current: Servable | None = None
        self.states: dict[int, _VersionState] = {}
        self._failed: dict[int, float] = {}  # version -> mtime of the dir that failed
        self._lock = threading.Lock()
        # (rows, seconds) of recent model calls, for the log; bounded when nobody reads it.
        self.runs: collections.deque = collections.deque(maxlen=_WINDOW)
        self.batcher = Batcher(batching, self._run_batch) if batching else None

    def run(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray],
            outputs: list[str], rows: int | None) -> dict[str, np.ndarray]:
        start = time.monotonic()
        result = servable.run(signature, inputs, outputs)
        self.runs.append((rows or 0, time.monotonic() - start))
        return result

    def _run_batch(self, key, inputs):
        servable, signature, outputs = key
        return self.run(servable, signature, inputs, list(outputs),
                        len(next(iter(inputs.values()))))

    def versions_on_disk(self) -> dict[int, str]:
        try:
            names = os.listdir(self.base_path)
        except OSError:
            return {}
        # Non-numeric names (an export's temporary directory) are not versions.
        return {int(n): os.path.join(self.base_path, n) for n in names
                if _VERSION_DIR.match(n) and os.path.isdir(os.path.join(self.base_path, n))}

    def poll(self, predict: Callable[[Servable, predict_pb2.PredictRequest], object]) -> None:
        """Loads the newest version if it is not the one served (TF-Serving's poll)."""
        versions = self.versions_on_disk()
        if not versions:
            if self.current is None:
                log.warning("No versions of servable %s found under base path %s",
                            self.name, self.base_path)
            return
        newest = max(versions)
        if self.current is not None and self.current.version == newest:
            return
        path = versions[newest]
        mtime = os.path.getmtime(path)
        if self._failed.get(newest) == mtime:
            return
        self.states[newest] = _VersionState(_State.LOADING)
        log.info("Loading servable version {name: %s version: %d} from %s", self.name, newest, path)
        start = time.monotonic()
        try:
            servable = Servable(self.name, newest, path)
            if self.warmup:
                count = self._warm_up(servable, predict)
                if count:
                    log.info("Finished reading warmup data for model at %s: %d records", path,
                             count)
        except Exception as e:  # a bad version must not take the server down
            self._failed[newest] = mtime
            code = e.code if isinstance(e, ServingError) else grpc.StatusCode.UNKNOWN
            self.states[newest] = _VersionState(_State.END, f"{type(e).__name__}: {e}", code)
            log.error("Loading servable version {name: %s version: %d} failed: %s",
                      self.name, newest, e)
            return
        with self._lock:
            old, self.current = self.current, servable
        self.states[newest] = _VersionState(_State.AVAILABLE)
        log.info("Successfully loaded servable version {name: %s version: %d} in %.1f s",
                 self.name, newest, time.monotonic() - start)
        if old is not None:
            # In-flight requests keep their reference to `old`; it is freed after them.
            self.states[old.version] = _VersionState(_State.END)
            log.info("Unloaded servable version {name: %s version: %d}", self.name, old.version)

    def _warm_up(self, servable: Servable, predict) -> int:
        path = os.path.join(servable.path, WARMUP_FILE)
        if not os.path.isfile(path):
            log.info("No warmup data file found at %s", path)
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise ValueError(f"{path}: more than {MAX_WARMUP_RECORDS} warmup records")
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if not entry.HasField("predict_log"):
                raise ValueError(f"{path}: record {count} is not a predict_log; only Predict "
                                 "warmup records are supported")
            predict(servable, entry.predict_log.request)
        return count

    def servable_for(self, spec) -> Servable:
        """The servable a ModelSpec asks for, or TF-Serving's error for it."""
        with self._lock:
            current = self.current
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            raise _invalid(f"Unrecognized servable version label: {spec.version_label} "
                           "(this server defines no version labels; ask for a version number)")
        if choice == "version":
            if current is None or current.version != spec.version.value:
                served = "none" if current is None else str(current.version)
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({self.name}, "
                    f"{spec.version.value}) (version served: {served})")
            return current
        if current is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({self.name}) (no "
                               f"version loaded yet from {self.base_path})")
        return current


# --------------------------------------------------------------------------- the server core


class _Stats:
    """Request counts and latencies, logged every interval and summed for the lifetime."""

    def __init__(self):
        self._lock = threading.Lock()
        self._window: collections.deque = collections.deque(maxlen=_WINDOW)
        self.total = collections.Counter()

    def record(self, method: str, code: grpc.StatusCode, seconds: float, rows: int) -> None:
        with self._lock:
            self._window.append((method, code.name, seconds, rows))
            self.total[code.name] += 1

    def summary(self, runs: list[tuple[int, float]]) -> str | None:
        with self._lock:
            window, self._window = self._window, collections.deque(maxlen=_WINDOW)
        if not window:
            return None
        codes = collections.Counter(code for _, code, _, _ in window)
        latencies = np.array([s for _, _, s, _ in window]) * 1e3
        rows = sum(r for _, _, _, r in window)
        methods = collections.Counter(m for m, _, _, _ in window)
        text = (f"requests={len(window)} ({', '.join(f'{m}={n}' for m, n in methods.items())}) "
                f"status={dict(codes)} users={rows} "
                f"latency_ms p50={np.percentile(latencies, 50):.2f}"
                f" p99={np.percentile(latencies, 99):.2f} max={latencies.max():.2f}")
        if runs:
            rows, seconds = np.array(runs).T
            text += (f" model_calls={len(runs)} mean_batch={rows.mean():.1f} "
                     f"model_ms mean={1e3 * seconds.mean():.2f} max={1e3 * seconds.max():.2f}")
        return text


class ModelServer:
    """The servables, the request semantics, and the gRPC / REST front ends.

    Args:
      models: model name -> base path (the directory holding version dirs).
      batching: batching options, or None to run every request on its own.
      poll_seconds: file-system poll interval for new versions (0: load once).
      warmup: replay each version's ``assets.extra/tf_serving_warmup_requests``
        before serving it.
    """

    def __init__(self, models: dict[str, str], batching: BatchingOptions | None = None,
                 poll_seconds: float = 1.0, warmup: bool = True):
        self.models = {name: Model(name, path, batching, warmup) for name, path in models.items()}
        self.poll_seconds = poll_seconds
        self.stats = _Stats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.port: int | None = None
        self.rest_port: int | None = None

    # ---- request semantics (shared by gRPC, REST and warm-up)

    def _model(self, spec, has_spec: bool = True) -> Model:
        if not has_spec:
            raise _invalid("Missing ModelSpec")
        model = self.models.get(spec.name)
        if model is None:
            what = (f"Specific({spec.name}, {spec.version.value})" if spec.HasField("version")
                    else f"Latest({spec.name})")
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: {what} (models served: "
                               f"{', '.join(sorted(self.models))})")
        return model

    def predict(self, request: predict_pb2.PredictRequest,
                on_tasks: Callable[[list[_Task]], None] | None = None
                ) -> predict_pb2.PredictResponse:
        model = self._model(request.model_spec, request.HasField("model_spec"))
        servable = model.servable_for(request.model_spec)
        signature, inputs, outputs, rows = self.validate(servable, request)
        if model.batcher is None or rows is None or rows == 0:
            result = model.run(servable, signature, inputs, outputs, rows)
        else:
            tasks = model.batcher.submit((servable, signature, tuple(outputs)), inputs, rows)
            if on_tasks is not None:
                on_tasks(tasks)
            parts = [task.future.result() for task in tasks]
            result = {a: np.concatenate([p[a] for p in parts]) for a in outputs}
        return self._response(request, servable, signature, result)

    def _predict_unbatched(self, servable: Servable, request: predict_pb2.PredictRequest):
        signature, inputs, outputs, _ = self.validate(servable, request)
        return self._response(request, servable, signature,
                              servable.run(signature, inputs, outputs))

    @staticmethod
    def _response(request, servable, signature, result) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for alias, value in result.items():
            response.outputs[alias].CopyFrom(tensors.from_numpy(
                value, dtype=servable.outputs[signature][alias].dtype))
        return response

    @staticmethod
    def validate(servable: Servable, request: predict_pb2.PredictRequest):
        """Checks a request against the signature, in TF-Serving's order and with its statuses.

        Returns:
          ``(signature, inputs, output_aliases, rows)``: decoded inputs and the
          common batch size (None when an input is a scalar).
        """
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature not in servable.inputs:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature}" not found. Signatures of {servable.name} '
                f"version {servable.version}: {', '.join(sorted(servable.inputs))}")
        expected = servable.inputs[signature]
        sent = set(request.inputs)
        if sent != set(expected):
            extra, missing = sorted(sent - set(expected)), sorted(set(expected) - sent)
            if len(sent) != len(expected):
                raise _invalid(
                    f"input size does not match signature: {len(sent)}!={len(expected)} "
                    f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}})."
                    f" Sent extra: {{{','.join(extra)}}}. Missing but required: "
                    f"{{{','.join(missing)}}}.")
            raise _invalid(f"input tensor alias not found in signature: {extra[0]}. Inputs "
                           f"expected to be in the set {{{','.join(sorted(expected))}}}.")
        inputs, rows = {}, set()
        for alias, proto in request.inputs.items():
            info = expected[alias]
            if proto.dtype != info.dtype:
                raise _invalid(
                    f"input {alias!r} of signature {signature!r} must be "
                    f"{tensors.DTYPE_NAMES.get(info.dtype)}, got "
                    f"{tensors.DTYPE_NAMES.get(proto.dtype, proto.dtype)}: expects arg "
                    f"{alias!r} to be {types_pb2.DataType.Name(info.dtype)} but "
                    f"{types_pb2.DataType.Name(proto.dtype)} is provided")
            try:
                value = tensors.to_numpy(proto)
            except tensors.TensorError as e:
                raise _invalid(f"tensor parsing error: {alias}: {e}") from None
            if info.shape is not None and (
                    value.ndim != len(info.shape)
                    or any(want >= 0 and want != got for want, got in zip(info.shape, value.shape,
                                                                           strict=True))):
                raise _invalid(
                    f"input {alias!r} of signature {signature!r} has shape {list(value.shape)} "
                    f"but the signature expects {info.describe()}"
                    + (" (one row per user: a batch of histories)"
                       if info.shape and value.ndim == len(info.shape) - 1 else ""))
            inputs[alias] = value
            rows.add(value.shape[0] if value.ndim else None)
        if len(rows) > 1:
            raise _invalid(f"inputs of signature {signature!r} have different batch sizes "
                           f"{sorted(rows, key=str)}; every input needs the same 0th dimension")
        outputs = list(request.output_filter) or list(servable.outputs[signature])
        for alias in outputs:
            if alias not in servable.outputs[signature]:
                raise _invalid(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(servable.outputs[signature]))}}}.")
        if len(set(outputs)) != len(outputs):
            raise _invalid(f"duplicate output tensor alias in output_filter {outputs}")
        return signature, inputs, outputs, rows.pop() if rows else None

    def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                 ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        model = self._model(request.model_spec, request.HasField("model_spec"))
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field "
                           f"(use {SIGNATURE_DEF_FIELD!r})")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise _invalid(f"Metadata field {field} is not supported "
                               f"(only {SIGNATURE_DEF_FIELD!r} is)")
        servable = model.servable_for(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(value)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    def status(self, request: get_model_status_pb2.GetModelStatusRequest
               ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        model = self.models.get(request.model_spec.name)
        states = {} if model is None else dict(model.states)
        if request.model_spec.HasField("version"):
            version = request.model_spec.version.value
            if version not in states:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version "
                                   f"{version} of model {request.model_spec.name}")
            states = {version: states[version]}
        elif not states:
            raise ServingError(grpc.StatusCode.NOT_FOUND, "Could not find any versions of "
                               f"model {request.model_spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state in sorted(states.items()):
            entry = response.model_version_status.add(version=version, state=state.state)
            entry.status.error_code = state.code.value[0]
            entry.status.error_message = state.error
        return response

    # ---- lifecycle

    def load(self) -> None:
        """Loads each model's newest version (the initial load, before listening)."""
        for model in self.models.values():
            model.poll(self._predict_unbatched)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            for model in self.models.values():
                model.poll(self._predict_unbatched)

    def _stats_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            runs = []
            for model in self.models.values():
                done, model.runs = model.runs, collections.deque(maxlen=_WINDOW)
                runs += done
            if (text := self.stats.summary(runs)) is not None:
                log.info("%s", text)

    def start(self, port: int = 8500, host: str = "127.0.0.1", rest_port: int = 0,
              max_threads: int | None = None, channel_args: Iterable[tuple[str, object]] = (),
              log_interval: float = 10.0) -> None:
        """Loads the models, then listens (port 0 picks a free port: see ``self.port``)."""
        self.load()
        # gRPC keeps the first of repeated keys, so the user's arguments replace the defaults.
        options = dict([("grpc.max_receive_message_length", INT32_MAX),
                        ("grpc.max_send_message_length", INT32_MAX), *channel_args])
        # Each request holds a thread while it waits for its batch, so the pool
        # bounds how many requests can share a batch. TF-Serving's C++ server has
        # no such bound (its flag sizes the pollers); 4 x cores here capped 16
        # concurrent clients at batches of 4 (BENCHMARKS.md, "Serving").
        threads = max_threads or DEFAULT_GRPC_THREADS
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="grpc"),
            options=list(options.items()), maximum_concurrent_rpcs=None)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), self._grpc)
        self.port = self._grpc.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port} (port in use?)")
        self._grpc.start()
        log.info("Running gRPC ModelServer at %s:%d ... (local stand-in, not TF-Serving)",
                 host, self.port)
        if rest_port:  # 0: no REST API (TF-Serving); -1: a free port
            self._http = _RestServer((host, max(rest_port, 0)), self)
            self.rest_port = self._http.server_address[1]
            self._threads.append(threading.Thread(target=self._http.serve_forever, daemon=True,
                                                  name="rest"))
            log.info("Exporting HTTP/REST API at:%s:%d ...", host, self.rest_port)
        if self.poll_seconds > 0:
            self._threads.append(threading.Thread(target=self._poll_loop, daemon=True,
                                                  name="poll"))
        if log_interval > 0:
            self._threads.append(threading.Thread(target=self._stats_loop, args=(log_interval,),
                                                  daemon=True, name="stats"))
        for thread in self._threads:
            thread.start()

    def stop(self, grace: float = 30.0) -> None:
        """Graceful stop: no new requests; in-flight ones finish (up to ``grace`` s)."""
        log.info("Shutting down: refusing new requests, finishing in-flight ones")
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for model in self.models.values():
            if model.batcher is not None:
                model.batcher.drain()  # in-flight requests must not wait for batch timeouts
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        for model in self.models.values():
            if model.batcher is not None:
                model.batcher.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        log.info("Stopped; requests served by status: %s", dict(self.stats.total))

    # ---- the gRPC entry point shared by the servicers

    def handle(self, method: str, call: Callable[[], object], context, rows: int = 0):
        start = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            return call()
        except ServingError as e:
            code = e.code
            context.abort(e.code, e.message)
        except concurrent.futures.CancelledError:
            code = grpc.StatusCode.CANCELLED
            context.abort(code, "the client cancelled the request")
        except Exception as e:  # a bug must cost one request, not the server
            code = grpc.StatusCode.INTERNAL
            log.exception("internal error in %s", method)
            context.abort(code, f"{type(e).__name__}: {e}")
        finally:
            self.stats.record(method, code, time.monotonic() - start, rows)


def _rows_of(request: predict_pb2.PredictRequest) -> int:
    for proto in request.inputs.values():
        if proto.tensor_shape.dim:
            return int(proto.tensor_shape.dim[0].size)
    return 0


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def Predict(self, request, context):
        def on_tasks(tasks):
            # A client that hangs up frees its batch slot instead of being computed.
            def cancel():
                for task in tasks:
                    task.cancelled = True
            context.add_callback(cancel)

        return self._server.handle(
            "Predict", lambda: self._server.predict(request, on_tasks), context,
            _rows_of(request))

    def GetModelMetadata(self, request, context):
        return self._server.handle("GetModelMetadata", lambda: self._server.metadata(request),
                                   context)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def GetModelStatus(self, request, context):
        return self._server.handle("GetModelStatus", lambda: self._server.status(request),
                                   context)


# --------------------------------------------------------------------------- REST


_HTTP_STATUS = {
    grpc.StatusCode.OK: HTTPStatus.OK,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: HTTPStatus.CONFLICT,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.ABORTED: HTTPStatus.CONFLICT,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
}
_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<rest>/metadata|:predict)?$")


def _json_value(value, dtype: int):
    """A JSON request value as TF-Serving reads it (``{"b64": ...}`` for raw bytes)."""
    if isinstance(value, list):
        return [_json_value(v, dtype) for v in value]
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, dict) and set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        if isinstance(value, str):
            return value.encode("utf-8")
        raise _invalid(f"expected a string (or {{\"b64\": ...}}) for a string input, got "
                       f"{json.dumps(value)[:50]}")
    if (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
            dtype == types_pb2.DT_BOOL and isinstance(value, bool)):
        return value
    raise _invalid(f"expected a number for a {tensors.DTYPE_NAMES.get(dtype)} input, got "
                   f"{json.dumps(value)[:50]}")


def _json_shape(value, alias: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    shapes = {_json_shape(v, alias) for v in value}
    if len(shapes) > 1:
        raise _invalid(f"input {alias!r} is ragged: every row must have the same length "
                       "(pad string rows with \"\")")
    return (len(value), *(shapes.pop() if shapes else ()))


def _json_array(value, info: _TensorInfo, alias: str):
    shape = _json_shape(value, alias)
    converted = _json_value(value, info.dtype)
    if info.dtype == types_pb2.DT_STRING:
        array = np.empty(shape, dtype=object)
        array[...] = converted
    else:
        array = np.array(converted, dtype=tf.as_dtype(info.dtype).as_numpy_dtype).reshape(shape)
    return tensors.from_numpy(array, dtype=info.dtype)


def _to_json(array: np.ndarray):
    if array.dtype == object:
        def decode(b: bytes):
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(b).decode("ascii")}
        return np.vectorize(decode, otypes=[object])(array).tolist() if array.size else \
            array.tolist()
    return array.tolist()


class _RestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, core: ModelServer):
        self.core = core
        super().__init__(address, _RestHandler)


class _RestHandler(BaseHTTPRequestHandler):
    """TF-Serving's REST API: ``GET /v1/models/NAME[/versions/N][/metadata]``, ``POST :predict``."""

    server: _RestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # the stats logger reports requests
        pass

    def _reply(self, status, body: dict) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        core = self.server.core
        start = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            match = _REST_PATH.match(self.path)
            if match is None:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Malformed request: {method} {self.path}")
            spec = predict_pb2.PredictRequest().model_spec
            spec.name = match["name"]
            if match["version"]:
                spec.version.value = int(match["version"])
            elif match["label"]:
                spec.version_label = match["label"]
            rest = match["rest"]
            if method == "GET" and rest is None:
                request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
                body = json_format.MessageToDict(core.status(request),
                                                 preserving_proto_field_name=True)
                for entry in body.get("model_version_status", []):
                    entry.setdefault("status", {}).setdefault("error_code", "OK")
                    entry["status"].setdefault("error_message", "")
            elif method == "GET" and rest == "/metadata":
                request = get_model_metadata_pb2.GetModelMetadataRequest(
                    model_spec=spec, metadata_field=[SIGNATURE_DEF_FIELD])
                response = core.metadata(request)
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
                body = {"model_spec": json_format.MessageToDict(
                            response.model_spec, preserving_proto_field_name=True),
                        "metadata": {SIGNATURE_DEF_FIELD: json_format.MessageToDict(
                            signature_map, preserving_proto_field_name=True)}}
            elif method == "POST" and rest == ":predict":
                body = self._predict(core, spec)
            else:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Malformed request: {method} {self.path}")
            status = HTTPStatus.OK
        except ServingError as e:
            code = e.code
            status = _HTTP_STATUS.get(e.code, HTTPStatus.INTERNAL_SERVER_ERROR)
            body = {"error": e.message}
        except Exception as e:
            code = grpc.StatusCode.INTERNAL
            log.exception("internal error in REST %s %s", method, self.path)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(e).__name__}: {e}"}
        core.stats.record(f"REST {method}", code, time.monotonic() - start, 0)
        try:
            self._reply(status, body)
        except OSError:  # the client hung up; nobody to answer
            self.close_connection = True

    def _predict(self, core: ModelServer, spec) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError as e:
            raise _invalid(f"JSON Parse error: {e}") from None
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise _invalid('Missing \'inputs\' or \'instances\' key: the body must be a JSON '
                           'object with exactly one of them')
        request = predict_pb2.PredictRequest()
        request.model_spec.CopyFrom(spec)
        signature = body.get("signature_name", "")
        request.model_spec.signature_name = signature
        model = core._model(spec)
        servable = model.servable_for(spec)
        name = signature or DEFAULT_SIGNATURE
        if name not in servable.inputs:
            core.validate(servable, request)  # raises TF-Serving's error for the signature
        expected = servable.inputs[name]
        if "inputs" in body:  # columnar
            columns = body["inputs"]
            if not isinstance(columns, dict):
                if len(expected) != 1:
                    raise _invalid(f"'inputs' must name each of {sorted(expected)}")
                columns = {next(iter(expected)): columns}
        else:  # row format: one entry per batch element
            rows = body["instances"]
            if not isinstance(rows, list):
                raise _invalid("'instances' must be a list (one entry per batch element)")
            if len(expected) == 1 and not all(isinstance(r, dict) for r in rows if r):
                columns = {next(iter(expected)): rows}
            else:
                columns = {a: [r.get(a) for r in rows] for a in expected}
        for alias, value in columns.items():
            if alias not in expected:
                raise _invalid(f"input tensor alias not found in signature: {alias}. Inputs "
                               f"expected to be in the set {{{','.join(sorted(expected))}}}.")
            request.inputs[alias].CopyFrom(_json_array(value, expected[alias], alias))
        response = core.predict(request)
        outputs = {a: _to_json(tensors.to_numpy(p)) for a, p in response.outputs.items()}
        if "inputs" in body:
            return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values()))}
        count = len(next(iter(outputs.values())))
        return {"predictions": [{a: v[i] for a, v in outputs.items()} for i in range(count)]}

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")


# --------------------------------------------------------------------------- CLI


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _channel_args(text: str) -> list[tuple[str, object]]:
    """TF-Serving's ``--grpc_channel_arguments``: ``key=value,key=value``."""
    args = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        args.append((key.strip(), int(value) if value.strip().lstrip("-").isdigit()
                     else value.strip()))
    return args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Local stand-in for TensorFlow Serving (gRPC PredictionService and "
                    "ModelService, REST). Flags keep TF-Serving's names and meaning.")
    flag = p.add_argument
    flag("--port", type=int, default=8500, help="gRPC port (0 picks a free one)")
    flag("--rest_api_port", type=int, default=0, help="REST port (0: no REST API)")
    flag("--host", default="127.0.0.1", help="address to listen on (not a TF-Serving flag; "
         "TF-Serving listens on all interfaces, this server on loopback unless told)")
    flag("--model_name", default="default")
    flag("--model_base_path", help="directory holding numbered version dirs")
    flag("--model_config_file", help="ModelServerConfig text proto (replaces --model_name "
         "and --model_base_path), e.g. the export's MODEL_BASE/models.config")
    flag("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    flag("--batching_parameters_file", help="BatchingParameters text proto")
    for name in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                 "max_enqueued_batches"):
        flag(f"--{name}", type=int, help="overrides the batching parameters file (TF-Serving "
             "takes this only in the file)")
    flag("--pad_variable_length_inputs", type=_bool, nargs="?", const=True,
         help="overrides the batching parameters file")
    flag("--file_system_poll_wait_seconds", type=float, default=1.0)
    flag("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True)
    flag("--grpc_channel_arguments", type=_channel_args, default=[],
         help="key=value,... e.g. grpc.max_receive_message_length=67108864")
    flag("--grpc_max_threads", type=int, default=None,
         help=f"requests handled at once (default {DEFAULT_GRPC_THREADS}; threads start on "
              "demand). Unlike TF-Serving's flag of that name it bounds concurrent requests, "
              "and with them the batch sizes server-side batching can form")
    flag("--tensorflow_intra_op_parallelism", type=int, default=0,
         help="threads of one op (0: TensorFlow's default, one per core)")
    flag("--tensorflow_inter_op_parallelism", type=int, default=0,
         help="ops run at once (0: TensorFlow's default)")
    flag("--log_interval_seconds", type=float, default=10.0,
         help="request counts and latencies are logged this often (0: never)")
    flag("--shutdown_grace_seconds", type=float, default=30.0,
         help="on SIGTERM, in-flight requests get this long to finish")
    return p


def _models_from_args(args) -> dict[str, str]:
    if args.model_config_file:
        config = model_server_config_pb2.ModelServerConfig()
        try:
            with open(args.model_config_file, encoding="utf-8") as f:
                text_format.Parse(f.read(), config)
        except (OSError, text_format.ParseError) as e:
            raise ValueError(
                f"cannot read --model_config_file {args.model_config_file}: {e}") from None
        # As TF-Serving: a relative base_path is relative to the working directory.
        models = {m.name: m.base_path for m in config.model_config_list.config}
        if not models:
            raise ValueError(f"{args.model_config_file} lists no model (model_config_list)")
        return models
    if not args.model_base_path:
        raise ValueError("--model_base_path (or --model_config_file) is required")
    return {args.model_name: args.model_base_path}


def _batching_from_args(args) -> BatchingOptions | None:
    if not args.enable_batching:
        return None
    options = BatchingOptions()
    if args.batching_parameters_file:
        try:
            with open(args.batching_parameters_file, encoding="utf-8") as f:
                options = BatchingOptions.from_text(f.read(), args.batching_parameters_file)
        except OSError as e:
            raise ValueError(f"cannot read --batching_parameters_file: {e}") from None
    for name in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                 "max_enqueued_batches", "pad_variable_length_inputs"):
        if getattr(args, name) is not None:
            setattr(options, name, getattr(args, name))
    if options.max_batch_size < 1 or options.batch_timeout_micros < 0:
        raise ValueError("max_batch_size must be >= 1 and batch_timeout_micros >= 0")
    return options


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        models = _models_from_args(args)
        batching = _batching_from_args(args)
        for name, path in models.items():
            if not os.path.isdir(path):
                raise ValueError(
                    f"model {name!r}: base path {path} does not exist; pass the directory "
                    "holding the version dirs (MODEL_BASE/<name>)" + (
                        ", or export with --base-path-prefix set to MODEL_BASE's absolute path "
                        "so that models.config names it" if args.model_config_file else ""))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if batching is not None:
        log.info("Batching: %s", batching)
    # Before anything runs: TensorFlow fixes its thread pools on first use.
    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    server = ModelServer(models, batching, args.file_system_poll_wait_seconds,
                         args.enable_model_warmup)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        server.start(args.port, args.host, args.rest_api_port, args.grpc_max_threads,
                     args.grpc_channel_arguments, args.log_interval_seconds)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done.wait()
    server.stop(args.shutdown_grace_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
