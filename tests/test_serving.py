"""serving/: the local TF-Serving stand-in and the gRPC / REST clients.

The models here are small SavedModels with the export contract's signatures
(``topk``/``serving_default``, ``user_interests``, ``explain``; string
histories in, string ids out), built in this file; the end-to-end test with a
trained and exported model is in ``test_serving_e2e.py``.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from helpers import versions_during_swap
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from serving import client as client_lib
from serving import contract, tensors
from serving import server as server_lib
from serving.client import cli as client_cli
from serving.client.base import BaseClient
from serving.server import cli as server_cli
from serving.server.batching import Batcher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K, L, TOP, D = 2, 5, 8, 8


# --------------------------------------------------------------------------- a contract model


def write_contract_model(path, vocab, seed=0, warmup_signature="topk"):
    """Writes a SavedModel with the export contract's signatures.

    Interest k of a user is an attention-weighted mean of the embeddings of the
    last ``L`` known history items (unknown ids and "" dropped, as the contract
    says); top-k is the best score of each item over the interests, and
    ``known_ids`` counts each history's known ids.
    """
    num_items = len(vocab)
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(num_items, D)).astype(np.float32)

    class ContractModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.vocab = tf.constant(vocab)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(vocab[1:]), tf.range(1, num_items, dtype=tf.int64)), 0)
            self.embeddings = tf.Variable(embeddings)
            self.queries = tf.Variable(rng.normal(size=(K, D)).astype(np.float32))
            self.refine = tf.Variable(rng.normal(size=(K, D, D)).astype(np.float32) / D)

        def ids(self, history):
            raw = self.table.lookup(history)
            real = raw > 0
            # Known items first, in order; then the last L of them, left-aligned.
            order = tf.argsort(tf.cast(~real, tf.int32), axis=1, stable=True)
            compact = tf.pad(tf.gather(raw, order, batch_dims=1), [[0, 0], [0, L]])
            count = tf.reduce_sum(tf.cast(real, tf.int32), axis=1, keepdims=True)
            positions = tf.maximum(count - L, 0) + tf.range(L)[tf.newaxis]
            picked = tf.gather(compact, positions, batch_dims=1)
            return tf.where(positions < count, picked, 0)

        def weights_and_interests(self, history):
            ids = self.ids(history)
            emb = tf.gather(self.embeddings, ids)  # [B, L, D]
            logits = tf.einsum("bld,kd->bkl", emb, self.queries)
            mask = tf.cast(ids > 0, tf.float32)[:, tf.newaxis, :]
            weights = tf.nn.softmax(logits - 1e9 * (1 - mask), axis=-1) * mask
            coarse = tf.einsum("bkl,bld->bkd", weights, emb)
            refined = coarse + tf.tanh(tf.einsum("bkd,kde->bke", coarse, self.refine))
            return ids, weights, coarse, refined

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
        def topk(self, history):
            _, _, _, refined = self.weights_and_interests(history)
            scores = tf.reduce_max(tf.einsum("bkd,md->bkm", refined, self.embeddings), axis=1)
            scores = tf.where(tf.range(num_items)[tf.newaxis] > 0, scores, float("-inf"))
            values, indices = tf.math.top_k(scores, k=TOP)
            known = tf.reduce_sum(tf.cast(self.table.lookup(history) > 0, tf.int32), axis=1)
            return {"item_ids": tf.gather(self.vocab, indices), "scores": values,
                    "known_ids": known}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
        def user_interests(self, history):
            _, _, coarse, refined = self.weights_and_interests(history)
            return {"interests": refined, "coarse_interests": coarse}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
        def explain(self, history):
            ids, weights, _, _ = self.weights_and_interests(history)
            items = tf.gather(self.vocab, tf.tile(ids[:, tf.newaxis, :], [1, K, 1]))
            return {"items": tf.where(weights > 0, items, ""), "weights": weights}

    module = ContractModel()
    tmp = path + ".tmp"
    tf.saved_model.save(module, tmp, signatures={
        "serving_default": module.topk, "topk": module.topk,
        "user_interests": module.user_interests, "explain": module.explain})
    if warmup_signature:
        os.makedirs(os.path.join(tmp, "assets.extra"))
        with tf.io.TFRecordWriter(os.path.join(tmp, contract.WARMUP_FILE)) as writer:
            for signature in (warmup_signature, "user_interests", "explain"):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "dmi"
                request.model_spec.signature_name = signature
                request.inputs["history"].CopyFrom(
                    tensors.from_numpy(np.array([[vocab[1], ""]], dtype=object)))
                entry = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(entry.SerializeToString())
    os.rename(tmp, path)  # atomic, as the export writes versions


def padded(histories):
    return client_lib.encode_histories(histories)


def reference(path, signature, histories):
    """The SavedModel's own outputs, in process (what the server must return)."""
    loaded = tf.saved_model.load(path)
    out = loaded.signatures[signature](history=tf.constant(padded(histories)))
    return {k: v.numpy() for k, v in out.items()}


VOCAB = [""] + [f"item{i:03d}" for i in range(1, 60)]
HISTORIES = [
    ["item001", "item002", "item003"],
    ["item010"],
    [],
    ["nope", "item004", "", "item005", "missing"],  # unknown ids and "" in the middle
    [f"item{i:03d}" for i in range(1, 30)],  # longer than L
    ["unknown-a", "unknown-b"],
    ["item020", "item021", "item022", "item023", "item024", "item025"],
]


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "dmi"
    os.makedirs(base)
    write_contract_model(str(base / "1"), VOCAB, seed=1)
    return str(base)


@pytest.fixture(scope="module")
def server(model_base):
    batching = server_lib.BatchingOptions(max_batch_size=32, batch_timeout_micros=2000,
                                          num_batch_threads=2, pad_variable_length_inputs=True)
    srv = server_lib.ModelServer({"dmi": model_base}, batching, poll_seconds=0.2)
    srv.start(port=0, rest_port=-1, log_interval=0)
    yield srv
    srv.stop(grace=5)


@pytest.fixture()
def client(server):
    with client_lib.TopKClient(f"127.0.0.1:{server.port}", "dmi", users_per_request=3,
                               timeout=30) as c:
        yield c


@pytest.fixture()
def stub(server):
    channel = client_lib.make_channel(f"127.0.0.1:{server.port}", max_message_bytes=2**30)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def predict_request(history, signature="topk", model="dmi", dtype=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["history"].CopyFrom(tensors.from_numpy(np.asarray(history, dtype=object)
                                                          if dtype is None else history, dtype))
    return request


def rpc_error(call, request, timeout=30):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=timeout)
    return info.value


def assert_alive(stub):
    response = stub.Predict(predict_request([["item001"]]), timeout=30)
    assert response.outputs["item_ids"].tensor_shape.dim[1].size == TOP


# --------------------------------------------------------------------------- tensors


def test_tensor_round_trip_and_broadcast():
    for value in (np.arange(6, dtype=np.int64).reshape(2, 3), np.ones((2, 0), np.float32),
                  np.array([[b"a", b""]], dtype=object), np.array([True, False])):
        back = tensors.to_numpy(tensors.from_numpy(value))
        assert back.shape == value.shape and back.tolist() == value.tolist()
    proto = tensors.from_numpy(np.zeros((2, 3), np.float32))
    proto.ClearField("float_val")
    proto.float_val.append(7.0)  # one value fills the shape, as TensorFlow reads it
    assert tensors.to_numpy(proto).tolist() == [[7.0] * 3] * 2
    proto.tensor_content = np.arange(6, dtype=np.float32).tobytes()
    assert tensors.to_numpy(proto)[1, 2] == 5
    proto.float_val.extend([1.0, 2.0])
    proto.ClearField("tensor_content")
    with pytest.raises(tensors.TensorError, match="3 values but its shape"):
        tensors.to_numpy(proto)


# --------------------------------------------------------------------------- results


def test_topk_interests_explain_equal_the_saved_model(client, model_base):
    path = os.path.join(model_base, "1")
    result = client.topk(HISTORIES)  # 7 users in requests of 3: three requests in flight
    want = reference(path, "topk", HISTORIES)
    assert result.item_ids.tolist() == [[b.decode() for b in row] for row in want["item_ids"]]
    np.testing.assert_allclose(result.scores, want["scores"], rtol=1e-5, atol=1e-6)
    assert result.version == 1
    interests = client.interests(HISTORIES)
    want = reference(path, "user_interests", HISTORIES)
    np.testing.assert_allclose(interests.interests, want["interests"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(interests.coarse_interests, want["coarse_interests"],
                               rtol=1e-5, atol=1e-6)
    explanation = client.explain(HISTORIES)
    want = reference(path, "explain", HISTORIES)
    assert explanation.items.shape == (len(HISTORIES), K, L)
    assert explanation.items.tolist() == [[[b.decode() for b in r] for r in u]
                                          for u in want["items"]]
    np.testing.assert_allclose(explanation.weights, want["weights"], rtol=1e-5, atol=1e-6)
    # The model keeps the last L known items of a longer history (the contract).
    assert explanation.items[4, 0].tolist() == [f"item{i:03d}" for i in range(25, 30)]


def test_known_ids_count_each_users_known_ids(client, server):
    # "" is padding, not an id; "nope", "missing", "unknown-*" are not in the vocabulary.
    want = [3, 1, 0, 2, 29, 0, 6]
    assert client.topk(HISTORIES).known_ids.tolist() == want
    assert client.topk(HISTORIES, k=2).known_ids.dtype == np.int32
    rest = client_lib.RestTopKClient(f"127.0.0.1:{server.rest_port}", "dmi")
    known = rest.topk(HISTORIES).known_ids
    assert known.tolist() == want and known.dtype == np.int32
    assert client.unknown_ids(HISTORIES) == [[], [], [], ["nope", "missing"], [], [
        "unknown-a", "unknown-b"], []]
    assert client.unknown_ids([[]]) == [[]]


def test_a_model_without_known_ids_is_refused_before_sending():
    class OldExport(BaseClient):
        def __init__(self):
            super().__init__("dmi", None, timeout=5, max_attempts=1, backoff=0.01,
                             max_backoff=0.01, users_per_request=1)

        def metadata(self):
            return {"topk": {"inputs": {"history": ("string", [-1, -1])},
                             "outputs": {"item_ids": ("string", [-1, 4]),
                                         "scores": ("float", [-1, 4])}}}

    with pytest.raises(client_lib.ClientError, match=r"has no known_ids output.*python -m export"):
        OldExport().topk([["a"]])


def test_k_is_checked_before_sending_and_truncates(client, server):
    assert client.exported_k() == TOP
    full = client.topk(HISTORIES[:2])
    three = client.topk(HISTORIES[:2], k=3)
    assert three.item_ids.tolist() == full.item_ids[:, :3].tolist()
    before = server.stats.total["OK"]
    for bad in (0, -1, TOP + 1, True, 2.5):
        with pytest.raises(client_lib.ClientError, match="k"):
            client.topk(HISTORIES[:1], k=bad)
    with pytest.raises(client_lib.ClientError, match=f"exported with k={TOP}"):
        client.topk(HISTORIES[:1], k=TOP + 1)
    assert server.stats.total["OK"] == before  # nothing was sent
    with pytest.raises(client_lib.ClientError, match="list of histories"):
        client.topk("item001,item002")


def test_metadata_status_and_health(client, server):
    metadata = client.metadata()
    assert {"serving_default", "topk", "user_interests", "explain"} <= set(metadata)
    assert metadata["topk"]["inputs"] == {"history": ("string", [-1, -1])}
    assert metadata["topk"]["outputs"]["item_ids"] == ("string", [-1, TOP])
    assert metadata["topk"]["outputs"]["known_ids"] == ("int32", [-1])
    assert metadata["explain"]["outputs"]["weights"] == ("float", [-1, K, L])
    (status,) = client.status()
    assert (status.version, status.state, status.error_code) == (1, "AVAILABLE", "OK")
    assert client.is_available()
    with client_lib.TopKClient(f"127.0.0.1:{server.port}", "nope") as other:
        assert not other.is_available()


def test_rest_client_equals_grpc(client, server):
    rest = client_lib.RestTopKClient(f"127.0.0.1:{server.rest_port}", "dmi", users_per_request=4)
    grpc_result = client.topk(HISTORIES, k=5)
    rest_result = rest.topk(HISTORIES, k=5)
    assert rest_result.item_ids.tolist() == grpc_result.item_ids.tolist()
    np.testing.assert_allclose(rest_result.scores, grpc_result.scores, rtol=1e-6)
    np.testing.assert_allclose(rest.interests(HISTORIES).interests,
                               client.interests(HISTORIES).interests, rtol=1e-6)
    assert rest.explain(HISTORIES).items.tolist() == client.explain(HISTORIES).items.tolist()
    assert rest.metadata() == client.metadata()
    assert [s.state for s in rest.status()] == ["AVAILABLE"]
    with pytest.raises(client_lib.ServingError) as info:
        client_lib.RestTopKClient(f"127.0.0.1:{server.rest_port}", "nope").status()
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def rest_post(server, path, body):
    """POSTs JSON to the server's REST port; returns (HTTP status, JSON answer)."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}",
                                     data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_rest_api_formats_and_errors(server):
    def post(path, body):
        return rest_post(server, path, body)

    status, body = post("/v1/models/dmi:predict", {"instances": [["item001", ""], ["item002",
                                                                                   "item003"]]})
    assert status == 200 and len(body["predictions"]) == 2
    assert len(body["predictions"][0]["item_ids"]) == TOP
    status, body = post("/v1/models/dmi/versions/1:predict",
                        {"signature_name": "explain", "inputs": {"history": [["item001"]]}})
    assert status == 200 and set(body["outputs"]) == {"items", "weights"}
    status, body = post("/v1/models/dmi:predict", {"instances": [["a", "b"], ["c"]]})
    assert status == 400 and "ragged" in body["error"]
    status, body = post("/v1/models/dmi:predict", {"instances": [[1, 2]]})
    assert status == 400 and "string" in body["error"]
    status, body = post("/v1/models/dmi:predict", {"signature_name": "nope", "instances": [["a"]]})
    assert status == 400 and 'Serving signature key "nope" not found' in body["error"]
    status, body = post("/v1/models/nope:predict", {"instances": [["a"]]})
    assert status == 404 and "Servable not found" in body["error"]
    status, body = post("/v1/models/dmi:predict", {"foo": 1})
    assert status == 400 and "instances" in body["error"]


def raw_http(port, data, timeout=30):
    """Sends raw bytes to an HTTP port; returns (status code, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    return int(answer.split(b" ", 2)[1]), answer.partition(b"\r\n\r\n")[2]


def raw_post(port, body, path="/v1/models/dmi:predict", timeout=30):
    body = body.encode() if isinstance(body, str) else body
    return raw_http(port, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n"
                    + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
                    timeout)


@pytest.mark.parametrize("body", [
    "[null]", '{"instances": [[null]]}', '{"instances": null}',
    '{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}",  # deeper than any tensor
    "[" * 100_000,
    '{"instances": [[{"b64": 1}]]}', '{"instances": [[{"b64": "!!"}]]}',  # not base64
    '{"instances": [[18446744073709551616]]}',  # no int64 holds it
    '{"instances": [["\\ud800"]]}',  # a lone surrogate: not Unicode
    b'{"instances": [["\xff"]]}',  # not UTF-8
])
def test_rest_client_errors_are_400(server, stub, body):
    status, answer = raw_post(server.rest_port, body)
    assert status == 400, answer
    assert json.loads(answer)["error"]
    assert_alive(stub)


def test_rest_malformed_http_is_4xx(server, stub):
    port = server.rest_port
    head = b"POST /v1/models/dmi:predict HTTP/1.1\r\nHost: t\r\n"
    assert raw_http(port, head + b"Content-Length: abc\r\n\r\n{}")[0] == 400
    assert raw_http(port, head + b"Content-Length: -1\r\n\r\n{}")[0] == 400
    status, answer = raw_http(port, b"GET /v1/models/dmi/versions/99999999999999999999 "
                              b"HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 400 and b"Failed to convert version" in answer
    status, answer = raw_http(port, b"PUT /v1/models/dmi:predict HTTP/1.1\r\nHost: t\r\n"
                              b"Content-Length: 0\r\n\r\n")
    assert status == 400 and b"Malformed request: PUT" in answer
    assert_alive(stub)


@pytest.mark.slow
def test_rest_body_and_value_limits(model_base):
    limits = server_lib.RequestLimits(max_elements=150, max_bytes=4_000)
    srv = server_lib.ModelServer({"dmi": model_base}, poll_seconds=0, warmup=False,
                                 limits=limits)
    srv.start(port=0, rest_port=-1, log_interval=0)
    try:
        ok = json.dumps({"instances": [["item001"] * 100]})
        assert raw_post(srv.rest_port, ok)[0] == 200
        status, answer = raw_post(srv.rest_port, json.dumps({"instances": [["item001"] * 140]}))
        assert status == 429 and b"140 elements" in answer  # RESOURCE_EXHAUSTED
        # Far more JSON values than that: refused before the JSON is parsed.
        status, answer = raw_post(srv.rest_port, "[" + "0," * 1_000 + "0]")
        assert status == 429 and b"JSON values" in answer
        # A body over the byte limit: refused by the HTTP server while reading it.
        assert raw_post(srv.rest_port, " " * 5_000 + ok)[0] == 413
    finally:
        srv.stop(grace=1)


@pytest.mark.slow
def test_rest_takes_200_concurrent_requests_on_a_bounded_pool(server, stub):
    # The old server's listen backlog of 5 timed out 135 of 200 such requests, and it
    # started a thread per connection: 200 slow clients held 187 threads.
    threads_before = threading.active_count()
    slow = []
    for _ in range(200):
        connection = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
        connection.sendall(b"POST /v1/models/dmi:predict HTTP/1.1\r\nHost: t\r\n")
        slow.append(connection)
    try:
        time.sleep(0.5)
        assert threading.active_count() - threads_before < 10
        body = json.dumps({"instances": [["item001", "item002"]]})
        barrier, statuses = threading.Barrier(200), []

        def post():
            barrier.wait()
            try:
                statuses.append(raw_post(server.rest_port, body, timeout=60)[0])
            except OSError as e:
                statuses.append(repr(e))

        clients = [threading.Thread(target=post) for _ in range(200)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        assert statuses == [200] * 200
    finally:
        for connection in slow:
            connection.close()
    assert_alive(stub)


def test_rest_requests_are_checked_by_the_grpc_validation(server, stub):
    # The same bad request over both APIs: one validation, so one status and one message.
    renamed = predict_request([["item001"]])
    renamed.inputs["histories"].CopyFrom(renamed.inputs.pop("history"))
    extra = predict_request([["item001"]])
    extra.inputs["extra"].CopyFrom(extra.inputs["history"])
    cases = [
        ({"instances": [[1, 2]]},
         predict_request(np.array([[1, 2]], np.int64), dtype=types_pb2.DT_INT64)),
        ({"inputs": ["item001", "item002"]}, predict_request(["item001", "item002"])),
        ({"inputs": {"histories": [["item001"]]}}, renamed),
        ({"inputs": {"history": [["item001"]], "extra": [["item001"]]}}, extra),
    ]
    for body, request in cases:
        error = rpc_error(stub.Predict, request)
        status, answer = rest_post(server, "/v1/models/dmi/versions/1:predict",
                                   {"signature_name": "topk", **body})
        assert (status, answer["error"]) == (400, error.details())


# --------------------------------------------------------------------------- bad requests


def test_bad_requests_get_tf_servings_status(stub, model_base):
    int_history = predict_request(np.array([[1, 2]], np.int64), dtype=types_pb2.DT_INT64)
    cases = [
        (int_history, grpc.StatusCode.INVALID_ARGUMENT, "must be string, got int64"),
        (predict_request(["item001", "item002"]), grpc.StatusCode.INVALID_ARGUMENT,
         r"shape \[2\] but the signature expects string \[None, None\] \(one row per user"),
        (predict_request([[["item001"]]]), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        (predict_request([["item001"]], signature="nope"), grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "nope" not found'),
        (predict_request([["item001"]], model="nope"), grpc.StatusCode.NOT_FOUND,
         r"Servable not found for request: Latest\(nope\)"),
    ]
    request = predict_request([["item001"]])
    request.model_spec.version.value = 7
    cases.append((request, grpc.StatusCode.NOT_FOUND, r"Specific\(dmi, 7\)"))
    request = predict_request([["item001"]])
    request.model_spec.version_label = "stable"
    cases.append((request, grpc.StatusCode.INVALID_ARGUMENT, "version label: stable"))
    request = predict_request([["item001"]])
    request.inputs["histories"].CopyFrom(request.inputs.pop("history"))
    cases.append((request, grpc.StatusCode.INVALID_ARGUMENT,
                  "input tensor alias not found in signature: histories"))
    request = predict_request([["item001"]])
    request.inputs["extra"].CopyFrom(request.inputs["history"])
    cases.append((request, grpc.StatusCode.INVALID_ARGUMENT, "Sent extra: {extra}"))
    request = predict_request([["item001"]])
    request.output_filter.append("nope")
    cases.append((request, grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found"))
    request = predict_request([["item001", "item002"]])
    request.inputs["history"].string_val.append(b"x")  # 3 values for shape [1, 2]
    cases.append((request, grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error"))
    cases.append((predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT,
                  "Missing ModelSpec"))
    request = predict_request([["item001"]])
    request.inputs["history"].dtype = 33  # protobuf enums are open (found by the fuzz test)
    cases.append((request, grpc.StatusCode.INVALID_ARGUMENT, "DataType 33 .not a TensorFlow"))
    for request, code, message in cases:
        error = rpc_error(stub.Predict, request)
        assert error.code() == code, (message, error.details())
        assert re.search(message, error.details()), error.details()
    assert_alive(stub)


def test_edge_histories(stub, model_base):
    def topk(history):
        response = stub.Predict(predict_request(history), timeout=30)
        return tensors.to_numpy(response.outputs["item_ids"]), tensors.to_numpy(
            response.outputs["scores"])

    ids, scores = topk(np.empty((0, 3), dtype=object))  # empty batch: empty answer
    assert ids.shape == (0, TOP) and scores.shape == (0, TOP)
    unknown, _ = topk([["x", "y", "z"]])  # unknown ids only: as an empty history
    empty, _ = topk([[""]])
    assert unknown.tolist() == empty.tolist()
    long = [f"item{i:03d}" for i in range(1, 40)]
    truncated, _ = topk([long])  # longer than L: the last L items are used
    assert truncated.tolist() == topk([long[-L:]])[0].tolist()
    assert_alive(stub)


@pytest.mark.slow
def test_100_mb_request_is_served_and_the_limit_is_configurable(stub, model_base):
    # 10 users x 100,000 ids of ~100 bytes: TF-Serving accepts up to 2 GiB
    # messages; the model keeps the last L known items of each row.
    pad = "x" * 92
    row = [f"{pad}{i:07d}" for i in range(100_000)]
    row[-2:] = ["item003", "item004"]
    history = np.array([row] * 10, dtype=object)
    request = predict_request(history)
    assert request.ByteSize() > 100e6
    response = stub.Predict(request, timeout=120)
    ids = tensors.to_numpy(response.outputs["item_ids"])
    expected = tensors.to_numpy(
        stub.Predict(predict_request([["item003", "item004"]]), timeout=30).outputs["item_ids"])
    assert ids.shape == (10, TOP) and (ids == expected).all()
    # A server told to cap messages (TF-Serving's --grpc_channel_arguments) refuses it.
    small = server_lib.ModelServer({"dmi": model_base}, poll_seconds=0, warmup=False)
    small.start(port=0, channel_args=[("grpc.max_receive_message_length", 2**20)],
                log_interval=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{small.port}", options=[
                ("grpc.max_send_message_length", 2**30)]) as channel:
            capped = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            error = rpc_error(capped.Predict, predict_request(history[:1, :20_000]))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert capped.Predict(predict_request([["item001"]]), timeout=30).outputs
    finally:
        small.stop(grace=1)
    assert_alive(stub)


def broadcast_request(shape, value=b"item001"):
    """A request whose history has one value, which fills ``shape`` (about 50 bytes)."""
    request = predict_request([["x"]])
    history = request.inputs["history"]
    history.ClearField("string_val")
    history.string_val.append(value)
    del history.tensor_shape.dim[:]
    for size in shape:
        history.tensor_shape.dim.add(size=size)
    return request


def test_request_size_is_checked_before_anything_is_allocated(stub, server):
    # One value fills a declared shape: 43 bytes asked for 16.7M ids (1.6 GB, 4.7 s), and
    # [1, 4.5e8] would have killed the host. Refused before decoding, as gRPC refuses a
    # message over its size limit.
    assert server.limits.max_elements == 2**24
    request = broadcast_request([1, 2**24 + 1])
    assert request.ByteSize() <= 50
    start = time.monotonic()
    error = rpc_error(stub.Predict, request)
    assert time.monotonic() - start < 5
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "16,777,217 elements" in error.details() and "--max_request_elements" in error.details()
    # Rows of nothing ask for answers all the same: refused, not computed.
    error = rpc_error(stub.Predict, broadcast_request([2**30, 0]))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A shape no tensor can have is a bad request, not an internal error (its element
    # count wrapped around to 0 in NumPy's int64 product).
    request = broadcast_request([2**32, 2**32])
    request.inputs["history"].ClearField("string_val")
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than TensorFlow's limit" in error.details()
    # Bytes: a 3 MB id filling 1,000 slots is 3 GB once decoded.
    error = rpc_error(stub.Predict, broadcast_request([1, 1000], b"x" * 3_000_000))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max_request_bytes" in error.details()
    # The limit is on the request's size, not on broadcasting: a small filled shape is served.
    assert stub.Predict(broadcast_request([2, 3]), timeout=30).outputs["item_ids"]
    assert_alive(stub)


@pytest.mark.slow
def test_request_limits_are_configurable_and_count_every_input(model_base):
    limits = server_lib.RequestLimits(max_elements=150, max_bytes=2_000)
    srv = server_lib.ModelServer({"dmi": model_base}, poll_seconds=0, warmup=False,
                                 limits=limits)
    srv.start(port=0, log_interval=0)
    try:
        with client_lib.make_channel(f"127.0.0.1:{srv.port}") as channel:
            small = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            # 100 ids in, 8 + 8 + 1 elements out.
            assert small.Predict(predict_request([["item001"] * 100]), timeout=30).outputs
            for history in ([["item001"] * 140], [["y" * 1_000, "z" * 1_000]]):
                error = rpc_error(small.Predict, predict_request(history))
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            # The answer counts: no id in, but 9 x 17 elements out (a [2^30, 0] history
            # asked for 2^30 rows of answers).
            empty_rows = predict_request(np.empty((9, 0), dtype=object))
            error = rpc_error(small.Predict, empty_rows)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "answer would have 153 (9 rows)" in error.details()
            empty_rows.output_filter.append("known_ids")  # 9 x 1 elements out
            assert small.Predict(empty_rows, timeout=30).outputs["known_ids"]
    finally:
        srv.stop(grace=1)


def test_clients_that_disconnect_mid_call(stub, server):
    history = np.array([[f"id{i}" for i in range(200_000)]] * 4, dtype=object)
    request = predict_request(history)
    error = rpc_error(stub.Predict, request, timeout=0.05)  # gives up while the server works
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    future = stub.Predict.future(request, timeout=30)
    time.sleep(0.05)
    assert future.cancel()
    # A raw TCP client that sends half an HTTP/2 preface and hangs up.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        raw.sendall(b"PRI * HTTP/2.0\r\n")
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as raw:
        raw.sendall(b"POST /v1/models/dmi:predict HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
    assert_alive(stub)


def test_concurrent_requests_are_batched_and_answered_correctly(server, model_base):
    path = os.path.join(model_base, "1")
    want = reference(path, "topk", HISTORIES)["item_ids"]
    errors, results = [], {}

    def user(i):
        try:
            with client_lib.TopKClient(f"127.0.0.1:{server.port}", "dmi", timeout=30) as c:
                for round_ in range(5):
                    # Different widths in one batch: padded with "" by the server.
                    j = (i + round_) % len(HISTORIES)
                    results[(i, round_)] = (j, c.topk([HISTORIES[j]]).item_ids[0].tolist())
        except Exception as e:
            errors.append(e)

    model = server.models["dmi"]
    model.runs = []
    threads = [threading.Thread(target=user, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for j, ids in results.values():
        assert ids == [b.decode() for b in want[j]]
    assert max(rows for rows, _ in model.runs) > 1  # requests shared model calls


@pytest.mark.slow
def test_more_concurrent_requests_than_cores_share_one_batch(model_base):
    # Each waiting request holds a server thread: a pool of 4 x cores (the old
    # default) let only that many join a batch, however many clients waited.
    clients = 4 * (os.cpu_count() or 1) + 8
    batching = server_lib.BatchingOptions(max_batch_size=256, batch_timeout_micros=3_000_000,
                                          num_batch_threads=1, pad_variable_length_inputs=True)
    srv = server_lib.ModelServer({"dmi": model_base}, batching, poll_seconds=0)
    srv.start(port=0, log_interval=0)
    try:
        channel = client_lib.make_channel(f"127.0.0.1:{srv.port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert_alive(stub)  # the lone warm-up request is its own batch
        model = srv.models["dmi"]
        model.runs.clear()
        futures = [stub.Predict.future(predict_request([HISTORIES[i % len(HISTORIES)]]),
                                       timeout=60) for i in range(clients)]
        for future in futures:
            future.result()
        channel.close()
    finally:
        srv.stop(grace=5)
    assert [rows for rows, _ in model.runs] == [clients]


# --------------------------------------------------------------------------- batching, retries


def test_batcher_joins_pads_splits_and_bounds_its_queue():
    calls, gate = [], threading.Event()

    def run(key, inputs):
        gate.wait(10)
        calls.append((key, {a: v.copy() for a, v in inputs.items()}))
        return {"out": inputs["x"][:, :1]}

    options = server_lib.BatchingOptions(max_batch_size=4, batch_timeout_micros=200_000,
                                         num_batch_threads=1, max_enqueued_batches=3,
                                         pad_variable_length_inputs=True,
                                         enable_large_batch_splitting=True)
    batcher = Batcher(options, run)
    try:
        a = batcher.submit("k", {"x": np.array([[b"a"]], dtype=object)}, 1)
        b = batcher.submit("k", {"x": np.array([[b"b", b"c"], [b"d", b"e"]], dtype=object)}, 2)
        gate.set()
        assert a[0].future.result(5)["out"].tolist() == [[b"a"]]
        assert b[0].future.result(5)["out"].tolist() == [[b"b"], [b"d"]]
        ((_, inputs),) = calls
        # Padded with the request's first element, as TF-Serving does.
        assert inputs["x"].tolist() == [[b"a", b"a"], [b"b", b"c"], [b"d", b"e"]]
        big = batcher.submit("k", {"x": np.arange(10).reshape(10, 1)}, 10)  # split 4+4+2
        assert [t.rows for t in big] == [4, 4, 2]
        assert np.concatenate([t.future.result(5)["out"] for t in big]).ravel().tolist() == \
            list(range(10))
        gate.clear()
        batcher.submit("k1", {"x": np.zeros((4, 1))}, 4)  # taken by the one thread, blocked
        time.sleep(0.1)
        batcher.submit("k2", {"x": np.zeros((1, 1))}, 1)
        batcher.submit("k3", {"x": np.zeros((1, 1))}, 1)
        batcher.submit("k2", {"x": np.zeros((1, 1))}, 1)  # joins k2's open batch
        batcher.submit("k4", {"x": np.zeros((1, 1))}, 1)
        with pytest.raises(server_lib.ServingError) as info:
            batcher.submit("k5", {"x": np.zeros((1, 1))}, 1)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        gate.set()
        batcher.stop()
    strict = Batcher(server_lib.BatchingOptions(max_batch_size=2), run)
    try:
        with pytest.raises(server_lib.ServingError, match="larger than maximum input batch"):
            strict.submit("k", {"x": np.zeros((3, 1))}, 3)
    finally:
        strict.stop()


def test_padding_never_grows_a_batch_past_the_request_limit():
    # One wide history padded 31 narrow ones to its width: 32 x the largest request.
    calls = []

    def run(key, inputs):
        calls.append(inputs["x"].shape)
        return {"out": inputs["x"][:, :1]}

    options = server_lib.BatchingOptions(max_batch_size=32, batch_timeout_micros=100_000,
                                         num_batch_threads=1, pad_variable_length_inputs=True)
    batcher = Batcher(options, run, max_elements=1_000)
    try:
        tasks = [*batcher.submit("k", {"x": np.zeros((1, 900))}, 1)]
        for _ in range(5):
            tasks += batcher.submit("k", {"x": np.zeros((1, 2))}, 1)
        for task in tasks:
            task.future.result(10)
    finally:
        batcher.stop()
    assert sorted(calls) == [(1, 900), (5, 2)]


def test_batching_parameters_file_is_parsed():
    options = server_lib.BatchingOptions.from_text(
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1500 }\n"
        "# a comment\nnum_batch_threads { value: 2 }\npad_variable_length_inputs: true\n")
    assert (options.max_batch_size, options.batch_timeout_micros, options.num_batch_threads,
            options.pad_variable_length_inputs) == (64, 1500, 2, True)
    with pytest.raises(ValueError, match="unknown BatchingParameters field 'max_batch'"):
        server_lib.BatchingOptions.from_text("max_batch { value: 1 }")


class _FlakyClient(BaseClient):
    def __init__(self, failures, code=grpc.StatusCode.UNAVAILABLE):
        super().__init__("dmi", None, timeout=5, max_attempts=4, backoff=0.01, max_backoff=0.02,
                         users_per_request=2)
        self.failures, self.code, self.calls = failures, code, 0

    def _predict_chunk(self, signature, history, deadline, start_now=False):
        def wait():
            self.calls += 1
            if self.failures:
                self.failures -= 1
                raise client_lib.ServingError(self.code, "try again")
            return {"scores": np.ones((len(history), 1))}, 1
        return wait


def test_client_retries_unavailable_only():
    flaky = _FlakyClient(failures=2)
    outputs, _ = flaky.predict_history("topk", [["a"]])
    assert outputs["scores"].shape == (1, 1) and flaky.calls == 3
    flaky = _FlakyClient(failures=10)
    with pytest.raises(client_lib.ServingError, match="UNAVAILABLE"):
        flaky.predict_history("topk", [["a"]])
    assert flaky.calls == 4  # max_attempts
    flaky = _FlakyClient(failures=1, code=grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(client_lib.ServingError, match="INVALID_ARGUMENT"):
        flaky.predict_history("topk", [["a"]])
    assert flaky.calls == 1


@pytest.mark.slow
def test_client_retries_until_the_server_is_up(tmp_path):
    port = _free_port()
    client = client_lib.TopKClient(f"127.0.0.1:{port}", "dmi", timeout=20, max_attempts=100,
                                   backoff=0.05, max_backoff=0.2)
    base = tmp_path / "dmi"
    write_contract_model(str(base / "1"), VOCAB, warmup_signature=None)
    late = server_lib.ModelServer({"dmi": str(base)}, poll_seconds=0)
    starter = threading.Timer(1.0, lambda: late.start(port=port, log_interval=0))
    starter.start()
    try:
        assert client.topk([["item001"]], k=2).item_ids.shape == (1, 2)
    finally:
        starter.join()
        late.stop(grace=1)
        client.close()


@pytest.mark.slow
def test_a_port_in_use_is_refused_not_shared(server, model_base):
    # gRPC's default SO_REUSEPORT let a second server start on a port in use and take half
    # of the new connections; each port has one owner.
    other = server_lib.ModelServer({"dmi": model_base}, poll_seconds=0, warmup=False)
    with pytest.raises(OSError, match=rf"gRPC on 127.0.0.1:{server.port}: the port is in use"):
        other.start(port=server.port, log_interval=0)
    with pytest.raises(OSError, match=rf"REST on 127.0.0.1:{server.rest_port}: .*--rest_api_port"):
        other.start(port=0, rest_port=server.rest_port, log_interval=0)
    # The gRPC port it had opened before the REST one failed is free again.
    with socket.create_server(("127.0.0.1", other.port)):
        pass
    other.stop(grace=0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- versions


@pytest.mark.slow
def test_new_version_is_swapped_in_without_a_failed_request(server, model_base):
    def publish(_):
        os.makedirs(os.path.join(model_base, "tmp-export"))  # not a version: ignored
        write_contract_model(os.path.join(model_base, "2"), VOCAB, seed=2)

    versions, errors = versions_during_swap(
        server.port, "dmi", lambda c, _: c.topk([HISTORIES[0]]).version, publish,
        lambda seen: bool(seen) and seen[-1] == 2)
    assert not errors
    assert versions[0] == 1 and versions[-1] == 2
    with client_lib.TopKClient(f"127.0.0.1:{server.port}", "dmi") as c:
        want = reference(os.path.join(model_base, "2"), "topk", HISTORIES)["item_ids"]
        assert c.topk(HISTORIES).item_ids.tolist() == [[b.decode() for b in r] for r in want]
        states = {s.version: s.state for s in c.status()}
        assert states == {1: "END", 2: "AVAILABLE"}
        # A version whose warm-up fails is not served; the old one stays.
        write_contract_model(os.path.join(model_base, "3"), VOCAB, warmup_signature="nope")
        deadline = time.monotonic() + 60
        while 3 not in {s.version for s in c.status()} or c.status()[-1].state == "LOADING":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        status = {s.version: s for s in c.status()}
        assert status[3].state == "END" and "nope" in status[3].error_message
        assert c.topk([HISTORIES[0]]).version == 2
    shutil.rmtree(os.path.join(model_base, "3"))
    shutil.rmtree(os.path.join(model_base, "tmp-export"))


@pytest.mark.slow
def test_a_version_caught_half_copied_is_loaded_once_the_copy_completes(tmp_path):
    source, base = tmp_path / "source", tmp_path / "dmi"
    write_contract_model(str(source), VOCAB, seed=3, warmup_signature=None)
    write_contract_model(str(base / "1"), VOCAB, seed=1, warmup_signature=None)
    srv = server_lib.ModelServer({"dmi": str(base)}, poll_seconds=0.1, warmup=False)
    srv.start(port=0, log_interval=0)
    try:
        model = srv.models["dmi"]
        # A copy by hand, caught with every top-level entry there but variables/ still empty.
        half = base / "2"
        half.mkdir()
        (half / "variables").mkdir()
        for entry in source.iterdir():
            if entry.name != "variables":
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, half / entry.name)
        deadline = time.monotonic() + 60
        while model.states.get(2) is None or model.states[2].error == "":
            assert time.monotonic() < deadline, model.states
            time.sleep(0.1)
        # The copy completes inside variables/: the version folder's own mtime stays.
        mtime = os.stat(half).st_mtime_ns
        for entry in (source / "variables").iterdir():
            shutil.copy2(entry, half / "variables" / entry.name)
        assert os.stat(half).st_mtime_ns == mtime
        while model.current.version != 2:
            assert time.monotonic() < deadline, model.states
            time.sleep(0.1)
        assert model.states[2].error == ""
    finally:
        srv.stop(grace=1)


# --------------------------------------------------------------------------- command lines


def test_client_cli(server, capsys):
    target = f"127.0.0.1:{server.port}"
    assert client_cli.main(["--target", target, "--model", "dmi", "--history",
                            "item001,item002", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("user 0 (model version") and len(out.strip().splitlines()) == 4
    assert client_cli.main(["--target", target, "--model", "dmi", "--history", "a",
                            "--k", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: k must be a positive integer")
    assert client_cli.main(["--target", target, "--model", "nope", "--history", "a"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
    assert client_cli.main(["--rest", f"127.0.0.1:{server.rest_port}", "--model", "dmi",
                            "--call", "health"]) == 0
    assert capsys.readouterr().out.strip() == "AVAILABLE"
    assert client_cli.main(["--target", target, "--model", "dmi", "--call", "explain",
                            "--history", "item001", "--json"]) == 0
    capsys.readouterr()


def test_client_cli_names_unknown_ids_and_refuses_users_without_known_ones(server, capsys):
    target = ["--target", f"127.0.0.1:{server.port}", "--model", "dmi"]
    # Two known ids and one unknown: answered, with a warning naming the unknown one.
    assert client_cli.main([*target, "--history", "item001,nope,item002", "--k", "3"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 4
    assert err.startswith("warning: user 0: 1 of 3 ids") and err.strip().endswith(": nope")
    assert client_cli.main([*target, "--history", "item001,nope,item002", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["known_ids"] == [2]
    # None known (for either user): exit 2 with an error line naming them.
    assert client_cli.main([*target, "--history", "item001", "--history", "x,y"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "user 1: x, y" in err
    assert client_cli.main(["--rest", f"127.0.0.1:{server.rest_port}", "--model", "dmi",
                            "--history", "x"]) == 2
    assert "user 0: x" in capsys.readouterr().err
    # An empty history is refused before anything is sent.
    assert client_cli.main([*target, "--history", "item001", "--history", " , "]) == 2
    assert capsys.readouterr().err.startswith("error: --history number 2")


def test_server_cli_errors(tmp_path, capsys):
    assert server_cli.main(["--model_base_path", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert server_cli.main(["--model_config_file", str(tmp_path / "missing.config")]) == 2
    assert "cannot read --model_config_file" in capsys.readouterr().err
    (tmp_path / "models.config").write_text(
        'model_config_list { config { name: "dmi" base_path: "/models/dmi" } }')
    assert server_cli.main(["--model_config_file", str(tmp_path / "models.config")]) == 2
    assert "--base-path-prefix" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests(tmp_path):
    base = tmp_path / "models"
    write_contract_model(str(base / "dmi" / "1"), VOCAB, warmup_signature=None)
    (base / "models.config").write_text(
        'model_config_list {\n  config {\n    name: "dmi"\n'
        f'    base_path: "{base / "dmi"}"\n    model_platform: "tensorflow"\n  }}\n}}\n')
    # A long batch timeout keeps the requests waiting in the server when SIGTERM comes;
    # shutting down runs them at once instead of after the timeout.
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--port", "0", "--rest_api_port", "-1",
         "--model_config_file", str(base / "models.config"), "--enable_batching",
         "--batch_timeout_micros", "60000000", "--max_batch_size", "64"],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        port = rest_port = None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if match := re.search(r"Running gRPC ModelServer at [\d.]+:(\d+)", line):
                port = int(match.group(1))
            if match := re.search(r"Exporting HTTP/REST API at:[\d.]+:(\d+)", line):
                rest_port = int(match.group(1))
                break
        assert port and rest_port, "".join(lines)
        channel = client_lib.make_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        futures = [stub.Predict.future(predict_request([["item001"]]), timeout=30)
                   for _ in range(8)]
        # REST requests in flight too, long ones (their JSON alone takes a while): the old
        # REST server's threads died with the process once the gRPC requests were answered.
        rest_answers, body = [], json.dumps({"instances": [["", *["item001"] * 300_000]]})
        rest_clients = [threading.Thread(target=lambda: rest_answers.append(
            raw_post(rest_port, body)[0])) for _ in range(4)]
        for thread in rest_clients:
            thread.start()
        time.sleep(1.0)
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        for future in futures:
            assert future.result().model_spec.version.value == 1
        for thread in rest_clients:
            thread.join(timeout=30)
        assert rest_answers == [200] * 4
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - stopped < 20
        log = "".join(lines) + process.stderr.read()
        assert "Shutting down" in log and "'OK': 12" in log
        with pytest.raises(OSError):  # stopped listening
            socket.create_connection(("127.0.0.1", rest_port), timeout=5)
        channel.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serving_does_not_import_dmi_tf():
    for folder, _, files in os.walk(os.path.join(REPO, "serving")):
        for name in files:
            if name.endswith(".py"):
                source = open(os.path.join(folder, name), encoding="utf-8").read()
                assert not re.search(r"^\s*(from|import)\s+(dmi_tf|export)\b", source, re.M), name


def test_model_spec_proto_is_the_tf_serving_one():
    # Guards against a second protocol: the client builds TF-Serving's own messages.
    request = predict_request([["a"]])
    assert isinstance(request.model_spec, model_pb2.ModelSpec)
    assert request.DESCRIPTOR.full_name == "tensorflow.serving.PredictRequest"
