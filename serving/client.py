"""Clients for a dmi-tf export served by TensorFlow Serving (gRPC and REST).

``TopKClient`` speaks ``tensorflow.serving.PredictionService`` and
``ModelService`` over gRPC; ``RestTopKClient`` does the same calls over
TF-Serving's REST API (``POST /v1/models/NAME:predict``). Both work against
TF-Serving itself and against ``python -m serving.server`` alike.

    with TopKClient("localhost:8500", "dmi") as client:
        result = client.topk([["i1", "i2"], ["i7"]], k=20)
        result.item_ids   # str [2, 20], "" in empty slots
        result.scores     # float32 [2, 20], -inf in empty slots

Histories are lists of raw item ids (the ids of the run's vocabulary); a call
with many users is sent as several requests of at most ``users_per_request``
users, concurrently, and the results are put back in order. Every call has a
deadline; a request that fails with UNAVAILABLE (server starting, restarting,
or its batch queue full) is retried with exponential backoff and jitter
within that deadline, and any other failure is raised at once.

Command line:

    python -m serving.client --target localhost:8500 --model dmi --history "i1,i2,i3" --k 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import tensors

__all__ = [
    "ClientError",
    "Explanation",
    "Interests",
    "RestTopKClient",
    "ServingError",
    "TopK",
    "TopKClient",
    "VersionStatus",
    "make_channel",
]

#: Signature names of the export contract.
TOPK, INTERESTS, EXPLAIN = "topk", "user_interests", "explain"
HISTORY = "history"


class ClientError(ValueError):
    """A bad argument, caught before anything is sent (e.g. ``k`` out of range)."""


class ServingError(Exception):
    """The server answered with an error status.

    Attributes:
      code: the ``grpc.StatusCode`` (REST errors are mapped back to it).
      details: the server's message.
    """

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclasses.dataclass
class TopK:
    """Top-k items per user: ``item_ids`` str ``[B, k]`` ("" = empty slot) and
    ``scores`` float32 ``[B, k]`` (-inf in empty slots), best first."""

    item_ids: np.ndarray
    scores: np.ndarray
    version: int | None = None

    def rows(self) -> list[list[tuple[str, float]]]:
        """Per user, the ``(item_id, score)`` pairs of the non-empty slots, best first."""
        return [[(i, float(s)) for i, s in zip(ids, scores, strict=True) if i]
                for ids, scores in zip(self.item_ids, self.scores, strict=True)]


@dataclasses.dataclass
class Interests:
    """``interests`` (refined) and ``coarse_interests``, float32 ``[B, K, d]`` each."""

    interests: np.ndarray
    coarse_interests: np.ndarray
    version: int | None = None


@dataclasses.dataclass
class Explanation:
    """``items`` str ``[B, K, L]`` (the history item each interest position kept, "" = unused)
    and ``weights`` float32 ``[B, K, L]``."""

    items: np.ndarray
    weights: np.ndarray
    version: int | None = None


@dataclasses.dataclass
class VersionStatus:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


def make_channel(target: str, max_message_bytes: int = 256 * 2**20,
                 keepalive_ms: int = 60_000) -> grpc.Channel:
    """An insecure channel with message-size limits and keep-alive pings set.

    gRPC's default 4 MiB receive limit is too small for large batches of
    top-k or interest outputs (tensorflow/serving#1382); keep-alive pings
    (only while calls are in flight, so TF-Serving's ping policy is not
    tripped) detect a dead connection behind a load balancer.
    """
    return grpc.insecure_channel(target, options=[
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 0),  # retries are ours: UNAVAILABLE only, with backoff
    ])


def encode_histories(histories: Sequence[Sequence[str]]) -> np.ndarray:
    """Histories as the string array ``[B, 1 + max length]`` the export takes.

    Every row starts with "" and is padded with "" ("" is padding anywhere in
    the export contract). The leading "" matters under TF-Serving's
    ``pad_variable_length_inputs``: it pads a request's rows with the
    tensor's *first element*, which must therefore be padding.
    """
    if isinstance(histories, (str, bytes)) or any(isinstance(h, (str, bytes)) for h in histories):
        raise ClientError("histories must be a list of histories, each a list of item ids "
                          '(e.g. [["i1", "i2"]]), not a string')
    width = max([len(h) for h in histories] + [0]) + 1
    array = np.full((len(histories), width), b"", dtype=object)
    for row, history in enumerate(histories):
        for col, item in enumerate(history, start=1):
            array[row, col] = item if isinstance(item, bytes) else str(item).encode("utf-8")
    return array


def _decode_strings(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.shape, dtype=object)
    out.ravel()[:] = [b.decode("utf-8", "replace") if isinstance(b, bytes) else b
                      for b in array.ravel()]
    return out


class _Client:
    """The calls shared by the gRPC and REST clients, over ``_predict_chunk``."""

    def __init__(self, model: str, version: int | None, timeout: float, max_attempts: int,
                 backoff: float, max_backoff: float, users_per_request: int):
        if users_per_request < 1 or max_attempts < 1 or timeout <= 0:
            raise ClientError("users_per_request and max_attempts must be >= 1, timeout > 0")
        self.model = model
        self.version = version
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.users_per_request = users_per_request
        self._signatures: dict | None = None

    # -- subclasses implement these

    def _predict_chunk(self, signature: str, history: np.ndarray, deadline: float,
                       start_now: bool = False):
        """One request; returns a callable giving ``(outputs, version)``.

        With ``start_now`` the request is sent before the callable is called
        (to overlap several); otherwise the callable sends it and waits.
        """
        raise NotImplementedError

    def metadata(self) -> dict[str, dict[str, dict[str, tuple[str, list[int] | None]]]]:
        raise NotImplementedError

    def status(self) -> list[VersionStatus]:
        raise NotImplementedError

    # -- shared logic

    def _with_retries(self, attempt, deadline: float):
        """Calls ``attempt()`` until it succeeds, retrying UNAVAILABLE with backoff."""
        delay = self.backoff
        for number in range(1, self.max_attempts + 1):
            try:
                return attempt()
            except ServingError as e:
                remaining = deadline - time.monotonic()
                if e.code != grpc.StatusCode.UNAVAILABLE or number == self.max_attempts:
                    raise
                # Full jitter keeps many clients from retrying in lockstep.
                pause = random.uniform(0, delay)
                if pause >= remaining:
                    raise
                time.sleep(pause)
                delay = min(delay * 2, self.max_backoff)
        raise AssertionError("unreachable")

    def predict_history(self, signature: str, histories) -> tuple[dict[str, np.ndarray], int]:
        """Runs ``signature`` on the histories, ``users_per_request`` per request, in order."""
        array = histories if isinstance(histories, np.ndarray) else encode_histories(histories)
        if array.ndim != 2:
            raise ClientError(f"histories must be 2-D [users, items], got shape {array.shape}")
        if len(array) == 0:
            raise ClientError("no histories given: pass at least one user's history")
        deadline = time.monotonic() + self.timeout
        chunks = [array[i:i + self.users_per_request]
                  for i in range(0, len(array), self.users_per_request)]
        # Several chunks are all sent before any is awaited, so they overlap on the
        # server; a single one is a blocking call (a gRPC future costs a thread).
        overlap = len(chunks) > 1
        pending = [self._predict_chunk(signature, chunk, deadline, start_now=overlap)
                   for chunk in chunks]
        results = []
        for chunk, waiter in zip(chunks, pending, strict=True):
            attempts = iter([waiter])

            def attempt(chunk=chunk, attempts=attempts):
                # The request already in flight first, then fresh ones.
                return next(attempts, None) or self._predict_chunk(signature, chunk, deadline)

            results.append(self._with_retries(lambda attempt=attempt: attempt()(), deadline))
        outputs = {alias: np.concatenate([r[0][alias] for r in results])
                   for alias in results[0][0]}
        return outputs, results[-1][1]

    def exported_k(self) -> int | None:
        """The k the ``topk`` signature returns (from the model metadata), if static."""
        shape = self._signature_info()[TOPK]["outputs"]["item_ids"][1]
        return shape[1] if shape and len(shape) == 2 and shape[1] >= 0 else None

    def _signature_info(self):
        if self._signatures is None:
            self._signatures = self.metadata()
            if TOPK not in self._signatures:
                raise ClientError(f"model {self.model!r} has no {TOPK!r} signature (it has "
                                  f"{', '.join(sorted(self._signatures))}); is it a dmi-tf export?")
        return self._signatures

    def topk(self, histories, k: int | None = None, signature: str = TOPK) -> TopK:
        """The top-``k`` items of each history (``k`` defaults to the exported k).

        Raises:
          ClientError: ``k`` is not an int in ``1..exported k`` (nothing is sent).
          ServingError: the server rejected the request (after retries for UNAVAILABLE).
        """
        limit = self.exported_k()
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ClientError(f"k must be a positive integer, got {k!r}")
            if limit is not None and k > limit:
                raise ClientError(
                    f"k={k} but model {self.model!r} was exported with k={limit}: ask for "
                    f"k <= {limit}, or re-export with `python -m export ... --k {k}`")
        outputs, version = self.predict_history(signature, histories)
        ids, scores = outputs["item_ids"], outputs["scores"]
        if k is not None and k > ids.shape[1]:
            raise ClientError(f"k={k} but the model returned {ids.shape[1]} items per user")
        if k is not None:
            ids, scores = ids[:, :k], scores[:, :k]
        return TopK(_decode_strings(ids), scores.astype(np.float32), version)

    def interests(self, histories) -> Interests:
        """The refined and coarse interest vectors ``[B, K, d]`` of each history."""
        outputs, version = self.predict_history(INTERESTS, histories)
        return Interests(outputs["interests"], outputs["coarse_interests"], version)

    def explain(self, histories) -> Explanation:
        """Which history items each interest used, and with what weight, ``[B, K, L]``."""
        outputs, version = self.predict_history(EXPLAIN, histories)
        return Explanation(_decode_strings(outputs["items"]), outputs["weights"], version)

    def is_available(self) -> bool:
        """Health check: the model has a version in state AVAILABLE."""
        try:
            return any(s.state == "AVAILABLE" for s in self.status())
        except ServingError:
            return False

    def wait_until_available(self, timeout: float = 60.0, interval: float = 0.2) -> None:
        end = time.monotonic() + timeout
        while not self.is_available():
            if time.monotonic() > end:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   f"model {self.model!r} not available after {timeout} s")
            time.sleep(interval)


def _shape_list(shape) -> list[int] | None:
    if shape.unknown_rank:
        return None
    return [int(d.size) for d in shape.dim]


class TopKClient(_Client):
    """gRPC client of a dmi-tf export (``PredictionServiceStub``, ``ModelServiceStub``).

    Args:
      target: ``host:port`` of TF-Serving's gRPC port (8500 by default).
      model: the model name the server serves the export under.
      version: pin a version (None: the newest the server has).
      timeout: deadline of each call in seconds, retries included.
      max_attempts: attempts per request when the server answers UNAVAILABLE.
      backoff, max_backoff: first and largest retry pause (exponential, jittered).
      users_per_request: histories per Predict request; larger calls are split.
      channel: an existing channel (else one from ``make_channel(target)``).
    """

    def __init__(self, target: str, model: str, *, version: int | None = None,
                 timeout: float = 10.0, max_attempts: int = 5, backoff: float = 0.05,
                 max_backoff: float = 1.0, users_per_request: int = 256,
                 channel: grpc.Channel | None = None, max_message_bytes: int = 256 * 2**20):
        super().__init__(model, version, timeout, max_attempts, backoff, max_backoff,
                         users_per_request)
        self._own_channel = channel is None
        self.channel = channel or make_channel(target, max_message_bytes)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        if self._own_channel:
            self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _spec(self, spec, signature: str = "") -> None:
        spec.name = self.model
        if self.version is not None:
            spec.version.value = self.version
        if signature:
            spec.signature_name = signature

    @staticmethod
    def _raise(error: grpc.RpcError):
        raise ServingError(error.code(), error.details() or "") from None

    def _predict_chunk(self, signature, history, deadline, start_now=False):
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature)
        request.inputs[HISTORY].CopyFrom(tensors.from_numpy(history, types_pb2.DT_STRING))
        future = (self._predict.Predict.future(
            request, timeout=max(0.001, deadline - time.monotonic())) if start_now else None)

        def wait():
            try:
                response = future.result() if future is not None else self._predict.Predict(
                    request, timeout=max(0.001, deadline - time.monotonic()))
            except grpc.RpcError as e:
                self._raise(e)
            outputs = {alias: tensors.to_numpy(p) for alias, p in response.outputs.items()}
            return outputs, response.model_spec.version.value
        return wait

    def predict(self, signature: str, inputs: dict[str, np.ndarray],
                output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """A raw Predict call (one request, retried on UNAVAILABLE), for other signatures."""
        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        self._spec(request.model_spec, signature)
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(tensors.from_numpy(np.asarray(value)))
        deadline = time.monotonic() + self.timeout

        def attempt():
            try:
                response = self._predict.Predict(
                    request, timeout=max(0.001, deadline - time.monotonic()))
            except grpc.RpcError as e:
                self._raise(e)
            return {alias: tensors.to_numpy(p) for alias, p in response.outputs.items()}
        return self._with_retries(attempt, deadline)

    def _call(self, method, request):
        deadline = time.monotonic() + self.timeout

        def attempt():
            try:
                return method(request, timeout=max(0.001, deadline - time.monotonic()))
            except grpc.RpcError as e:
                self._raise(e)
        return self._with_retries(attempt, deadline)

    def metadata(self):
        """Signature name -> {"inputs"/"outputs": alias -> (dtype name, shape or None)}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._call(self._predict.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {
            name: {
                side: {alias: (tensors.DTYPE_NAMES.get(info.dtype, "invalid"),
                               _shape_list(info.tensor_shape))
                       for alias, info in getattr(sig, side).items()}
                for side in ("inputs", "outputs")
            }
            for name, sig in signature_map.signature_def.items()
        }

    def status(self) -> list[VersionStatus]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self._models.GetModelStatus, request)
        return [
            VersionStatus(
                int(v.version),
                get_model_status_pb2.ModelVersionStatus.State.Name(v.state),
                grpc.StatusCode.OK.name if v.status.error_code == 0 else next(
                    (c.name for c in grpc.StatusCode if c.value[0] == v.status.error_code),
                    str(v.status.error_code)),
                v.status.error_message)
            for v in response.model_version_status
        ]


_FROM_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class RestTopKClient(_Client):
    """The same calls over TF-Serving's REST API (``http://host:8501``).

    Requests use the columnar ``{"signature_name": ..., "inputs": {...}}``
    format; HTTP errors are mapped back to gRPC codes (503 = UNAVAILABLE is
    retried). Arguments as ``TopKClient``; ``base_url`` replaces ``target``.
    """

    def __init__(self, base_url: str, model: str, *, version: int | None = None,
                 timeout: float = 10.0, max_attempts: int = 5, backoff: float = 0.05,
                 max_backoff: float = 1.0, users_per_request: int = 256):
        super().__init__(model, version, timeout, max_attempts, backoff, max_backoff,
                         users_per_request)
        if "://" not in base_url:
            base_url = "http://" + base_url
        self.base_url = base_url.rstrip("/")

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _url(self, suffix: str = "") -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.base_url}/v1/models/{self.model}{version}{suffix}"

    def _request(self, url: str, body: dict | None, deadline: float) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(
                    request, timeout=max(0.001, deadline - time.monotonic())) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", e.reason)
            except ValueError:
                message = str(e.reason)
            raise ServingError(_FROM_HTTP.get(e.code, grpc.StatusCode.UNKNOWN), message) from None
        except (urllib.error.URLError, ConnectionError) as e:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, f"{url}: {e}") from None
        except TimeoutError:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{url}: timed out") from None

    def _predict_chunk(self, signature, history, deadline, start_now=False):
        # Sent when awaited, also with start_now: urllib has no asynchronous call.
        body = {"signature_name": signature,
                "inputs": {HISTORY: [[b.decode("utf-8") for b in row] for row in history]}}

        def wait():
            response = self._request(self._url(":predict"), body, deadline)
            outputs = response["outputs"]
            if not isinstance(outputs, dict):
                raise ServingError(grpc.StatusCode.INTERNAL, "expected named outputs")
            return ({alias: _from_json(value) for alias, value in outputs.items()},
                    self.version)
        return wait

    def metadata(self):
        deadline = time.monotonic() + self.timeout
        body = self._with_retries(lambda: self._request(self._url("/metadata"), None, deadline),
                                  deadline)
        signatures = body["metadata"]["signature_def"]["signature_def"]

        def shape(info):
            tensor_shape = info.get("tensor_shape", {})
            if tensor_shape.get("unknown_rank"):
                return None
            return [int(d.get("size", 0)) for d in tensor_shape.get("dim", [])]

        return {
            name: {side: {alias: (info.get("dtype", "DT_INVALID")[3:].lower(), shape(info))
                          for alias, info in sig.get(side, {}).items()}
                   for side in ("inputs", "outputs")}
            for name, sig in signatures.items()
        }

    def status(self) -> list[VersionStatus]:
        deadline = time.monotonic() + self.timeout
        body = self._with_retries(lambda: self._request(self._url(), None, deadline), deadline)
        return [VersionStatus(int(v["version"]), v["state"],
                              v.get("status", {}).get("error_code", "OK"),
                              v.get("status", {}).get("error_message", ""))
                for v in body.get("model_version_status", [])]


def _from_json(value) -> np.ndarray:
    array = np.array(value, dtype=object)
    if array.size and all(isinstance(v, str) or isinstance(v, dict)
                          for v in array.ravel()[:1]):
        return np.vectorize(lambda v: v.encode("utf-8") if isinstance(v, str) else v,
                            otypes=[object])(array)
    return np.array(value, dtype=np.float32)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.client",
        description="Ask a TF-Serving (or `python -m serving.server`) model for top-k items.")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target", help="gRPC host:port, e.g. localhost:8500")
    target.add_argument("--rest", help="REST base URL, e.g. http://localhost:8501")
    p.add_argument("--model", required=True, help="model name on the server")
    p.add_argument("--version", type=int, help="pin a version (default: newest)")
    p.add_argument("--history", action="append", default=[],
                   help='comma-separated raw item ids of one user ("id1,id2,..."); repeat '
                        "for more users")
    p.add_argument("--k", type=int, help="items per user (default: the exported k)")
    p.add_argument("--call", default="topk",
                   choices=["topk", "interests", "explain", "metadata", "status", "health"])
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def _print(args, result) -> None:
    if args.json:
        print(json.dumps(result, indent=1))
        return
    if args.call == "topk":
        for user, rows in enumerate(result["users"]):
            print(f"user {user} (model version {result['version']}):")
            for rank, (item, score) in enumerate(rows, 1):
                print(f"  {rank:4d}  {item:<24s} {score:.6f}")
    else:
        print(json.dumps(result, indent=1))


def run_cli(args) -> dict:
    cls, where = (TopKClient, args.target) if args.target else (RestTopKClient, args.rest)
    with cls(where, args.model, version=args.version, timeout=args.timeout) as client:
        if args.call == "metadata":
            return client.metadata()
        if args.call in ("status", "health"):
            return {"versions": [dataclasses.asdict(s) for s in client.status()]}
        if not args.history:
            raise ClientError('--history is required for this call (e.g. --history "i1,i2")')
        histories = [[i.strip() for i in h.split(",") if i.strip()] for h in args.history]
        if args.call == "topk":
            result = client.topk(histories, args.k)
            return {"version": result.version, "users": result.rows()}
        if args.call == "interests":
            result = client.interests(histories)
            return {"version": result.version, "interests": result.interests.tolist(),
                    "coarse_interests": result.coarse_interests.tolist()}
        result = client.explain(histories)
        return {"version": result.version, "items": result.items.tolist(),
                "weights": result.weights.tolist()}


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 ok; 2 a bad argument or a request the server rejected as such; 1 other."""
    args = build_parser().parse_args(argv)
    try:
        result = run_cli(args)
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ServingError as e:
        print(f"error: {e}", file=sys.stderr)
        user_caused = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                       grpc.StatusCode.FAILED_PRECONDITION}
        return 2 if e.code in user_caused else 1
    if args.call == "health":
        available = any(v["state"] == "AVAILABLE" for v in result["versions"])
        print("AVAILABLE" if available else "NOT AVAILABLE: " + json.dumps(result))
        return 0 if available else 1
    _print(args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
