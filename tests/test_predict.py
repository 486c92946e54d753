"""Batch inference (python -m dmi_tf.predict): readers, shards, the raw-id mapping, parity with
the export's topk, an ANN engine's view (NumPy brute force), and resuming after a kill."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf import raw_ids
from dmi_tf.console import Progress
from dmi_tf.errors import DataError, UserError
from dmi_tf.predict import predict
from dmi_tf.predict.cli import main
from dmi_tf.predict.histories import HistoryReader, detect_format
from dmi_tf.predict.inference import Predictor
from dmi_tf.predict.shards import ShardFolder, read_shards
from export.exporter import topk_differences

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORIES = [("u1", ["a", "b"]), ("u2", []), ("u3", ["c", "", "zz"])]


def test_readers(tmp_path):
    (tmp_path / "h.csv").write_text("u1,a,b\n\nu2\nu3,c,,zz\n")
    (tmp_path / "h.jsonl").write_text("".join(json.dumps({"user": u, "history": h}) + "\n"
                                              for u, h in HISTORIES))
    with gzip.open(tmp_path / "h.csv.gz", "wt") as f:
        f.write("u1,a,b\nu2\nu3,c,,zz\n")
    for name in ("h.csv", "h.jsonl", "h.csv.gz"):
        reader = HistoryReader(str(tmp_path / name), detect_format(str(tmp_path / name)))
        assert list(reader) == HISTORIES
        assert reader.position == reader.size
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "item_map.txt").write_text("a,1\nb,2\nc,3\n")
    # Each user's lines together, by position (not file order); index 9 has no raw id.
    (folder / "test.txt").write_text("7,2,1,50\n7,1,0,40\n3,3,0,10\n3,9,1,20\n")
    assert detect_format(str(folder / "test.txt")) == "split"
    assert list(HistoryReader(str(folder / "test.txt"), "split")) == [("7", ["a", "b"]),
                                                                      ("3", ["c", "9"])]


@pytest.mark.parametrize("name, fmt, text, problem", [
    ("h.csv", "csv", ",a,b\n", "no user id"),
    ("h.jsonl", "jsonl", '{"user": "u1", "history": "a"}\n', "not a JSON object"),
    ("h.jsonl", "jsonl", "not json\n", "not a JSON object"),
    ("test.txt", "split", "1,2\n", "has no item_map.txt beside it"),
])
def test_reader_errors(tmp_path, name, fmt, text, problem):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=problem):
        list(HistoryReader(str(tmp_path / name), fmt))


def test_reader_errors_before_reading(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        HistoryReader(str(tmp_path), "csv")
    with pytest.raises(DataError, match="does not exist"):
        HistoryReader(str(tmp_path / "none.csv"), "csv")
    with pytest.raises(DataError, match="pass --format"):
        detect_format(str(tmp_path / "histories.bin"))
    (tmp_path / "item_map.txt").write_text("a,1\n")
    (tmp_path / "valid.txt").write_text("1,2,0\n1,x,1\n")
    with pytest.raises(DataError, match=r"valid\.txt:2: malformed line"):
        list(HistoryReader(str(tmp_path / "valid.txt"), "split"))


def test_shard_folder(tmp_path):
    settings = {"run": "/r", "k": 5}
    folder = ShardFolder(str(tmp_path / "out"), settings)
    folder.write(1, {"users": np.array(["c"]), "scores": np.ones([1, 2], np.float32)})
    folder.write(0, {"users": np.array(["a", "b"]), "scores": np.zeros([2, 2], np.float32)})
    (tmp_path / "out" / ".part-00002.npz.123.tmp").write_bytes(b"half")  # a killed write
    again = ShardFolder(str(tmp_path / "out"), settings)
    assert again.complete_shards == {0, 1} and not again.finished()
    assert not (tmp_path / "out" / ".part-00002.npz.123.tmp").exists()
    shards = read_shards(str(tmp_path / "out"))
    assert shards["users"].tolist() == ["a", "b", "c"] and shards["scores"].shape == (3, 2)
    with pytest.raises(UserError, match="holds the output of another prediction \\(k: 5 there, "
                                        "6 here\\)"):
        ShardFolder(str(tmp_path / "out"), {"run": "/r", "k": 6})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"not empty and holds no predict\.json"):
        ShardFolder(str(tmp_path / "other"), settings)
    again.finish({"users": 3})
    assert ShardFolder(str(tmp_path / "out"), settings).finished()


def test_parquet_shards(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    folder = ShardFolder(str(tmp_path), {}, "parquet")
    folder.write(0, {"users": np.array(["a", "b"]),
                     "interests": np.arange(12, dtype=np.float32).reshape(2, 3, 2)})
    table = pq.read_table(tmp_path / "part-00000.parquet").to_pylist()
    assert table[1] == {"users": "b", "interests": [[6, 7], [8, 9], [10, 11]]}


def test_progress_lines(capsys):
    progress = Progress(1000, "users", interval=0.0, stream=sys.stdout)
    progress.update(10, 250)
    assert capsys.readouterr().out.startswith(" 25.0% | 10 users, ")


def test_ragged_windows_are_the_export_windows(tmp_path):
    vocabulary = ["", *(f"i{n}" for n in range(30))]
    row_of, _ = raw_ids.lookup_tables(raw_ids.write_vocabulary_file(vocabulary, str(tmp_path)),
                                      len(vocabulary))
    rng = np.random.default_rng(0)
    pool = [*vocabulary[1:], "", "unknown", "x"]
    histories = [list(rng.choice(pool, size=n)) for n in (0, 3, 7, 40, 1, 12)]
    width = max(map(len, histories))
    dense = tf.constant([h + [""] * (width - len(h)) for h in histories])
    want = raw_ids.history_rows(row_of, dense, 8)
    flat = tf.constant([raw for h in histories for raw in h], tf.string)
    got = raw_ids.ragged_history_rows(row_of, flat, tf.constant([len(h) for h in histories]), 8)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_baselines_and_bad_arguments_are_refused(tmp_path):
    run = tmp_path / "knn"
    run.mkdir()
    (run / "config.yaml").write_text(config_lib.dump_yaml(config_lib.load(
        None, ["model.name=item_knn"])))
    (run / "vocabulary.txt").write_text("\na\nb\n")
    with pytest.raises(UserError, match="item_knn baseline: it has no user tower"):
        Predictor(str(run))
    with pytest.raises(UserError, match="choose from topk, interests, explain, items"):
        Predictor(str(run), outputs=("scores",))
    (tmp_path / "h.csv").write_text("u,a\n")
    assert main(["--run", str(run), "--histories", str(tmp_path / "h.csv"),
                 "--out", str(tmp_path / "o")]) == 2
    assert main(["--run", str(run), "--histories", str(tmp_path / "h.csv"),
                 "--out", str(tmp_path / "o"), "--shard-users", "0"]) == 2


# --- with a trained run and its export --------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny DMI run (K = 4), its export (k = 20), and raw-id histories of its validation users
    with unknown ids, padding and long histories mixed in."""
    from dmi_tf.data.pipeline import evaluation_arrays
    from dmi_tf.runs import load_run
    from dmi_tf.train import train_and_evaluate
    from export.exporter import export_run

    root = tmp_path_factory.mktemp("predict")
    config = config_lib.load(None, [
        "model.name=dmi", "train.max_steps=100", "train.steps_per_eval=100",
        "data.synthetic.num_users=500", "data.synthetic.num_items=300",
        "data.synthetic.num_topics=10"])
    run_dir = str(root / "run")
    train_and_evaluate(config, run_dir, verbose=0)
    export_run(run_dir, str(root / "models"), k=20)
    run = load_run(run_dir)
    history, _, _ = evaluation_arrays(run.dataset.valid, 20)
    rng = np.random.default_rng(1)
    histories = []
    for row in history:
        ids = [run.vocabulary[i] for i in row if i]
        if len(histories) % 3 == 0:
            ids = ["nope", *ids, "", "zz"]
        if len(histories) % 5 == 0:
            ids = [run.vocabulary[i] for i in rng.integers(1, len(run.vocabulary), 45)] + ids
        histories.append(ids)
    histories += [[], ["unknown"]]
    path = root / "histories.jsonl"
    path.write_text("".join(json.dumps({"user": f"u{n}", "history": h}) + "\n"
                            for n, h in enumerate(histories)))
    loaded = tf.saved_model.load(str(root / "models" / "dmi" / "1"))
    width = max(map(len, histories)) + 1
    wire = tf.constant([[""] + h + [""] * (width - 1 - len(h)) for h in histories])
    answer = {key: value.numpy() for key, value in loaded.signatures["topk"](history=wire).items()}
    return {"root": root, "run": run_dir, "histories": str(path), "n": len(histories),
            "export": answer, "version": root / "models" / "dmi" / "1"}


@pytest.mark.slow
def test_predict_topk_equals_the_exported_topk(exported):
    out = str(exported["root"] / "out")
    manifest = predict(exported["run"], exported["histories"], out, k=20,
                       outputs=("topk", "interests", "explain", "items"), batch_size=16,
                       shard_users=50, progress=False)
    assert manifest["users"] == exported["n"] and manifest["shards"] == -(-exported["n"] // 50)
    got = read_shards(out)
    assert got["users"].tolist() == [f"u{n}" for n in range(exported["n"])]
    want = exported["export"]
    # Ids and scores, to float rounding (the batches differ; near-ties may swap places).
    assert topk_differences(got["item_ids"], got["scores"], want["item_ids"].astype(str),
                            want["scores"]) == []
    np.testing.assert_array_equal(got["known_ids"], want["known_ids"])
    assert got["interests"].shape == (exported["n"], 4, 64)
    assert got["items"].shape == got["weights"].shape == (exported["n"], 4, 20)
    # The item table written beside the shards is the export's.
    extra = exported["version"] / "assets.extra"
    np.testing.assert_array_equal(np.load(os.path.join(out, "item_embeddings.npy")),
                                  np.load(extra / "item_embeddings.npy"))
    assert open(os.path.join(out, "item_ids.txt")).read() == (extra / "item_ids.txt").read_text()


@pytest.mark.slow
def test_an_ann_engine_with_the_documented_merge_finds_the_exported_topk(exported):
    """Brute force in NumPy stands for Faiss: per interest, the top-k items by inner product
    over item_embeddings.npy; then the documented merge (all K·k candidates by score, each item
    once with its best score, ties to the earlier row, top k)."""
    out = str(exported["root"] / "ann")
    predict(exported["run"], exported["histories"], out, k=20, outputs=("interests", "items"),
            progress=False)
    interests = read_shards(out)["interests"]  # [users, K, d]
    table = np.load(os.path.join(out, "item_embeddings.npy"))  # [items, d]
    ids = np.array(open(os.path.join(out, "item_ids.txt")).read().split("\n")[:-1])
    k, want = 20, exported["export"]
    scores = np.einsum("ukd,md->ukm", interests, table)
    got_ids, got_scores = [], []
    for user in range(len(interests)):
        candidates = {}
        for per_interest in scores[user]:
            for row in np.argsort(-per_interest, kind="stable")[:k]:
                candidates[row] = max(candidates.get(row, -np.inf), per_interest[row])
        merged = sorted(candidates.items(), key=lambda pair: (-pair[1], pair[0]))[:k]
        got_ids.append([ids[row] for row, _ in merged])
        got_scores.append([score for _, score in merged])
    assert topk_differences(np.array(got_ids), np.array(got_scores, np.float32),
                            want["item_ids"].astype(str), want["scores"]) == []


@pytest.mark.slow
def test_a_killed_predict_resumes_without_duplicate_or_missing_rows(exported, tmp_path):
    # Many users, small shards: the kill lands between shards or in the middle of one.
    lines = open(exported["histories"]).read().splitlines()
    big = tmp_path / "big.jsonl"
    with open(big, "w") as f:
        for n in range(3000):
            record = json.loads(lines[n % len(lines)])
            f.write(json.dumps({"user": f"user{n}", "history": record["history"]}) + "\n")
    command = [sys.executable, "-m", "dmi_tf.predict", "--run", exported["run"], "--histories",
               str(big), "--k", "20", "--shard-users", "100", "--batch-size", "50"]
    out = tmp_path / "out"
    process = subprocess.Popen([*command, "--out", str(out)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if len([n for n in os.listdir(out) if n.startswith("part-")]) >= 3 if out.exists() \
                else False:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    assert 3 <= len(written) < 30, "the kill should land mid-way"
    assert not json.load(open(out / "predict.json")).get("complete")
    subprocess.run([*command, "--out", str(out)], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = json.load(open(out / "predict.json"))
    assert manifest["complete"] and manifest["users"] == 3000
    assert manifest["computed_users"] == 3000 - 100 * len(written)
    resumed = read_shards(str(out))
    assert resumed["users"].tolist() == [f"user{n}" for n in range(3000)]  # each once, in order
    whole = tmp_path / "whole"
    subprocess.run([*command, "--out", str(whole)], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for key, value in read_shards(str(whole)).items():
        np.testing.assert_array_equal(resumed[key], value)
