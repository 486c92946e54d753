"""SASRec's user tower: causal self-attention over the history, the last position's output."""

from __future__ import annotations

import math

import tensorflow as tf

from dmi_tf.layers.initializers import kernel_initializer, position_initializer


class CausalSelfAttentionBlock(tf.keras.layers.Layer):
    """One SASRec block: pre-norm causal multi-head self-attention, then a point-wise FFN.

    ``h = x + Dropout(MHA(LN(x)))``, ``out = h + Dropout(FFN(LN(h)))`` with
    ``FFN = Dense(d, relu) -> Dense(d)``, as in SASRec (Kang & McAuley, ICDM 2018)
    and its common ports.

    Call args:
      x: float32 ``[batch, L, d]``.
      attention_mask: bool ``[batch, L, L]``, True where query i may see key j.
      training: dropout on.

    Returns:
      ``(outputs [batch, L, d], attention [batch, L, L])``, the attention averaged
      over heads.
    """

    def __init__(self, units: int, heads: int = 1, dropout: float = 0.0,
                 initializer: str = "he", **kwargs):
        super().__init__(**kwargs)
        if units % heads:
            raise ValueError(f"heads ({heads}) must divide units ({units})")
        self.units, self.heads, self.dropout, self.initializer = units, heads, dropout, initializer
        self.attention = tf.keras.layers.MultiHeadAttention(
            heads, units // heads, dropout=dropout,
            kernel_initializer=kernel_initializer(initializer), name="attention")
        self.ffn_hidden = tf.keras.layers.Dense(
            units, activation="relu", kernel_initializer=kernel_initializer(initializer),
            name="ffn_hidden")
        self.ffn_out = tf.keras.layers.Dense(
            units, kernel_initializer=kernel_initializer(initializer), name="ffn_out")
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6,
                                                                 name="attention_norm")
        self.ffn_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.drop = tf.keras.layers.Dropout(dropout)

    def call(self, x, attention_mask, training=False):
        normed = self.attention_norm(x)
        context, scores = self.attention(normed, normed, attention_mask=attention_mask,
                                         return_attention_scores=True, training=training)
        h = x + self.drop(context, training=training)
        branch = self.ffn_out(self.ffn_hidden(self.ffn_norm(h)))
        return h + self.drop(branch, training=training), tf.reduce_mean(scores, axis=1)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "heads": self.heads,
                "dropout": self.dropout, "initializer": self.initializer}


class CausalTransformerExtractor(tf.keras.layers.Layer):
    """SASRec: one interest, the causal transformer's output at the last history item.

    Inputs are the left-aligned history (padding after the last item, ComiRec's
    layout), scaled by sqrt(d) plus learned positions, then dropout. Position i
    sees positions <= i; the output at the last real item has seen the whole
    history and nothing else, so padding never leaks in.

    Args:
      units: d.
      max_length: L.
      layers: blocks.
      heads: attention heads per block (must divide d).
      dropout: on the inputs, attention weights and residual branches (training only).
      initializer: ``he`` | ``glorot`` | ``normal``.

    Call args:
      history_embeddings: float32 ``[batch, L, d]``.
      mask: bool ``[batch, L]``, True at real items (a prefix of each row).
      training: dropout on.

    Returns:
      float32 ``[batch, 1, d]``. :meth:`attend` also gives the last block's
      attention of that position over the history ``[batch, 1, L]``.
    """

    def __init__(self, units: int, max_length: int, layers: int = 2, heads: int = 1,
                 dropout: float = 0.0, initializer: str = "he", **kwargs):
        super().__init__(**kwargs)
        self.units, self.max_length, self.layers = units, max_length, layers
        self.heads, self.dropout, self.initializer = heads, dropout, initializer
        self.positions = self.add_weight(
            "positions", shape=[max_length, units],
            initializer=position_initializer(initializer, max_length, units))
        self.blocks = [CausalSelfAttentionBlock(units, heads, dropout, initializer,
                                                name=f"block_{i}") for i in range(layers)]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")
        self.drop = tf.keras.layers.Dropout(dropout)

    def attend(self, history_embeddings, mask, training=False):
        """Returns ``(interests [batch, 1, d], attention [batch, 1, L])``."""
        length = tf.shape(history_embeddings)[1]
        x = (history_embeddings * math.sqrt(self.units)
             + self.positions[None, :length, :])
        x = self.drop(x, training=training) * tf.cast(mask, x.dtype)[:, :, None]
        causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
        attention_mask = tf.logical_and(causal[None, :, :], mask[:, None, :])
        attention = None
        for block in self.blocks:
            x, attention = block(x, attention_mask, training=training)
        x = self.final_norm(x)
        # The last real item; an all-padding history reads position 0 and is zeroed.
        last = tf.maximum(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1) - 1, 0)
        known = tf.cast(tf.reduce_any(mask, axis=1), x.dtype)[:, None]
        interest = tf.gather(x, last, axis=1, batch_dims=1) * known
        weights = tf.gather(attention, last, axis=1, batch_dims=1) * known
        return interest[:, None, :], weights[:, None, :] * tf.cast(mask, x.dtype)[:, None, :]

    def call(self, history_embeddings, mask, training=False):
        return self.attend(history_embeddings, mask, training=training)[0]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "max_length": self.max_length,
                "layers": self.layers, "heads": self.heads, "dropout": self.dropout,
                "initializer": self.initializer}
