"""Interest readout: which user vector the loss sees for a training target."""

from __future__ import annotations

import tensorflow as tf


class HardReadout(tf.keras.layers.Layer):
    """ComiRec's hard readout: the interest with the largest inner product with the target.

    Call args:
      interests: float32 ``[batch, K, d]``.
      target_embeddings: float32 ``[batch, d]``.

    Returns:
      float32 ``[batch, d]``, the selected interest. The argmax itself carries
      no gradient; the selected interest does.
    """

    def call(self, interests, target_embeddings):
        scores = tf.einsum("bkd,bd->bk", interests, target_embeddings)
        chosen = tf.argmax(scores, axis=1, output_type=tf.int32)
        return tf.gather(interests, chosen, axis=1, batch_dims=1)
