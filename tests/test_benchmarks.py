"""The benchmark scripts' own arithmetic (the numbers they write into BENCHMARKS.md)."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load_script(name):
    """A benchmark script as a module, without leaving benchmarks/ on sys.path.

    The scripts put their folder first on sys.path to import their helpers;
    left there, its serving.py would shadow the serving package for later tests.
    """
    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}",
                                                      os.path.join(BENCHMARKS, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


splits = load_script("splits")


def write_run(root, name, valid, test):
    os.makedirs(root / name)
    (root / name / "metrics.json").write_text(json.dumps({
        "valid": {"recall@50": valid}, "test": {"recall@50": test, "hit_rate@50": 0.9}}))


def test_splits_table_pairs_each_variant_with_the_backbone_of_its_own_split(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_run(a, "backbone-seed0", 0.30, 0.20)
    write_run(a, "dmi-seed0", 0.32, 0.25)
    write_run(b, "backbone-seed0", 0.10, 0.40)
    write_run(b, "dmi-seed0", 0.12, 0.34)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in splits.table([str(a), str(b)], ["backbone", "dmi"], [0]).splitlines()}
    dmi = rows["dmi"]
    assert dmi[1:4] == ["0.3200 / 0.2500", "0.1200 / 0.3400", "2"]
    # Paired per split: +0.02 on both for valid; +0.05 and −0.06 on test.
    assert dmi[7] == "0.0200 ± 0.0000 (ahead 2/2)"
    assert dmi[8].startswith("-0.0050 ± 0.0778 (ahead 1/2)")


def test_splits_table_pairs_a_k_variant_with_the_backbone_of_the_same_k(tmp_path):
    a = tmp_path / "a"
    write_run(a, "backbone-seed0", 0.30, 0.20)
    write_run(a, "backbone_k2-seed0", 0.35, 0.30)
    write_run(a, "default_k2-seed0", 0.36, 0.28)
    write_run(a, "default_k8-seed0", 0.31, 0.21)  # no backbone_k8: falls back to backbone
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in splits.table([str(a)], ["backbone", "backbone_k2", "default_k2",
                                                "default_k8"], [0]).splitlines()}
    assert rows["default_k2"][6] == "0.0100 (ahead 1/1 vs backbone_k2)"
    assert rows["default_k2"][7].startswith("-0.0200 (ahead 0/1 vs backbone_k2)")
    assert rows["backbone_k2"][6] == "0.0500 (ahead 1/1)"
    assert rows["default_k8"][6] == "0.0100 (ahead 1/1)"


def test_splits_cli_names_a_missing_run_folder(tmp_path):
    with pytest.raises(SystemExit, match="no such run folder"):
        splits.main(["--roots", str(tmp_path / "nope")])


def test_sweep_reuses_a_finished_run_only_if_its_config_is_the_one_asked_for(tmp_path):
    import argparse

    from dmi_tf import config as config_lib

    sweep = load_script("dmi_sweep")
    config_path = os.path.join(os.path.dirname(BENCHMARKS), "configs", "synthetic_dmi.yaml")
    run_dir = tmp_path / "default-seed0"
    os.makedirs(run_dir)
    trained = config_lib.load(config_path, ["model.num_interests=3", "train.seed=0"])
    (run_dir / "config.yaml").write_text(config_lib.dump_yaml(trained))
    (run_dir / "metrics.json").write_text(json.dumps({"test": {"recall@50": 0.5}}))
    (run_dir / "purity.json").write_text("{}")

    def args(*overrides):
        return argparse.Namespace(config=config_path, out=str(tmp_path), overrides=list(overrides))

    assert sweep.train_variant(args("model.num_interests=3"), "default", 0)["test"] == {
        "recall@50": 0.5}
    with pytest.raises(SystemExit, match=r"another config \(model.num_interests: 3 there"):
        sweep.train_variant(args(), "default", 0)


@pytest.mark.slow
def test_latency_writes_its_table_under_the_title_asked_for(tmp_path):
    latency = load_script("latency")
    configs = os.path.join(os.path.dirname(BENCHMARKS), "configs")
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Query-tower latency\n\nkept\n")
    latency.main([
        "--configs", f"{configs}/synthetic_comirec_sa.yaml,"
                     f"{configs}/synthetic_dmi.yaml:model.num_interests=2",
        "--batches", "1", "--runs", "2", "--num-items", "50",
        "--write", str(report), "--title", "Query-tower latency: synthetic"])
    text = report.read_text()
    # The default section is left alone; the new one has one row per config and mode.
    assert "## Query-tower latency\n\nkept\n" in text
    section = text.split("## Query-tower latency: synthetic\n")[1]
    assert section.count("| synthetic_dmi.yaml model.num_interests=2 |") == 2
    assert section.count("| synthetic_comirec_sa.yaml | graph | ") == 1


def test_topic_oracle_scores_the_users_topics_first_and_beats_popularity():
    from dmi_tf import config as config_lib

    oracle = load_script("topic_oracle")
    # Items 1-2 in topic 0, 3-4 in topic 1; item 3 is by far the most popular.
    topics = np.array([-1, 0, 0, 1, 1])
    train_items = np.array([1, 2, 2, 3, 3, 3, 3, 3, 3, 4])
    scores = oracle.oracle_scores(np.array([[1, 2, 0]]), topics, train_items, noise=0.1)
    assert list(np.argsort(-scores[0])[:2]) == [2, 1]  # the user's topic, by popularity within it
    assert scores[0, 0] == -np.inf

    config = config_lib.load(None, ["data.synthetic.num_users=300", "data.synthetic.num_items=200",
                                    "data.synthetic.num_topics=10"])
    results = oracle.evaluate_oracle(config, fresh_users=300)
    planted = results["test"]["recall@50"]
    # The library's MostPopular on the same data and cut: what the oracle adds is the topics.
    from dmi_tf.data.pipeline import evaluation_dataset
    from dmi_tf.data.synthetic import synthetic_dataset
    from dmi_tf.evaluate import evaluate
    from dmi_tf.models import build_model

    dataset, _ = synthetic_dataset(config.data.synthetic)
    popular = build_model(config_lib.load(None, ["model.name=most_popular"]), dataset.num_items,
                          dataset.train)
    popular_recall = evaluate(popular, evaluation_dataset(
        dataset.test, config.data.max_length, config.train.eval_batch_size))["recall@50"]
    assert planted > popular_recall + 0.1
    # 300 users the dataset never held, scored in blocks like the splits: the same distribution.
    assert set(results) == {"valid", "test", "300 fresh users"}
    splits_mean = (results["valid"]["recall@50"] + planted) / 2
    assert abs(results["300 fresh users"]["recall@50"] - splits_mean) < 0.05


def test_topic_oracle_refuses_a_dataset_without_planted_topics():
    from dmi_tf import config as config_lib

    oracle = load_script("topic_oracle")
    with pytest.raises(SystemExit, match="built-in synthetic data"):
        oracle.evaluate_oracle(config_lib.load(None, ["data.path=somewhere"]))


def test_per_user_interval_separates_a_planted_gap_and_not_noise():
    per_user = load_script("per_user")
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.6, size=(3, 200))
    planted = per_user.compare(a, a + 0.05, binary=False)
    assert planted["delta"] == pytest.approx(0.05)
    np.testing.assert_allclose(planted["paired"], 0.05)
    low, high = planted["interval"]
    assert low == pytest.approx(0.05) and high == pytest.approx(0.05)  # every user moved by 0.05
    noise = per_user.compare(a, rng.permuted(a, axis=1), binary=False)
    low, high = noise["interval"]
    assert low < 0 < high  # the same values on shuffled users: no gap the users support


def test_per_user_counts_the_users_a_hit_rate_cannot_separate():
    per_user = load_script("per_user")
    # Users: 0 hit by every run, 1 by none, 2 and 3 by some.
    a = np.array([[1, 0, 1, 0], [1, 0, 0, 0]])
    b = np.array([[1, 0, 1, 1], [1, 0, 1, 0]])
    result = per_user.compare(a, b, binary=True)
    assert (result["always_hit"], result["never_hit"], result["contested"]) == (1, 1, 2)
    assert result["delta"] == pytest.approx((0.5 + 0.5) / 4)
    with pytest.raises(SystemExit, match="different users"):
        per_user.compare(a, b[:, :3], binary=True)
    assert per_user.compare(a, b, binary=True, paired=False)["paired"] is None


@pytest.mark.slow
def test_per_user_cli_gives_the_means_training_wrote_and_caches_them(tmp_path):
    import contextlib
    import io

    from dmi_tf import config as config_lib
    from dmi_tf.train import train_and_evaluate

    per_user = load_script("per_user")
    metrics = {}
    for model in ("most_popular", "youtube_dnn"):
        run_dir = tmp_path / f"{model}-seed0"
        config = config_lib.load(None, [
            f"model.name={model}", "train.max_steps=50", "train.steps_per_eval=50",
            "data.synthetic.num_users=200", "data.synthetic.num_items=100"])
        with contextlib.redirect_stdout(io.StringIO()):
            metrics[model] = train_and_evaluate(config, str(run_dir), verbose=0)
    report = tmp_path / "BENCHMARKS.md"
    per_user.main(["--a", str(tmp_path / "most_popular-seed*"),
                   "--b", str(tmp_path / "youtube_dnn-seed*"), "--splits", "test",
                   "--write", str(report), "--title", "Per-user: tiny"])
    row = next(line for line in report.read_text().splitlines()
               if line.startswith("| test | hit_rate@50 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == f"{metrics['most_popular']['test']['hit_rate@50']:.4f}"
    assert cells[3] == f"{metrics['youtube_dnn']['test']['hit_rate@50']:.4f}"
    assert os.path.isfile(tmp_path / "youtube_dnn-seed0" / "per_user.json")
    # Fresh users of the same generator: a third row set, from the cached runs.
    per_user.main(["--a", str(tmp_path / "most_popular-seed*"),
                   "--b", str(tmp_path / "youtube_dnn-seed*"), "--splits", "test",
                   "--fresh-users", "40", "--write", str(report), "--title", "Per-user: tiny"])
    assert "| 40 fresh users | hit_rate@50 |" in report.read_text()
    cached = json.loads((tmp_path / "youtube_dnn-seed0" / "per_user.json").read_text())
    assert set(cached["splits"]) == {"test", "fresh40"}
    assert len(cached["splits"]["fresh40"]["hit_rate@50"]) == 40
    with pytest.raises(SystemExit, match="needs --fresh-users"):
        per_user.main(["--a", str(tmp_path / "*"), "--b", str(tmp_path / "*"),
                       "--splits", "fresh"])
    # Runs on other data have other users: refused before anything is evaluated.
    other = tmp_path / "other-seed0"
    os.makedirs(other)
    (other / "config.yaml").write_text(config_lib.dump_yaml(
        config_lib.load(None, ["data.synthetic.num_users=300"])))
    with pytest.raises(SystemExit, match="different data"):
        per_user.main(["--a", str(tmp_path / "most_popular-seed*"),
                       "--b", str(tmp_path / "other-seed*")])
    with pytest.raises(SystemExit, match="no run directory matches"):
        per_user.main(["--a", str(tmp_path / "missing-*"), "--b", str(tmp_path / "*")])


def test_knn_scale_measures_a_small_catalogue():
    knn_scale = load_script("knn_scale")
    result = knn_scale.measure(num_items=500, num_users=3000, neighbors=20, eval_users=200)
    assert result["neighbors"] == 20
    assert 0 < result["similarities"] <= 500 * 20
    assert result["eval_users"] == 200 and result["users_per_second"] > 0
    # The planted topics give the neighbours something to find.
    assert result["recall@50"] > result["most_popular_recall@50"]
    row = knn_scale.table_row(result)
    assert row.count("|") == knn_scale.HEADER.splitlines()[0].count("|")


def test_warm_start_finds_the_first_step_reaching_the_cold_best():
    warm_start = load_script("warm_start")
    history = [{"step": 200, "recall@50": 0.10}, {"step": 400, "recall@50": 0.31},
               {"step": 600, "recall@50": 0.35}]
    assert warm_start.reached(history, 0.30) == 400
    assert warm_start.reached(history, 0.35) == 600
    assert warm_start.reached(history, 0.40) is None


def test_predict_throughput_histories_are_csv_lines_of_known_and_unknown_ids(tmp_path):
    throughput = load_script("predict_throughput")
    ids = throughput.write_histories(str(tmp_path / "h.csv"), ["", "a", "b", "c"], 20)
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert len(lines) == 20 and lines[1].startswith("u1,")
    items = [i for line in lines for i in line.split(",")[1:]]
    assert len(items) == ids and set(items) == {"a", "b", "c", "not-an-item"}


def test_soak_report_counts_failures_and_rss_growth():
    # The soak itself runs ten minutes (benchmarks/soak.py, not run by CI); its summary is
    # checked here on a made-up result.
    soak = load_script("soak")
    assert soak.rss_mb(os.getpid()) > 0
    result = {
        "seconds": 600.0, "items": 20_000, "model": "comirec_sa", "k": 50, "K": 4, "d": 64,
        "L": 20, "good": {"good gRPC topk": 1200, "good REST topk": 300}, "failed_good": 0,
        "bad": {"bad unknown model": 40}, "wrong_bad": 1, "slow_connections": 220,
        "versions": {1: 700, 2: 500}, "swap_at": 300.2, "swapped": True,
        "rss_mb": {"idle": 590.0, "start": 700.0, "end": 721.0, "max": 730.0},
        "rss_growth": 0.03, "failures": ["bad unknown model: HTTP 500"],
    }
    text = soak.report(result)
    assert "| **good requests failed** | **0** |" in text
    assert "| **bad requests with another status** | **1** |" in text
    assert "| gRPC answers by version | v1: 700, v2: 500 |" in text
    assert "700 MB after 60 s of load (the start), 721 MB at the end (max 730): growth +3.0%" \
        in text
    assert text.endswith("- `bad unknown model: HTTP 500`")


@pytest.mark.slow
def test_quality_tabulates_finished_runs_only_with_no_train_and_takes_named_configs(
        tmp_path, capsys):
    quality = load_script("quality")
    (tmp_path / "cfg_pop.yaml").write_text("model:\n  name: most_popular\n")
    (tmp_path / "cfg_dnn.yaml").write_text("model:\n  name: youtube_dnn\n")
    out = str(tmp_path / "runs")
    common = ["--config", str(tmp_path / "cfg_{model}.yaml"), "--seeds", "0", "--out", out,
              "data.synthetic.num_users=150", "data.synthetic.num_items=100"]
    # Names that are configs, not models: "pop" is a MostPopular config, so one run trains.
    assert quality.main(["--models", "pop", *common]) == 0
    capsys.readouterr()
    assert quality.main(["--models", "pop,dnn", "--no-train", *common]) == 0
    table = capsys.readouterr().out
    assert "| pop | 1 |" in table and "| dnn |" not in table
    assert not os.path.exists(os.path.join(out, "dnn-seed0"))
    with pytest.raises(SystemExit, match="unknown model"):
        quality.main(["--models", "nope", *common])


def test_a_section_is_rewritten_at_its_own_heading_level(tmp_path):
    quality = load_script("quality")
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# B\n\n## Pairs\n\nintro\n\n### One\n\nold one\n\n### Two\n\nold two\n\n"
                      "## Later\n\nkept\n")
    quality.write_section(str(report), "One", "new one")
    quality.write_section(str(report), "Two", "new two")
    quality.write_section(str(report), "Fresh", "appended")
    assert report.read_text() == ("# B\n\n## Pairs\n\nintro\n\n### One\n\nnew one\n\n### Two\n\n"
                                  "new two\n\n## Later\n\nkept\n\n## Fresh\n\nappended\n")
