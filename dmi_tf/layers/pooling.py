"""Single-interest extractors: one user vector from a padded history."""

from __future__ import annotations

import tensorflow as tf

from dmi_tf.layers.initializers import kernel_initializer


class MaskedMeanPooling(tf.keras.layers.Layer):
    """YouTube-DNN's user tower: masked mean of history embeddings, then a dense map.

    Call args:
      history_embeddings: float32 ``[batch, L, d]``.
      mask: bool ``[batch, L]``, True at real items.

    Returns:
      float32 ``[batch, 1, d]``: one interest, so single- and multi-interest
      models share the ``[batch, K, d]`` interface.
    """

    def __init__(self, units: int, initializer: str = "he", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.initializer = initializer
        self.dense = tf.keras.layers.Dense(
            units, kernel_initializer=kernel_initializer(initializer))

    def call(self, history_embeddings, mask):
        weights = tf.cast(mask, history_embeddings.dtype)[:, :, None]
        total = tf.reduce_sum(history_embeddings * weights, axis=1)
        # An all-padding history (no known item) gives the zero vector, not NaN.
        mean = total / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
        return self.dense(mean)[:, None, :]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "initializer": self.initializer}


class GRUPooling(tf.keras.layers.Layer):
    """A GRU over the history; its last state (at the last real item) is the user vector.

    Call args:
      history_embeddings: float32 ``[batch, L, d]``, left-aligned.
      mask: bool ``[batch, L]``.

    Returns:
      float32 ``[batch, 1, units]``.
    """

    def __init__(self, units: int, initializer: str = "he", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.initializer = initializer
        self.gru = tf.keras.layers.GRU(units, kernel_initializer=kernel_initializer(initializer))

    def call(self, history_embeddings, mask):
        return self.gru(history_embeddings, mask=mask)[:, None, :]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "initializer": self.initializer}
