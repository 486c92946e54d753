"""The error every part of the server raises for a request: a gRPC status and a message."""

from __future__ import annotations

import grpc

from serving import contract


class ServingError(Exception):
    """A request error with the gRPC status TF-Serving gives for it."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def retry_later(message: str) -> ServingError:
    """The status clients retry (the server is busy or going away, not the request wrong)."""
    return ServingError(grpc.StatusCode[contract.RETRYABLE], message)
