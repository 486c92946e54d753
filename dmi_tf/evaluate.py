"""Evaluation over the full catalogue, as ``docs/protocol.md`` defines it.

Each user's interests retrieve through :func:`dmi_tf.retrieval.retrieve` (the
same per-interest top-N and merge that the export serves), or through ComiRec's
controllable aggregation when a diversity weight is set, and the metrics come
from :mod:`dmi_tf.metrics`; this module only drives them over batches. A model
that scores every item itself (``score_items``, e.g. item-kNN, whose item
"table" would be ``[M, M]``) is ranked by
:func:`dmi_tf.retrieval.retrieve_from_scores`, with the same ordering rules.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from dmi_tf.data.pipeline import HISTORY, TARGETS
from dmi_tf.errors import ConfigError, DataError
from dmi_tf.metrics import MetricAccumulator, diversity, retrieval_metrics
from dmi_tf.retrieval import (
    EVAL_BLOCK_SIZE,
    diverse_merge,
    retrieve,
    retrieve_diverse,
    retrieve_from_scores,
)


def evaluate(model, dataset: tf.data.Dataset, cutoffs=(20, 50), block_size: int = EVAL_BLOCK_SIZE,
             categories: np.ndarray | None = None,
             diversity_weight: float = 0.0) -> dict[str, float]:
    """Mean Recall, HitRate and NDCG (and Diversity) at each cut-off over every user.

    Args:
      model: anything with ``interests(history) -> [batch, K, d]`` and
        ``candidate_embeddings() -> [num_items, d]``, or with
        ``score_items(history) -> [batch, num_items]``, which is then used
        instead (:func:`scores_directly`).
      dataset: batches of ``{"history": [batch, L], "targets": [batch, T]}``
        (``pipeline.evaluation_dataset``).
      cutoffs: the N of each metric.
      block_size: catalogue rows scored at once (not used with ``score_items``).
      categories: int ``[num_items]`` item categories; when given, ``diversity@N``
        is reported too.
      diversity_weight: λ of ComiRec's controllable aggregation (0 = plain merge).

    Returns:
      ``{"recall@20": ..., "hit_rate@20": ..., "ndcg@20": ..., ...}`` plus
      ``"users"``, the number of users averaged over.
    """
    accumulator = MetricAccumulator()
    users = 0
    for per_user in _per_batch(model, dataset, cutoffs, block_size, categories,
                               diversity_weight):
        accumulator.update(per_user)
        users += int(next(iter(per_user.values())).shape[0])
    return {**accumulator.result(), "users": users}


def evaluate_choosing_interests(model, evaluate_fn, metric: str) -> dict:
    """Validation that also chooses how many interests ``model`` serves.

    For a model with ``interest_choices()`` (``model.choose_interests``), every
    choice is evaluated and the best by ``metric`` is kept in the model (ties keep
    the earlier choice, all K); other models are evaluated once.

    Args:
      evaluate_fn: ``() -> metrics`` of the model as it is.

    Returns:
      The metrics of the chosen setting, with ``served_interests`` (0 = all K) for
      a model that chooses.
    """
    choices = model.interest_choices() if hasattr(model, "interest_choices") else ()
    if not choices:
        return evaluate_fn()
    results = {}
    for count in choices:
        model.use_interests(count)
        results[count] = evaluate_fn()
    best = max(choices, key=lambda count: results[count][metric])
    model.use_interests(best)
    return {**results[best], "served_interests": best}


def evaluate_per_user(model, dataset: tf.data.Dataset, cutoffs=(20, 50),
                      block_size: int = EVAL_BLOCK_SIZE, categories: np.ndarray | None = None,
                      diversity_weight: float = 0.0) -> dict[str, np.ndarray]:
    """Every user's metrics, not their mean: what a comparison over users resamples.

    Same arguments and the same numbers as :func:`evaluate` (whose results are
    the means of these arrays).

    Returns:
      ``{"recall@20": float32 [users], ...}``, users in the dataset's order.
    """
    batches = list(_per_batch(model, dataset, cutoffs, block_size, categories,
                              diversity_weight))
    return {name: np.concatenate([batch[name].numpy() for batch in batches])
            for name in batches[0]}


def scores_directly(model) -> bool:
    """Whether ``model`` scores every item itself: ``score_items(history) -> [batch, num_items]``.

    Such a model (item-kNN) is ranked from those scores, not from interest
    vectors against ``candidate_embeddings()``.
    """
    return callable(getattr(model, "score_items", None))


def _per_batch(model, dataset, cutoffs, block_size, categories, diversity_weight):
    """Yields ``{metric: [batch] per-user values}`` for every batch; refuses an empty split."""
    cutoffs = tuple(sorted(cutoffs))
    # The table is an argument of the traced function (not a capture), so that a
    # trained model's validation sees its current weights; a scorer has none.
    items = () if scores_directly(model) else (tf.convert_to_tensor(model.candidate_embeddings()),)
    if diversity_weight and categories is None:
        raise ConfigError("eval.diversity_weight > 0 needs item categories, and this dataset "
                          "has none; add item_cate.txt to the data folder or set it to 0.")
    key = (cutoffs, block_size, diversity_weight,
           None if categories is None else np.asarray(categories).tobytes(),
           *((tuple(table.shape), table.dtype) for table in items))
    per_model = _TRACED.setdefault(model, {})
    if key not in per_model:
        per_model[key] = _batch_metrics_fn(model, items, cutoffs, block_size, categories,
                                           diversity_weight)
    batch_metrics = per_model[key]

    empty = True
    for batch in dataset:
        empty = False
        yield batch_metrics(batch[HISTORY], batch[TARGETS], *items)
    if empty:
        raise DataError("the evaluation split has no users; the split files must each hold "
                        "at least one user (prepare's 8:1:1 split needs at least 3 users).")


# One traced metrics function per model and settings: validation runs every
# few hundred steps, and retracing the query tower each time cost seconds.
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _batch_metrics_fn(model, items, cutoffs, block_size, categories, diversity_weight):
    # A weak reference: the cache must not keep the model alive.
    model_ref = weakref.ref(model)
    n = cutoffs[-1]
    category_table = None if categories is None else tf.constant(categories, tf.int32)

    def scored_ids(history):
        scores, ids = retrieve_from_scores(model_ref().score_items(history), n)
        if diversity_weight:  # the top-N as one interest's list, as retrieve_diverse takes it
            _, ids = diverse_merge(scores[:, tf.newaxis], ids[:, tf.newaxis], category_table, n,
                                   diversity_weight)
        return ids

    def retrieved_ids(history, items):
        interests = model_ref().interests(history, training=False)
        if diversity_weight:
            return retrieve_diverse(interests, items, n, category_table, diversity_weight,
                                    block_size)[1]
        return retrieve(interests, items, n, block_size)[1]

    # Batch size and target length vary (the last batch is short); a fixed
    # signature keeps that from retracing the graph.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32),
                                  tf.TensorSpec([None, None], tf.int32),
                                  *(tf.TensorSpec(table.shape, table.dtype) for table in items)])
    def batch_metrics(history, targets, *items):
        ids = retrieved_ids(history, *items) if items else scored_ids(history)
        metrics = retrieval_metrics(ids, targets, cutoffs)
        if category_table is not None:
            for c in cutoffs:
                metrics[f"diversity@{c}"] = diversity(ids, category_table, c)
        return metrics

    return batch_metrics
