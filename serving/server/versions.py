"""The version manager: one model name's versions on disk, the one served, swaps and status.

TF-Serving's file-system source and its "latest 1" version policy: the base
path is polled, the newest all-digit directory is loaded, its warm-up records
replayed, and only then swapped in.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import dataclasses
import gc
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2, prediction_log_pb2

from serving import contract
from serving.server.batching import Batcher, BatchingOptions
from serving.server.errors import ServingError, invalid
from serving.server.servable import Servable

log = logging.getLogger("serving.server")

#: Most requests (or model calls) kept for one log line.
LOG_WINDOW = 100_000
_VERSION_DIR = re.compile(r"^[0-9]+$")
_State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass
class _VersionState:
    state: int
    error: str = ""
    code: grpc.StatusCode = grpc.StatusCode.OK


def _release_free_memory() -> None:
    """Hands the C heap's free pages back to the OS (glibc's malloc_trim; elsewhere nothing).

    An unloaded version's tensors return to malloc's free lists, which glibc keeps
    mapped: without this a server that swaps versions grows by about a model per swap
    (benchmarks/soak.py).
    """
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _contents(path: str) -> tuple:
    """Every file and folder under ``path`` with its size and modification time.

    A version that failed to load is retried once this changes: one caught
    half-copied by hand fails, and the copy completing changes its files but
    not necessarily the version folder's own mtime (files land in
    ``variables/``), which is all the poll used to compare.
    """
    entries = []
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files) + dirs:
            full = os.path.join(folder, name)
            try:
                stat = os.stat(full)
            except OSError:  # removed meanwhile: a change all the same
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


class Model:
    """One model name: its versions on disk, the one served, and its batcher.

    Version policy is TF-Serving's default ("latest 1"): the highest numbered
    directory under the base path is loaded (and warmed up) in the
    background while the previous one keeps serving; then it is swapped in.
    Requests already holding the old version finish on it. A version that
    fails to load is reported by GetModelStatus and the old one stays.
    """

    def __init__(self, name: str, base_path: str, batching: BatchingOptions | None,
                 warmup: bool = True, max_batch_elements: int | None = None):
        self.name = name
        self.base_path = base_path
        self.warmup = warmup
        self.current: Servable | None = None
        self.states: dict[int, _VersionState] = {}
        self._failed: dict[int, tuple] = {}  # version -> contents of the dir that failed
        # The version last swapped out, until the requests holding it let it go.
        self._retired: weakref.ref | None = None
        self._lock = threading.Lock()
        # (rows, seconds) of recent model calls, for the log; bounded when nobody reads it.
        self.runs: collections.deque = collections.deque(maxlen=LOG_WINDOW)
        # (version path, "success" | "fail") -> loads attempted, for the monitoring endpoint.
        self.load_attempts: collections.Counter = collections.Counter()
        self.batcher = (Batcher(batching, self._run_batch, max_batch_elements) if batching
                        else None)

    def run(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray],
            outputs: list[str], rows: int | None) -> dict[str, np.ndarray]:
        start = time.monotonic()
        result = servable.run(signature, inputs, outputs)
        self.runs.append((rows or 0, time.monotonic() - start))
        return result

    def _run_batch(self, key, inputs):
        servable, signature, outputs = key
        return self.run(servable, signature, inputs, list(outputs),
                        len(next(iter(inputs.values()))))

    def versions_on_disk(self) -> dict[int, str]:
        try:
            names = os.listdir(self.base_path)
        except OSError:
            return {}
        # Non-numeric names (an export's temporary directory) are not versions.
        return {int(n): os.path.join(self.base_path, n) for n in names
                if _VERSION_DIR.match(n) and os.path.isdir(os.path.join(self.base_path, n))}

    def poll(self, predict: Callable[[Servable, predict_pb2.PredictRequest], object]) -> None:
        """Loads the newest version if it is not the one served (TF-Serving's poll)."""
        if self._retired is not None:
            gc.collect()
            if self._retired() is None:
                self._retired = None
                _release_free_memory()
        versions = self.versions_on_disk()
        if not versions:
            if self.current is None:
                log.warning("No versions of servable %s found under base path %s",
                            self.name, self.base_path)
            return
        newest = max(versions)
        if self.current is not None and self.current.version == newest:
            return
        path = versions[newest]
        contents = _contents(path)
        if self._failed.get(newest) == contents:
            return
        self.states[newest] = _VersionState(_State.LOADING)
        log.info("Loading servable version {name: %s version: %d} from %s", self.name, newest, path)
        start = time.monotonic()
        try:
            servable = Servable(self.name, newest, path)
            if self.warmup:
                count = self._warm_up(servable, predict)
                if count:
                    log.info("Finished reading warmup data for model at %s: %d records", path,
                             count)
        except Exception as e:  # a bad version must not take the server down
            self._failed[newest] = contents
            self.load_attempts[(path, "fail")] += 1
            code = e.code if isinstance(e, ServingError) else grpc.StatusCode.UNKNOWN
            self.states[newest] = _VersionState(_State.END, f"{type(e).__name__}: {e}", code)
            log.error("Loading servable version {name: %s version: %d} failed: %s",
                      self.name, newest, e)
            return
        with self._lock:
            old, self.current = self.current, servable
        self.states[newest] = _VersionState(_State.AVAILABLE)
        self.load_attempts[(path, "success")] += 1
        log.info("Successfully loaded servable version {name: %s version: %d} in %.1f s",
                 self.name, newest, time.monotonic() - start)
        if old is not None:
            # In-flight requests keep their reference to `old`; it is freed after them.
            self.states[old.version] = _VersionState(_State.END)
            log.info("Unloaded servable version {name: %s version: %d}", self.name, old.version)
            self._retired = weakref.ref(old)

    def _warm_up(self, servable: Servable, predict) -> int:
        path = os.path.join(servable.path, contract.WARMUP_FILE)
        if not os.path.isfile(path):
            log.info("No warmup data file found at %s", path)
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path):
            count += 1
            if count > contract.MAX_WARMUP_RECORDS:
                raise ValueError(f"{path}: more than {contract.MAX_WARMUP_RECORDS} warmup records")
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if not entry.HasField("predict_log"):
                raise ValueError(f"{path}: record {count} is not a predict_log; only Predict "
                                 "warmup records are supported")
            predict(servable, entry.predict_log.request)
        return count

    def servable_for(self, spec) -> Servable:
        """The servable a ModelSpec asks for, or TF-Serving's error for it."""
        with self._lock:
            current = self.current
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            raise invalid(f"Unrecognized servable version label: {spec.version_label} "
                          "(this server defines no version labels; ask for a version number)")
        if choice == "version":
            if current is None or current.version != spec.version.value:
                served = "none" if current is None else str(current.version)
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({self.name}, "
                    f"{spec.version.value}) (version served: {served})")
            return current
        if current is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({self.name}) (no "
                               f"version loaded yet from {self.base_path})")
        return current
