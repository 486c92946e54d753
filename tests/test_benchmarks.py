"""The benchmark scripts' own arithmetic (the numbers they write into BENCHMARKS.md)."""

import importlib.util
import json
import os
import sys

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
