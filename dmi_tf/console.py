"""What a command-line run shows: the library's messages, and no GPU probe noise.

Library modules report through ``logging.getLogger(__name__)`` and configure no
handler, so the caller decides what it sees (with none, INFO messages are
dropped and warnings go to stderr). The command-line tools call
:func:`log_to_stdout`: their users watch these lines as the run's progress.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

#: The logger every module's ``logging.getLogger(__name__)`` reports to.
PACKAGE = "dmi_tf"


class _Stdout(logging.StreamHandler):
    """Writes each message to ``sys.stdout`` as it is at that moment, then flushes.

    Looked up per message: tests and ``contextlib.redirect_stdout`` replace
    ``sys.stdout`` after the handler exists. Flushed, so progress shows live.
    """

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        del value  # StreamHandler's constructor sets it; the lookup above wins


def log_to_stdout() -> None:
    """Prints the library's INFO messages and above to stdout as plain lines (once, if repeated)."""
    logger = logging.getLogger(PACKAGE)
    if not any(isinstance(handler, _Stdout) for handler in logger.handlers):
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # Once: a handler on the root logger (logging.basicConfig) would print every line again.
    logger.propagate = False


#: Device nodes of an NVIDIA GPU: the driver's, and WSL2's GPU bridge.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/dxg")

_CUDA_PROBE_ERROR = b"failed call to cuInit"


def list_devices_quietly() -> None:
    """Lists TensorFlow's devices, without the CUDA probe's error on a machine with no GPU.

    TensorFlow's CUDA build calls ``cuInit`` the first time it lists devices;
    without an NVIDIA driver that fails and logs "failed call to cuInit: ...
    (303)" at ERROR level, which ``TF_CPP_MIN_LOG_LEVEL=2`` lets through and
    ``CUDA_VISIBLE_DEVICES=""`` does not prevent (the driver library itself is
    missing; measured with TensorFlow 2.20). With no GPU device node that line
    says nothing, so the first listing runs with stderr (file descriptor 2,
    where TensorFlow's C++ logs write) captured, and every other line is passed
    on. Where a GPU device node exists, nothing is hidden. Call it before any
    other TensorFlow work: later listings do not probe again.
    """
    if any(os.path.exists(node) for node in GPU_DEVICE_NODES):
        return
    import tensorflow as tf

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        kept = b"".join(line for line in captured if _CUDA_PROBE_ERROR not in line)
    if kept:
        os.write(2, kept)


class Progress:
    """A progress line on stderr: how far through the input, how many done, how fast.

    On a terminal the line is redrawn in place; otherwise (a log file, a pipe) a
    line is printed every ``interval`` seconds, so a long job's log stays short.

    Args:
      total: the size of the input (bytes read is the measure of ``update``), or None.
      unit: what is counted, e.g. "users".
    """

    def __init__(self, total: int | None, unit: str, interval: float = 10.0, stream=None):
        import time

        self._clock = time.monotonic
        self.total, self.unit, self.interval = total, unit, interval
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.start = self._last = self._clock()
        self.count = 0

    def update(self, count: int, position: int | None = None, force: bool = False) -> None:
        """``count`` done in all, ``position`` bytes of ``total`` read."""
        self.count = count
        now = self._clock()
        if not force and now - self._last < (0.2 if self.live else self.interval):
            return
        self._last = now
        rate = count / max(now - self.start, 1e-9)
        text = f"{count:,} {self.unit}, {rate:,.0f} {self.unit}/s"
        if self.total and position is not None:
            share = min(position / self.total, 1.0)
            left = (now - self.start) * (1 - share) / share if share > 0 else float("inf")
            text = f"{100 * share:5.1f}% | {text}" + (
                f", {left:,.0f} s left" if left != float("inf") else "")
        self.stream.write(("\r" + text + "\033[K") if self.live else text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
