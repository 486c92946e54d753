"""Two sets of trained runs compared user by user: is a gap larger than the test users allow?

    python benchmarks/per_user.py --a 'runs/sweep/backbone-seed*' --b 'runs/sweep/default-seed*'
        [--metrics recall@50,hit_rate@50] [--splits valid,test] [--fresh-users N]
        [--write BENCHMARKS.md --title ...]

The sweep tables give each model's mean over training seeds and the spread of
that mean over seeds. A split of a hundred users adds a second source of
noise that seeds do not show: which users happen to be in it. This script
evaluates every run of both sets per user (``dmi_tf.evaluate.evaluate_per_user``,
the same numbers as the sweeps), averages each user's metric over the runs of a
set, and resamples the users (bootstrap, 10,000 draws, a fixed seed) to give
the mean difference B - A a 95% interval over users.

A HitRate is decided by few users: those every run of both sets hits, or every
run misses, cannot move it. The table counts them, so a gap of one or two users
reads as what it is.

Each run's per-user values are cached in ``<run>/per_user.json`` (keyed by the
checkpoint restored); a retrained run is evaluated again.

On the built-in synthetic data, ``--fresh-users N`` adds a third split: N users
the generator draws after the dataset's own (``dmi_tf.data.synthetic.fresh_users``),
so a gap can be measured on as many users as it needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import json
import os
import re
import sys

import numpy as np
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf.config import SyntheticConfig
from dmi_tf.data.pipeline import evaluation_dataset
from dmi_tf.data.synthetic import fresh_users as draw_fresh_users
from dmi_tf.errors import UserError
from dmi_tf.evaluate import evaluate_per_user
from dmi_tf.io_utils import atomic_write_text
from dmi_tf.runs import load_run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import markdown_table, mean_spread, run_header, write_section

BOOTSTRAP_DRAWS = 10_000


def data_of(run_dir: str) -> str:
    """What a run was trained and evaluated on: its data folder, or its synthetic settings."""
    try:
        data = config_lib.load(os.path.join(run_dir, "config.yaml")).data
    except (OSError, UserError) as error:
        raise SystemExit(f"{run_dir} is not a finished run: {error}") from error
    return data.path or f"synthetic {dataclasses.astuple(data.synthetic)}"


def per_user_values(run_dir: str, splits, cutoffs, fresh_users: int = 0) -> dict:
    """``{split: {metric: [users]}}`` for one finished run, cached in the run directory.

    ``splits`` may hold ``fresh``: ``fresh_users`` users of the run's synthetic
    generator that its dataset never held (cached as ``fresh<N>``).
    """
    checkpoint = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    # The checkpoint's name and time: a retrained run may reach the same step.
    key = [os.path.basename(checkpoint), os.path.getmtime(checkpoint + ".index")] \
        if checkpoint else None
    cache_path = os.path.join(run_dir, "per_user.json")
    cache = {}
    if os.path.isfile(cache_path):
        with open(cache_path, encoding="utf-8") as f:
            cache = json.load(f)
    if cache.get("checkpoint") != key or not set(cutoffs) <= set(cache.get("cutoffs", [])):
        cache = {"checkpoint": key, "cutoffs": sorted(set(cutoffs)), "splits": {}}
    names = {split: f"fresh{fresh_users}" if split == "fresh" else split for split in splits}
    missing = [split for split in splits if names[split] not in cache["splits"]]
    if missing:
        run = load_run(run_dir)  # names what is missing when run_dir is not a finished run
        c = run.config
        for split in missing:
            if split == "fresh":
                if c.data.path is not None:
                    raise SystemExit(f"{run_dir} was trained on {c.data.path}; fresh users "
                                     "exist only for the built-in synthetic data.")
                users = _fresh(dataclasses.astuple(c.data.synthetic), tuple(run.vocabulary),
                               fresh_users)
            else:
                users = getattr(run.dataset, split)
            data = evaluation_dataset(users, c.data.max_length, c.train.eval_batch_size)
            values = evaluate_per_user(run.model, data, cache["cutoffs"], c.eval.block_size)
            cache["splits"][names[split]] = {k: v.tolist() for k, v in values.items()}
        atomic_write_text(cache_path, json.dumps(cache))
    return {split: cache["splits"][names[split]] for split in splits}


@functools.lru_cache(maxsize=4)
def _fresh(synthetic: tuple, vocabulary: tuple, num_users: int):
    """Drawing 20,000 users takes seconds; every run of a sweep shares them."""
    return draw_fresh_users(SyntheticConfig(*synthetic), list(vocabulary), num_users)


def compare(a: np.ndarray, b: np.ndarray, binary: bool, paired: bool = True,
            draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """B against A, from per-run, per-user values.

    Args:
      a, b: float ``[runs, users]``.
      binary: the metric is 0/1 per user (a HitRate): count the users it cannot
        separate.
      paired: row i of ``a`` and of ``b`` share a training seed.

    Returns:
      ``run_means_a``, ``run_means_b`` (``[runs]``), ``paired`` (``[runs]`` B - A, or
      None), ``delta`` (B - A of the user means), ``interval`` (its 2.5th and 97.5th
      bootstrap percentiles over users) and, when binary, ``always_hit``,
      ``never_hit`` and ``contested`` user counts.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[1] != b.shape[1]:
        raise SystemExit(f"the two sets were evaluated on different users ({a.shape[1]} against "
                         f"{b.shape[1]}): compare runs trained on the same data split.")
    per_user = b.mean(axis=0) - a.mean(axis=0)
    rng = np.random.default_rng(seed)
    users = per_user.shape[0]
    resampled = per_user[rng.integers(0, users, size=(draws, users))].mean(axis=1)
    result = {
        "run_means_a": a.mean(axis=1), "run_means_b": b.mean(axis=1),
        "paired": b.mean(axis=1) - a.mean(axis=1) if paired and len(a) == len(b) else None,
        "delta": float(per_user.mean()),
        "interval": tuple(float(x) for x in np.percentile(resampled, [2.5, 97.5])),
    }
    if binary:
        both = np.concatenate([a, b])
        result["always_hit"] = int((both.min(axis=0) == 1).sum())
        result["never_hit"] = int((both.max(axis=0) == 0).sum())
        result["contested"] = users - result["always_hit"] - result["never_hit"]
    return result


def run_dirs(pattern: str) -> list[str]:
    """The run directories a glob names, in training-seed order (``...-seed<N>``)."""
    dirs = [d for d in glob.glob(pattern) if os.path.isdir(d)]
    if not dirs:
        raise SystemExit(f"no run directory matches {pattern!r}; give a glob of the --out "
                         "folders of finished runs, e.g. 'runs/sweep/default-seed*'.")

    return sorted(dirs, key=lambda path: (training_seed(path), path))


def training_seed(run_dir: str) -> int:
    """N of a ``...-seed<N>`` run directory, -1 for other names."""
    match = re.search(r"seed(\d+)$", os.path.basename(run_dir.rstrip("/")))
    return int(match.group(1)) if match else -1


def table(pattern_a: str, pattern_b: str, metrics, splits, fresh_users: int = 0) -> str:
    dirs_a, dirs_b = run_dirs(pattern_a), run_dirs(pattern_b)
    data = {d: data_of(d) for d in dirs_a + dirs_b}
    if len(set(data.values())) > 1:
        first = dirs_a[0]
        other = next(d for d in data if data[d] != data[first])
        raise SystemExit(f"the runs were trained on different data ({first}: {data[first]}; "
                         f"{other}: {data[other]}): a per-user comparison needs the same users.")
    seeds_a, seeds_b = [training_seed(d) for d in dirs_a], [training_seed(d) for d in dirs_b]
    paired = seeds_a == seeds_b and -1 not in seeds_a
    cutoffs = sorted({int(m.split("@")[1]) for m in metrics})
    values_a = [per_user_values(d, splits, cutoffs, fresh_users) for d in dirs_a]
    values_b = [per_user_values(d, splits, cutoffs, fresh_users) for d in dirs_b]
    header = ["split", "metric", f"A ({len(dirs_a)} runs)", f"B ({len(dirs_b)} runs)",
              "B - A paired by seed", "B - A, 95% interval over users",
              "users: hit by every run / by none / contested"]
    rows = []
    for split in splits:
        label = f"{fresh_users:,} fresh users" if split == "fresh" else split
        for metric in metrics:
            a = np.array([v[split][metric] for v in values_a])
            b = np.array([v[split][metric] for v in values_b])
            r = compare(a, b, binary=metric.startswith("hit_rate"), paired=paired)
            by_seed = "n/a (the sets' training seeds differ)"
            if r["paired"] is not None:
                ahead = int((r["paired"] > 0).sum())
                by_seed = f"{mean_spread(r['paired'])}, B ahead {ahead}/{len(r['paired'])}"
            low, high = r["interval"]
            counts = (f"{r['always_hit']} / {r['never_hit']} / {r['contested']}"
                      if "contested" in r else "")
            rows.append([label, metric, mean_spread(r["run_means_a"]),
                         mean_spread(r["run_means_b"]), by_seed,
                         f"{r['delta']:+.4f} [{low:+.4f}, {high:+.4f}]", counts])
    return markdown_table(header, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="glob of the reference runs' directories")
    parser.add_argument("--b", required=True, help="glob of the compared runs' directories")
    parser.add_argument("--metrics", default="recall@50,hit_rate@50")
    parser.add_argument("--splits", default="valid,test",
                        help="valid, test and/or fresh (needs --fresh-users)")
    parser.add_argument("--fresh-users", type=int, default=0, metavar="N",
                        help="built-in synthetic data only: also evaluate on N users of the "
                             "same generator that no split held (split 'fresh')")
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("--title", default="Per-user comparison")
    args = parser.parse_args(argv)
    metrics = args.metrics.split(",")
    bad = [m for m in metrics if not re.fullmatch(r"(recall|hit_rate|ndcg)@\d+", m)]
    if bad:
        raise SystemExit(f"unknown metric(s) {bad}: use recall@N, hit_rate@N or ndcg@N.")
    splits = args.splits.split(",")
    if args.fresh_users and "fresh" not in splits:
        splits.append("fresh")
    if not set(splits) <= {"valid", "test", "fresh"}:
        raise SystemExit(f"--splits takes valid, test and/or fresh, got {args.splits!r}.")
    if "fresh" in splits and args.fresh_users < 1:
        raise SystemExit("the fresh split needs --fresh-users N (N >= 1).")
    result = table(args.a, args.b, metrics, splits, args.fresh_users)
    print(result)
    if args.write:
        body = (run_header("per_user.py", argv)
                + f"A: `{args.a}`; B: `{args.b}`. Mean ± sample std over runs; the paired column "
                "is B - A per training seed. The interval resamples the users (bootstrap, "
                f"{BOOTSTRAP_DRAWS:,} draws) with each user's metric averaged over the runs of a "
                "set: an interval containing 0 means the users of this split cannot tell the two "
                "apart. The last column counts, for a HitRate, the users every run of both sets "
                "hits, the users no run hits, and the rest, the only users that can move it."
                + (f" The fresh rows evaluate the same runs on {args.fresh_users:,} users the "
                   "synthetic generator draws after the dataset's own (same catalogue and "
                   "topics, users no split held)." if "fresh" in splits else "")
                + "\n\n" + result)
        write_section(args.write, args.title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
