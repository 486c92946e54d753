"""Exact multi-interest retrieval: per-interest top-N by inner product, then a merge by score.

This is the single implementation behind evaluation, the exported SavedModel
(TF-Serving, GPU) and the reference the ScaNN index is checked against, so it
is graph code only: it runs eagerly, inside ``tf.function`` and under
``jit_compile=True``; ``k`` and ``block_size`` are static Python ints, the
batch size may be dynamic; it uses only ops with GPU and XLA kernels (MatMul,
Max, TopKV2, GatherV2, StridedSlice, PadV2, ConcatV2, Select, While).

Ordering contract, shared by every function here: scores descending; equal
scores keep the lower candidate index (``exact_topk``, ``retrieve``,
``retrieve_from_scores``) or the earlier flattened position
(``merge_interest_topk``), exactly as ``tf.math.top_k`` orders ties. Empty result
slots carry id ``-1`` and score ``-inf``.

``exact``: exact top-K over an item table and ``retrieve``; ``merge``: per-interest
lists into one; ``diverse``: ComiRec's controllable aggregation; ``checks``: what
they share (the empty id, the floor of non-finite scores, argument checks).
"""

from dmi_tf.retrieval.checks import EMPTY_ID
from dmi_tf.retrieval.diverse import diverse_merge, retrieve_diverse
from dmi_tf.retrieval.exact import (
    EVAL_BLOCK_SIZE,
    INDEX_BLOCK_SIZE,
    ItemColumns,
    exact_topk,
    retrieve,
    retrieve_from_scores,
)
from dmi_tf.retrieval.merge import merge_interest_topk

__all__ = [
    "EMPTY_ID",
    "EVAL_BLOCK_SIZE",
    "INDEX_BLOCK_SIZE",
    "ItemColumns",
    "diverse_merge",
    "exact_topk",
    "merge_interest_topk",
    "retrieve",
    "retrieve_diverse",
    "retrieve_from_scores",
]
