"""``tf.data`` pipelines: ComiRec training samples and evaluation samples.

Training (ComiRec's protocol): for a user, a target position ``k >= 4`` is
drawn uniformly; the history is the up to ``L`` items before it, left-aligned
and padded with 0 at the end (ComiRec's layout, so position embeddings mean
the same thing as in its code). Sampling is vectorised per batch and stateless
(seeded by the batch number), so the stream is reproducible and no Python runs
per sample.

Evaluation: the first 80% of a user's sequence (rounded down) is the history,
of which the model sees the last ``L`` items; the rest are the targets. A split
that records where each user's history ends (``SplitData.history_lengths``, a
time split's window start) is cut there instead.

Every element is a dict; the padding id 0 doubles as the mask
(``history > 0``), so there is no separate mask tensor to keep in sync.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dmi_tf.data.dataset import SplitData
from dmi_tf.errors import DataError

HISTORY = "history"  # int32 [batch, L], 0 = padding
TARGET = "target"  # int32 [batch]
TARGETS = "targets"  # int32 [batch, T], 0 = padding


def history_window(items, start, end, max_length: int):
    """The up to ``L`` items before each cut, left-aligned and padded with 0 (ComiRec's layout).

    The one definition of a model's input, shared by training samples (cut at
    the target) and evaluation samples (cut at 80% of the sequence).

    Args:
      items: int32 ``[total]``, every user's items back to back.
      start: int32 ``[batch]``, where each user's items begin in ``items``.
      end: int32 ``[batch]``, the cut: the history ends just before ``items[end]``;
        ``end > start``.
      max_length: L.

    Returns:
      int32 ``[batch, L]``: ``items[max(start, end - L):end]`` followed by zeros.
    """
    first = tf.maximum(end - max_length, start)
    index = first[:, None] + tf.range(max_length, dtype=first.dtype)[None, :]
    valid = index < end[:, None]
    # Clamped so padded slots never read past the user's own items.
    return tf.where(valid, tf.gather(items, tf.minimum(index, end[:, None] - 1)), 0)


TARGET_CHOICES = ("random", "every")


def first_targets(split: SplitData, min_target_position: int = 4,
                  after: float | None = None) -> np.ndarray:
    """Each user's first position that may be a training target, int64 ``[U]``.

    ``min_target_position``, or with ``after`` the position of the user's first
    interaction newer than it (``split.timestamps > after``; sequences are in time
    order) if that comes later: the targets of a warm-started run that trains on
    what its source has not seen (``train.warm_start_targets``). Earlier
    interactions still form the histories. A user whose first target position is
    its length has none.

    Raises:
      DataError: ``after`` is given and the split has no timestamps.
    """
    lengths = split.lengths()
    first = np.full(len(lengths), min_target_position, np.int64)
    if after is not None:
        if split.timestamps is None:
            raise DataError("the training split has no timestamp column, so no interaction can be "
                            "told newer than another; prepare the data from a log with timestamps")
        newer = np.flatnonzero(split.timestamps > after)
        owner = np.searchsorted(split.row_splits, newer, side="right") - 1
        first_newer = lengths.astype(np.int64)  # no newer interaction: no target
        np.minimum.at(first_newer, owner, newer - split.row_splits[owner])
        first = np.maximum(first, first_newer)
    return np.minimum(first, lengths)


def _eligible_users(split: SplitData, first: np.ndarray, min_target_position: int,
                    after: float | None) -> np.ndarray:
    """Indices of the users with at least one target position (``first < length``)."""
    eligible = np.nonzero(split.lengths() > first)[0]
    if len(eligible) == 0:
        if after is not None:
            raise DataError(f"no training interaction is newer than {after:g}, so there is no "
                            "target to train on; give data with interactions after it")
        raise DataError(
            f"no training user has more than {min_target_position} interactions, so no training "
            f"sample can be cut (data.min_target_position={min_target_position}); use longer "
            "sequences or lower data.min_target_position.")
    return eligible


def targets_per_epoch(split: SplitData, min_target_position: int = 4,
                      targets: str = "random", after: float | None = None) -> int:
    """Training samples in one pass: eligible users (``random``) or target positions (``every``).

    ``after``: only interactions newer than it are targets (:func:`first_targets`).
    """
    first = first_targets(split, min_target_position, after)
    eligible = _eligible_users(split, first, min_target_position, after)
    return int(len(eligible) if targets == "random"
               else np.sum(split.lengths()[eligible] - first[eligible]))


def training_dataset(split: SplitData, max_length: int, batch_size: int,
                     min_target_position: int = 4, seed: int = 0,
                     targets: str = "random", after: float | None = None) -> tf.data.Dataset:
    """An endless, shuffled stream of training batches.

    ``targets="random"`` (ComiRec): users are visited in shuffled epochs (every
    user once per pass); each visit draws a fresh target position.
    ``targets="every"``: every (user, position ``>= min_target_position``) pair is
    a sample, visited once per pass in a fresh shuffled order, so each training
    interaction after the first ``min_target_position`` of its user is a target
    once per epoch (SASRec's supervision, one target per row).
    ``after``: only interactions newer than this timestamp are targets, in either
    mode (:func:`first_targets`); the histories still reach back before it.

    Returns:
      A dataset of ``{"history": int32 [batch, L], "target": int32 [batch]}``.

    Raises:
      DataError: no user has a target position.
    """
    if targets not in TARGET_CHOICES:
        raise ValueError(f"targets must be one of {TARGET_CHOICES}, got {targets!r}")
    first = first_targets(split, min_target_position, after)
    eligible = _eligible_users(split, first, min_target_position, after)
    lengths = split.lengths()
    items = tf.constant(split.items, tf.int32)
    starts = tf.constant(split.row_splits[:-1], tf.int32)
    seq_lengths = tf.constant(lengths, tf.int32)
    first_positions = tf.constant(first, tf.int32)
    if targets == "every":
        counts = lengths[eligible] - first[eligible]
        users = np.repeat(eligible, counts).astype(np.int32)
        # Position of each sample: first[user], +1, ... within its user.
        positions = (np.arange(len(users)) - np.repeat(np.cumsum(counts) - counts, counts)
                     + np.repeat(first[eligible], counts)).astype(np.int32)

        def make_every(pair):
            start = tf.gather(starts, pair[:, 0])
            end = start + pair[:, 1]
            return {HISTORY: history_window(items, start, end, max_length),
                    TARGET: tf.gather(items, end)}

        pairs = tf.data.Dataset.from_tensor_slices(np.stack([users, positions], axis=1))
        return (pairs.shuffle(len(users), seed=seed, reshuffle_each_iteration=True)
                .repeat()
                .batch(batch_size, drop_remainder=True)
                .map(make_every, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .prefetch(tf.data.AUTOTUNE))

    def make_batch(batch_number, users):
        n = tf.gather(seq_lengths, users)
        low = tf.gather(first_positions, users)
        draw = tf.random.stateless_uniform(tf.shape(users), seed=tf.stack([seed, batch_number]))
        k = low + tf.cast(draw * tf.cast(n - low, tf.float32), tf.int32)
        k = tf.minimum(k, n - 1)  # float rounding can reach n when draw is just below 1
        start = tf.gather(starts, users)
        return {HISTORY: history_window(items, start, start + k, max_length),
                TARGET: tf.gather(items, start + k)}

    users = tf.data.Dataset.from_tensor_slices(eligible.astype(np.int32))
    return (users.shuffle(len(eligible), seed=seed, reshuffle_each_iteration=True)
            .repeat()
            .batch(batch_size, drop_remainder=True)
            .enumerate()
            .map(lambda i, u: make_batch(tf.cast(i, tf.int32), u),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def evaluation_arrays(split: SplitData, max_length: int,
                      history_share: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation cut, as arrays.

    Each user's history is the first ``split.history_lengths[u]`` items when the
    split records them (a time split), else the protocol's first
    ``floor(0.8 n)``; the model sees its last ``L`` items (``history_window``).

    Returns:
      ``(history [U, L], target_items [total], target_row_splits [U + 1])``:
      the left-aligned, zero-padded last ``L`` items of each user's history, and
      the remaining items as ragged targets.
    """
    lengths = split.lengths()
    if split.history_lengths is not None:
        cut = np.asarray(split.history_lengths, np.int64)
    else:
        cut = (lengths * history_share).astype(np.int64)
    if np.any(cut < 1) or np.any(cut >= lengths):
        bad = int(np.argmax((cut < 1) | (cut >= lengths)))
        raise DataError(
            f"user {int(split.user_ids[bad])} has {int(lengths[bad])} interactions and a history "
            f"of {int(cut[bad])}; evaluation needs a non-empty history and at least one target "
            "(prepare keeps users with >= 5 interactions, and a time split users with both).")
    starts = split.row_splits[:-1]
    history = history_window(tf.constant(split.items, tf.int32), tf.constant(starts, tf.int32),
                             tf.constant(starts + cut, tf.int32), max_length).numpy()
    target_lengths = lengths - cut
    target_row_splits = np.concatenate([[0], np.cumsum(target_lengths)])
    target_index = (np.repeat(starts + cut - target_row_splits[:-1], target_lengths)
                    + np.arange(target_row_splits[-1]))
    return history.astype(np.int32), split.items[target_index].astype(np.int32), target_row_splits


def evaluation_dataset(split: SplitData, max_length: int, batch_size: int) -> tf.data.Dataset:
    """Every user of ``split`` once, in order.

    Returns:
      A dataset of ``{"history": int32 [batch, L], "targets": int32 [batch, T]}``
      where ``T`` is the longest target list in the batch, padded with 0.
    """
    history, target_items, target_row_splits = evaluation_arrays(split, max_length)
    targets = tf.RaggedTensor.from_row_splits(target_items, target_row_splits)
    return (tf.data.Dataset.from_tensor_slices({HISTORY: history, TARGETS: targets})
            .batch(batch_size)
            .map(lambda b: {HISTORY: b[HISTORY], TARGETS: b[TARGETS].to_tensor()})
            .prefetch(tf.data.AUTOTUNE))
