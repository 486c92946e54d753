"""What the built-in synthetic data allows: a topic oracle's Recall and HitRate.

    python benchmarks/topic_oracle.py [--config configs/synthetic_dmi.yaml] [--write BENCHMARKS.md]
        [section.key=value ...]

The synthetic generator clicks within a user's planted topics, and a share
``noise`` of clicks follows global popularity. The oracle knows every item's
topic (no model does) and scores the next click the way the generator draws it:

    score(i) = (1 - noise) · w_u[topic(i)] · p(i | topic(i)) + noise · p(i),

where ``w_u`` is the topic mix of the L history items the models see and the
item probabilities are training-split frequencies. It is evaluated on the
protocol's cut, like the models, so its numbers say how much room the data
leaves above them: a gap between two models is small or large against it.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf.data.pipeline import HISTORY, TARGETS, evaluation_dataset
from dmi_tf.data.synthetic import fresh_users as fresh
from dmi_tf.data.synthetic import synthetic_dataset
from dmi_tf.metrics import MetricAccumulator, retrieval_metrics

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import markdown_table, run_header, write_section


def oracle_scores(history: np.ndarray, item_topics: np.ndarray, train_items: np.ndarray,
                  noise: float) -> np.ndarray:
    """``[U, num_items]`` oracle scores; history ``[U, L]`` zero-padded, item_topics ``[num_items]``
    with -1 at the padding row 0."""
    num_items = len(item_topics)
    num_topics = int(item_topics.max()) + 1
    counts = np.bincount(train_items, minlength=num_items).astype(np.float64)
    counts[0] = 0.0
    popularity = counts / counts.sum()
    topic_totals = np.bincount(item_topics[1:], weights=counts[1:], minlength=num_topics)
    within_topic = np.zeros(num_items)
    within_topic[1:] = counts[1:] / np.maximum(topic_totals[item_topics[1:]], 1.0)
    mix = np.zeros((len(history), num_topics))
    rows, cols = np.nonzero(history > 0)
    np.add.at(mix, (rows, item_topics[history[rows, cols]]), 1.0)
    mix /= np.maximum(mix.sum(axis=1, keepdims=True), 1.0)
    scores = (1.0 - noise) * mix[:, np.maximum(item_topics, 0)] * within_topic + noise * popularity
    scores[:, 0] = -np.inf  # padding is never retrieved
    return scores


def evaluate_oracle(config, cutoffs=(20, 50), fresh_users: int = 0) -> dict:
    """``{split: {metric: mean}}`` of the oracle on the config's synthetic data.

    ``fresh_users`` > 0 adds a split of that many users the generator draws
    after the dataset's own (``benchmarks/per_user.py --fresh-users`` evaluates
    trained runs on the same users).
    """
    if config.data.path is not None:
        raise SystemExit("the topic oracle needs the built-in synthetic data (data.path: null); "
                         f"this config reads {config.data.path}")
    synthetic = config.data.synthetic
    dataset, item_topics = synthetic_dataset(synthetic)
    splits = {"valid": dataset.valid, "test": dataset.test}
    if fresh_users:
        splits[f"{fresh_users:,} fresh users"] = fresh(synthetic, dataset.vocabulary, fresh_users)
    results = {}
    for name, users in splits.items():
        accumulator = MetricAccumulator()
        # Blocks of users: 20,000 users' full score matrix would not need to exist at once.
        for batch in evaluation_dataset(users, config.data.max_length, 2048):
            scores = oracle_scores(batch[HISTORY].numpy(), item_topics, dataset.train.items,
                                   synthetic.noise)
            top = np.argsort(-scores, axis=1, kind="stable")[:, :max(cutoffs)]
            accumulator.update(retrieval_metrics(tf.constant(top, tf.int32), batch[TARGETS],
                                                 cutoffs))
        results[name] = accumulator.result()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/synthetic_dmi.yaml")
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("--fresh-users", type=int, default=0, metavar="N",
                        help="also score N users the generator draws after the dataset's own")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    config = config_lib.load(args.config, args.overrides)
    results = evaluate_oracle(config, fresh_users=args.fresh_users)
    header = ["split", "R@20", "R@50", "HR@20", "HR@50"]
    rows = [[split, *(f"{r[k]:.4f}" for k in ("recall@20", "recall@50", "hit_rate@20",
                                                   "hit_rate@50"))]
            for split, r in results.items()]
    table = markdown_table(header, rows)
    print(table)
    if args.write:
        body = (run_header("topic_oracle.py", argv)
                + "The oracle ranks items the way the generator draws clicks: the topic mix of the "
                "L history items the models see, times each item's share of its topic, plus the "
                "noise share of global popularity (training frequencies; formula in "
                "`benchmarks/topic_oracle.py`). No model knows the topics: this is about how much "
                "room the data leaves.\n\n"
                + table)
        write_section(args.write, "Synthetic data: a topic oracle", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
