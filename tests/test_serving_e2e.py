"""End to end: train a tiny model, export it, serve it on loopback, ask the client.

The client's top-k must equal the Python model's retrieval
(``dmi_tf.retrieval.retrieve`` on ``model.interests``) for the same raw-id
histories, and a second exported version must be picked up while clients
send requests, without a failed request.
"""

import contextlib
import io
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import exhaustive_scann, versions_during_swap

from dmi_tf import config as config_lib
from dmi_tf.data.pipeline import evaluation_arrays
from dmi_tf.retrieval import retrieve
from dmi_tf.runs import load_run
from dmi_tf.train import train_and_evaluate
from serving import client as client_lib
from serving import server as server_lib
from serving.client import cli as client_cli
from serving.server import cli as server_cli

exporter = pytest.importorskip("export.exporter")

pytestmark = pytest.mark.slow  # trains, exports and serves

K_OUT = 30
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("run"))
    config = config_lib.load(None, [
        "model.name=comirec_sa", "train.max_steps=200", "train.steps_per_eval=100",
        "data.synthetic.num_users=500", "data.synthetic.num_items=300",
        "data.synthetic.num_topics=10"])
    with contextlib.redirect_stdout(io.StringIO()):
        train_and_evaluate(config, run_dir, verbose=0)
    return run_dir


def export(run_dir, base, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return exporter.export_run(run_dir, base, name="dmi", k=K_OUT,
                                   serving=exporter.ServingOptions(base_path_prefix=base),
                                   **kwargs)


@pytest.fixture(scope="module")
def served(run_dir, tmp_path_factory):
    """The export served by ``python -m serving.server``'s core with its batching parameters."""
    base = str(tmp_path_factory.mktemp("model_base"))
    export(run_dir, base)
    with open(os.path.join(base, "batching_parameters.txt"), encoding="utf-8") as f:
        batching = server_lib.BatchingOptions.from_text(f.read())
    args = server_cli.build_parser().parse_args(
        ["--model_config_file", os.path.join(base, "models.config")])
    models = server_cli.models_from_args(args)
    assert models == {"dmi": os.path.join(base, "dmi")}
    server = server_lib.ModelServer(models, batching, poll_seconds=0.2)
    server.start(port=0, rest_port=-1, log_interval=0)
    yield server, base
    server.stop(grace=5)


def raw_histories(run, users=60, seed=0):
    """Raw-id histories of test users, with "" and unknown ids mixed in, some longer than L."""
    rng = np.random.default_rng(seed)
    history, _, _ = evaluation_arrays(run.dataset.test, run.config.data.max_length)
    vocab = run.vocabulary
    out = []
    for u in range(min(users, len(history))):
        items = [vocab[i] for i in history[u] if i > 0]
        older = [vocab[i] for i in rng.integers(1, len(vocab), size=u % 9)]  # some exceed L
        messy = []
        for item in older + items:
            messy.append(item)
            if rng.random() < 0.15:
                messy.append(rng.choice(["", f"unknown-{u}"]))
        out.append(messy)
    out.append([])  # no history
    out.append(["unknown-a", "unknown-b"])  # unknown ids only
    return out


def python_topk(run, histories, k):
    """What the Python model retrieves for raw-id histories (the export's wire semantics)."""
    length = run.config.data.max_length
    row_of = {raw: i for i, raw in enumerate(run.vocabulary) if i > 0}
    rows = np.zeros((len(histories), length), np.int32)
    for u, history in enumerate(histories):
        real = [row_of[s] for s in history if s in row_of][-length:]
        rows[u, :len(real)] = real
    interests = run.model.interests(tf.constant(rows))
    scores, ids = retrieve(interests, run.model.candidate_embeddings(), k)
    ids = ids.numpy()
    names = np.asarray(run.vocabulary, dtype=object)[np.maximum(ids, 0)]
    names[ids < 0] = ""
    return names.astype(str), scores.numpy(), interests.numpy()


def test_client_topk_equals_the_python_model(run_dir, served):
    server, _ = served
    run = load_run(run_dir)
    histories = raw_histories(run)
    want_ids, want_scores, want_interests = python_topk(run, histories, K_OUT)
    with client_lib.TopKClient(f"127.0.0.1:{server.port}", "dmi", users_per_request=16,
                               timeout=60) as client:
        assert client.exported_k() == K_OUT
        result = client.topk(histories)
        assert result.item_ids.astype(str).tolist() == want_ids.tolist()
        np.testing.assert_allclose(result.scores, want_scores, rtol=1e-5, atol=1e-5)
        top10 = client.topk(histories, k=10)
        assert top10.item_ids.astype(str).tolist() == want_ids[:, :10].tolist()
        interests = client.interests(histories)
        np.testing.assert_allclose(interests.interests, want_interests, rtol=1e-5, atol=1e-5)
        explanation = client.explain(histories[:3])
        length = run.config.data.max_length
        assert explanation.items.shape == (3, want_interests.shape[1], length)
        # Explained items come from the user's own history (its last L known items).
        known = set(run.vocabulary[1:])
        for u in range(3):
            used = {i for i in explanation.items[u].ravel() if i}
            last_l = [i for i in histories[u] if i in known][-length:]
            assert used and used <= set(last_l)
    rest = client_lib.RestTopKClient(f"127.0.0.1:{server.rest_port}", "dmi")
    assert rest.topk(histories[:5], k=10).item_ids.astype(str).tolist() == \
        want_ids[:5, :10].tolist()


def test_unknown_ids_are_counted_and_the_cli_names_them(run_dir, served, capsys):
    server, _ = served
    vocab = load_run(run_dir).vocabulary
    two_known = [vocab[1], "unknown-x", vocab[2]]
    with client_lib.TopKClient(f"127.0.0.1:{server.port}", "dmi", timeout=60) as client:
        result = client.topk([two_known, ["unknown-y"], [vocab[3], "", vocab[3]]])
        assert result.known_ids.tolist() == [2, 0, 2]
    target = ["--target", f"127.0.0.1:{server.port}", "--model", "dmi"]
    assert client_cli.main([*target, "--history", ",".join(two_known), "--k", "5"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("user 0") and "warning: user 0: 1 of 3 ids" in err
    assert err.strip().endswith("ignored: unknown-x")
    assert client_cli.main([*target, "--history", "unknown-x,unknown-y"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown-x, unknown-y" in err


def test_second_export_is_picked_up_under_load_without_a_failed_request(run_dir, served):
    server, base = served
    run = load_run(run_dir)
    histories = raw_histories(run, users=8)
    first = None

    def send(client, rng):
        users = [histories[i] for i in rng.integers(0, len(histories), size=3)]
        return client.topk(users, k=5).version

    def publish(versions):
        nonlocal first
        first = max(versions)
        export(run_dir, base)  # the next version number, written while requests flow

    versions, errors = versions_during_swap(server.port, "dmi", send, publish,
                                            lambda seen: seen[-1] != first,
                                            client_timeout=60, deadline=120)
    assert not errors, errors[:3]
    assert versions[-1] == first + 1
    assert len(versions) > 20
    with client_lib.TopKClient(f"127.0.0.1:{server.port}", "dmi") as client:
        states = {s.version: s.state for s in client.status()}
    assert states[first] == "END" and states[first + 1] == "AVAILABLE"


def test_scann_export_is_served_by_a_server_process_that_never_imports_dmi_tf(run_dir, tmp_path):
    # Stock TF-Serving cannot load this export; the local server imports scann for it.
    # Exhaustive, so the served answer must be the exact one.
    run = load_run(run_dir)
    base = str(tmp_path / "model_base")
    export(run_dir, base, index_config=exhaustive_scann(len(run.vocabulary) - 1))
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys, serving.server.cli as s; code = s.main(); "
         "assert not [m for m in sys.modules if m.split('.')[0] in ('dmi_tf', 'export')]; "
         "sys.exit(code)", "--model_base_path", os.path.join(base, "dmi"), "--port", "0",
         "--model_name", "dmi", "--enable_model_warmup", "false"],  # the export replayed it
        cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in process.stderr:
            lines.append(line)
            if match := re.search(r"Running gRPC ModelServer at [\d.]+:(\d+)", line):
                break
        assert match, "".join(lines[-20:])
        histories = raw_histories(run, users=20)
        want_ids, _, _ = python_topk(run, histories, K_OUT)
        with client_lib.TopKClient(f"127.0.0.1:{match.group(1)}", "dmi", timeout=60) as client:
            result = client.topk(histories)
        recall = np.mean([len(set(got) & set(want)) / K_OUT
                          for got, want in zip(result.item_ids.astype(str), want_ids, strict=True)])
        assert recall >= 0.99, recall  # all but float near-ties at the k-th slot
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, process.stderr.read()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
