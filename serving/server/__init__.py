"""A local model server that speaks TensorFlow Serving's gRPC and REST APIs (not TF-Serving).

A stand-in for development, tests and ScaNN exports the stock server cannot
load (``python -m serving.server``), in the order a request meets it:

- ``cli``: the command line (TF-Serving's flags), ``__main__`` runs it;
- ``rest``: the REST API, which turns JSON into the gRPC request form;
- ``core``: ``ModelServer``, the gRPC servicers and the one request validation;
- ``versions``: ``Model``, a model name's versions: polling, loading, warm-up, swaps, status;
- ``batching``: ``BatchingOptions`` and ``Batcher``, server-side batching;
- ``servable``: one loaded SavedModel version and its signatures.
"""

from serving.server.batching import BatchingOptions
from serving.server.core import ModelServer, RequestLimits
from serving.server.errors import ServingError

__all__ = ["BatchingOptions", "ModelServer", "RequestLimits", "ServingError"]
