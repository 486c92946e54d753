"""The training entry point, end to end, on small generated data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dmi_tf import train
from dmi_tf.config import SyntheticConfig
from dmi_tf.data.synthetic import generate_log

SMALL = ["data.synthetic.num_users=800", "data.synthetic.num_items=400",
         "data.synthetic.num_topics=10", "train.steps_per_eval=300", "train.max_steps=1200",
         "loss.num_negatives=256", "model.embedding_dim=32"]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("run") / "r")
    assert train.main(["--out", run_dir, *SMALL]) == 0
    return run_dir


@pytest.mark.slow
def test_default_data_run_writes_everything_and_beats_most_popular(synthetic_run, capsys):
    files = set(os.listdir(synthetic_run))
    assert {"config.yaml", "metrics.json", "vocabulary.txt", "checkpoints", "tensorboard"} <= files
    checkpoints = os.listdir(os.path.join(synthetic_run, "checkpoints"))
    assert any(f.startswith("best-") for f in checkpoints)
    metrics = json.load(open(os.path.join(synthetic_run, "metrics.json")))
    popular = metrics["baselines"]["most_popular"]
    for split in ("valid", "test"):
        assert set(metrics[split]) >= {"recall@20", "hit_rate@50", "ndcg@50", "diversity@50"}
        # The planted interests are learnable: the trained model clears the popularity floor.
        assert metrics[split]["recall@50"] > popular[split]["recall@50"] + 0.03
    assert metrics["best_step"] in [h["step"] for h in metrics["history"]]


@pytest.mark.slow
def test_resolved_config_reruns_the_same_setup(synthetic_run):
    from dmi_tf import config as config_lib
    config = config_lib.load(os.path.join(synthetic_run, "config.yaml"))
    assert config.data.synthetic.num_items == 400 and config.model.embedding_dim == 32


@pytest.mark.slow
def test_prepared_folder_trains_through_data_flag(tmp_path, capsys):
    # A raw RecBole file -> prepare CLI -> split folder -> train --data.
    log, _ = generate_log(SyntheticConfig(num_users=300, num_items=200, num_topics=5, seed=3))
    raw = tmp_path / "toy.inter"
    with open(raw, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, i, t in zip(log.users, log.items, log.timestamps, strict=True):
            f.write(f"{u}\t{i}\t{int(t)}\n")
    from dmi_tf.data.prepare import main as prepare_main
    assert prepare_main(["--input", str(raw), "--format", "recbole", "--out",
                         str(tmp_path / "toy")]) == 0
    run_dir = tmp_path / "run"
    assert train.main(["--data", str(tmp_path / "toy"), "--out", str(run_dir),
                       "train.max_steps=100", "train.steps_per_eval=100",
                       "loss.num_negatives=64"]) == 0
    out = capsys.readouterr().out
    assert "most_popular" in out and "youtube_dnn" in out and "recall@50" in out
    vocabulary = (run_dir / "vocabulary.txt").read_text().splitlines()
    item_map = (tmp_path / "toy" / "item_map.txt").read_text().splitlines()
    assert vocabulary[0] == "" and vocabulary[1:] == [line.split(",")[0] for line in item_map]


def test_most_popular_needs_no_training(tmp_path):
    assert train.main(["--model", "most_popular", "--out", str(tmp_path / "mp"), *SMALL]) == 0
    metrics = json.load(open(tmp_path / "mp" / "metrics.json"))
    assert metrics["test"] == metrics["baselines"]["most_popular"]["test"]


def bad_folder(tmp_path, bad_line):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = "".join(f"0,{i},{p}\n" for p, i in enumerate([1, 2, 3, 4, 5, 6]))
    (folder / "train.txt").write_text(good + bad_line)
    (folder / "valid.txt").write_text(good.replace("0,", "1,", 1).replace("\n0,", "\n1,"))
    (folder / "test.txt").write_text(good.replace("0,", "2,", 1).replace("\n0,", "\n2,"))
    return folder


@pytest.mark.parametrize("case", ["malformed", "unknown_key", "empty", "missing", "bad_override",
                                  "out_below_a_file", "out_unwritable"])
def test_bad_inputs_get_one_clear_error_and_exit_2(tmp_path, capsys, case):
    out = str(tmp_path / "out")
    if case == "malformed":
        args = ["--data", str(bad_folder(tmp_path, "0,7\n"))]
        expected = ["train.txt:7", "malformed"]
    elif case == "unknown_key":
        config = tmp_path / "c.yaml"
        config.write_text("train:\n  batchsize: 3\n")
        args = ["--config", str(config)]
        expected = ["c.yaml", "train.batchsize"]
    elif case == "empty":
        folder = tmp_path / "empty"
        folder.mkdir()
        for name in ("train.txt", "valid.txt", "test.txt"):
            (folder / name).write_text("")
        args = ["--data", str(folder)]
        expected = ["empty"]
    elif case == "missing":
        args = ["--data", str(tmp_path / "nowhere")]
        expected = ["nowhere", "prepare"]
    elif case == "out_below_a_file":  # these two were tracebacks with exit 1
        (tmp_path / "file").write_text("")
        args, out = [], str(tmp_path / "file" / "run")
        expected = ["cannot use --out", "Not a directory", "choose a directory you can write"]
    elif case == "out_unwritable":  # root may write anywhere but here
        args, out = [], "/sys/dmi-tf-test-run"
        expected = ["cannot use --out '/sys/dmi-tf-test-run'", "not permitted"]
    else:
        args = ["model.num_interests"]
        expected = ["section.key=value"]
    code = train.main([*args, "--out", out])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err and len(err.splitlines()) == 1
    for fragment in expected:
        assert fragment in err, err


@pytest.mark.slow
@pytest.mark.parametrize("rate", ["1e30", ".inf"])
def test_a_diverged_run_stops_with_an_error_and_keeps_nothing_non_finite(tmp_path, capsys, rate):
    # It logged "loss nan", kept the NaN weights as the best checkpoint, exited 0 and wrote
    # plausible metrics (NaN scores fall back to catalogue order, near MostPopular's).
    out = tmp_path / "run"
    code = train.main(["--out", str(out), *SMALL, "train.steps_per_eval=20",
                       "train.max_steps=60", f"train.learning_rate={rate}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: training diverged by step 20: the loss is nan") or \
        err.startswith("error: training diverged by step 20: weights are not finite"), err
    assert "lower train.learning_rate" in err and len(err.splitlines()) == 1
    assert not (out / "metrics.json").exists()
    assert not os.listdir(out / "checkpoints") if (out / "checkpoints").exists() else True
    assert not (out / "backup").exists() or not [
        n for n in os.listdir(out / "backup") if n.startswith("ckpt-")]


@pytest.mark.slow
def test_real_process_exit_code_for_a_bad_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  embeding_dim: 3\n")
    proc = subprocess.run([sys.executable, "-m", "dmi_tf.train", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown key 'model.embeding_dim'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_non_empty_run_directory_is_refused(synthetic_run, capsys):
    assert train.main(["--out", synthetic_run, *SMALL]) == 2
    assert "not empty" in capsys.readouterr().err


def test_table_lists_model_and_baseline_per_split():
    metrics = {name: 0.5 for name in ("recall@50", "hit_rate@50", "ndcg@50")} | {"users": 3}
    table = train.format_table({"model": "m", "valid": metrics, "test": metrics,
                                "baselines": {"most_popular": {"valid": metrics,
                                                               "test": metrics}}}, [50])
    lines = table.splitlines()
    assert lines[0].split() == ["model", "split", "recall@50", "hit_rate@50", "ndcg@50", "users"]
    assert [line.split()[:2] for line in lines[2:]] == [
        ["most_popular", "valid"], ["m", "valid"], ["most_popular", "test"], ["m", "test"]]
    assert np.isclose(float(lines[2].split()[2]), 0.5)


def test_table_of_a_most_popular_run_lists_its_rows_once():
    metrics = {name: 0.5 for name in ("recall@50", "hit_rate@50", "ndcg@50")} | {"users": 3}
    table = train.format_table({"model": "most_popular", "valid": metrics, "test": metrics,
                                "baselines": {"most_popular": {"valid": metrics,
                                                               "test": metrics}}}, [50])
    assert [line.split()[:2] for line in table.splitlines()[2:]] == [
        ["most_popular", "valid"], ["most_popular", "test"]]


def test_run_without_a_checkpoint_does_not_claim_one(tmp_path, capsys):
    run_dir = str(tmp_path / "mp")
    assert train.main(["--model", "most_popular", "--out", run_dir, *SMALL]) == 0
    out = capsys.readouterr().out
    assert f"metrics and config written to {run_dir}" in out
    assert "checkpoint written" not in out
    assert not os.path.exists(os.path.join(run_dir, "checkpoints"))


@pytest.mark.slow
def test_cli_shows_progress_on_stdout_and_no_cuda_probe_error(tmp_path):
    run_dir = str(tmp_path / "r")
    proc = subprocess.run([sys.executable, "-m", "dmi_tf.train", "--out", run_dir,
                           "data.synthetic.num_users=400", "data.synthetic.num_items=200",
                           "train.max_steps=50", "train.steps_per_eval=50"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # This machine has no GPU: TensorFlow's failed CUDA probe is not news.
    assert "cuInit" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run directory: {run_dir}"
    assert lines[1].startswith("synthetic(seed=0): 200 items") and "(loaded in " in lines[1]
    assert lines[2] == ("training youtube_dnn with batches of 128: up to 50 steps (16.7 epochs "
                        "of 3 steps), validation every 50 steps")
    assert lines[3].startswith("step 50: loss ") and lines[3].endswith(" sequences/s")
    assert lines[-1] == f"metrics, config and checkpoint written to {run_dir}"
