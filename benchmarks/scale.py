"""Taobao-size training on one machine: throughput and peak memory.

    flock /tmp/bench.lock python benchmarks/scale.py [--config configs/taobao_dmi.yaml]
        [--items 1700000] [--users 976779] [--steps 300] [--write BENCHMARKS.md]
        [section.key=value ...]

Generates a synthetic dataset of Taobao's size (ComiRec's split: 1,708,530
items, 976,779 users, 85M interactions; item ids popularity-ranked with a Zipf
law, sequence lengths 20-155, mean 87), then trains the configured model through
``dmi_tf.training.fit`` — the real input stream, loss, optimizer and checkpoints — for
``--steps`` steps. Evaluation is not the point here: validation uses 256 users.

Reports steady-state training throughput (sequences per second, Keras epochs
after the first, which carries the tracing; checkpoint writes excluded) and the
process's peak resident memory (``ru_maxrss``) after generating the data, after
building the model, and after training.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf.console import log_to_stdout
from dmi_tf.data.dataset import Dataset, SplitData
from dmi_tf.models import build_model
from dmi_tf.training import fit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import run_header, write_section


def peak_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def taobao_size_dataset(num_items: int, num_users: int, seed: int = 0,
                        eval_users: int = 256) -> Dataset:
    """Taobao-size sequences: 80% of the users train, ``eval_users`` each validate and test.

    Items are ids 1..N by popularity with Zipf(0.9) clicks, as ``prepare`` numbers
    real items, so the log-uniform negative sampler meets the same skew.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, num_items + 1) ** 0.9
    cdf = np.cumsum(weights / weights.sum())

    def split(users: int) -> SplitData:
        lengths = rng.integers(20, 156, size=users)
        row_splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.empty(row_splits[-1], np.int64)
        for start in range(0, len(items), 10_000_000):  # bounded temporaries
            draws = rng.random(min(10_000_000, len(items) - start))
            items[start:start + len(draws)] = np.minimum(
                np.searchsorted(cdf, draws), num_items - 1) + 1
        return SplitData(np.arange(users, dtype=np.int64), row_splits, items)

    train_users = int(num_users * 0.8)
    return Dataset(split(train_users), split(eval_users), split(eval_users),
                   vocabulary=["", *(f"i{i}" for i in range(1, num_items + 1))],
                   name=f"taobao-size synthetic ({num_items:,} items)")


class EpochTimer(tf.keras.callbacks.Callback):
    """Seconds of each Keras epoch's training steps (before validation and checkpoints)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def measure(config: config_lib.Config, num_items: int, num_users: int, steps: int) -> dict:
    t0 = time.perf_counter()
    dataset = taobao_size_dataset(num_items, num_users, seed=config.train.seed)
    generated = time.perf_counter() - t0
    memory = {"data": peak_gib()}
    tf.keras.utils.set_random_seed(config.train.seed)
    model = build_model(config, dataset.num_items, dataset.train)
    model.interests(tf.zeros([1, config.data.max_length], tf.int32))
    memory["model"] = peak_gib()
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        results = fit(model, config, dataset, run_dir, lambda: {
            config.eval.selection_metric: 0.0}, verbose=2, callbacks=[timer])
        wall = time.perf_counter() - t0
    memory["train"] = peak_gib()
    steady = timer.seconds[1:] or timer.seconds
    per_epoch = config.train.checkpoint_steps or config.train.steps_per_eval
    return {"dataset": dataset, "generated_seconds": generated, "memory": memory,
            "steps": results["steps"], "wall_seconds": wall,
            "sequences_per_second": per_epoch * len(steady) * config.train.batch_size
            / sum(steady),
            "first_epoch_seconds": timer.seconds[0]}


def main(argv=None) -> int:
    log_to_stdout()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/taobao_dmi.yaml")
    parser.add_argument("--items", type=int, default=1_708_530)
    parser.add_argument("--users", type=int, default=976_779)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("--section", default="Scale: Taobao-size training on one machine")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    epoch = max(args.steps // 6, 1)
    config = config_lib.load(args.config, [
        f"train.max_steps={args.steps}", f"train.steps_per_eval={args.steps}",
        f"train.checkpoint_steps={epoch}" if args.steps % epoch == 0 else
        "train.checkpoint_steps=null", *args.overrides])
    result = measure(config, args.items, args.users, args.steps)
    dataset, memory = result["dataset"], result["memory"]
    train_interactions = dataset.train.num_interactions
    row = (f"| {config.model.name} | {config.train.optimizer} | {dataset.num_items - 1:,} | "
           f"{train_interactions:,} | {config.data.max_length} | {config.model.embedding_dim} | "
           f"{config.train.batch_size} | {config.loss.num_negatives} | {result['steps']} | "
           f"{result['sequences_per_second']:,.0f} | {memory['data']:.1f} | "
           f"{memory['model']:.1f} | {memory['train']:.1f} |")
    print(dataset.summary())
    print(f"data generated in {result['generated_seconds']:.0f}s; {result['steps']} steps in "
          f"{result['wall_seconds']:.0f}s (first epoch {result['first_epoch_seconds']:.0f}s)")
    print(row)
    if args.write:
        header = ("| model | optimizer | items | train interactions | L | d | batch | "
                  "negatives | steps | sequences/s | peak GiB after data | after model | "
                  "after training |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        memory_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        body = (run_header("scale.py", argv) + f"Memory: {memory_total:.0f} GiB.\n\n"
                + header + row)
        write_section(args.write, args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
