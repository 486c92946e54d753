"""Fuzz tests of the server's request decoders: random TensorProtos and random JSON.

Every request must end in a documented status (``docs/serving.md``, "Requests and
answers") and never in an exception, an INTERNAL error or a 500. Requests go
through the core in process (``ModelServer.predict`` for gRPC, the WSGI app
for REST), which is where they are decoded; a few go over the sockets too.
The server's limits are small, so no random request can ask for much memory,
and each test is bounded by hypothesis' example count and a time budget: the
file runs in well under a minute.
"""

import io
import json
import os
import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from test_serving import VOCAB, raw_http, write_contract_model

from serving import client as client_lib
from serving import server as server_lib
from serving import tensors
from serving.server.errors import ServingError
from serving.server.rest import RestApi

pytestmark = pytest.mark.slow  # starts a server (CI runs it: about 15 s)

#: What a request may get (docs/serving.md): a bad request, an unknown model, version or
#: signature, a request over the limits; UNAVAILABLE only while batching is busy or stopping.
GRPC_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
              grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
HTTP_CODES = {200, 400, 404, 413, 429}
# Per test: examples past the time budget are not sent (the count bounds the rest). Raise
# both through the environment for a longer hunt; CI keeps the defaults.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 300))
BUDGET_SECONDS = float(os.environ.get("FUZZ_SECONDS", 15))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("FUZZ_RANDOM"),  # CI: the same examples each run
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz") / "dmi"
    write_contract_model(str(base / "1"), VOCAB, seed=1, warmup_signature=None)
    srv = server_lib.ModelServer({"dmi": str(base)}, poll_seconds=0, warmup=False,
                                 limits=server_lib.RequestLimits(max_elements=4_000,
                                                                 max_bytes=100_000))
    srv.start(port=0, rest_port=-1, log_interval=0)
    yield srv
    srv.stop(grace=5)


class Budget:
    """True while the test's time budget lasts."""

    def __init__(self, seconds=BUDGET_SECONDS):
        self.end = time.monotonic() + seconds
        self.sent = 0

    def __bool__(self):
        if time.monotonic() < self.end:
            self.sent += 1
            return True
        return False


# --------------------------------------------------------------------------- TensorProtos

DTYPES = st.one_of(
    st.sampled_from([types_pb2.DT_STRING, types_pb2.DT_FLOAT, types_pb2.DT_INT32,
                     types_pb2.DT_INT64, types_pb2.DT_BOOL, types_pb2.DT_DOUBLE,
                     types_pb2.DT_HALF, types_pb2.DT_RESOURCE, types_pb2.DT_INVALID]),
    st.integers(0, 2**31 - 1))  # enums are open: any number arrives
DIMS = st.one_of(st.integers(-2, 6), st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1]))
IDS = st.one_of(st.sampled_from([v.encode() for v in VOCAB[:12]]), st.binary(max_size=12))


@st.composite
def tensor_protos(draw):
    proto = tensor_pb2.TensorProto(dtype=draw(DTYPES))
    if draw(st.integers(0, 9)) == 0:
        proto.tensor_shape.unknown_rank = True
    for size in draw(st.lists(DIMS, max_size=4)):
        proto.tensor_shape.dim.add(size=size)
    proto.string_val.extend(draw(st.lists(IDS, max_size=8)))
    proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=4)))
    proto.int_val.extend(draw(st.lists(st.integers(-2**31, 2**31 - 1), max_size=4)))
    proto.int64_val.extend(draw(st.lists(st.integers(-2**63, 2**63 - 1), max_size=4)))
    proto.bool_val.extend(draw(st.lists(st.booleans(), max_size=4)))
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=32))
    return proto


@st.composite
def histories(draw):
    """A well-formed string history [batch, width] of known, unknown and padding ids."""
    batch, width = draw(st.integers(0, 4)), draw(st.integers(0, 6))
    values = draw(st.lists(IDS, min_size=batch * width, max_size=batch * width))
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    proto.tensor_shape.dim.add(size=batch)
    proto.tensor_shape.dim.add(size=width)
    proto.string_val.extend(values)
    return proto


@st.composite
def predict_requests(draw):
    request = predict_pb2.PredictRequest()
    if draw(st.integers(0, 19)):
        spec = request.model_spec
        spec.name = draw(st.sampled_from(["dmi", "dmi", "nope", ""]))
        spec.signature_name = draw(st.sampled_from(
            ["", "topk", "serving_default", "user_interests", "explain", "nope"]))
        choice = draw(st.integers(0, 5))
        if choice == 0:
            spec.version.value = draw(st.sampled_from([0, 1, 2, -1, 2**63 - 1]))
        elif choice == 1:
            spec.version_label = draw(st.text(max_size=5))
    for _ in range(draw(st.integers(0, 2))):
        alias = draw(st.sampled_from(["history", "history", "x", ""]))
        request.inputs[alias].CopyFrom(draw(st.one_of(histories(), tensor_protos())))
    request.output_filter.extend(draw(st.lists(st.sampled_from(
        ["item_ids", "scores", "known_ids", "interests", "items", "nope"]), max_size=3)))
    return request


def _grpc_code(server, request):
    try:
        response = server.predict(request)
    except ServingError as e:
        return e.code, e.message
    for alias, proto in response.outputs.items():  # an answer has one row per input row
        rows = next(iter(request.inputs.values())).tensor_shape.dim[0].size
        assert proto.tensor_shape.dim[0].size == rows, alias
    return grpc.StatusCode.OK, ""


def test_fuzz_grpc_requests_get_documented_statuses(fuzz_server):
    budget, seen = Budget(), set()

    @FUZZ
    @given(predict_requests())
    def check(request):
        if budget:
            code, message = _grpc_code(fuzz_server, request)
            assert code in GRPC_CODES, (code, message, request)
            seen.add(code)

    check()
    assert grpc.StatusCode.OK in seen and grpc.StatusCode.INVALID_ARGUMENT in seen
    assert budget.sent >= 50  # the budget is not what kept the fuzzing short


# --------------------------------------------------------------------------- JSON

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(VOCAB[:12]) | st.fixed_dictionaries({"b64": st.text(max_size=8)}),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["history", "b64", "x"]), children, max_size=2),
    max_leaves=20)
BODIES = st.one_of(
    st.fixed_dictionaries({"instances": JSON_VALUES}, optional={
        "signature_name": st.one_of(st.sampled_from(["topk", "explain", "nope"]), JSON_VALUES)}),
    st.fixed_dictionaries({"inputs": JSON_VALUES}, optional={
        "signature_name": st.sampled_from(["", "user_interests"])}),
    JSON_VALUES,
).map(lambda body: json.dumps(body).encode())
RAW_BODIES = st.one_of(
    BODIES, BODIES,
    st.binary(max_size=64),
    st.integers(1, 100_000).map(lambda n: b'{"instances": ' + b"[" * n + b"]" * n + b"}"),
    st.integers(1, 100_000).map(lambda n: b"[" * n),
)
PATHS = st.one_of(
    st.sampled_from(["/v1/models/dmi:predict", "/v1/models/dmi/versions/1:predict",
                     "/v1/models/dmi/versions/9:predict", "/v1/models/nope:predict",
                     "/v1/models/dmi", "/v1/models/dmi/metadata", "/v1/models/dmi/labels/x",
                     "/v1/models/dmi/versions/99999999999999999999999:predict"]),
    st.text(max_size=30).map(lambda t: "/v1/models/" + t))


def _rest_status(server, method, path, body):
    """Calls the REST front end's WSGI application as the HTTP server does."""
    answer = {}

    def start_response(status, headers):
        answer["status"] = int(status.split()[0])

    environ = {"REQUEST_METHOD": method, "REQUEST_URI": path, "PATH_INFO": path,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    data = b"".join(RestApi(server)(environ, start_response))
    decoded = json.loads(data)
    if answer["status"] != 200:
        assert decoded["error"], decoded
    return answer["status"], decoded


def test_fuzz_rest_bodies_get_documented_statuses(fuzz_server):
    budget, seen = Budget(), set()

    @FUZZ
    @given(st.sampled_from(["POST", "POST", "GET", "PUT"]), PATHS, RAW_BODIES)
    def check(method, path, body):
        if budget:
            status, answer = _rest_status(fuzz_server, method, path, body)
            assert status in HTTP_CODES, (status, answer, method, path, body[:200])
            seen.add(status)

    check()
    assert {200, 400, 404} <= seen
    assert budget.sent >= 50


# --------------------------------------------------------------------------- over the sockets


def test_fuzz_over_the_sockets_the_server_answers_and_stays_up(fuzz_server):
    """A few random requests through gRPC and HTTP themselves (status mapping, framing)."""
    channel = client_lib.make_channel(f"127.0.0.1:{fuzz_server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    budget, codes = Budget(), set()

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(predict_requests(), st.sampled_from(["POST", "GET", "DELETE"]), PATHS, RAW_BODIES)
    def check(request, method, path, body):
        if not budget:
            return
        try:
            stub.Predict(request, timeout=30)
            codes.add(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            assert e.code() in GRPC_CODES, (e.code(), e.details())
            codes.add(e.code())
        # Any bytes in the request line: the HTTP server answers 400 for what it cannot read.
        target = path.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")
        head = (method.encode() + b" " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close"
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        status, _ = raw_http(fuzz_server.rest_port, head + body)
        assert status in HTTP_CODES, (status, head)

    check()
    assert budget.sent >= 20 and grpc.StatusCode.INVALID_ARGUMENT in codes
    alive = predict_pb2.PredictRequest(model_spec={"name": "dmi"}, inputs={
        "history": tensors.from_numpy(np.array([["", "item001"]], dtype=object))})
    assert stub.Predict(alive, timeout=30).outputs
    assert raw_http(fuzz_server.rest_port, b"GET /v1/models/dmi HTTP/1.1\r\nHost: t\r\n"
                    b"Connection: close\r\n\r\n")[0] == 200
    channel.close()
