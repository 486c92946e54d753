"""ComiRec-SA's self-attentive multi-interest extractor."""

from __future__ import annotations

import tensorflow as tf

from dmi_tf.layers.initializers import kernel_initializer, position_initializer
from dmi_tf.layers.ops import build_dense, dense_last, softmax_last

# Softmax over padded positions must give exactly 0; ComiRec uses -2**32 + 1.
_MASKED = -1e9


class SelfAttentiveExtractor(tf.keras.layers.Layer):
    """K interests as K attention heads over the history (ComiRec-SA).

    ``A = softmax_L(W2 · tanh(W1 · (H + P)^T))`` with padded positions masked,
    ``V = A · H``. Position embeddings P enter only the attention, not the
    interests themselves, as in ComiRec's code. W1 maps d to
    ``hidden_factor · d`` (ComiRec: 4d) with tanh; W2 maps to K; both with bias.

    Args:
      num_interests: K.
      units: d, the item embedding width.
      max_length: L, the number of position embeddings.
      hidden_factor: width of W1 as a multiple of d.
      use_positions: add learned position embeddings inside the attention.
      initializer: ``he`` | ``glorot`` | ``normal`` (see ``initializers.py``).

    Call args:
      history_embeddings: float32 ``[batch, L, d]``, left-aligned.
      mask: bool ``[batch, L]``, True at real items.

    Returns:
      interests float32 ``[batch, K, d]``. :meth:`attend` also returns the
      attention ``[batch, K, L]`` (DMI prunes history items with it).
    """

    def __init__(self, num_interests: int, units: int, max_length: int, hidden_factor: int = 4,
                 use_positions: bool = True, initializer: str = "he", **kwargs):
        super().__init__(**kwargs)
        self.num_interests = num_interests
        self.units = units
        self.max_length = max_length
        self.hidden_factor = hidden_factor
        self.use_positions = use_positions
        self.initializer = initializer
        self.w1 = tf.keras.layers.Dense(hidden_factor * units, activation="tanh",
                                        kernel_initializer=kernel_initializer(initializer),
                                        name="w1")
        self.w2 = tf.keras.layers.Dense(num_interests,
                                        kernel_initializer=kernel_initializer(initializer),
                                        name="w2")
        # Created here rather than in build() so that attend() works before any __call__.
        self.positions = (self.add_weight(
            "positions", shape=[max_length, units],
            initializer=position_initializer(initializer, max_length, units))
            if use_positions else None)

    def attend(self, history_embeddings, mask, training=False):
        """Returns ``(interests [batch, K, d], attention [batch, K, L])``.

        ``training`` is accepted like every extractor's; dropout, if any, acts on
        the history embeddings before they arrive here.
        """
        keys = history_embeddings
        if self.use_positions:
            length = tf.shape(history_embeddings)[1]
            keys = keys + self.positions[None, :length, :]
        build_dense(self.w1, self.units)
        build_dense(self.w2, self.hidden_factor * self.units)
        logits = tf.transpose(dense_last(self.w2, dense_last(self.w1, keys)), [0, 2, 1])
        logits = tf.where(mask[:, None, :], logits, _MASKED)
        attention = softmax_last(logits)
        # An all-padding history would spread attention over padding; zero it instead.
        attention *= tf.cast(mask[:, None, :], attention.dtype)
        return tf.matmul(attention, history_embeddings), attention

    def call(self, history_embeddings, mask):
        return self.attend(history_embeddings, mask)[0]

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests, "units": self.units,
                "max_length": self.max_length, "hidden_factor": self.hidden_factor,
                "use_positions": self.use_positions, "initializer": self.initializer}
