"""``RestTopKClient``: the calls of ``BaseClient`` over TF-Serving's REST API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import numpy as np

from serving import contract
from serving.client.base import BaseClient, ServingError, VersionStatus

# HTTP status -> gRPC code: the inverse of the server's mapping (where codes share a status,
# the first listed), and a proxy's 502 Bad Gateway, which means the server cannot be reached
# now: retried like the server's own 503.
_FROM_HTTP = {
    **{http: grpc.StatusCode[name] for name, http in reversed(contract.HTTP_STATUS.items())},
    502: grpc.StatusCode[contract.RETRYABLE],
}

class RestTopKClient(BaseClient):
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
                message = json.loads(e.read()).get(contract.REST_ERROR_KEY, e.reason)
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
                "inputs": {contract.HISTORY: [[contract.decode_id(b) for b in row]
                                              for row in history]}}

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
        signatures = body["metadata"][contract.SIGNATURE_DEF_FIELD]["signature_def"]

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
        return np.vectorize(lambda v: contract.encode_id(v) if isinstance(v, str) else v,
                            otypes=[object])(array)
    return np.array(value, dtype=np.float32)
