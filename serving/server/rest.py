"""TF-Serving's REST API in front of the server core, on the waitress HTTP server.

``GET /v1/models/NAME[/versions/N]`` (status), ``GET .../metadata`` and
``POST .../NAME[/versions/N]:predict`` with TF-Serving's JSON formats
(``instances`` rows or ``inputs`` columns; ``{"b64": ...}`` for raw bytes).
A predict body is only parsed here: JSON becomes the ``PredictRequest`` a
gRPC client would send, and ``ModelServer.predict`` checks and answers it, so
a request is valid over REST exactly when it is valid over gRPC. A body that
is not a request (bad JSON, nesting no tensor has, a number out of range, bad
base64) is INVALID_ARGUMENT, 400, like any other client error; only a bug is 500.

Why waitress (pure Python, maintained by the Pylons project): one I/O thread
reads requests asynchronously and hands only complete ones to a fixed pool of
worker threads (``--rest_api_num_threads``), so a slow or idle connection
holds no thread; it listens with a configurable backlog, caps open
connections (more wait in the backlog), refuses a body over a size limit
while reading it (413) and spools large bodies to a temporary file, and
answers malformed HTTP (``Content-Length: abc``) with 400 itself. The
standard library's ``ThreadingHTTPServer`` it replaces listened with a
backlog of 5 (135 of 200 concurrent requests timed out), started a thread per
connection (200 slow clients: 187 threads) and read any body whole. cheroot
has the same settings but gives a connection a worker thread while its
request is still arriving, so slow clients exhaust its pool; an asyncio
server (uvicorn) would put an event loop in front of a synchronous core.

Waitress has no graceful stop, so ``RestServer.stop`` drains: the listening
socket closes (new connections are refused; clients retry UNAVAILABLE),
answers given meanwhile carry ``Connection: close``, idle connections are
closed, and requests already received, queued or running, are answered,
within the grace period.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import WSGITask

from serving import contract, tensors
from serving.server.errors import ServingError, invalid
from serving.server.monitoring import CONTENT_TYPE

if TYPE_CHECKING:  # the core starts this front end; the annotation only names it
    from serving.server.core import ModelServer
    from serving.server.servable import TensorInfo

log = logging.getLogger("serving.server")
# Requests queue for a worker thread whenever all are busy (each holds one while its batch
# forms); the stats line reports load, so waitress's per-request queue warning is noise.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)

_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<rest>/metadata|:predict)?$")
_INT64_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class RestOptions:
    """The HTTP server's bounds (``python -m serving.server`` flags of the same names).

    Attributes:
      num_threads: requests handled at once (``--rest_api_num_threads``); each
        waiting for its batch holds one, as on the gRPC side, so this bounds the
        batches REST requests can form. TF-Serving's default is 4 per core.
      backlog: connections the kernel queues before they are accepted.
      max_connections: connections open at once; more wait in the backlog.
      idle_timeout_seconds: a connection without a request in progress and
        without traffic for this long is closed.
    """

    num_threads: int = 64
    backlog: int = 1024
    max_connections: int = 1000
    idle_timeout_seconds: int = 60


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _leaf_kind(value, alias: str) -> str:
    if isinstance(value, str) or _is_b64(value):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return type(value).__name__
    raise invalid(f"input {alias!r}: {json.dumps(value)[:50]} is not a tensor value (a string, "
                  '{"b64": ...}, a number, true or false)')


def _json_shape(value, alias: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    shapes = {_json_shape(v, alias) for v in value}
    if len(shapes) > 1:
        raise invalid(f"input {alias!r} is ragged: every row must have the same length "
                      "(pad string rows with \"\")")
    return (len(value), *(shapes.pop() if shapes else ()))


def _leaves(value):
    if isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _string_bytes(value, alias: str) -> bytes:
    """A JSON string leaf as the bytes a gRPC client would send (UTF-8, or base64-decoded)."""
    if _is_b64(value):
        if not isinstance(value["b64"], str):
            raise invalid(f'input {alias!r}: {{"b64": ...}} must hold a string')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"input {alias!r}: {value['b64'][:50]!r} is not valid base64"
                          ) from None
    try:
        return contract.encode_id(value)
    except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
        raise invalid(f"input {alias!r}: {json.dumps(value)[:50]} is not valid Unicode "
                      '(send such bytes as {"b64": ...})') from None


def _json_tensor(value, alias: str, wanted: int | None):
    """A JSON input as the TensorProto a gRPC client would send.

    JSON numbers have no dtype, so numbers take the signature's numeric dtype
    (``wanted``), as in TF-Serving. Values of another kind than the signature
    wants keep their own (string, bool, int64 or float), and the core's
    validation rejects them with its dtype message.
    """
    shape = _json_shape(value, alias)
    leaves = list(_leaves(value))
    kinds = {_leaf_kind(v, alias) for v in leaves}
    if len(kinds) > 1 and not kinds <= {"int", "float"}:
        raise invalid(f"input {alias!r} mixes {' and '.join(sorted(kinds))} values")
    if not kinds:  # no values: nothing to contradict the signature
        dtype = types_pb2.DT_STRING if wanted is None else wanted
    elif kinds == {"string"}:
        dtype = types_pb2.DT_STRING
    elif kinds == {"bool"}:
        dtype = types_pb2.DT_BOOL
    elif wanted not in (None, types_pb2.DT_STRING, types_pb2.DT_BOOL):
        dtype = wanted
    else:
        dtype = types_pb2.DT_FLOAT if "float" in kinds else types_pb2.DT_INT64
    if dtype != types_pb2.DT_STRING:
        try:
            return tensors.from_numpy(np.array(leaves).reshape(shape), dtype)
        except (OverflowError, ValueError, TypeError, tensors.TensorError):
            raise invalid(f"input {alias!r}: a value does not fit "
                          f"{tensors.DTYPE_NAMES.get(dtype, dtype)}") from None
    array = np.empty(len(leaves), dtype=object)
    array[:] = [_string_bytes(v, alias) for v in leaves]
    return tensors.from_numpy(array.reshape(shape), dtype)


def _columns(body: dict, expected: dict[str, TensorInfo]) -> dict[str, object]:
    """A predict body's inputs by alias, from the columnar or the row format.

    Only the format is read here (unnamed values belong to a signature's only
    input); which aliases the signature takes is the core's check.
    """
    if "inputs" in body:  # columnar
        columns = body["inputs"]
        if isinstance(columns, dict) and not _is_b64(columns):
            return columns
        if len(expected) != 1:
            raise invalid(f"'inputs' must name each of {sorted(expected)}")
        return {next(iter(expected)): columns}
    rows = body["instances"]  # row format: one entry per batch element
    if not isinstance(rows, list):
        raise invalid("'instances' must be a list (one entry per batch element)")
    named = bool(rows) and all(isinstance(r, dict) and not _is_b64(r) for r in rows)
    if not named:
        if len(expected) != 1:
            raise invalid(f"each instance must be an object naming the inputs {sorted(expected)}")
        return {next(iter(expected)): rows}
    aliases = sorted({alias for row in rows for alias in row})
    for i, row in enumerate(rows):
        if missing := [a for a in aliases if a not in row]:
            raise invalid(f"instance {i} lacks input(s) {missing}: every instance names the "
                          "same inputs")
    return {alias: [row[alias] for row in rows] for alias in aliases}


def _to_json(array: np.ndarray):
    if array.dtype == object:
        def decode(b: bytes):
            try:
                return contract.decode_id(b)
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(b).decode("ascii")}
        return np.vectorize(decode, otypes=[object])(array).tolist() if array.size else \
            array.tolist()
    return array.tolist()


def _json_values_bound(body: bytes) -> int:
    """At most how many values (arrays included) the JSON ``body`` holds, before parsing it.

    An array of n values has n - 1 commas, so values <= commas + arrays + 1;
    commas or brackets inside strings only raise the bound (raw item ids never
    hold commas: prepare refuses them).
    """
    return body.count(b",") + body.count(b"[") + 1


class RestApi:
    """The WSGI application: one HTTP request -> the core's answer as TF-Serving's JSON."""

    def __init__(self, core: ModelServer):
        self.core = core

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
        monitoring = self.core.monitoring
        if monitoring.enable and method == "GET" and path.split("?", 1)[0] == monitoring.path:
            data = self.core.metrics.render(self.core.models).encode("utf-8")
            start_response("200 OK", [("Content-Type", CONTENT_TYPE),
                                      ("Content-Length", str(len(data)))])
            return [data]
        start = time.monotonic()
        code = grpc.StatusCode.OK
        match = _REST_PATH.match(path.split("?", 1)[0])
        predicted = (match["name"] if match and method == "POST" and match["rest"] == ":predict"
                     else None)  # TF-Serving's request metrics count Predict calls
        try:
            body = self._dispatch(method, path.split("?", 1)[0], environ)
            status = HTTPStatus.OK
        except ServingError as e:
            code = e.code
            status = contract.HTTP_STATUS.get(e.code.name, HTTPStatus.INTERNAL_SERVER_ERROR)
            body = {contract.REST_ERROR_KEY: e.message}
        except Exception as e:  # a bug must cost one request, not the server
            code = grpc.StatusCode.INTERNAL
            log.exception("internal error in REST %s %s", method, path)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            body = {contract.REST_ERROR_KEY: f"{type(e).__name__}: {e}"}
        seconds = time.monotonic() - start
        self.core.stats.record(f"REST {method}", code, seconds, 0)
        if predicted is not None:
            self.core.metrics.record(predicted, "predict", "REST", code.name, seconds)
        data = json.dumps(body).encode("utf-8")
        start_response(f"{int(status)} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def _dispatch(self, method: str, path: str, environ) -> dict:
        core = self.core
        match = _REST_PATH.match(path)
        if match is None:
            raise invalid(f"Malformed request: {method} {path}")
        spec = predict_pb2.PredictRequest().model_spec
        spec.name = match["name"]
        if match["version"]:
            if int(match["version"]) > _INT64_MAX:
                raise invalid(f"Failed to convert version: {match['version']} to numeric.")
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
            return body
        if method == "GET" and rest == "/metadata":
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=[contract.SIGNATURE_DEF_FIELD])
            response = core.metadata(request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata[contract.SIGNATURE_DEF_FIELD].Unpack(signature_map)
            return {"model_spec": json_format.MessageToDict(
                        response.model_spec, preserving_proto_field_name=True),
                    "metadata": {contract.SIGNATURE_DEF_FIELD: json_format.MessageToDict(
                        signature_map, preserving_proto_field_name=True)}}
        if method == "POST" and rest == ":predict":
            # The HTTP server has read the body, refusing one over --max_request_bytes (413).
            return self._predict(spec, environ["wsgi.input"].read())
        raise invalid(f"Malformed request: {method} {path}")

    def _predict(self, spec, data: bytes) -> dict:
        core = self.core
        # Parsing allocates about 70 bytes per JSON value, before the core can count the
        # tensor's elements: bound the values first. Rows of n elements in all are at most
        # 2n + 1 values (each row is an array), so no request within the limit is refused.
        if (bound := _json_values_bound(data)) > 2 * core.limits.max_elements + 1:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request body holds up to {bound:,} JSON values, more than twice this "
                f"server's limit of {core.limits.max_elements:,} elements "
                "(--max_request_elements); send fewer users or shorter histories per request")
        try:
            body = json.loads(data or b"null")
            request = predict_pb2.PredictRequest()
            request.model_spec.CopyFrom(spec)
            inputs = self._request_inputs(body, request)
        except RecursionError:
            raise invalid("JSON Parse error: nested too deeply (a tensor has at most 254 "
                          "dimensions)") from None
        except ValueError as e:  # not JSON, or not UTF-8
            raise invalid(f"JSON Parse error: {e}") from None
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(value)
        response = core.predict(request)
        outputs = {a: _to_json(tensors.to_numpy(p)) for a, p in response.outputs.items()}
        if "inputs" in body:
            return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values()))}
        count = len(next(iter(outputs.values())))
        return {"predictions": [{a: v[i] for a, v in outputs.items()} for i in range(count)]}

    def _request_inputs(self, body, request) -> dict:
        """The body's inputs as TensorProtos by alias (raises the request's error)."""
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise invalid('Missing \'inputs\' or \'instances\' key: the body must be a JSON '
                          'object with exactly one of them')
        signature = body.get("signature_name", "")
        if not isinstance(signature, str):
            raise invalid(f"'signature_name' must be a string, got {json.dumps(signature)[:50]}")
        request.model_spec.signature_name = signature
        expected = self.core.signature_inputs(request.model_spec)
        return {alias: _json_tensor(value, alias,
                                    expected[alias].dtype if alias in expected else None)
                for alias, value in _columns(body, expected).items()}


# --- the HTTP server -------------------------------------------------------------------


class _Task(WSGITask):
    def build_response_header(self):
        if self.channel.server.draining:  # no further request on this connection
            self.set_close_on_finish()
        return super().build_response_header()


class _Channel(HTTPChannel):
    task_class = _Task

    def idle(self) -> bool:
        """No request arriving, queued, running or being sent on this connection."""
        return not (self.requests or self.request is not None or self.total_outbufs_len)


class _Server(TcpWSGIServer):
    channel_class = _Channel
    draining = False


class RestServer:
    """Waitress serving ``RestApi`` on ``address``, with a graceful ``stop``.

    Raises:
      OSError: the address cannot be bound (e.g. the port is in use).
    """

    def __init__(self, address: tuple[str, int], core: ModelServer,
                 options: RestOptions | None = None):
        options = options or RestOptions()
        host, port = address
        adjustments = Adjustments(
            host=host, port=port, threads=options.num_threads, backlog=options.backlog,
            connection_limit=options.max_connections,
            channel_timeout=options.idle_timeout_seconds,
            max_request_body_size=core.limits.max_bytes, ident="dmi-tf serving.server")
        self._map: dict = {}
        try:
            self._server = _Server(RestApi(core), map=self._map, adj=adjustments)
        except BaseException:
            wasyncore.close_all(self._map, ignore_all=True)  # its trigger, opened before the bind
            raise
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="rest")

    def start(self) -> None:
        self._thread.start()

    def _in_loop(self, function: Callable[[], object], timeout: float = 5.0):
        """Runs ``function`` in the I/O thread (waitress's objects are not thread-safe)."""
        done, result = threading.Event(), []

        def thunk():
            try:
                result.append(function())
            finally:
                done.set()

        try:
            self._server.trigger.pull_trigger(thunk)
        except OSError:  # the loop has closed its trigger: it is gone
            return None
        return result[0] if done.wait(timeout) and result else None

    def stop(self, grace: float) -> None:
        """Stops listening, answers what was received (up to ``grace`` s), then closes."""
        deadline = time.monotonic() + grace
        server = self._server
        server.draining = True

        def stop_listening():
            server.accepting = False
            wasyncore.dispatcher.close(server)  # the listening socket; connections stay

        def close_idle() -> bool:
            channels = list(server.active_channels.values())
            for channel in channels:
                if channel.idle():
                    channel.handle_close()
            return not server.active_channels

        self._in_loop(stop_listening)
        while time.monotonic() < deadline and not self._in_loop(close_idle):
            time.sleep(0.05)
        if server.active_channels:
            log.warning("REST: %d connection(s) still busy after %.0f s; closing them",
                        len(server.active_channels), grace)
        self._in_loop(lambda: wasyncore.close_all(self._map))
        self._thread.join(timeout=5)
        server.task_dispatcher.shutdown(timeout=max(0.0, deadline - time.monotonic()))
