"""What a history answers, in raw ids: the bodies of the exported signatures and of batch inference.

Each takes the model's input rows ``int32 [B, L]`` (``dmi_tf.raw_ids.history_rows``)
and the row -> raw id table, so the SavedModel's signatures (``export/serving_module.py``)
and ``python -m dmi_tf.predict`` compute the same answers with the same code.
"""

from __future__ import annotations

import tensorflow as tf

from dmi_tf import raw_ids


def topk(model, index, id_of, rows: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The merged top-``k`` of every interest (``index.retrieve``: per-interest top-``k``, each
    item once with its best score).

    Returns:
      ``(item_ids string [B, k], scores float32 [B, k])``; empty slots ``""`` / ``-inf``.
    """
    scores, items = index.retrieve(model.interests(rows), k)
    return raw_ids.item_ids(id_of, items), scores


def interests(model, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(interests, coarse_interests)``, float32 ``[B, K, d]``: refined, and the backbone's."""
    return model.interests(rows), model.coarse_interests(rows)


def explain(model, id_of, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The weight of each history item in each interest.

    Returns:
      ``(items string [B, K, L], weights float32 [B, K, L])``: the history item behind
      each weight, ``""`` where the weight is 0.
    """
    weights = model.explain(rows)
    used = tf.where(weights > 0, rows[:, tf.newaxis, :], -1)
    return raw_ids.item_ids(id_of, used), weights
