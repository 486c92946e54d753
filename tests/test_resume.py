"""Fault tolerance: a training process killed mid-run resumes from its checkpoint.

The killed run and an uninterrupted one are separate processes of ``python -m
dmi_tf.train``, as a user runs them; the resumed run must reach exactly the same
validation history and test metrics (weights, optimizer state, the refiner's
random generator and the data position all come back).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from dmi_tf import train
from dmi_tf.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The dataclass defaults, not the CLI's default run (dmi_tf/default.yaml).
LIBRARY_DEFAULTS = os.path.join(REPO, "tests", "library_defaults.yaml")
# Validation every 40 steps, a checkpoint every 20: the kill lands after the first
# validation and the run still has up to 40 steps and a validation to go.
ARGS = ["--config", LIBRARY_DEFAULTS, "--model", "dmi", "train.max_steps=80",
        "train.steps_per_eval=40",
        "train.checkpoint_steps=20", "train.steps_per_execution=10", "train.batch_size=32",
        "train.patience=10", "loss.num_negatives=64", "data.synthetic.num_users=200",
        "data.synthetic.num_items=150", "data.synthetic.num_topics=6", "model.embedding_dim=16",
        "model.num_interests=2", "train.eval_batch_size=64"]
TIMEOUT = 400  # generous: the 2 cores may be shared


def start(run_dir, log):
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "dmi_tf.train", "--out", run_dir, *ARGS],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))


@pytest.mark.slow
def test_sigkilled_run_resumes_where_it_was_and_matches_an_uninterrupted_run(tmp_path):
    reference_dir, run_dir = str(tmp_path / "reference"), str(tmp_path / "run")
    reference = start(reference_dir, str(tmp_path / "reference.log"))
    victim = start(run_dir, str(tmp_path / "first.log"))
    try:
        # The manager writes ckpt-40's files first and names it in backup/checkpoint last;
        # a kill between the two rightly resumes from 20, so wait for the name.
        backup = os.path.join(run_dir, "backup")
        deadline = time.monotonic() + TIMEOUT
        while (not str(tf.train.latest_checkpoint(backup)).endswith("ckpt-40")
               and victim.poll() is None):
            assert time.monotonic() < deadline, "no checkpoint at step 40 in time"
            time.sleep(0.05)
        assert victim.poll() is None, "the run ended before it could be killed"
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        assert not os.path.exists(os.path.join(run_dir, "metrics.json"))

        # The same command again: it resumes by default.
        second = start(run_dir, str(tmp_path / "second.log"))
        try:
            assert second.wait(timeout=TIMEOUT) == 0, open(tmp_path / "second.log").read()
        finally:
            if second.poll() is None:
                second.kill()
        assert reference.wait(timeout=TIMEOUT) == 0, open(tmp_path / "reference.log").read()
    finally:
        for process in (victim, reference):
            if process.poll() is None:
                process.kill()

    log = open(tmp_path / "second.log").read()
    resumed = re.search(r"resuming from step (\d+)", log)
    assert resumed, log
    step = int(resumed.group(1))
    assert 40 <= step < 80 and step % 20 == 0
    # Keras continues with the epoch after the checkpoint (epochs are 20 steps).
    assert f"Epoch {step // 20 + 1}/4" in log and "Epoch 1/4" not in log

    got = json.load(open(os.path.join(run_dir, "metrics.json")))
    want = json.load(open(os.path.join(reference_dir, "metrics.json")))
    # The validations from before the kill are kept, and nothing differs.
    assert [h["step"] for h in got["history"]] == [40, 80]
    assert got["history"] == want["history"]
    assert got["best_step"] == want["best_step"] and got["steps"] == 80
    assert got["valid"] == want["valid"] and got["test"] == want["test"]
    assert not os.path.exists(os.path.join(run_dir, "backup"))


def _interruptible():
    # A shell's background job starts with SIGINT ignored, and Python keeps ignoring it:
    # give the child the default disposition so the test's Ctrl-C reaches it wherever
    # the suite runs.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_prints_how_to_resume_and_the_run_resumes(tmp_path):
    # Ctrl-C printed a 42-line traceback (the resume itself was exact).
    run_dir = str(tmp_path / "run")
    # Long enough that the Ctrl-C lands mid-run on a fast idle machine too (80 steps could
    # finish, and remove the backup, between two looks at it).
    args = [*ARGS, "train.max_steps=2000", "train.patience=1000"]
    process = subprocess.Popen([sys.executable, "-m", "dmi_tf.train", "--out", run_dir, *args],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
                               preexec_fn=_interruptible)
    try:
        backup = os.path.join(run_dir, "backup")
        deadline = time.monotonic() + TIMEOUT
        while tf.train.latest_checkpoint(backup) is None and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"interrupted: the same command (--out {run_dir}) resumes the run from its last "
        "checkpoint")
    assert train.main(["--out", run_dir, *args]) == 0


# --- what a run directory may hold -------------------------------------------------------

def config_of(*overrides):
    return train.resolve_config(train.parse_args(
        ["--config", LIBRARY_DEFAULTS, "--model", "youtube_dnn", *overrides]))


def test_unfinished_run_of_the_same_config_is_resumed_others_are_refused(tmp_path):
    from dmi_tf import config as config_lib
    from dmi_tf.io_utils import atomic_write_text

    run_dir = str(tmp_path / "run")
    config = config_of()
    assert train.prepare_run_dir(run_dir, config) == run_dir  # new
    atomic_write_text(os.path.join(run_dir, "config.yaml"), config_lib.dump_yaml(config))
    # Unfinished and the same config (another cluster is fine): taken.
    assert train.prepare_run_dir(run_dir, config_of("distribute.strategy=mirrored")) == run_dir
    with pytest.raises(UserError, match=re.escape("model.embedding_dim: 64 there, 32 here")):
        train.prepare_run_dir(run_dir, config_of("model.embedding_dim=32"))
    with pytest.raises(UserError, match="not empty"):
        train.prepare_run_dir(run_dir, config, resume=False)
    atomic_write_text(os.path.join(run_dir, "metrics.json"), "{}")
    with pytest.raises(UserError, match="finished run"):
        train.prepare_run_dir(run_dir, config)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no run"):
        train.prepare_run_dir(str(stranger), config)


def test_cli_refuses_a_finished_run_with_one_error_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("")
    (run_dir / "metrics.json").write_text("{}")
    assert train.main(["--out", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "finished run" in err[0]


def test_checkpoint_steps_must_divide_steps_per_eval():
    from dmi_tf.errors import ConfigError
    with pytest.raises(ConfigError, match=re.escape("train.checkpoint_steps")):
        config_of("train.steps_per_eval=100", "train.checkpoint_steps=30")
