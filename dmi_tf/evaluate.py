"""Evaluation over the full catalogue, as ``protocol.md`` defines it.

Each user's interests retrieve through :func:`dmi_tf.retrieval.retrieve` (the
same per-interest top-N and merge that the export serves), and the metrics
come from :mod:`dmi_tf.metrics`; this module only drives them over batches.
"""

from __future__ import annotations

import tensorflow as tf

from dmi_tf.data.pipeline import HISTORY, TARGETS
from dmi_tf.errors import DataError
from dmi_tf.metrics import MetricAccumulator, retrieval_metrics
from dmi_tf.retrieval import retrieve


def evaluate(model, dataset: tf.data.Dataset, cutoffs=(20, 50),
             block_size: int = 65536) -> dict[str, float]:
    """Mean Recall, HitRate and NDCG at each cut-off over every user of ``dataset``.

    Args:
      model: anything with ``interests(history) -> [batch, K, d]`` and
        ``candidate_embeddings() -> [num_items, d]``.
      dataset: batches of ``{"history": [batch, L], "targets": [batch, T]}``
        (``pipeline.evaluation_dataset``).
      cutoffs: the N of each metric.
      block_size: catalogue rows scored at once.

    Returns:
      ``{"recall@20": ..., "hit_rate@20": ..., "ndcg@20": ..., ...}`` plus
      ``"users"``, the number of users averaged over.
    """
    cutoffs = tuple(sorted(cutoffs))
    n = cutoffs[-1]
    items = tf.convert_to_tensor(model.candidate_embeddings())

    # Batch size and target length vary (the last batch is short); a fixed
    # signature keeps that from retracing the graph.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32),
                                  tf.TensorSpec([None, None], tf.int32),
                                  tf.TensorSpec(items.shape, items.dtype)])
    def batch_metrics(history, targets, items):
        _, ids = retrieve(model.interests(history, training=False), items, n, block_size)
        return retrieval_metrics(ids, targets, cutoffs)

    accumulator = MetricAccumulator()
    users = 0
    for batch in dataset:
        accumulator.update(batch_metrics(batch[HISTORY], batch[TARGETS], items))
        users += int(batch[HISTORY].shape[0])
    if users == 0:
        raise DataError("the evaluation split has no users; the split files must each hold "
                        "at least one user (prepare's 8:1:1 split needs at least 3 users).")
    return {**accumulator.result(), "users": users}
