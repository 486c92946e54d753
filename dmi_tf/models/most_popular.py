"""MostPopular: the same top-N for everyone, by training-split popularity."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class MostPopular(tf.Module):
    """Scores every item by its training interaction count, whatever the history.

    It has the retrievers' interface, one interest ``[batch, 1, 1]`` against a
    one-column item table of counts, so the shared retrieval and metrics code
    evaluates it unchanged.

    Args:
      item_counts: int ``[num_items]``, training interactions per item (row 0 is padding).
    """

    trainable = False

    def __init__(self, item_counts: np.ndarray, name: str = "most_popular"):
        super().__init__(name=name)
        self.counts = tf.constant(np.asarray(item_counts, np.float32)[:, None])

    def interests(self, history, training=False):
        return tf.ones([tf.shape(history)[0], 1, 1], tf.float32)

    def candidate_embeddings(self):
        return self.counts
