"""Library messages go through logging: silent for a caller that configures nothing,
plain lines on stdout for the command-line tools; and the CUDA probe's error is hidden
where there is no GPU, and only there."""

import logging
import os
import subprocess
import sys

import pytest

from dmi_tf import console
from dmi_tf.console import log_to_stdout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_log_to_stdout_prints_plain_lines_once_however_often_it_is_called(capsys):
    log_to_stdout()
    log_to_stdout()
    logging.getLogger("dmi_tf.somewhere").info("step 20: loss 1.0000")
    logging.getLogger("dmi_tf.somewhere").debug("not shown")
    assert capsys.readouterr().out == "step 20: loss 1.0000\n"


@pytest.mark.slow
def test_training_from_python_prints_nothing_unless_asked(tmp_path):
    script = (
        "import logging, sys\n"
        "from dmi_tf import config, train\n"
        "c = config.load(None, ['data.synthetic.num_users=200', 'data.synthetic.num_items=100',"
        " 'train.max_steps=20', 'train.steps_per_eval=20', 'loss.num_negatives=32'])\n"
        "train.train_and_evaluate(c, sys.argv[1], verbose=0)\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s', force=True)\n"
        "train.train_and_evaluate(c, sys.argv[2], verbose=0)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "a"), str(tmp_path / "b")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""
    # The caller's own configuration receives them, named by module.
    assert ("dmi_tf.training: training youtube_dnn with batches of 128: up to 20 steps"
            in proc.stderr)
    assert "dmi_tf.callbacks: step 20: loss" in proc.stderr


def _listing_that_logs(*lines):
    def list_physical_devices():
        os.write(2, b"".join(line.encode() + b"\n" for line in lines))
    return list_physical_devices


CUDA_PROBE = ("2026-01-01 00:00:00.000000: E external/local_xla/xla/stream_executor/cuda/"
              "cuda_platform.cc:51] failed call to cuInit: INTERNAL: CUDA error: Failed call to "
              "cuInit: UNKNOWN ERROR (303)")


def test_without_a_gpu_only_the_cuda_probe_error_is_hidden(monkeypatch, capfd):
    import tensorflow as tf
    monkeypatch.setattr(console.os.path, "exists", lambda path: False)
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        _listing_that_logs("E another error", CUDA_PROBE, "W a warning"))
    console.list_devices_quietly()
    assert capfd.readouterr().err == "E another error\nW a warning\n"


def test_with_a_gpu_device_node_tensorflow_probes_unwatched(monkeypatch):
    import tensorflow as tf
    monkeypatch.setattr(console.os.path, "exists", lambda path: path == "/dev/nvidiactl")
    calls = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda: calls.append(1))
    console.list_devices_quietly()
    assert calls == []  # TensorFlow lists (and reports) the devices itself, when it needs them
