"""``TopKClient``: the calls of ``BaseClient`` over TF-Serving's gRPC API."""

from __future__ import annotations

import time
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

from serving import contract, tensors
from serving.client.base import BaseClient, ServingError, VersionStatus


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



def _shape_list(shape) -> list[int] | None:
    if shape.unknown_rank:
        return None
    return [int(d.size) for d in shape.dim]


class TopKClient(BaseClient):
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
        request.inputs[contract.HISTORY].CopyFrom(tensors.from_numpy(history, types_pb2.DT_STRING))
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
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=[contract.SIGNATURE_DEF_FIELD])
        self._spec(request.model_spec)
        response = self._call(self._predict.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[contract.SIGNATURE_DEF_FIELD].Unpack(signature_map)
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
