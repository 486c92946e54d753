"""What the gRPC and REST clients share: results, errors, history encoding, the calls.

``BaseClient`` holds every call (``topk``, ``interests``, ``explain``, health)
over two transport methods a client implements: ``_predict_chunk`` (one
Predict request of histories) and ``metadata`` / ``status``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence

import grpc
import numpy as np

from serving import contract


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
    ``scores`` float32 ``[B, k]`` (-inf in empty slots), best first; ``known_ids``
    int32 ``[B]``, how many of each user's history ids the model knows (it
    ignores the others; ``BaseClient.unknown_ids`` names them)."""

    item_ids: np.ndarray
    scores: np.ndarray
    known_ids: np.ndarray
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
    array = np.full((len(histories), width), contract.PADDING.encode(), dtype=object)
    for row, history in enumerate(histories):
        for col, item in enumerate(history, start=1):
            array[row, col] = contract.encode_id(item if isinstance(item, bytes) else str(item))
    return array


def decode_strings(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.shape, dtype=object)
    out.ravel()[:] = [contract.decode_id(b, "replace") if isinstance(b, bytes) else b
                      for b in array.ravel()]
    return out


class BaseClient:
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

    def wait_until_available(self, timeout: float = 60.0,
                             interval: float = 0.2) -> list[VersionStatus]:
        """Waits until the server reports a version of the model AVAILABLE; returns the statuses.

        A server that is starting (not listening yet: UNAVAILABLE) or still loading
        the model (NOT_FOUND, or no version AVAILABLE) is asked again every
        ``interval`` seconds, up to ``timeout``; any other error is raised at once.

        Raises:
          ServingError: the model was not available after ``timeout`` seconds (the
            last error or status, named), or the server answered another error.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                statuses = self.status()
                if any(s.state == "AVAILABLE" for s in statuses):
                    return statuses
                last = ServingError(grpc.StatusCode.UNAVAILABLE,
                                    f"model {self.model!r} has no AVAILABLE version yet: "
                                    f"{[dataclasses.asdict(s) for s in statuses]}")
            except ServingError as e:
                if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    raise
                last = e
            if time.monotonic() + interval > deadline:
                raise ServingError(last.code, f"not available after {timeout:g} s: {last}")
            time.sleep(interval)

    def _with_retries(self, attempt, deadline: float):
        """Calls ``attempt()`` until it succeeds, retrying UNAVAILABLE with backoff."""
        delay = self.backoff
        for number in range(1, self.max_attempts + 1):
            try:
                return attempt()
            except ServingError as e:
                remaining = deadline - time.monotonic()
                if e.code.name != contract.RETRYABLE or number == self.max_attempts:
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
        shape = self._signature_info()[contract.TOPK]["outputs"][contract.ITEM_IDS][1]
        return shape[1] if shape and len(shape) == 2 and shape[1] >= 0 else None

    def _signature_info(self):
        if self._signatures is None:
            signatures = self.metadata()
            if contract.TOPK not in signatures:
                raise ClientError(
                    f"model {self.model!r} has no {contract.TOPK!r} signature (it has "
                    f"{', '.join(sorted(signatures))}); is it a dmi-tf export?")
            outputs = signatures[contract.TOPK]["outputs"]
            if missing := [o for o in contract.OUTPUTS[contract.TOPK] if o not in outputs]:
                raise ClientError(
                    f"model {self.model!r}'s {contract.TOPK!r} signature has no "
                    f"{', '.join(missing)} output: it was exported before they were part of "
                    "the export; export the run again with `python -m export`")
            self._signatures = signatures
        return self._signatures

    def topk(self, histories, k: int | None = None, signature: str = contract.TOPK) -> TopK:
        """The top-``k`` items of each history (``k`` defaults to the exported k).

        Raises:
          ClientError: ``k`` is not an int in ``1..exported k``, or the model's ``topk``
            lacks an output of the export contract (nothing is sent).
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
        ids, scores = outputs[contract.ITEM_IDS], outputs[contract.SCORES]
        if k is not None and k > ids.shape[1]:
            raise ClientError(f"k={k} but the model returned {ids.shape[1]} items per user")
        if k is not None:
            ids, scores = ids[:, :k], scores[:, :k]
        # As int32 also over REST, whose JSON numbers are read as floats.
        known = outputs[contract.KNOWN_IDS].astype(np.int32)
        return TopK(decode_strings(ids), scores.astype(np.float32), known, version)

    def unknown_ids(self, histories: Sequence[Sequence[str]]) -> list[list[str]]:
        """Each history's ids that the model does not know (and ``topk`` ignores), in order.

        ``known_ids`` counts them without naming them, so this asks ``topk``
        about every distinct id alone, in one call (k = 1).
        """
        distinct = sorted({item for history in histories for item in history if item})
        if not distinct:
            return [[] for _ in histories]
        known = self.topk([[item] for item in distinct], k=1).known_ids
        unknown = {item for item, count in zip(distinct, known, strict=True) if count == 0}
        return [list(dict.fromkeys(item for item in history if item in unknown))
                for history in histories]

    def interests(self, histories) -> Interests:
        """The refined and coarse interest vectors ``[B, K, d]`` of each history."""
        outputs, version = self.predict_history(contract.USER_INTERESTS, histories)
        return Interests(outputs[contract.INTERESTS], outputs[contract.COARSE_INTERESTS],
                         version)

    def explain(self, histories) -> Explanation:
        """Which history items each interest used, and with what weight, ``[B, K, L]``."""
        outputs, version = self.predict_history(contract.EXPLAIN, histories)
        return Explanation(decode_strings(outputs[contract.ITEMS]), outputs[contract.WEIGHTS],
                           version)

    def is_available(self) -> bool:
        """Health check: the model has a version in state AVAILABLE."""
        try:
            return any(s.state == "AVAILABLE" for s in self.status())
        except ServingError:
            return False
