"""Query-tower latency: history ids -> K interests, per model, batch size and compilation mode.

    python benchmarks/latency.py [--configs configs/ml100k_comirec_sa.yaml,configs/ml100k_dmi.yaml,\
        configs/ml100k_dmi.yaml:diffusion.ffn_factor=0]
        [--batches 1,256] [--runs 300] [--write BENCHMARKS.md [--title 'Query-tower latency']]
        [--num-items 1349] [section.key=value ...]

Times ``model.interests`` (the query tower as exported: extractor, and for
DMI the reverse pass, its weight-only products folded as export folds them)
on random full-length histories, as a ``tf.function`` in graph mode and
compiled with XLA (``jit_compile=True``). Weights are
untrained: latency depends on shapes, not values. Reports the median (and
p90) of ``--runs`` timed calls after a warm-up. Ratios are against the first
config, mode by mode.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf.data.dataset import SplitData
from dmi_tf.models import build_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import markdown_table, run_header, write_section

MODES = {"graph": False, "xla": True}


def build_query_tower(config, num_items: int, jit_compile: bool):
    rng = np.random.default_rng(0)
    # Training statistics only feed the loss, which the query tower does not use.
    train = SplitData.from_sequences([0], [rng.integers(1, num_items, 30).tolist()])
    tf.keras.utils.set_random_seed(0)
    model = build_model(config, num_items, train)
    length = config.data.max_length
    model.interests(tf.zeros([1, length], tf.int32))  # builds the weights
    model.fold_for_inference()  # as export does
    fn = tf.function(model.interests, jit_compile=jit_compile,
                     input_signature=[tf.TensorSpec([None, length], tf.int32)])
    return fn


def time_interleaved(fns: list, history: tf.Tensor, runs: int) -> list[tuple[float, float]]:
    """Median and p90 ms of each function, calls interleaved.

    Interleaving (A, B, A, B, ...) exposes every model to the same background
    load, so the ratios stay meaningful on a shared machine.
    """
    for fn in fns:
        for _ in range(20):
            fn(history).numpy()
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, spent in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn(history).numpy()
            spent.append(time.perf_counter() - t0)
    return [(float(np.median(t) * 1e3), float(np.percentile(t, 90) * 1e3)) for t in times]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs",
                        default="configs/ml100k_comirec_sa.yaml,configs/ml100k_dmi.yaml")
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--num-items", type=int, default=1349)
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("--title", default="Query-tower latency",
                        help="section of --write to replace (or append)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    # An entry is a config path, optionally with its own overrides: path:key=value+key=value.
    paths = args.configs.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(1)
    results = {}
    configs = []
    for entry in paths:
        path, _, own = entry.partition(":")
        configs.append(config_lib.load(path, [*args.overrides, *filter(None, own.split("+"))]))
    lengths = {c.data.max_length for c in configs}
    if len(lengths) != 1:
        raise SystemExit(f"the configs differ in data.max_length ({sorted(lengths)})")
    length = lengths.pop()
    for mode, jit in MODES.items():
        fns = [build_query_tower(c, args.num_items, jit) for c in configs]
        for batch in batches:
            history = tf.constant(rng.integers(1, args.num_items, (batch, length)), tf.int32)
            for path, timing in zip(paths, time_interleaved(fns, history, args.runs),
                                    strict=True):
                results[path, mode, batch] = timing
                print(f"{path} {mode} batch {batch}: median {timing[0]:.3f} ms", flush=True)
    header = ["config", "mode", *(f"batch {b}: median ms (p90)" for b in batches),
              *(f"batch {b}: × first" for b in batches)]
    rows = []
    for path in paths:
        for mode in MODES:
            cells = [f"{results[path, mode, b][0]:.3f} ({results[path, mode, b][1]:.3f})"
                     for b in batches]
            ratios = [f"{results[path, mode, b][0] / results[paths[0], mode, b][0]:.2f}"
                      for b in batches]
            config_path, _, own = path.partition(":")
            label = " ".join(filter(None, [os.path.basename(config_path), own]))
            rows.append([label, mode, *cells, *ratios])
    table = markdown_table(header, rows)
    print(table)
    if args.write:
        body = (run_header("latency.py", argv)
                + f"Median (p90) of {args.runs} calls of the query tower (history -> interests), "
                "after 20 warm-up calls, the models' calls interleaved; untrained weights, "
                "full-length random histories.\n\n"
                + table)
        write_section(args.write, args.title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
