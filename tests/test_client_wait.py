"""The client's --wait: a server that is starting or loading is asked again until it serves."""

import grpc
import pytest

from serving.client.base import BaseClient, ServingError, VersionStatus


class Scripted(BaseClient):
    """A client whose status() plays back a script of answers (errors or version lists)."""

    def __init__(self, script):
        super().__init__("dmi", None, timeout=1.0, max_attempts=1, backoff=0.01,
                         max_backoff=0.01, users_per_request=1)
        self.script, self.calls = list(script), 0

    def status(self):
        self.calls += 1
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


STARTING = ServingError(grpc.StatusCode.UNAVAILABLE, "connection refused")
LOADING = ServingError(grpc.StatusCode.NOT_FOUND, "Servable not found")
READY = [VersionStatus(3, "AVAILABLE")]


def test_waits_through_a_starting_and_loading_server():
    client = Scripted([STARTING, LOADING, [VersionStatus(3, "LOADING")], READY])
    assert client.wait_until_available(5.0, interval=0.01) == READY
    assert client.calls == 4


def test_gives_up_after_the_deadline_naming_the_last_answer():
    client = Scripted([STARTING])
    with pytest.raises(ServingError, match=r"not available after 0\.05 s: .*connection refused"):
        client.wait_until_available(0.05, interval=0.01)
    assert client.calls >= 2


def test_other_errors_are_not_waited_on():
    client = Scripted([ServingError(grpc.StatusCode.INVALID_ARGUMENT, "bad")])
    with pytest.raises(ServingError, match="bad"):
        client.wait_until_available(5.0, interval=0.01)
    assert client.calls == 1
