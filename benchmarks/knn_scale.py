"""Item-kNN on large catalogues: build time, peak memory and evaluation speed.

    flock /tmp/bench.lock python benchmarks/knn_scale.py [--items 100000,200000]
        [--users 200000] [--neighbors 200] [--eval-users 4000] [--write BENCHMARKS.md]

For each catalogue size, in a fresh process (so that each peak is its own):
generates a log of ``--users`` training users with 5-15 clicks each (mean 10)
over items ``1..N`` with Zipf(0.9) popularity, each user clicking mostly
inside two random item topics of 100 items each (so items have real neighbours),
builds :class:`~dmi_tf.models.item_knn.ItemKNN` keeping ``--neighbors`` per
item, and evaluates ``--eval-users`` held-out users of the same generator
(the protocol's 80% history, L = 20) through ``dmi_tf.evaluate.evaluate``.

Reports the build seconds, the kept similarities, evaluation users per second
(a second pass; the first carries the tracing), the process's peak resident
memory (``ru_maxrss``) after the data, the build and the evaluation, and
Recall@50 against MostPopular's as a sanity check.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from dmi_tf.data.dataset import SplitData

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import run_header, write_section

ITEMS_PER_TOPIC = 100
ZIPF_EXPONENT = 0.9
NOISE = 0.2  # share of clicks drawn from global popularity, outside the user's topics


def peak_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def topic_log(num_items: int, num_users: int, rng: np.random.Generator,
              lengths: tuple[int, int] = (5, 15)) -> SplitData:
    """``num_users`` sequences over items ``1..num_items`` (ids in popularity order).

    Each user holds 2 random topics; a click is from one of them (the topic's
    items by their Zipf popularity) or, with probability ``NOISE``, from the
    global popularity. Items are assigned to topics by a fixed seed, so two
    calls with different ``rng`` draw users of the same catalogue.
    """
    popularity = 1.0 / np.arange(1, num_items + 1) ** ZIPF_EXPONENT
    num_topics = max(1, num_items // ITEMS_PER_TOPIC)
    topic = np.random.default_rng(0).integers(num_topics, size=num_items)
    by_topic = np.argsort(topic, kind="stable")  # within a topic, by popularity
    sizes = np.bincount(topic, minlength=num_topics)
    totals = np.bincount(topic, weights=popularity, minlength=num_topics)
    # Topic t's cumulative probabilities shifted into (t, t + 1]: one searchsorted for all.
    within = np.cumsum(popularity[by_topic]) - np.repeat(np.cumsum(totals) - totals, sizes)
    topic_cdf = topic[by_topic] + within / np.repeat(totals, sizes)
    global_cdf = np.cumsum(popularity / popularity.sum())

    length = rng.integers(lengths[0], lengths[1] + 1, size=num_users)
    user = np.repeat(np.arange(num_users), length)
    clicks = len(user)
    user_topics = rng.integers(num_topics, size=(num_users, 2))
    chosen = user_topics[user, rng.integers(2, size=clicks)]
    draws = rng.random(clicks)
    in_topic = by_topic[np.minimum(np.searchsorted(topic_cdf, chosen + draws), num_items - 1)]
    noise = np.minimum(np.searchsorted(global_cdf, draws), num_items - 1)
    items = np.where(rng.random(clicks) < NOISE, noise, in_topic) + 1
    row_splits = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    return SplitData(np.arange(num_users, dtype=np.int64), row_splits, items.astype(np.int64))


def measure(num_items: int, num_users: int, neighbors: int, eval_users: int,
            batch_size: int = 256, max_length: int = 20, seed: int = 0) -> dict:
    """One catalogue size, in this process: the numbers of one table row."""
    from dmi_tf.data.pipeline import evaluation_dataset
    from dmi_tf.evaluate import evaluate
    from dmi_tf.models import item_counts
    from dmi_tf.models.item_knn import ItemKNN
    from dmi_tf.models.most_popular import MostPopular

    rng = np.random.default_rng(seed)
    train = topic_log(num_items, num_users, rng)
    held_out = topic_log(num_items, eval_users, rng)
    rows = num_items + 1  # row 0 is padding
    memory = {"data": peak_gib()}

    t0 = time.perf_counter()
    model = ItemKNN(train, rows, neighbors=neighbors)
    build_seconds = time.perf_counter() - t0
    memory["build"] = peak_gib()

    data = evaluation_dataset(held_out, max_length, batch_size)
    t0 = time.perf_counter()
    evaluate(model, data)  # traces
    first_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = evaluate(model, data)
    eval_seconds = time.perf_counter() - t0
    memory["eval"] = peak_gib()
    popular = evaluate(MostPopular(item_counts(train.items, rows)), data)

    # Entries the scoring gathers: the neighbour lists of every history position.
    history = np.concatenate([batch["history"].numpy() for batch in data])
    lists = model.neighbor_lists()
    list_lengths = np.diff(lists.indptr)
    return {
        "items": num_items, "users": num_users, "interactions": train.num_interactions,
        "neighbors": model.neighbors, "similarities": model.num_similarities,
        "stored_mib": sum(a.nbytes for a in (lists.indptr, lists.items, lists.values)) / 2**20,
        "build_seconds": build_seconds, "first_eval_seconds": first_seconds,
        "eval_users": metrics["users"], "users_per_second": metrics["users"] / eval_seconds,
        "gathered_per_user": float(list_lengths[history].sum()) / len(history),
        "memory": memory, "recall@50": metrics["recall@50"],
        "most_popular_recall@50": popular["recall@50"],
    }


def measure_in_child(args, num_items: int) -> dict:
    """``measure`` in a fresh Python process, so that its peak memory is its own."""
    command = [sys.executable, os.path.abspath(__file__), "--measure", str(num_items),
               "--users", str(args.users), "--neighbors", str(args.neighbors),
               "--eval-users", str(args.eval_users), "--batch", str(args.batch)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table_row(r: dict) -> str:
    m = r["memory"]
    return (f"| {r['items']:,} | {r['users']:,} | {r['interactions']:,} | {r['neighbors']} | "
            f"{r['similarities']:,} | {r['stored_mib']:.0f} | {r['build_seconds']:.1f} | "
            f"{r['users_per_second']:,.0f} | {r['gathered_per_user']:,.0f} | "
            f"{m['data']:.2f} | {m['build']:.2f} | {m['eval']:.2f} | "
            f"{r['recall@50']:.3f} ({r['most_popular_recall@50']:.3f}) |")


HEADER = ("| items | train users | train interactions | neighbours | kept similarities | "
          "stored MiB | build s | eval users/s | entries gathered per user | peak GiB after data "
          "| after build | after evaluation | Recall@50 (MostPopular) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="100000,200000",
                        help="catalogue sizes, comma-separated (padding not counted)")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--neighbors", type=int, default=200)
    parser.add_argument("--eval-users", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=256, help="evaluation batch size")
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("--section", default="Item-kNN on large catalogues")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # the child's size
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.users, args.neighbors, args.eval_users,
                                 args.batch)), flush=True)
        return 0
    rows = []
    for num_items in (int(n) for n in args.items.split(",")):
        result = measure_in_child(args, num_items)
        print(f"{num_items:,} items: built in {result['build_seconds']:.1f}s, first evaluation "
              f"(tracing) {result['first_eval_seconds']:.1f}s", flush=True)
        rows.append(table_row(result))
    table = HEADER + "\n".join(rows)
    print(table)
    if args.write:
        body = (run_header("knn_scale.py", argv)
                + "One process per row; peak memory is the process's `ru_maxrss`, TensorFlow "
                "included. Evaluation users/s over a second pass (the first traces).\n\n" + table)
        write_section(args.write, args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
