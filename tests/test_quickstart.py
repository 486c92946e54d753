"""The README's quickstart, run exactly as written: train, export, serve, ask."""

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- quickstart: tests/test_quickstart.py runs this block exactly as written -->"


def quickstart_block() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert MARKER in readme, "the README lost its quickstart marker"
    match = re.search(r"```sh\n(.*?)```", readme[readme.index(MARKER):], re.S)
    assert match, "no sh block after the quickstart marker"
    return match.group(1)


def test_quickstart_has_at_most_six_commands():
    lines = [line for line in quickstart_block().splitlines() if line.strip()]
    assert len(lines) <= 6, lines


@pytest.mark.slow
def test_readme_quickstart_reaches_a_served_answer(tmp_path):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8500)) == 0:
            pytest.skip("port 8500, which the quickstart uses, is taken on this machine")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               PYTHONPATH=REPO)
    # set -e: a failing command fails the test; its own process group, so a server left
    # behind by a failure is stopped below.
    proc = subprocess.Popen(["bash", "-e", "-c", quickstart_block()], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, (out[-3000:], err[-3000:])
    vocabulary = set((tmp_path / "runs" / "quickstart" / "vocabulary.txt").read_text().split())
    assert "(model version 1):" in out, out[-3000:]
    answer = out[out.index("(model version 1):"):]
    ids = re.findall(r"^\s*\d+\s+(\S+)\s+-?[\d.]+\s*$", answer, re.M)
    assert len(ids) == 10 and set(ids) <= vocabulary, answer
    assert (tmp_path / "models" / "dmi" / "1" / "saved_model.pb").exists()
