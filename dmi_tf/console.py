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
