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
        [--split time [--time-fractions 0.8,0.9 | --time-cutoffs DATE,DATE]]
        [--vocabulary RUN_OR_DIR]

``--split time`` replaces steps 3 and 4 by a split in time (``dmi_tf.data.time_split``);
``--vocabulary OLD`` keeps the indices of an earlier version's items in step 2
(``dmi_tf.data.vocabulary``).
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


def factorize(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Codes ``0..K-1`` in first-appearance order, and the distinct values in that order."""
    index = {v: k for k, v in enumerate(dict.fromkeys(values))}  # dicts keep insertion order
    codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, list(index)


def split_sizes(n: int) -> tuple[int, int]:
    """The train end and valid end of ``n`` shuffled users: ``int(n*0.8)``, ``int(n*0.9)``."""
    return int(n * TRAIN_FRACTION), int(n * VALID_END_FRACTION)


def check_log(log: RawLog) -> np.ndarray:
    """Checks a raw log's shape and timestamps; returns its timestamps as float64 ``[n]``.

    Raises:
      DataError: the log is empty or a timestamp is not finite.
    """
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
    return timestamps


def check_min_count(min_count) -> None:
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) \
            or min_count < 1:
        raise UserError(f"min_count must be a positive integer, got {min_count!r}")


def number_items(item_raw: list[str], counts: np.ndarray, min_count: int, source: str,
                 known: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Step 2: items with ``>= min_count`` interactions numbered ``1..N`` by popularity.

    With ``known`` (an earlier version's vocabulary, ``dmi_tf.data.vocabulary``), every
    raw id it holds keeps its index whatever its count now, and the new items with
    ``>= min_count`` interactions are numbered after them, by popularity.

    Args:
      item_raw: the distinct raw item ids.
      counts: int ``[len(item_raw)]``, the interactions that count for each.
      source: the log's name, for error messages.
      known: ``[""]`` + raw ids of indices ``1..``, or None.

    Returns:
      ``(index [len(item_raw)], vocabulary)``: each distinct item's index (0 =
      dropped), and the raw id of every index (``vocabulary[0] == ""``).

    Raises:
      DataError: fewer than 2 items reach ``min_count``.
    """
    order = np.argsort(-counts, kind="stable")
    if known is not None:
        old = {raw: index for index, raw in enumerate(known) if index}
        item_index = np.fromiter((old.get(raw, 0) for raw in item_raw), np.int64, len(item_raw))
        fresh = order[(item_index[order] == 0) & (counts[order] >= min_count)]
        item_index[fresh] = len(known) + np.arange(len(fresh), dtype=np.int64)
        vocabulary = [*known, *(item_raw[c] for c in fresh.tolist())]
        if len(vocabulary) < 3:
            raise DataError(f"{source}: the vocabulary has {len(vocabulary) - 1} item(s) with "
                            f"the new ones (>= {min_count} interactions); at least 2 are needed")
        return item_index, vocabulary
    num_kept_items = int(np.count_nonzero(counts >= min_count))
    if num_kept_items == 0:
        most = int(counts.max()) if len(counts) else 0
        raise DataError(
            f"{source}: no item has >= {min_count} interactions (the most popular has "
            f"{most}); lower --min-count or use more data")
    if num_kept_items < 2:
        raise DataError(
            f"{source}: only {num_kept_items} item has >= {min_count} interactions, at least "
            "2 are needed; lower --min-count or use more data")
    kept_codes = order[:num_kept_items]
    item_index = np.zeros(len(item_raw), dtype=np.int64)  # 0: dropped
    item_index[kept_codes] = np.arange(1, num_kept_items + 1, dtype=np.int64)
    return item_index, [""] + [item_raw[c] for c in kept_codes.tolist()]


def user_sequences(uid: np.ndarray, items: np.ndarray, timestamps: np.ndarray,
                   rows: np.ndarray, num_users: int):
    """Step 5: the interactions ``rows`` grouped by user ``0..num_users-1``, each user's
    stable-sorted by timestamp (ties keep file order).

    Returns:
      ``(items [n], timestamps [n], row_splits [num_users + 1])`` in CSR form.
    """
    rows = rows[np.lexsort((timestamps[rows], uid[rows]))]  # lexsort is stable
    row_splits = np.concatenate(
        [[0], np.cumsum(np.bincount(uid[rows], minlength=num_users))]).astype(np.int64)
    return items[rows], timestamps[rows], row_splits


def prepare(log: RawLog, min_count: int = 5, seed: int = 1230, name: str = "dataset",
            vocabulary: list[str] | None = None) -> Dataset:
    """Filters, numbers, splits and orders a raw log as ComiRec's ``data.py`` does.

    Args:
      log: interactions in file order.
      min_count: the 5 of the protocol: minimum interactions of a kept item, and minimum
        interactions with kept items of a kept user.
      seed: the seed of Python's ``random`` for the user shuffle (1230 in the protocol).
      name: the dataset's name.
      vocabulary: an earlier version's vocabulary whose raw ids keep their indices
        (:func:`number_items`); None numbers from scratch.

    Returns:
      A :class:`Dataset`: vocabulary[k] is the raw id of item ``k`` (``1..N``, most popular
      first, or the earlier vocabulary then the new items by popularity); user ``u`` of the
      result is the ``u``-th user of the shuffled list.

    Raises:
      DataError: the log is empty or too small to give items and three non-empty splits.
    """
    check_min_count(min_count)
    timestamps = check_log(log)

    # Step 2: item popularity, stable sort by count descending.
    item_codes, item_raw = factorize(log.items)
    counts = np.bincount(item_codes, minlength=len(item_raw))
    item_index, vocabulary = number_items(item_raw, counts, min_count, log.source, vocabulary)
    num_kept_items = len(vocabulary) - 1

    # Step 3: users in first-appearance order with >= min_count kept interactions.
    user_codes, user_raw = factorize(log.users)
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
    items_sorted, ts_sorted, row_splits_all = user_sequences(
        uid, item_of, timestamps, np.flatnonzero(on_kept & (uid >= 0)), n)

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


def _pair(text: str, parse, flag: str) -> tuple:
    parts = text.split(",")
    if len(parts) != 2:
        raise UserError(f"{flag} {text!r}: give two comma-separated values, the starts of the "
                        "validation and test windows")
    try:
        return tuple(parse(p) for p in parts)
    except UserError:
        raise
    except ValueError:
        raise UserError(f"{flag} {text!r}: give two numbers, e.g. 0.8,0.9") from None


def split_log(log: RawLog, args: argparse.Namespace, name: str,
              known: list[str] | None = None) -> Dataset:
    """The dataset the command line asks for: the protocol's user split or a time split,
    numbered after the vocabulary ``known`` when given."""
    if args.split == "user":
        for flag, value in (("--time-fractions", args.time_fractions),
                            ("--time-cutoffs", args.time_cutoffs)):
            if value is not None:
                raise UserError(f"{flag} sets a time split's windows; add --split time")
        seed = 1230 if args.seed is None else args.seed
        return prepare(log, min_count=args.min_count, seed=seed, name=name, vocabulary=known)
    from dmi_tf.data import time_split

    if args.seed is not None:
        raise UserError("--seed shuffles users for --split user; a time split has no shuffle")
    fractions = (None if args.time_fractions is None
                 else _pair(args.time_fractions, float, "--time-fractions"))
    cutoffs = (None if args.time_cutoffs is None
               else _pair(args.time_cutoffs, time_split.parse_cutoff, "--time-cutoffs"))
    timestamps = time_split.require_timestamps(log)
    valid_start, test_start = time_split.cut_times(timestamps, fractions, cutoffs)
    dataset = time_split.time_split(log, args.min_count, valid_start, test_start, name, known)
    print(f"time split: train before {time_split.describe_time(valid_start)}, validation "
          f"window from it, test window from {time_split.describe_time(test_start)}")
    return dataset


def describe_carried(known: list[str], dataset: Dataset, source: str) -> str:
    """One line: how many indices came from ``source`` (and how many are in use) and how many
    are new."""
    used = np.zeros(dataset.num_items, bool)
    for split in (dataset.train, dataset.valid, dataset.test):
        used[split.items] = True
    old, new = len(known) - 1, dataset.num_items - len(known)
    added = f", {new:,} new items at {len(known)}..{dataset.num_items - 1}" if new else \
        ", no new item"
    return (f"vocabulary: {old:,} items keep their indices from {source} "
            f"({int(used[1:len(known)].sum()):,} of them in this data){added}")


def main(argv: list[str] | None = None) -> int:
    """``python -m dmi_tf.data.prepare``: raw log → processed split folder."""
    from dmi_tf.data.readers import FORMATS, read_raw
    from dmi_tf.data.splits import write_dataset
    from dmi_tf.data.vocabulary import load_vocabulary

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
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the user shuffle (default 1230, as ComiRec; user split only)")
    parser.add_argument("--name", default=None,
                        help="the dataset's name (default: the --out folder's name)")
    parser.add_argument("--split", choices=("user", "time"), default="user",
                        help="user: the protocol's 8:1:1 user split (default); time: train "
                             "before a cut-off, validate and test on the windows after it")
    parser.add_argument("--time-fractions", metavar="A,B", default=None,
                        help="time split: the windows start where shares A and B of the "
                             "interactions (in time order) are behind (default 0.8,0.9)")
    parser.add_argument("--vocabulary", metavar="RUN_OR_DIR", default=None,
                        help="keep the item indices of this run, split folder or exported "
                             "version: known raw ids keep their index, new items (>= "
                             "--min-count interactions) are appended")
    parser.add_argument("--time-cutoffs", metavar="START,START", default=None,
                        help="time split: the validation and test windows' start times, as "
                             "dates (2024-01-31[T12:00], UTC) or timestamps in the log's unit")
    args = parser.parse_args(argv)
    name = args.name or os.path.basename(os.path.normpath(args.out)) or "dataset"
    try:
        start = time.perf_counter()
        known = None if args.vocabulary is None else load_vocabulary(args.vocabulary)
        log = read_raw(args.input, args.format)
        dataset = split_log(log, args, name, known)
        write_dataset(dataset, args.out)
        elapsed = time.perf_counter() - start
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # write_dataset moves files in whole or not at all
        print(f"\ninterrupted: nothing was changed in {args.out}", file=sys.stderr)
        return 130
    written = "train.txt, valid.txt, test.txt, item_map.txt"
    if dataset.valid.history_lengths is not None:
        written += ", valid_cut.txt, test_cut.txt"
    print(dataset.summary())
    if known is not None:
        print(describe_carried(known, dataset, args.vocabulary))
    print(f"wrote {written} to {args.out} "
          f"({len(log):,} raw interactions read, {elapsed:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
