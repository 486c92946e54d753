"""Merging each interest's top-N list into one list of distinct items, by score."""

from __future__ import annotations

import tensorflow as tf

from dmi_tf.retrieval.checks import EMPTY_ID, check_positive_int, check_rank, static_dim


def merge_interest_topk(
    scores: tf.Tensor, ids: tf.Tensor, k: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Merges per-interest top-N lists into one top-``k`` list of distinct items.

    The ``K * N`` candidates of a user are ranked by score; an item retrieved
    by several interests keeps its best score and appears once. Equal scores
    keep the flattened order: interest 0's results first, then by rank.

    Three sorts of ``K * N`` elements per user (``tf.math.top_k``, whose ties
    keep the lower position on CPU, GPU and XLA): by score; by id, so that
    duplicates become neighbours with the best-scored copy first; and a
    final top-``k`` over the score ranks of the first copies. No
    ``[K * N, K * N]`` comparison matrix is built.

    Args:
      scores: float ``[B, K, N]``, each interest's results.
      ids: int32 or int64 ``[B, K, N]``, the items of ``scores``. Negative ids
        (e.g. -1 empty slots) are dropped.
      k: static number of merged results, ``1 <= k <= K * N``.

    Returns:
      ``(merged_scores, merged_ids)``, ``[B, k]`` each, scores descending, in
      the input dtypes. If a user has fewer than ``k`` distinct items, the
      remaining slots get id -1 and score -inf.

    Raises:
      ValueError: shapes differ, ranks are not 3, ids are not integers, or
        ``k > K * N`` when that is known statically.
    """
    check_positive_int("k", k)
    scores = tf.convert_to_tensor(scores)
    ids = tf.convert_to_tensor(ids)
    check_rank("scores", scores, 3, "[B, K, N]")
    check_rank("ids", ids, 3, "[B, K, N]")
    if not scores.shape.is_compatible_with(ids.shape):
        raise ValueError(f"scores {scores.shape} and ids {ids.shape} must have the same shape.")
    if ids.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"ids must be int32 or int64, got {ids.dtype.name}.")

    num_interests, n = static_dim(scores, 1), static_dim(scores, 2)
    width = num_interests * n
    if isinstance(width, int) and k > width:
        raise ValueError(
            f"k={k} but there are only K*N={width} candidates per user "
            f"(K={num_interests}, N={n}); use k <= {width}."
        )
    batch = tf.shape(scores)[0]
    flat_scores = tf.reshape(scores, tf.stack([batch, width]))
    flat_ids = tf.reshape(ids, tf.stack([batch, width]))
    if isinstance(width, int):
        flat_scores.set_shape([None, width])
        flat_ids.set_shape([None, width])

    # by_score[:, r] is the candidate with score rank r.
    by_score, score_order = tf.math.top_k(flat_scores, k=width, sorted=True)
    ids_by_score = tf.gather(flat_ids, score_order, batch_dims=1)

    # Sorting the ranked ids by id groups duplicates; top_k keeps equal ids in
    # rank order, so the first of each group is the copy with the best score.
    ids_by_id, rank_of = tf.math.top_k(ids_by_score, k=width, sorted=True)
    first_copy = tf.concat(
        [tf.ones_like(ids_by_id[:, :1], tf.bool), ids_by_id[:, 1:] != ids_by_id[:, :-1]],
        axis=1,
    )
    keep = first_copy & (ids_by_id >= 0)

    # Back to score order without a scatter: top-k of -rank over the kept
    # copies yields their ranks in ascending order; width marks "none left".
    key = tf.where(keep, -rank_of, -width)
    neg_rank, _ = tf.math.top_k(key, k=k, sorted=True)
    rank = -neg_rank
    found = rank < width
    safe_rank = tf.minimum(rank, width - 1)
    merged_ids = tf.where(
        found,
        tf.gather(ids_by_score, safe_rank, batch_dims=1),
        tf.constant(EMPTY_ID, ids.dtype),
    )
    merged_scores = tf.where(
        found,
        tf.gather(by_score, safe_rank, batch_dims=1),
        tf.constant(float("-inf"), scores.dtype),
    )
    return merged_scores, merged_ids
