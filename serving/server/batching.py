"""Server-side batching, as TF-Serving's batch scheduler: options, the batcher, input padding."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
import re
import threading
import time
from collections.abc import Callable

import numpy as np

from serving.server.errors import invalid, retry_later


@dataclasses.dataclass
class BatchingOptions:
    """TF-Serving's ``BatchingParameters`` (the fields this server honours).

    Defaults are TF-Serving's: ``max_batch_size`` 1000, no timeout, one batch
    thread per core, 10 enqueued batches, no large-batch splitting, no padding.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 10
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False

    _INT_FIELDS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                   "max_enqueued_batches")
    _BOOL_FIELDS = ("pad_variable_length_inputs", "enable_large_batch_splitting")
    _IGNORED = ("thread_pool_name", "max_execution_batch_size", "allowed_batch_sizes")

    @classmethod
    def from_text(cls, text: str, source: str = "batching parameters") -> BatchingOptions:
        """Parses a BatchingParameters text proto (``max_batch_size { value: 128 }`` ...).

        The proto itself is not in the ``tensorflow-serving-api`` wheel, so the
        file is read field by field; an unknown field is an error naming it.
        """
        options = cls()
        body = re.sub(r"#[^\n]*", "", text)
        wrapped = r"(\w+)\s*:?\s*\{\s*value\s*:\s*([^\s}]+)\s*\}"
        plain = r"(\w+)\s*:\s*([^\s{}]+)"
        for match in re.finditer(f"{wrapped}|{plain}", body):
            field = match.group(1) or match.group(3)
            value = match.group(2) or match.group(4)
            if field in cls._INT_FIELDS:
                setattr(options, field, int(value))
            elif field in cls._BOOL_FIELDS:
                setattr(options, field, value.lower() == "true")
            elif field not in cls._IGNORED:
                raise ValueError(f"{source}: unknown BatchingParameters field {field!r}")
        if re.sub(f"{wrapped}|{plain}", "", body).strip():
            raise ValueError(f"{source}: cannot parse {body.strip()!r} as BatchingParameters")
        return options


class Task:
    __slots__ = ("cancelled", "future", "inputs", "key", "rows")

    def __init__(self, key, inputs: dict[str, np.ndarray], rows: int):
        self.key = key
        self.inputs = inputs
        self.rows = rows
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.cancelled = False


class _Batch:
    __slots__ = ("deadline", "key", "rows", "shapes", "tasks")

    def __init__(self, key, deadline: float):
        self.key = key
        self.tasks: list[Task] = []
        self.rows = 0
        self.deadline = deadline
        self.shapes: dict[str, tuple[int, ...]] = {}  # per input, the widest row shape

    def _joined(self, task: Task) -> dict[str, tuple[int, ...]]:
        return {alias: tuple(map(max, self.shapes.get(alias, value.shape[1:]), value.shape[1:]))
                for alias, value in task.inputs.items()}

    def elements_with(self, task: Task) -> int:
        """Elements of the inputs once ``task`` joined and every row is padded to the widest."""
        rows = self.rows + task.rows
        return sum(rows * math.prod(shape) for shape in self._joined(task).values())

    def add(self, task: Task) -> None:
        self.shapes = self._joined(task)
        self.tasks.append(task)
        self.rows += task.rows


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.shape[1:] == shape:
        return array
    # TF-Serving pads with the tensor's first element (batching_util.cc's
    # PadTensor), so clients start each history with "" to pad with padding.
    fill = array.flat[0] if array.size else (b"" if array.dtype == object else 0)
    out = np.full((array.shape[0], *shape), fill, dtype=array.dtype)
    out[(slice(None), *(slice(0, s) for s in array.shape[1:]))] = array
    return out


def concat_inputs(parts: list[dict[str, np.ndarray]], pad: bool) -> dict[str, np.ndarray]:
    """Concatenates several requests' inputs along the batch dimension.

    Inputs whose other dimensions differ are padded at the end of each
    dimension with the first element of each request's tensor when ``pad`` is
    set, exactly as TF-Serving's ``pad_variable_length_inputs``; otherwise it
    is an error.
    """
    merged = {}
    for alias in parts[0]:
        arrays = [p[alias] for p in parts]
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) > 1:
            if not pad:
                raise invalid(
                    f"input {alias!r} has different shapes {sorted(shapes)} in one batch and "
                    "pad_variable_length_inputs is off; turn it on in the batching parameters")
            target = tuple(max(s[i] for s in shapes) for i in range(len(arrays[0].shape) - 1))
            arrays = [_pad_to(a, target) for a in arrays]
        merged[alias] = np.concatenate(arrays, axis=0)
    return merged


class Batcher:
    """Server-side batching of concurrent requests, as TF-Serving's batch scheduler.

    Requests for the same servable and signature join one open batch. A batch
    thread takes the oldest batch once it is full (``max_batch_size`` rows) or
    its ``batch_timeout_micros`` has passed; until a thread is free it keeps
    accepting requests, so batches grow with load. At most
    ``max_enqueued_batches`` batches wait; beyond that a request fails with
    UNAVAILABLE, as in TF-Serving (clients retry it).

    Padding makes every row of a batch as wide as its widest: one long
    history would turn 127 short ones into as many long ones. A request
    joins a batch only if the padded batch stays within ``max_elements``
    (the request limit; TF-Serving has none), otherwise it starts its own.
    """

    def __init__(self, options: BatchingOptions,
                 run: Callable[[object, dict[str, np.ndarray]], dict[str, np.ndarray]],
                 max_elements: int | None = None):
        self.options = options
        self._run = run
        self._max_elements = max_elements
        self._cv = threading.Condition()
        self._batches: collections.deque[_Batch] = collections.deque()
        self._stopping = False
        self._draining = False  # shutting down: run batches without waiting for timeouts
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(max(1, options.num_batch_threads))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key, inputs: dict[str, np.ndarray], rows: int) -> list[Task]:
        """Queues a request; returns its tasks (several when it is split)."""
        limit = self.options.max_batch_size
        if rows > limit and not self.options.enable_large_batch_splitting:
            raise invalid(
                f"Task size {rows} is larger than maximum input batch size {limit}: send at "
                f"most {limit} rows per request (or enable_large_batch_splitting)")
        tasks = [
            Task(key, {a: v[start:start + limit] for a, v in inputs.items()},
                 min(limit, rows - start))
            for start in range(0, rows, limit)
        ]
        with self._cv:
            if self._stopping:
                raise retry_later("the server is shutting down")
            for task in tasks:
                batch = next((b for b in reversed(self._batches)
                              if b.key == key and b.rows + task.rows <= limit and (
                                  self._max_elements is None
                                  or b.elements_with(task) <= self._max_elements)), None)
                if batch is None:
                    if len(self._batches) >= self.options.max_enqueued_batches:
                        raise retry_later(
                            "The batch scheduling queue to which this task was submitted is "
                            "full; retry later or raise max_enqueued_batches")
                    batch = _Batch(key, time.monotonic()
                                   + self.options.batch_timeout_micros / 1e6)
                    self._batches.append(batch)
                batch.add(task)
            self._cv.notify()
        return tasks

    def _take(self) -> _Batch | None:
        with self._cv:
            while True:
                now = time.monotonic()
                for batch in self._batches:
                    if (batch.rows >= self.options.max_batch_size or batch.deadline <= now
                            or self._draining):
                        self._batches.remove(batch)
                        # A waiting peer may now find another batch ready.
                        self._cv.notify()
                        return batch
                if self._stopping:
                    return None
                wait = min((b.deadline for b in self._batches), default=None)
                self._cv.wait(None if wait is None else max(0.0, wait - now))

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            tasks = [t for t in batch.tasks if not t.cancelled]
            for task in batch.tasks:
                if task.cancelled:
                    task.future.cancel()
            if not tasks:
                continue
            self._execute(batch.key, tasks)

    def _execute(self, key, tasks: list[Task]) -> None:
        try:
            merged = concat_inputs([t.inputs for t in tasks],
                                   self.options.pad_variable_length_inputs)
            outputs = self._run(key, merged)
        except Exception as e:
            if len(tasks) > 1:
                # One request's failure must not fail its batch-mates: run each alone.
                for task in tasks:
                    self._execute(key, [task])
            else:
                tasks[0].future.set_exception(e)
            return
        start = 0
        for task in tasks:
            task.future.set_result({a: v[start:start + task.rows] for a, v in outputs.items()})
            start += task.rows

    def drain(self) -> None:
        """From now on batches run as soon as a thread is free; requests are still accepted."""
        with self._cv:
            self._draining = True
            self._cv.notify_all()

    def stop(self) -> None:
        """Runs what is queued, then ends the batch threads."""
        with self._cv:
            self._stopping = self._draining = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join()


