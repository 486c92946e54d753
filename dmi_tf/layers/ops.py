"""Small numeric ops shared by the layers."""

from __future__ import annotations

import tensorflow as tf


def softmax_last(logits: tf.Tensor) -> tf.Tensor:
    """``tf.nn.softmax(logits, axis=-1)`` from elementary ops: ``exp(x - max) / sum``.

    The same function (max-shifted, so no overflow; differences of a few ulp),
    but TensorFlow's fused CPU Softmax kernel has a fixed cost that dominates
    the query tower at batch 1 (about 0.1 ms per call on 2 cores for a
    ``[1, 4, 20]`` input, against 0.04 ms for these four ops, measured under load).
    """
    shifted = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
    weights = tf.exp(shifted)
    return weights / tf.reduce_sum(weights, axis=-1, keepdims=True)
