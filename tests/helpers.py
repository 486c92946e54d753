"""Test inputs shared by the extractor tests."""

import numpy as np


def masked_history(seed=0, batch=4, length=6, d=4):
    """Random history embeddings ``[batch, L, d]`` and a mask with users of 3, 1, 5 and L items."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, d)).astype(np.float32)
    mask = np.ones((batch, length), bool)
    for user, real in enumerate([3, 1, 5][:batch]):
        mask[user, real:] = False
    return x, mask


def input_and_weight_gradients(layer, x, mask):
    """Gradients of ``sum(layer(x, mask)²)`` w.r.t. the input and every trainable weight."""
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x, mask) ** 2)
    grads = tape.gradient(loss, [x, *layer.trainable_variables])
    return [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads]
