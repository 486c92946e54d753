"""TF-Serving's REST API in front of the server core.

``GET /v1/models/NAME[/versions/N]`` (status), ``GET .../metadata`` and
``POST .../NAME[/versions/N]:predict`` with TF-Serving's JSON formats
(``instances`` rows or ``inputs`` columns; ``{"b64": ...}`` for raw bytes).
A predict body is only parsed here: JSON becomes the ``PredictRequest`` a
gRPC client would send, and ``ModelServer.predict`` checks and answers it, so
a request is valid over REST exactly when it is valid over gRPC.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from serving import contract, tensors
from serving.server.errors import ServingError, invalid

if TYPE_CHECKING:  # the core starts this front end; the annotation only names it
    from serving.server.core import ModelServer
    from serving.server.servable import TensorInfo

log = logging.getLogger("serving.server")

_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<rest>/metadata|:predict)?$")


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
        return tensors.from_numpy(np.array(leaves).reshape(shape), dtype)
    array = np.empty(len(leaves), dtype=object)
    array[:] = [base64.b64decode(v["b64"]) if _is_b64(v) else v.encode("utf-8") for v in leaves]
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
                return b.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(b).decode("ascii")}
        return np.vectorize(decode, otypes=[object])(array).tolist() if array.size else \
            array.tolist()
    return array.tolist()


class RestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, core: ModelServer):
        self.core = core
        super().__init__(address, RestHandler)


class RestHandler(BaseHTTPRequestHandler):
    """TF-Serving's REST API: ``GET /v1/models/NAME[/versions/N][/metadata]``, ``POST :predict``."""

    server: RestServer
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
                raise invalid(f"Malformed request: {method} {self.path}")
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
                    model_spec=spec, metadata_field=[contract.SIGNATURE_DEF_FIELD])
                response = core.metadata(request)
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                response.metadata[contract.SIGNATURE_DEF_FIELD].Unpack(signature_map)
                body = {"model_spec": json_format.MessageToDict(
                            response.model_spec, preserving_proto_field_name=True),
                        "metadata": {contract.SIGNATURE_DEF_FIELD: json_format.MessageToDict(
                            signature_map, preserving_proto_field_name=True)}}
            elif method == "POST" and rest == ":predict":
                body = self._predict(core, spec)
            else:
                raise invalid(f"Malformed request: {method} {self.path}")
            status = HTTPStatus.OK
        except ServingError as e:
            code = e.code
            status = contract.HTTP_STATUS.get(e.code.name, HTTPStatus.INTERNAL_SERVER_ERROR)
            body = {contract.REST_ERROR_KEY: e.message}
        except Exception as e:
            code = grpc.StatusCode.INTERNAL
            log.exception("internal error in REST %s %s", method, self.path)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            body = {contract.REST_ERROR_KEY: f"{type(e).__name__}: {e}"}
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
            raise invalid(f"JSON Parse error: {e}") from None
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise invalid('Missing \'inputs\' or \'instances\' key: the body must be a JSON '
                          'object with exactly one of them')
        signature = body.get("signature_name", "")
        if not isinstance(signature, str):
            raise invalid(f"'signature_name' must be a string, got {json.dumps(signature)[:50]}")
        request = predict_pb2.PredictRequest()
        request.model_spec.CopyFrom(spec)
        request.model_spec.signature_name = signature
        expected = core.signature_inputs(request.model_spec)
        for alias, value in _columns(body, expected).items():
            wanted = expected[alias].dtype if alias in expected else None
            request.inputs[alias].CopyFrom(_json_tensor(value, alias, wanted))
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
