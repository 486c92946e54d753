"""ComiRec's preprocessing ("strong generalization" split), exactly as docs/protocol.md states it.

1. Interactions in file order; every interaction counts.
2. Items counted over all interactions, stable-sorted by count descending (ties keep first
   appearance order); items with ``>= min_count`` interactions are numbered ``1..N``.
3. Users, in first-appearance order, kept if they have ``>= min_count`` interactions with kept
   items (one pass, not an iterated k-core).
4. ``random.seed(seed); random.shuffle(users)``; the first ``int(n*0.8)`` users are train, up to
   ``int(n*0.9)`` valid, the rest test. A user's processed id is its index in the shuffled list.
5. Each user's interactions with kept items, stable-sorted by timestamp (ties keep file order).

Command line::

    python -m dmi_tf.data.prepare --input FILE --format FMT --out DIR [--min-count 5]
        [--seed 1230] [--name NAME]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np

from dmi_tf.data.dataset import Dataset, RawLog, SplitData
from dmi_tf.errors import DataError, UserError

TRAIN_FRACTION = 0.8
VALID_END_FRACTION = 0.9


def _factorize(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Codes ``0..K-1`` in first-appearance order, and the distinct values in that order."""
    index = {v: k for k, v in enumerate(dict.fromkeys(values))}  # dicts keep insertion order
    codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, list(index)


def split_sizes(n: int) -> tuple[int, int]:
    """The train end and valid end of ``n`` shuffled users: ``int(n*0.8)``, ``int(n*0.9)``."""
    return int(n * TRAIN_FRACTION), int(n * VALID_END_FRACTION)


def prepare(log: RawLog, min_count: int = 5, seed: int = 1230, name: str = "dataset") -> Dataset:
    """Filters, numbers, splits and orders a raw log as ComiRec's ``data.py`` does.

    Args:
      log: interactions in file order.
      min_count: the 5 of the protocol: minimum interactions of a kept item, and minimum
        interactions with kept items of a kept user.
      seed: the seed of Python's ``random`` for the user shuffle (1230 in the protocol).
      name: the dataset's name.

    Returns:
      A :class:`Dataset`: vocabulary[k] is the raw id of item ``k`` (``1..N``, most popular
      first); user ``u`` of the result is the ``u``-th user of the shuffled list.

    Raises:
      DataError: the log is empty or too small to give items and three non-empty splits.
    """
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) \
            or min_count < 1:
        raise UserError(f"min_count must be a positive integer, got {min_count!r}")
    n_log = len(log.items)
    if len(log.users) != n_log or len(log.timestamps) != n_log:
        raise ValueError(f"RawLog from {log.source} has {len(log.users)} users, {n_log} items "
                         f"and {len(log.timestamps)} timestamps; they must be equally long")
    if n_log == 0:
        raise DataError(f"{log.source} has no interactions; give a non-empty input")
    timestamps = np.asarray(log.timestamps, dtype=np.float64)
    if not np.all(np.isfinite(timestamps)):
        bad = int(np.flatnonzero(~np.isfinite(timestamps))[0])
        raise DataError(f"{log.source}: interaction {bad} has timestamp {timestamps[bad]}; "
                        "timestamps must be finite numbers")

    # Step 2: item popularity, stable sort by count descending.
    item_codes, item_raw = _factorize(log.items)
    counts = np.bincount(item_codes, minlength=len(item_raw))
    order = np.argsort(-counts, kind="stable")
    num_kept_items = int(np.count_nonzero(counts >= min_count))
    if num_kept_items == 0:
        raise DataError(
            f"{log.source}: no item has >= {min_count} interactions (the most popular has "
            f"{int(counts.max())}); lower --min-count or use more data")
    if num_kept_items < 2:
        raise DataError(
            f"{log.source}: only {num_kept_items} item has >= {min_count} interactions, at least "
            "2 are needed; lower --min-count or use more data")
    kept_codes = order[:num_kept_items]
    item_index = np.zeros(len(item_raw), dtype=np.int64)  # 0: dropped
    item_index[kept_codes] = np.arange(1, num_kept_items + 1, dtype=np.int64)
    vocabulary = [""] + [item_raw[c] for c in kept_codes.tolist()]

    # Step 3: users in first-appearance order with >= min_count kept interactions.
    user_codes, user_raw = _factorize(log.users)
    item_of = item_index[item_codes]
    on_kept = item_of > 0
    user_counts = np.bincount(user_codes[on_kept], minlength=len(user_raw))
    kept_users = np.flatnonzero(user_counts >= min_count).tolist()  # ascending = first appearance

    # Step 4: shuffle and split. Only the list's length drives random.shuffle, so shuffling
    # codes gives the same permutation as shuffling raw ids.
    random.Random(seed).shuffle(kept_users)
    n = len(kept_users)
    train_end, valid_end = split_sizes(n)
    if train_end < 1 or valid_end - train_end < 1 or n - valid_end < 1:
        raise DataError(
            f"{log.source}: only {n} user(s) have >= {min_count} interactions with the "
            f"{num_kept_items} kept items, which gives {train_end}/{valid_end - train_end}/"
            f"{n - valid_end} train/valid/test users; three non-empty splits need at least 6 "
            "users: lower --min-count or use more data")
    processed = np.full(len(user_raw), -1, dtype=np.int64)
    processed[np.asarray(kept_users, dtype=np.int64)] = np.arange(n, dtype=np.int64)

    # Step 5: each kept user's kept interactions, stable-sorted by timestamp.
    uid = processed[user_codes]
    rows = np.flatnonzero(on_kept & (uid >= 0))
    rows = rows[np.lexsort((timestamps[rows], uid[rows]))]  # lexsort is stable
    uid_sorted = uid[rows]
    items_sorted = item_of[rows]
    ts_sorted = timestamps[rows]
    row_splits_all = np.concatenate(
        [[0], np.cumsum(np.bincount(uid_sorted, minlength=n))]).astype(np.int64)

    def split(lo: int, hi: int) -> SplitData:
        a, b = row_splits_all[lo], row_splits_all[hi]
        return SplitData(
            user_ids=np.arange(lo, hi, dtype=np.int64),
            row_splits=(row_splits_all[lo:hi + 1] - a).astype(np.int64),
            items=items_sorted[a:b].copy(),
            timestamps=ts_sorted[a:b].copy(),
        )

    return Dataset(train=split(0, train_end), valid=split(train_end, valid_end),
                   test=split(valid_end, n), vocabulary=vocabulary, name=name)


def main(argv: list[str] | None = None) -> int:
    """``python -m dmi_tf.data.prepare``: raw log → processed split folder."""
    from dmi_tf.data.readers import FORMATS, read_raw
    from dmi_tf.data.splits import write_dataset

    parser = argparse.ArgumentParser(
        prog="python -m dmi_tf.data.prepare",
        description="Preprocess a raw interaction log with ComiRec's protocol (5-filter, "
                    "seeded user split, time order) and write train/valid/test.txt and "
                    "item_map.txt.")
    parser.add_argument("--input", required=True, help="the raw interaction file")
    parser.add_argument("--format", required=True, metavar="FMT",
                        help=f"the input's format: one of {', '.join(FORMATS)}")
    parser.add_argument("--out", required=True, help="the folder to write the splits to")
    parser.add_argument("--min-count", type=int, default=5,
                        help="minimum interactions of kept items and users (default 5)")
    parser.add_argument("--seed", type=int, default=1230,
                        help="seed of the user shuffle (default 1230, as ComiRec)")
    parser.add_argument("--name", default=None,
                        help="the dataset's name (default: the --out folder's name)")
    args = parser.parse_args(argv)
    name = args.name or os.path.basename(os.path.normpath(args.out)) or "dataset"
    try:
        start = time.perf_counter()
        log = read_raw(args.input, args.format)
        dataset = prepare(log, min_count=args.min_count, seed=args.seed, name=name)
        write_dataset(dataset, args.out)
        elapsed = time.perf_counter() - start
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # write_dataset moves files in whole or not at all
        print(f"\ninterrupted: nothing was changed in {args.out}", file=sys.stderr)
        return 130
    print(dataset.summary())
    print(f"wrote train.txt, valid.txt, test.txt, item_map.txt to {args.out} "
          f"({len(log):,} raw interactions read, {elapsed:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
