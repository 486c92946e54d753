"""python -m export: the exported SavedModel answers what the Python model answers.

Tiny runs (DMI and ComiRec-SA, K=4; YouTube-DNN, K=1) are trained once and
exported once per session; the SavedModels are then loaded in fresh
processes that never import dmi_tf (nor scann, for the exact index), as
TF-Serving would load them.
"""

import concurrent.futures
import contextlib
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from helpers import exhaustive_scann
from tensorflow_serving.config import model_server_config_pb2

from dmi_tf import config as config_lib
from dmi_tf.data.pipeline import evaluation_arrays
from dmi_tf.errors import UserError
from dmi_tf.index import IndexConfig
from dmi_tf.io_utils import published_directory
from dmi_tf.retrieval import retrieve
from dmi_tf.runs import load_run
from dmi_tf.train import train_and_evaluate
from export import __main__ as export_cli
from export import exporter, gpu_check, tf_serving
from export.exporter import export_run
from serving import contract

K_OUT = 50  # items returned by the exported topk
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(model):
    return config_lib.load(None, [
        f"model.name={model}", "train.max_steps=100", "train.steps_per_eval=100",
        "data.synthetic.num_users=500", "data.synthetic.num_items=300",
        "data.synthetic.num_topics=10"])


def quiet_export(*args, **kwargs):
    """export_run with its log captured; returns (result, log)."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        result = export_run(*args, **kwargs)
    return result, log.getvalue()


class _Runs(dict):
    """Tiny trained runs by model name, each trained when a test first asks for it."""

    def __init__(self, tmp_path_factory):
        super().__init__()
        self._tmp = tmp_path_factory

    def __missing__(self, model):
        run_dir = str(self._tmp.mktemp(f"run_{model}"))
        with contextlib.redirect_stdout(io.StringIO()):
            train_and_evaluate(tiny_config(model), run_dir, verbose=0)
        self[model] = run_dir
        return run_dir


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    return _Runs(tmp_path_factory)


@pytest.fixture(scope="session")
def exports(runs, tmp_path_factory):
    """One model base holding the exact exports of both models and a ScaNN export."""
    base = str(tmp_path_factory.mktemp("model_base"))
    out = {"base": base}
    for model in ("dmi", "comirec_sa", "youtube_dnn"):
        out[model] = quiet_export(runs[model], base, k=K_OUT)
    # Exhaustive, so the exact answer is expected: checks the exported ScaNN path end to end.
    out["scann"] = quiet_export(runs["comirec_sa"], base, name="comirec_sa_scann", k=K_OUT,
                                index_config=exhaustive_scann(299))
    return out


def canonical_rows(strings, vocabulary, length):
    """Reference for the wire format: known non-empty ids, the last L, left-aligned, 0-padded."""
    row_of = {raw: i for i, raw in enumerate(vocabulary) if i > 0}
    rows = np.zeros((len(strings), length), np.int32)
    for u, history in enumerate(strings):
        real = [row_of[s] for s in history if s in row_of][-length:]
        rows[u, :len(real)] = real
    return rows


def messy_histories(run, users=40, seed=0):
    """Raw-id histories as clients may send them: "" anywhere, unknown ids, longer than L."""
    rng = np.random.default_rng(seed)
    length = run.config.data.max_length
    history, _, _ = evaluation_arrays(run.dataset.test, length)
    vocab = np.asarray(run.vocabulary, dtype=object)
    rows = []
    for u in range(min(users, len(history))):
        items = [vocab[i] for i in history[u] if i > 0]
        older = list(vocab[rng.integers(1, len(vocab), size=u % 7)])  # some users exceed L
        messy = [""]  # a leading "" keeps TF-Serving's variable-length padding ""
        for item in older + items:
            messy.append(item)
            if rng.random() < 0.2:
                messy.append("")
            if rng.random() < 0.1:
                messy.append(f"unknown-{rng.integers(1000)}")
        rows.append(messy)
    width = max(map(len, rows)) + 2
    return np.array([r + [""] * (width - len(r)) for r in rows], dtype=object)


FRESH_LOADER = textwrap.dedent("""
    import os, sys
    import numpy as np
    import tensorflow as tf
    model_dir, inputs, outputs = sys.argv[1:4]
    if len(sys.argv) > 4:
        import scann  # noqa: F401  (registers the Scann ops)
    histories = np.load(inputs, allow_pickle=True)["history"].astype(bytes)
    loaded = tf.saved_model.load(model_dir)
    result = {}
    for name in ("serving_default", "topk", "user_interests", "explain"):
        for key, value in loaded.signatures[name](history=tf.constant(histories)).items():
            result[name + "/" + key] = value.numpy()
    result["modules"] = np.array(sorted(m for m in sys.modules if m.split(".")[0] in
                                        ("dmi_tf", "scann", "tensorflow_recommenders", "tf_keras")))
    np.savez(outputs, **result)
""")


def fresh_load(tmp_path, model_dir, histories, import_scann=False):
    """Runs every signature in a new Python process that never imports dmi_tf; returns outputs."""
    script = tmp_path / "fresh_loader.py"
    script.write_text(FRESH_LOADER)
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inputs, history=histories)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    args = [sys.executable, str(script), model_dir, str(inputs), str(outputs)]
    proc = subprocess.run(args + (["scann"] if import_scann else []), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(outputs, allow_pickle=True) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dmi", "comirec_sa", "youtube_dnn"])
def test_fresh_process_answers_what_the_python_model_answers(runs, exports, model, tmp_path):
    run = load_run(runs[model])
    result, _ = exports[model]
    strings = messy_histories(run)
    out = fresh_load(tmp_path, result.path, strings)
    assert list(out["modules"]) == []  # no dmi_tf, scann, TFRS or tf_keras in that process

    rows = canonical_rows(strings, run.vocabulary, run.config.data.max_length)
    table = run.model.candidate_embeddings()
    interests = run.model.interests(tf.constant(rows))
    scores, ids = retrieve(interests, table, K_OUT)
    vocab = np.asarray(run.vocabulary, dtype=object)
    want_ids = np.where(ids.numpy() >= 0, vocab[np.maximum(ids.numpy(), 0)], "").astype(str)
    # Every item's own score: its best inner product over the user's interests.
    true_scores = np.max(np.einsum("bkd,md->bkm", interests.numpy(), table.numpy()), axis=1)
    row_of = {raw: i for i, raw in enumerate(run.vocabulary)}
    for signature in ("serving_default", "topk"):
        got_ids = out[f"{signature}/item_ids"].astype(str)
        got_scores = out[f"{signature}/scores"]
        np.testing.assert_allclose(got_scores, scores.numpy(), rtol=1e-5, atol=1e-5)
        got_rows = np.vectorize(row_of.get)(got_ids)
        np.testing.assert_allclose(np.take_along_axis(true_scores, got_rows, axis=1), got_scores,
                                   rtol=1e-5, atol=1e-5)  # each returned score is the item's own
        assert all(len(set(r)) == K_OUT for r in got_ids)
        # Same ids, bar items whose scores tie to float round-off: the saved graph and eager
        # Python may round the last bit differently and so order near-ties differently.
        swapped = got_ids != want_ids
        assert swapped.mean() < 0.01, swapped.mean()
        np.testing.assert_allclose(np.take_along_axis(true_scores, got_rows, axis=1)[swapped],
                                   scores.numpy()[swapped], rtol=1e-5, atol=1e-5)
    assert out["topk/item_ids"].shape == (len(strings), K_OUT)
    # Every known id counts, also those older than the last L the model reads.
    known = [sum(s in row_of and s != "" for s in history) for history in strings]
    assert out["topk/known_ids"].tolist() == out["serving_default/known_ids"].tolist() == known

    np.testing.assert_allclose(out["user_interests/interests"],
                               run.model.interests(tf.constant(rows)).numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(out["user_interests/coarse_interests"],
                               run.model.coarse_interests(tf.constant(rows)).numpy(), rtol=1e-5,
                               atol=1e-6)
    weights = run.model.explain(tf.constant(rows)).numpy()
    np.testing.assert_allclose(out["explain/weights"], weights, rtol=1e-5, atol=1e-6)
    want_items = np.where(weights > 0, vocab[rows][:, None, :], "").astype(str)
    np.testing.assert_array_equal(out["explain/items"].astype(str), want_items)


@pytest.mark.slow
def test_history_wire_format_drops_padding_and_unknown_ids_and_keeps_the_last_l(runs, exports):
    run = load_run(runs["comirec_sa"])
    loaded = tf.saved_model.load(exports["comirec_sa"][0].path)
    v, length = run.vocabulary, run.config.data.max_length
    long = [v[i] for i in range(1, length + 6)]  # L + 5 items: the first 5 are dropped
    same_items = [
        ["", *long],
        ["", *long[:3], "", "nope", *long[3:], "", ""],
        [*long[5:], "", "", "also-unknown"],
    ]
    width = max(map(len, same_items))
    batch = tf.constant([r + [""] * (width - len(r)) for r in same_items])
    out = loaded.signatures["explain"](history=batch)["items"].numpy().astype(str)
    kept = [s for s in out[0, 0] if s]  # ComiRec-SA attends over every real item
    assert kept == long[5:]
    assert (out == out[0]).all()
    empty = loaded.signatures["topk"](history=tf.constant([["", "unknown"]]))
    assert empty["item_ids"].shape == (1, K_OUT)  # padding-only history still answers


@pytest.mark.slow
def test_saved_model_cli_lists_every_signature_with_documented_dtypes_and_shapes(runs, exports):
    result, _ = exports["comirec_sa"]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    command = ([cli] if os.path.exists(cli) else
               [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    shown = subprocess.run([*command, "show", "--dir", result.path, "--all"], env=env,
                           capture_output=True, text=True, timeout=300, check=True).stdout
    k_int, length = 4, 20
    expected = {
        "serving_default": {"item_ids": ("DT_STRING", f"(-1, {K_OUT})"),
                            "scores": ("DT_FLOAT", f"(-1, {K_OUT})"),
                            "known_ids": ("DT_INT32", "(-1)")},
        "topk": {"item_ids": ("DT_STRING", f"(-1, {K_OUT})"),
                 "scores": ("DT_FLOAT", f"(-1, {K_OUT})"),
                 "known_ids": ("DT_INT32", "(-1)")},
        "user_interests": {"interests": ("DT_FLOAT", f"(-1, {k_int}, 64)"),
                           "coarse_interests": ("DT_FLOAT", f"(-1, {k_int}, 64)")},
        "explain": {"items": ("DT_STRING", f"(-1, {k_int}, {length})"),
                    "weights": ("DT_FLOAT", f"(-1, {k_int}, {length})")},
    }
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:\n(.*?)Method name is", shown, re.S))
    assert set(expected) <= set(blocks), shown[:2000]
    tensor = r"\['{}'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([-\d, ]*\))"
    for signature, outputs in expected.items():
        inputs_part, outputs_part = blocks[signature].split("following output(s):")
        assert re.findall(tensor.format("history"), inputs_part) == [("DT_STRING", "(-1, -1)")]
        assert len(re.findall(r"tensor_info:", inputs_part)) == 1
        for key, (dtype, shape) in outputs.items():
            assert re.findall(tensor.format(key), outputs_part) == [(dtype, shape)], signature
        assert len(re.findall(r"tensor_info:", outputs_part)) == len(outputs)


@pytest.mark.slow
def test_every_op_of_the_exact_export_has_a_gpu_kernel_or_is_a_host_op(exports):
    for model in ("dmi", "comirec_sa", "youtube_dnn"):
        result, log = exports[model]
        for signature in contract.SIGNATURES:
            assert gpu_check.ops_without_gpu_kernel(result.path, signature) == {}, signature
        assert result.host_only_ops == {}
        assert "GPU check: every op" in log
    ops = gpu_check.op_counts(exports["comirec_sa"][0].path, "topk")
    # The retrieval itself is in the checked graph: MatMul scores, TopKV2 ranks.
    assert ops["MatMul"] >= 1 and ops["TopKV2"] >= 1 and ops["LookupTableFindV2"] == 2


@pytest.mark.slow
def test_dmi_export_reads_its_folded_weight_products_instead_of_recomputing_them(exports):
    # Unfolded, the query tower tiles the key and value kernels per head (two Tile ops) and
    # runs the step-embedding MLP (Tanh beside ComiRec-SA's own) on every request.
    for signature in ("topk", "user_interests"):
        ops = gpu_check.op_counts(exports["dmi"][0].path, signature)
        assert "Tile" not in ops, signature
        backbone_tanh = gpu_check.op_counts(exports["comirec_sa"][0].path, signature)["Tanh"]
        assert ops["Tanh"] == backbone_tanh, signature


@pytest.mark.slow
def test_wide_catalogue_retrieval_ops_have_gpu_kernels(tmp_path):
    # The small exports above score one block with one top-k; a catalogue
    # wider than a block (static slices) and than the two-stage top-k's
    # threshold (chunk maxima, PadV2, int32 TopKV2) must be GPU-servable too.
    module = tf.Module()
    module.items = tf.Variable(np.zeros((30_001, 4), np.float32))
    module.f = tf.function(
        lambda interests: dict(zip(("scores", "ids"),
                                   retrieve(interests, module.items, 50, block_size=16_384),
                                   strict=True)),
        input_signature=[tf.TensorSpec([None, 4, 4], tf.float32)])
    tf.saved_model.save(module, str(tmp_path), signatures={"f": module.f.get_concrete_function()})
    ops = gpu_check.op_counts(str(tmp_path), "f")
    assert ops["MatMul"] == 2 and ops["PadV2"] >= 1 and ops["TopKV2"] >= 6
    assert gpu_check.ops_without_gpu_kernel(str(tmp_path), "f") == {}


@pytest.mark.slow
def test_gpu_check_reports_an_op_without_gpu_kernel(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda s: {"bucket": tf.strings.to_hash_bucket_fast(s, 10)},
                           input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path), signatures={"f": module.f.get_concrete_function()})
    assert "StringToHashBucketFast" in gpu_check.ops_without_gpu_kernel(str(tmp_path), "f")


@pytest.mark.slow
def test_warmup_records_parse_and_replay(exports, tmp_path):
    result, log = exports["comirec_sa"]
    path = os.path.join(result.path, contract.WARMUP_FILE)
    records = tf_serving.read_warmup(path)
    assert 0 < len(records) <= contract.MAX_WARMUP_RECORDS
    signatures = {r.predict_log.request.model_spec.signature_name for r in records}
    assert signatures == set(contract.SIGNATURES)
    sizes = {tf.make_ndarray(r.predict_log.request.inputs["history"]).shape[0] for r in records}
    assert sizes == set(tf_serving.allowed_batch_sizes(128))
    for r in records:
        history = tf.make_ndarray(r.predict_log.request.inputs["history"])
        assert (history[:, 0] == b"").all()  # TF-Serving pads with the first element
        assert r.predict_log.request.model_spec.name == "comirec_sa"
    assert tf_serving.replay_warmup(result.path) == len(records)
    assert f"warm-up: {len(records)} records replayed" in log

    # One bad record fails the replay, naming it (as it would fail the server's load).
    copy = str(tmp_path / "copy")
    shutil.copytree(result.path, copy)
    bad = records[:3]
    bad[2].predict_log.request.model_spec.signature_name = "no_such_signature"
    tf_serving.write_warmup(os.path.join(copy, contract.WARMUP_FILE), bad)
    with pytest.raises(tf_serving.ExportError, match=r"warm-up record 2 .*no_such_signature"):
        tf_serving.replay_warmup(copy)
    with pytest.raises(tf_serving.ExportError, match="at most 1000"):
        tf_serving.write_warmup(str(tmp_path / "many"), records * 60)


@pytest.mark.slow
def test_models_config_and_batching_parameters_are_valid_tf_serving_files(exports):
    base = exports["base"]
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(open(os.path.join(base, "models.config")).read(), config)
    models = {m.name: m for m in config.model_config_list.config}
    assert set(models) == {"dmi", "comirec_sa", "youtube_dnn", "comirec_sa_scann"}
    for name, m in models.items():
        assert m.base_path == f"/models/{name}" and m.model_platform == "tensorflow"
        assert m.model_version_policy.latest.num_versions == 1

    fields = {}
    for line in open(os.path.join(base, "batching_parameters.txt")).read().splitlines():
        match = re.fullmatch(r"(\w+)(?: \{ value: (\d+) \}|: (\w+))", line)
        assert match, line
        key, wrapped, plain = match.groups()
        assert key in tf_serving.BATCHING_FIELDS, key
        kind = tf_serving.BATCHING_FIELDS[key]
        assert (wrapped is not None) == kind.endswith("Value"), line
        fields.setdefault(key, []).append(wrapped or plain)
    sizes = [int(s) for s in fields["allowed_batch_sizes"]]
    assert sizes == sorted(set(sizes)) and sizes[-1] == int(fields["max_batch_size"][0])
    # TF-Serving pads a batch to the next allowed size: a lone request must stay at 1.
    assert sizes[0] == 1 and all(b <= 2 * a for a, b in itertools.pairwise(sizes))
    assert fields["pad_variable_length_inputs"] == ["true"]


@pytest.mark.slow
def test_item_embeddings_are_written_with_raw_ids(runs, exports):
    run = load_run(runs["comirec_sa"])
    extra = os.path.join(exports["comirec_sa"][0].path, "assets.extra")
    embeddings = np.load(os.path.join(extra, "item_embeddings.npy"))
    np.testing.assert_array_equal(embeddings, run.model.candidate_embeddings().numpy()[1:])
    ids = open(os.path.join(extra, "item_ids.txt"), encoding="utf-8").read().splitlines()
    assert ids == run.vocabulary[1:]
    info = json.load(open(os.path.join(extra, "export.json")))
    assert info["exact"] and info["requires_custom_ops"] == [] and info["k"] == K_OUT
    # The exact index reads the model's own table: the SavedModel stores it once.
    saved = tf.train.list_variables(os.path.join(exports["comirec_sa"][0].path, "variables",
                                                 "variables"))
    table_shape = [len(run.vocabulary), embeddings.shape[1]]
    assert [shape for _, shape in saved].count(table_shape) == 1


@pytest.mark.slow
def test_scann_export_needs_scann_ops_and_approximates_the_exact_export(runs, exports, tmp_path):
    result, log = exports["scann"]
    assert "stock TF-Serving" in log and "cannot load it" in log
    info = json.load(open(os.path.join(result.path, "assets.extra", "export.json")))
    assert info["requires_custom_ops"] == ["Scann"] and not info["exact"]

    run = load_run(runs["comirec_sa"])
    strings = messy_histories(run, users=20)
    out = fresh_load(tmp_path, result.path, strings, import_scann=True)
    exact = fresh_load(tmp_path, exports["comirec_sa"][0].path, strings)
    got, want = out["topk/item_ids"], exact["topk/item_ids"]
    recall = np.mean([len(set(g) & set(w)) / K_OUT for g, w in zip(got, want, strict=True)])
    assert recall >= 0.99, recall  # all but float near-ties at the k-th slot

    # Without the ScaNN ops (as in stock TF-Serving) the model cannot load.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run([sys.executable, "-c", "import sys, tensorflow as tf; "
                           "tf.saved_model.load(sys.argv[1])", result.path],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Scann" in proc.stderr


@pytest.mark.slow
def test_versions_count_up_and_are_immutable(runs, tmp_path):
    base = str(tmp_path)
    first, _ = quiet_export(runs["youtube_dnn"], base, k=10)
    second, _ = quiet_export(runs["youtube_dnn"], base, k=10)
    assert (first.version, second.version) == (1, 2)
    assert exporter.versions(os.path.join(base, "youtube_dnn")) == [1, 2]
    with pytest.raises(UserError, match="already exists"):
        quiet_export(runs["youtube_dnn"], base, version=2, k=10)


@pytest.mark.slow
def test_non_ascii_item_ids_are_exported_and_looked_up(runs, tmp_path):
    # prepare and train take any UTF-8 id; the export encoded them as ASCII
    # (UnicodeEncodeError while writing the warm-up records).
    run_dir = tmp_path / "run"
    shutil.copytree(runs["youtube_dnn"], run_dir)
    vocabulary = (run_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    names = ["", *(f"café-日本-{i}\u2028x" if i % 2 else f"Ünïcode-{i}"
                   for i in range(1, len(vocabulary)))]
    (run_dir / "vocabulary.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    result, _ = quiet_export(str(run_dir), str(tmp_path / "base"), k=5)
    loaded = tf.saved_model.load(result.path)
    history = np.array([[contract.encode_id(n) for n in ("", names[1], names[2], "nope")]],
                       dtype=object)
    out = loaded.signatures[contract.TOPK](history=tf.constant(history))
    assert out[contract.KNOWN_IDS].numpy().tolist() == [2]
    returned = [contract.decode_id(b) for b in out[contract.ITEM_IDS].numpy()[0]]
    assert set(returned) <= set(names[1:])
    ids_file = os.path.join(result.path, contract.ASSETS_EXTRA, exporter.ITEM_IDS_FILE)
    assert open(ids_file, encoding="utf-8").read().split("\n")[:-1] == names[1:]


@pytest.mark.slow
def test_rows_layout_stores_the_item_table_once(runs, tmp_path):
    # The default exact index scores a transposed copy of the table: it is stored
    # twice. With layout rows the index scores the model's own variable.
    sizes = {}
    for layout in ("columns", "rows"):
        result, _ = quiet_export(runs["comirec_sa"], str(tmp_path / layout), k=10,
                                 index_config=IndexConfig(layout=layout))  # parity checked
        with open(os.path.join(result.path, "assets.extra", "export.json")) as f:
            assert json.load(f)["index"]["layout"] == layout
        folder = os.path.join(result.path, "variables")
        sizes[layout] = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
    table = load_run(runs["comirec_sa"]).model.candidate_embeddings()
    table_bytes = int(np.prod(table.shape)) * 4
    assert sizes["columns"] - sizes["rows"] == pytest.approx(table_bytes - table.shape[1] * 4,
                                                             abs=4096)


@pytest.mark.slow
def test_interrupted_export_leaves_no_version_directory(runs, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "_check_parity", interrupt)
    with pytest.raises(KeyboardInterrupt):
        quiet_export(runs["youtube_dnn"], str(tmp_path), k=10)
    assert os.listdir(tmp_path / "youtube_dnn") == []  # neither a version nor a partial dir


def test_published_directory_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "1"
    with pytest.raises(KeyboardInterrupt), published_directory(final, ".1.partial-") as tmp:
        (Path(tmp) / "half").write_text("x")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    with published_directory(final, ".1.partial-") as tmp:
        assert os.path.basename(tmp).startswith(".1.partial-")
        (Path(tmp) / "whole").write_text("x")
    assert os.listdir(tmp_path) == ["1"] and os.listdir(final) == ["whole"]
    final.with_name("2").mkdir()  # an empty directory a rename would silently replace
    with pytest.raises(FileExistsError), published_directory(final.with_name("2"), ".2.") as tmp:
        (Path(tmp) / "other").write_text("x")
    assert sorted(os.listdir(tmp_path)) == ["1", "2"] and os.listdir(tmp_path / "2") == []


@pytest.mark.slow
def test_killed_export_leaves_no_version_directory(runs, tmp_path):
    base = tmp_path / "base"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "export", "--run", runs["youtube_dnn"],
                             "--out", str(base), "--k", "10"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    model_dir = base / "youtube_dnn"
    deadline = time.monotonic() + 240
    try:
        # Kill it once the SavedModel is on disk, before the version is published.
        while time.monotonic() < deadline and proc.poll() is None:
            partial = (list(model_dir.glob(".1.partial-*/saved_model.pb"))
                       if model_dir.exists() else [])
            if partial:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert partial, "the export finished before it could be killed"
    assert exporter.versions(str(model_dir)) == []
    # The leftover hidden directory is not a version, and the next export publishes 1 and
    # removes it (its writer is dead); a live writer's directory is left alone.
    leftover = partial[0].parent.name
    live = model_dir / f".7.partial-{socket.gethostname()}-{os.getpid()}-x"
    live.mkdir()
    result, log = quiet_export(runs["youtube_dnn"], str(base), k=10)
    assert result.version == 1
    assert sorted(os.listdir(model_dir)) == sorted(["1", live.name])
    assert f"removed {leftover}, left by an export that was killed" in log


@pytest.mark.slow
def test_cli_errors_name_the_cause(runs, tmp_path, capsys):
    code = export_cli.main(["--run", str(tmp_path / "nope"), "--out", str(tmp_path / "b")])
    assert code == 2 and "is not a run directory" in capsys.readouterr().err
    code = export_cli.main(["--run", runs["most_popular"], "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "cannot be exported" in err
    code = export_cli.main(["--run", runs["youtube_dnn"], "--out", str(tmp_path / "b"),
                            "--k", "100000"])
    assert code == 2 and "--k 100000" in capsys.readouterr().err
    assert not (tmp_path / "b" / "youtube_dnn").exists() or not exporter.versions(
        str(tmp_path / "b" / "youtube_dnn"))


@pytest.mark.slow
def test_hand_tuned_batching_is_kept_and_a_bad_models_config_stops_before_publishing(
        runs, tmp_path, capsys):
    base = tmp_path / "base"
    base.mkdir()
    tuned = "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 250 }\n"
    (base / tf_serving.BATCHING_FILE).write_text(tuned)
    assert export_cli.main(["--run", runs["youtube_dnn"], "--out", str(base), "--k", "10"]) == 0
    assert "kept the existing batching_parameters.txt" in capsys.readouterr().out
    assert (base / tf_serving.BATCHING_FILE).read_text() == tuned  # it used to be overwritten
    # Asked for by flag, it is replaced.
    assert export_cli.main(["--run", runs["youtube_dnn"], "--out", str(base), "--k", "10",
                            "--max-batch-size", "64"]) == 0
    assert "max_batch_size { value: 64 }" in (base / tf_serving.BATCHING_FILE).read_text()
    # A models.config the export cannot update: exit 2 with nothing published (it used to
    # publish the version, then fail).
    (base / "models.config").write_text("model_config_list { config { name: ")
    capsys.readouterr()
    assert export_cli.main(["--run", runs["youtube_dnn"], "--out", str(base), "--k", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "models.config is not a readable" in err
    assert exporter.versions(str(base / "youtube_dnn")) == [1, 2]
    assert not [n for n in os.listdir(base / "youtube_dnn") if n.startswith(".")]


@pytest.mark.slow
def test_a_diverged_checkpoint_is_never_exported(runs, tmp_path, capsys):
    # A NaN checkpoint passed the parity check (NaN == NaN in its tolerance test) and was
    # published; served, every score was -3.4e38.
    run_dir = tmp_path / "run"
    shutil.copytree(runs["youtube_dnn"], run_dir)
    run = load_run(str(run_dir))
    for variable in run.model.trainable_variables:
        variable.assign(tf.fill(variable.shape, np.float32("nan")))
    tf.train.Checkpoint(model=run.model).write(run.checkpoint)
    code = export_cli.main(["--run", str(run_dir), "--out", str(tmp_path / "base"), "--k", "10"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "holds non-finite weights" in err, err
    assert "lower train.learning_rate" in err and len(err.splitlines()) == 1
    assert exporter.versions(str(tmp_path / "base" / "youtube_dnn")) == []


@pytest.mark.slow
def test_unusable_out_and_unreadable_runs_are_one_error_line(runs, tmp_path, capsys):
    # Tracebacks with exit 1 before.
    (tmp_path / "file").write_text("")
    cases = [(["--run", runs["youtube_dnn"], "--out", str(tmp_path / "file" / "base")],
              "cannot write to --out"),
             (["--run", runs["youtube_dnn"], "--out", "/sys/dmi-tf-test-base"],
              "cannot write to --out '/sys/dmi-tf-test-base'")]
    broken = tmp_path / "broken"
    shutil.copytree(runs["youtube_dnn"], broken)
    (broken / "vocabulary.txt").write_bytes(b"\n\xff\xfe\n")
    cases.append((["--run", str(broken), "--out", str(tmp_path / "b")], "cannot read the run"))
    truncated = tmp_path / "truncated"
    shutil.copytree(runs["youtube_dnn"], truncated)
    for index in (truncated / "checkpoints").glob("*.index"):
        index.write_bytes(index.read_bytes()[:20])
    cases.append((["--run", str(truncated), "--out", str(tmp_path / "b")], "cannot restore"))
    for args, message in cases:
        assert export_cli.main([*args, "--k", "10"]) == 2, message
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


def test_parity_check_tolerates_only_near_tie_reordering():
    want_ids = np.array([["a", "b", "c"]])
    want = np.array([[3.0, 2.0, 2.0 - 1e-7]], np.float32)
    same = exporter.topk_differences(want_ids, want, want_ids, want)
    swapped = exporter.topk_differences(np.array([["a", "c", "b"]]), want, want_ids, want)
    boundary = exporter.topk_differences(np.array([["a", "b", "d"]]), want, want_ids, want)
    assert same == swapped == boundary == []  # "d" ties the k-th score within round-off
    wrong = exporter.topk_differences(np.array([["b", "a", "c"]]), want, want_ids, want)
    assert wrong and "item 'b'" in wrong[0]
    off = exporter.topk_differences(want_ids, want + np.array([[0.0, 0.0, 0.5]]), want_ids, want)
    assert off and "score" in off[0]


def test_concurrent_models_config_updates_keep_every_model(tmp_path):
    path = str(tmp_path / "models.config")
    names = [f"model_{i}" for i in range(8)]

    def add(name):
        for _ in range(20):  # many read-update-write rounds, so unlocked ones would interleave
            tf_serving.update_models_config(path, name, f"/models/{name}")

    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(add, names))
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(open(path).read(), config)
    assert sorted(m.name for m in config.model_config_list.config) == names
