"""ComiRec's controllable aggregation: the merge that trades score for new categories."""

from __future__ import annotations

import numbers

import tensorflow as tf

from dmi_tf.retrieval.checks import EMPTY_ID, check_positive_int, check_rank, floor_scores
from dmi_tf.retrieval.exact import EVAL_BLOCK_SIZE, per_interest_topk
from dmi_tf.retrieval.merge import merge_interest_topk


def _check_diversity_weight(value: object, dtype: tf.DType) -> tf.Tensor:
    """λ as a scalar of ``dtype``; Python numbers must be finite and >= 0."""
    if isinstance(value, bool):
        raise ValueError(f"diversity_weight must be a number >= 0, got {value!r}.")
    if isinstance(value, numbers.Real):  # Python and NumPy numbers
        if not value >= 0 or value == float("inf"):  # `not >=` also catches NaN
            raise ValueError(f"diversity_weight must be a finite number >= 0, got {value!r}.")
        return tf.constant(float(value), dtype)
    weight = tf.convert_to_tensor(value, dtype=dtype)
    check_rank("diversity_weight", weight, 0, "[] (a scalar)")
    return weight


def diverse_merge(
    scores: tf.Tensor,
    ids: tf.Tensor,
    categories: tf.Tensor,
    k: int,
    diversity_weight: float | tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """ComiRec's controllable aggregation: a greedy top-``k`` that rewards new categories.

    The candidates are the distinct items of the ``K * N`` per-interest
    results, each with its best score, in ``merge_interest_topk`` order. ``k``
    times, the candidate maximising ``score + λ * (number of already selected
    items of another category)`` is selected; equal objectives go to the
    candidate that comes first in that order. This is ComiRec's
    ``evaluate_full(..., coef=λ)`` (THUDM/ComiRec ``src/train.py``), which
    maximises ``score - λ * (number of selected items of the same category)``:
    the two objectives differ by ``λ * (items selected so far)``, the same for
    every candidate of a step, so they pick the same items. With ``λ = 0`` the
    result equals ``merge_interest_topk(scores, ids, k)``.

    Graph code like the rest of :mod:`dmi_tf.retrieval`: ``k`` is static, the
    batch may be dynamic, and the ``k`` steps are a ``tf.while_loop`` over
    ``[B, K * N]`` tensors (no ``[K * N, K * N]`` matrix).

    Args:
      scores: float ``[B, K, N]``, each interest's results; ``K`` and ``N``
        must be static.
      ids: int32 or int64 ``[B, K, N]``, the items of ``scores``. Negative ids
        (e.g. -1 empty slots) are dropped.
      categories: int ``[num_items]``, the category of each item id; every id
        in ``ids`` must index it.
      k: static number of merged results, ``1 <= k <= K * N``.
      diversity_weight: λ >= 0, a Python number or a float scalar tensor (a
        tensor is not checked; a negative one rewards repeated categories).

    Returns:
      ``(merged_scores, merged_ids)``, ``[B, k]`` each, in selection order, in
      the input dtypes. The scores are the items' original scores (not the
      objective), so with ``λ > 0`` they need not be descending. If a user has
      fewer than ``k`` distinct items, the remaining slots get id -1 and score
      -inf.

    Raises:
      ValueError: as ``merge_interest_topk``; also when ``K`` or ``N`` is not
        static, ``categories`` is not a rank-1 integer tensor, or the weight is
        negative or not finite.
    """
    check_positive_int("k", k)
    scores = tf.convert_to_tensor(scores)
    ids = tf.convert_to_tensor(ids)
    categories = tf.convert_to_tensor(categories)
    check_rank("scores", scores, 3, "[B, K, N]")
    check_rank("categories", categories, 1, "[num_items]")
    if not categories.dtype.is_integer:
        raise ValueError(f"categories must be integer, got {categories.dtype.name}.")
    num_interests, n = scores.shape[1], scores.shape[2]
    if num_interests is None or n is None:
        raise ValueError(
            f"diverse_merge needs static K and N (scores has shape {scores.shape}); "
            "set them with tf.ensure_shape or a TensorSpec."
        )
    width = num_interests * n
    if k > width:
        raise ValueError(
            f"k={k} but there are only K*N={width} candidates per user "
            f"(K={num_interests}, N={n}); use k <= {width}."
        )
    weight = _check_diversity_weight(diversity_weight, scores.dtype)

    # Every distinct item, best score first: [B, W], -1 / -inf past the end.
    cand_scores, cand_ids = merge_interest_topk(scores, ids, width)
    cand_cats = tf.gather(categories, tf.maximum(cand_ids, 0))
    # Real candidates rank above the -inf of selected / empty ones whatever
    # their score; flooring is monotone, so it keeps the merge order.
    base = floor_scores(cand_scores)
    positions = tf.range(width)[tf.newaxis, :]
    slots = tf.range(k)[tf.newaxis, :]
    batch = tf.shape(scores)[0]
    neg_inf = tf.constant(float("-inf"), scores.dtype)

    def body(step, available, same_count, picked):
        # same_count[b, c]: selected items sharing candidate c's category.
        different = tf.cast(step, scores.dtype) - same_count
        objective = tf.where(available, base + weight * different, neg_inf)
        # top_k, not argmax: its ties provably go to the lower position.
        _, pos = tf.math.top_k(objective, k=1, sorted=True)  # [B, 1]
        valid = tf.gather(available, pos, batch_dims=1)  # [B, 1]
        chosen_cat = tf.gather(cand_cats, pos, batch_dims=1)
        same_count += tf.cast(valid & (cand_cats == chosen_cat), scores.dtype)
        available &= positions != pos
        picked = tf.where(slots == step, tf.where(valid, pos, EMPTY_ID), picked)
        return step + 1, available, same_count, picked

    _, _, _, picked = tf.while_loop(
        lambda step, *_: step < k,
        body,
        (
            tf.constant(0),
            cand_ids >= 0,
            tf.zeros_like(cand_scores),
            tf.fill(tf.stack([batch, k]), tf.constant(EMPTY_ID, tf.int32)),
        ),
        maximum_iterations=k,
    )
    found = picked >= 0
    safe = tf.maximum(picked, 0)
    merged_ids = tf.where(
        found, tf.gather(cand_ids, safe, batch_dims=1), tf.constant(EMPTY_ID, ids.dtype)
    )
    merged_scores = tf.where(found, tf.gather(cand_scores, safe, batch_dims=1), neg_inf)
    return merged_scores, merged_ids


def retrieve_diverse(
    interests: tf.Tensor,
    item_embeddings: tf.Tensor,
    k: int,
    categories: tf.Tensor,
    diversity_weight: float | tf.Tensor,
    block_size: int = EVAL_BLOCK_SIZE,
) -> tuple[tf.Tensor, tf.Tensor]:
    """``retrieve`` with ComiRec's controllable aggregation instead of the plain merge.

    Each interest retrieves its exact top-``k`` (as in ``retrieve``); the
    ``K * k`` candidates are aggregated by ``diverse_merge``.

    Args:
      interests: float ``[B, K, d]``; ``B`` may be dynamic, ``K`` must be static.
      item_embeddings: float ``[M, d]``, row 0 is padding; ``k <= M - 1``.
      k: static number of items per user.
      categories: int ``[M]``, the category of each item row.
      diversity_weight: λ >= 0 (see ``diverse_merge``); 0 gives ``retrieve``'s result.
      block_size: item rows scored at once (see ``exact_topk``).

    Returns:
      ``(scores, ids)``: float ``[B, k]`` (the items' own scores, in selection
      order) and int32 ``[B, k]`` item ids, each id at most once per user.
    """
    scores, ids = per_interest_topk(interests, item_embeddings, k, block_size)
    return diverse_merge(scores, ids, categories, k, diversity_weight)
