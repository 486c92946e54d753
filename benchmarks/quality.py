"""Quality benchmark: every model on one dataset over several seeds, mean ± spread.

    python benchmarks/quality.py [--data DIR] [--config 'configs/ml100k_{model}.yaml']
        [--models youtube_dnn,most_popular] [--seeds 0,1,2] [--out runs/bench]
        [--write BENCHMARKS.md] [section.key=value ...]

``--config`` may contain ``{model}``: each model then runs with its own file
(``configs/ml100k_comirec_dr.yaml`` has ComiRec-DR's learning rate, for example).

Each (model, seed) is a full ``python -m dmi_tf.train`` run in its own run
directory (``train.seed`` is the seed). The table (valid and test metrics, mean
± sample standard deviation over seeds) is printed and, with ``--write``,
replaces this dataset's section of BENCHMARKS.md together with the machine,
the command and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import sys

import numpy as np

from dmi_tf import config as config_lib
from dmi_tf.console import log_to_stdout
from dmi_tf.io_utils import atomic_write_text
from dmi_tf.models import MODEL_NAMES
from dmi_tf.train import prepare_run_dir, train_and_evaluate

COLUMNS = ("recall@20", "recall@50", "hit_rate@50", "ndcg@50")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: the header row, its rule, then one line per row."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def mean_spread(values) -> str:
    """``mean ± sample std``; a single run has no spread to show."""
    values = np.asarray(values, np.float64)
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def paired_backbone(variant: str, available) -> str:
    """The backbone a sweep variant is compared with: the one with the same K.

    Variants named ``<name>_k<N>`` change the number of interests, so the fair
    comparison is ComiRec-SA with N interests, ``backbone_k<N>``, when it ran;
    every other variant (``backbone_k<N>`` itself too) is compared with ``backbone``.
    """
    match = re.search(r"_k(\d+)$", variant)
    same_k = f"backbone_k{match.group(1)}" if match else None
    if same_k and same_k != variant and same_k in available:
        return same_k
    return "backbone"


def run(args) -> tuple[str, str]:
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; available: {', '.join(MODEL_NAMES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={json.dumps(args.data)}")
    rows, dataset_name = [], None
    for model in models:
        per_seed = []
        # Non-neural baselines have no randomness: one run is the whole distribution.
        for seed in seeds if model not in ("most_popular", "item_knn") else seeds[:1]:
            path = args.config.format(model=model) if args.config else None
            config = config_lib.load(path, [*overrides, f"model.name={model}",
                                            f"train.seed={seed}"])
            run_dir = prepare_run_dir(os.path.join(args.out, f"{model}-seed{seed}"), config)
            print(f"== {model}, seed {seed} -> {run_dir}", flush=True)
            results = train_and_evaluate(config, run_dir, verbose=0)
            dataset_name = results["dataset"].split(":")[0]
            per_seed.append(results)
        row = [model, str(len(per_seed))]
        for split in ("valid", "test"):
            row += [mean_spread([r[split][c] for r in per_seed]) for c in COLUMNS]
        row.append(f"{np.mean([r.get('train_seconds', 0.0) for r in per_seed]):.0f}")
        rows.append(row)
    header = ["model", "seeds", *(f"valid {c}" for c in COLUMNS), *(f"test {c}" for c in COLUMNS),
              "train s"]
    return dataset_name or "dataset", markdown_table(header, rows)


def run_header(script: str, argv) -> str:
    """The machine, the date and the exact command of a benchmark, for its BENCHMARKS.md section."""
    given = sys.argv[1:] if argv is None else argv
    return (f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {platform.system()} | "
            f"date: {datetime.date.today().isoformat()}\n\n"
            f"Command: `python benchmarks/{script} {shlex.join(given)}`\n\n")


def write_section(path: str, title: str, body: str) -> None:
    """Replaces (or appends) the section headed ``## title`` of a Markdown file."""
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n"
    section = f"## {title}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    atomic_write_text(path, text)


def main(argv=None) -> int:
    log_to_stdout()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="split folder (default: the config's, else synthetic)")
    parser.add_argument("--config", help="YAML config; '{model}' in it is replaced by each "
                                         "model's name")
    parser.add_argument("--models", default="most_popular,youtube_dnn")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=os.path.join("runs", "bench"))
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    dataset_name, table = run(args)
    print(table)
    if args.write:
        body = (run_header("quality.py", argv)
                + "Mean ± sample standard deviation over seeds (`train.seed`); MostPopular and "
                "item-kNN are deterministic (one run).\n\n" + table)
        write_section(args.write, f"Quality: {dataset_name}", body)
        print(f"wrote the '{dataset_name}' section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
