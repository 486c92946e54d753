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

Modules: ``base`` (results, errors and the calls both clients share),
``grpc_client`` (``TopKClient``), ``rest_client`` (``RestTopKClient``) and
``cli`` (``python -m serving.client``).
"""

from serving.client.base import (
    ClientError,
    Explanation,
    Interests,
    ServingError,
    TopK,
    VersionStatus,
    encode_histories,
)
from serving.client.grpc_client import TopKClient, make_channel
from serving.client.rest_client import RestTopKClient

__all__ = [
    "ClientError",
    "Explanation",
    "Interests",
    "RestTopKClient",
    "ServingError",
    "TopK",
    "TopKClient",
    "VersionStatus",
    "encode_histories",
    "make_channel",
]
