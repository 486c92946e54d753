"""The time split: train on everything before a cut-off, judge on the windows after it.

::

    time ─────────────────────────────────────────────────────────────────────────▶
    │ train: every interaction before valid_start │ valid window   │ test window   │
                                                  ▲ valid_start    ▲ test_start    (end of log)
    valid user: history = its items before valid_start, targets = its items in the valid window
    test user:  history = its items before test_start,  targets = its items in the test window

The protocol's user split lets a model train on other users' future: a valid
user's targets may be older than a training user's last click. Here no training
interaction comes at or after ``valid_start``, and every target comes after its
history's last item. A user active in both periods is in ``train`` (its past) and
in ``valid`` or ``test`` (judged on its window), so the splits share users; each
evaluated user's history length is recorded (``SplitData.history_lengths``,
``valid_cut.txt`` / ``test_cut.txt`` in the folder) and evaluation cuts there.

Filters (the protocol's 5, applied to what is known at each cut, so no choice
depends on the future): items are counted and numbered by popularity on the
training period only, so a target on an item first seen later is dropped (no
model has a row for it); training users need ``min_count`` interactions before
``valid_start``; a valid (test) user needs at least one item before its window,
at least one in it, and ``min_count`` in all up to the window's end.
"""

from __future__ import annotations

import datetime
import math

import numpy as np

from dmi_tf.data.dataset import Dataset, RawLog, SplitData
from dmi_tf.data.prepare import (
    check_log,
    check_min_count,
    factorize,
    number_items,
    user_sequences,
)
from dmi_tf.errors import DataError, UserError

DEFAULT_FRACTIONS = (0.8, 0.9)
# Timestamps in this range are shown as dates too (Unix seconds, 1970-2099).
_SECONDS_RANGE = (0.0, 4.1e9)


def has_timestamps(timestamps: np.ndarray) -> bool:
    """False when the timestamps are the line order ``0, 1, 2, ...``.

    That is what readers store when the input has no time column (``sequences``,
    a RecBole file without a ``timestamp`` field); a real log never has exactly those.
    """
    return not np.array_equal(timestamps, np.arange(len(timestamps), dtype=np.float64))


def require_timestamps(log: RawLog) -> np.ndarray:
    """The log's checked timestamps float64 ``[n]``.

    Raises:
      DataError: the log has none (:func:`has_timestamps`), or is empty or malformed.
    """
    timestamps = check_log(log)
    if not has_timestamps(timestamps):
        raise DataError(
            f"{log.source} has no time column (its timestamps are the line order 0, 1, 2, ...), "
            "so it cannot be split by time; use --split user, or an input with timestamps "
            "(movielens, amazon, taobao, or recbole with a timestamp field)")
    return timestamps


def describe_time(t: float) -> str:
    """A timestamp for a message: the number, and its UTC date when it looks like Unix seconds."""
    if _SECONDS_RANGE[0] <= t < _SECONDS_RANGE[1]:
        date = datetime.datetime.fromtimestamp(t, datetime.UTC)
        return f"{t:.0f} ({date.isoformat(timespec='seconds').replace('+00:00', 'Z')})"
    return f"{t:g}"


def parse_cutoff(text: str) -> float:
    """A cut-off: a number in the log's time unit, or an ISO date as Unix seconds.

    ``2024-01-31`` and ``2024-01-31T12:00[:00]`` are UTC unless they carry an
    offset (``+02:00``); every built-in reader's timestamps are Unix seconds.

    Raises:
      UserError: neither a finite number nor an ISO date.
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise UserError(f"cut-off {text!r} is not a finite number; give a date such as "
                            "2024-01-31 or a timestamp")
        return value
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"cut-off {text!r} is neither a date (2024-01-31 or 2024-01-31T12:00, "
                        "UTC unless it has an offset) nor a timestamp in the log's unit") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def cut_times(timestamps: np.ndarray, fractions: tuple[float, float] | None = None,
              cutoffs: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(valid_start, test_start)`` from shares of the log or from given times.

    Args:
      timestamps: float64 ``[n]``, every interaction of the raw log.
      fractions: ``(a, b)``, ``0 < a < b < 1``: the windows start at the timestamps
        that ``a`` and ``b`` of the interactions (in time order) come before.
      cutoffs: the two start times themselves (:func:`parse_cutoff`); exclusive with
        ``fractions``. Neither: :data:`DEFAULT_FRACTIONS`.

    Raises:
      UserError: both given, not increasing, or out of range.
    """
    if fractions is not None and cutoffs is not None:
        raise UserError("give --time-fractions or --time-cutoffs, not both")
    if cutoffs is not None:
        valid_start, test_start = cutoffs
        if not valid_start < test_start:
            raise UserError(f"--time-cutoffs: the validation window must start before the test "
                            f"window ({describe_time(valid_start)} is not before "
                            f"{describe_time(test_start)})")
        return float(valid_start), float(test_start)
    a, b = DEFAULT_FRACTIONS if fractions is None else fractions
    if not 0 < a < b < 1:
        raise UserError(f"--time-fractions {a},{b}: need 0 < a < b < 1, e.g. 0.8,0.9 (train on "
                        "the first 80% of the interactions, validate on the next 10%)")
    ordered = np.sort(timestamps)
    n = len(ordered)
    valid_start, test_start = float(ordered[int(n * a)]), float(ordered[int(n * b)])
    if valid_start == test_start:
        raise DataError(f"--time-fractions {a},{b}: both shares fall on the timestamp "
                        f"{describe_time(valid_start)} (many interactions share it); choose "
                        "shares further apart or give --time-cutoffs")
    return valid_start, test_start


def time_split(log: RawLog, min_count: int = 5, valid_start: float | None = None,
               test_start: float | None = None, name: str = "dataset",
               vocabulary: list[str] | None = None) -> Dataset:
    """Filters, numbers and splits a raw log by time (module docstring).

    Args:
      log: interactions in file order, with real timestamps.
      min_count: the protocol's 5 (items on the training period; users per split).
      valid_start, test_start: the windows' start times (:func:`cut_times`; default
        the 80% and 90% points of the log).
      name: the dataset's name.
      vocabulary: an earlier version's vocabulary whose raw ids keep their indices
        (``prepare.number_items``); None numbers from scratch.

    Returns:
      A :class:`Dataset` whose valid and test splits carry ``history_lengths``; user
      ids are the users' first-appearance order in the log, the same in every split.

    Raises:
      DataError: no time column, cut-offs outside the log, or an empty split.
    """
    check_min_count(min_count)
    timestamps = require_timestamps(log)
    if valid_start is None or test_start is None:
        valid_start, test_start = cut_times(timestamps)
    first, last = float(timestamps.min()), float(timestamps.max())
    span = f"the log runs from {describe_time(first)} to {describe_time(last)}"
    if not first < valid_start < test_start <= last:
        raise DataError(
            f"the validation window must start after the log's first interaction and before "
            f"the test window, which must start by its last ({describe_time(valid_start)}, "
            f"{describe_time(test_start)}); {span}: choose cut-offs inside it")

    # Items: counted and numbered on the training period only.
    item_codes, item_raw = factorize(log.items)
    before = timestamps < valid_start
    counts = np.bincount(item_codes[before], minlength=len(item_raw))
    item_index, vocabulary = number_items(
        item_raw, counts, min_count, f"{log.source} before {describe_time(valid_start)}",
        vocabulary)
    item_of = item_index[item_codes]

    user_codes, user_raw = factorize(log.users)
    num_users = len(user_raw)
    items, ts, row_splits = user_sequences(user_codes, item_of, timestamps,
                                           np.flatnonzero(item_of > 0), num_users)
    lengths = np.diff(row_splits)
    owner = np.repeat(np.arange(num_users), lengths)

    def count_before(t: float) -> np.ndarray:  # each user's items before t (time-sorted)
        return np.bincount(owner[ts < t], minlength=num_users)

    at_valid, at_test = count_before(valid_start), count_before(test_start)
    train = _take(items, ts, row_splits, at_valid >= min_count, at_valid)
    valid = _take(items, ts, row_splits,
                  (at_valid >= 1) & (at_test > at_valid) & (at_test >= min_count),
                  at_test, history=at_valid)
    test = _take(items, ts, row_splits,
                 (at_test >= 1) & (lengths > at_test) & (lengths >= min_count),
                 lengths, history=at_test)
    for split_name, split in (("train", train), ("valid", valid), ("test", test)):
        if split.num_users == 0:
            raise DataError(
                f"{log.source}: the {split_name} split of this time split is empty (windows "
                f"start at {describe_time(valid_start)} and {describe_time(test_start)}; {span}; "
                f"min_count {min_count}); move the cut-offs or lower --min-count")
    return Dataset(train=train, valid=valid, test=test, vocabulary=vocabulary, name=name)


def _take(items: np.ndarray, ts: np.ndarray, row_splits: np.ndarray, keep: np.ndarray,
          ends: np.ndarray, history: np.ndarray | None = None) -> SplitData:
    """The users ``keep`` (bool ``[U]``) with their first ``ends[u]`` items; user ids = codes."""
    users = np.flatnonzero(keep)
    lengths = ends[users].astype(np.int64)
    starts = row_splits[:-1][users]
    new_splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = np.repeat(starts - new_splits[:-1], lengths) + np.arange(new_splits[-1])
    return SplitData(user_ids=users.astype(np.int64), row_splits=new_splits, items=items[index],
                     timestamps=ts[index],
                     history_lengths=None if history is None else history[users].astype(np.int64))
