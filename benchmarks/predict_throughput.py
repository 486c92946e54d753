"""Batch inference throughput: users per second of ``python -m dmi_tf.predict`` on this machine.

    python benchmarks/predict_throughput.py --run RUN_DIR [--users 100000] [--k 50]
        [--outputs topk 'topk,interests' 'topk,interests,explain'] [--batch-size 256]
        [--out runs/predict-bench] [--write BENCHMARKS.md]

A CSV of ``--users`` histories is drawn from the run's vocabulary (lengths uniform
in 5..50, items Zipf-distributed over the vocabulary's order, a few unknown ids),
then ``dmi_tf.predict.predict`` answers it once per ``--outputs`` setting, into a
fresh folder each time. Reported: wall-clock users/s (reading, inference and
writing the shards), users per CPU-second of the process (all its threads: a
figure that does not depend on what else the machine runs), and the 1-minute
load average before the run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time

import numpy as np

from dmi_tf.data.vocabulary import read_vocabulary
from dmi_tf.predict import predict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import markdown_table, run_header, write_section


def write_histories(path: str, vocabulary: list[str], users: int, seed: int = 0) -> int:
    """``users`` CSV lines of random histories; returns the number of ids written."""
    rng = np.random.default_rng(seed)
    items = np.asarray(vocabulary[1:], dtype=object)
    total = 0
    with open(path, "w", encoding="utf-8") as f:
        for user in range(users):
            length = int(rng.integers(5, 51))
            rows = np.minimum(rng.zipf(1.2, length), len(items)) - 1
            history = list(items[rows])
            if user % 10 == 0:
                history.append("not-an-item")
            total += len(history)
            f.write(f"u{user}," + ",".join(history) + "\n")
    return total


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(args) -> str:
    os.makedirs(args.out, exist_ok=True)
    histories = os.path.join(args.out, "histories.csv")
    ids = write_histories(histories, read_vocabulary(os.path.join(args.run, "vocabulary.txt")),
                          args.users)
    rows = []
    for outputs in args.outputs:
        out = os.path.join(args.out, outputs.replace(",", "+"))
        shutil.rmtree(out, ignore_errors=True)
        load = os.getloadavg()[0]
        cpu, wall = cpu_seconds(), time.perf_counter()
        manifest = predict(args.run, histories, out, k=args.k, outputs=tuple(outputs.split(",")),
                           batch_size=args.batch_size, progress=False)
        cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
        print(f"{outputs}: {manifest['users']:,} users in {wall:.1f} s", flush=True)
        rows.append([outputs, f"{manifest['users']:,}", f"{ids / args.users:.1f}",
                     str(args.batch_size), f"{manifest['users'] / wall:,.0f}",
                     f"{manifest['users'] / cpu:,.0f}", f"{load:.1f}"])
    header = ["outputs", "users", "ids per history", "batch", "users/s (wall)",
              "users per CPU-second", "load average before"]
    return markdown_table(header, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a trained run directory")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--outputs", nargs="+",
                        default=["topk", "topk,interests", "topk,interests,explain"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default=os.path.join("runs", "predict-bench"))
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("--title", default="Batch inference")
    args = parser.parse_args(argv)
    table = run(args)
    print(table)
    if args.write:
        body = (run_header("predict_throughput.py", argv)
                + f"`python -m dmi_tf.predict` on `{args.run}` (k = {args.k}), NumPy shards of "
                "16,384 users; wall-clock users/s include reading the CSV and writing the "
                "shards.\n\n" + table)
        write_section(args.write, args.title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
