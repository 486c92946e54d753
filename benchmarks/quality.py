"""Quality benchmark: every model on one dataset over several seeds, mean ± spread.

    python benchmarks/quality.py [--data DIR] [--config 'configs/ml100k_{model}.yaml']
        [--models youtube_dnn,most_popular] [--seeds 0,1,2] [--out runs/bench] [--jobs 1]
        [--title TITLE] [--write BENCHMARKS.md] [--no-train] [section.key=value ...]

``--config`` may contain ``{model}``: each model then runs with its own file
(``configs/ml100k_comirec_dr.yaml`` has ComiRec-DR's learning rate, for example).

Each (model, seed) is a full ``python -m dmi_tf.train`` run in its own run
directory, ``OUT/<model>-seed<seed>`` (``train.seed`` is the seed; its output goes
to ``OUT/<model>-seed<seed>.log``), ``--jobs`` of them at a time. A run directory
that already holds a finished run of the same config is read, not trained again,
so an interrupted benchmark continues where it stopped. The table (valid and test
metrics, mean ± sample standard deviation over seeds) is printed and, with
``--write``, replaces this dataset's section of BENCHMARKS.md (``--title``, default
``Quality: <dataset>``) together with the machine, the command and the date.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time

import numpy as np

from dmi_tf import config as config_lib
from dmi_tf.console import log_to_stdout
from dmi_tf.io_utils import atomic_write_text
from dmi_tf.models import MODEL_NAMES

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


def _train(config_path: str | None, overrides: list[str], run_dir: str) -> tuple[str, float]:
    """One ``python -m dmi_tf.train`` run in a child process; returns its status and seconds."""
    command = [sys.executable, "-m", "dmi_tf.train", "--out", run_dir,
               *(["--config", config_path] if config_path else []), *overrides]
    start = time.perf_counter()
    with open(run_dir.rstrip(os.sep) + ".log", "w", encoding="utf-8") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    return ("done" if code == 0 else f"failed (exit {code}, see {run_dir}.log)",
            time.perf_counter() - start)


def _finished(run_dir: str, config: config_lib.Config) -> dict | None:
    """The metrics of a finished run of ``config`` in ``run_dir``; None if it has none.

    Raises:
      SystemExit: ``run_dir`` holds a finished run of another config.
    """
    metrics = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(metrics):
        return None
    differences = config_lib.differences(
        config_lib.load(os.path.join(run_dir, "config.yaml")), config)
    if differences:
        raise SystemExit(f"{run_dir} holds a finished run of another config "
                         f"({'; '.join(differences[:3])}); give another --out.")
    with open(metrics, encoding="utf-8") as f:
        return json.load(f)


def run(args) -> tuple[str, str]:
    models = args.models.split(",")
    # A name is a model, or a config of its own when --config has {model} (amazon_remi.yaml
    # is ComiRec-SA with REMI's losses).
    unknown = [m for m in models if m not in MODEL_NAMES and not (
        args.config and "{model}" in args.config and os.path.exists(args.config.format(model=m)))]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; available: {', '.join(MODEL_NAMES)}"
                         + (f", or a name with a {args.config} file" if args.config else ""))
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={json.dumps(args.data)}")
    jobs = []  # (model, config path, overrides, run directory, config)
    for model in models:
        path = args.config.format(model=model) if args.config else None
        named = [f"model.name={model}"] if model in MODEL_NAMES else []
        deterministic = config_lib.load(path, [*overrides, *named]).model.name in (
            "most_popular", "item_knn")
        # Non-neural baselines have no randomness: one run is the whole distribution.
        for seed in seeds[:1] if deterministic else seeds:
            given = [*overrides, *named, f"train.seed={seed}"]
            jobs.append((model, path, given, os.path.join(args.out, f"{model}-seed{seed}"),
                         config_lib.load(path, given)))
    pending = [job for job in jobs if _finished(job[3], job[4]) is None]
    if args.no_train:
        # A table of what has finished: each row says over how many seeds.
        jobs = [job for job in jobs if job not in pending]
        print(f"{len(jobs)} finished runs in {args.out}; {len(pending)} not trained (--no-train)",
              flush=True)
        pending = []
    print(f"{len(jobs) - len(pending)} of {len(jobs)} runs already finished in {args.out}; "
          f"training {len(pending)}, {args.jobs} at a time", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(_train, path, given, run_dir): run_dir
                   for _, path, given, run_dir, _ in pending}
        for future in concurrent.futures.as_completed(futures):
            status, seconds = future.result()
            print(f"{futures[future]}: {status} in {seconds:.0f}s", flush=True)
    rows, dataset_name = [], None
    for model in models:
        per_seed = []
        for job_model, _, _, run_dir, config in jobs:
            if job_model == model:
                results = _finished(run_dir, config)
                if results is None:
                    raise SystemExit(f"{run_dir} did not finish; see {run_dir}.log")
                dataset_name = results["dataset"].split(":")[0]
                per_seed.append(results)
        if not per_seed:
            continue
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
    """Replaces the section headed ``title`` of a Markdown file, at whatever heading level
    it has (a ``###`` subsection stays one), or appends it as a ``##`` section."""
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n"
    found = re.search(rf"^(#{{2,6}}) {re.escape(title)}\n", text, re.M)
    hashes = found.group(1) if found else "##"
    section = f"{hashes} {title}\n\n{body.rstrip()}\n"
    if found:
        # The section runs to the next heading of its own level or above.
        end = re.compile(rf"^#{{1,{len(hashes)}}} ", re.M).search(text, found.end())
        rest = text[end.start():] if end else ""
        text = (text[:found.start()] + section + ("\n" + rest if rest else "")).rstrip() + "\n"
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
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: tabulate the runs that have finished")
    parser.add_argument("--title", help="section of --write to replace (default: "
                                        "'Quality: <dataset>')")
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    dataset_name, table = run(args)
    print(table)
    if args.write:
        body = (run_header("quality.py", argv)
                + "Mean ± sample standard deviation over seeds (`train.seed`); MostPopular and "
                "item-kNN are deterministic (one run).\n\n" + table)
        title = args.title or f"Quality: {dataset_name}"
        write_section(args.write, title, body)
        print(f"wrote the '{title}' section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
