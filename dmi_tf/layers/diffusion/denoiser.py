"""DMI's denoiser: predicts the clean interest x0 from a noised one, the step and the history."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from dmi_tf.layers.initializers import kernel_initializer, position_initializer
from dmi_tf.layers.ops import build_dense, dense_last, softmax_last, store_folded

# Softmax over dropped history items must give exactly 0.
_MASKED = -1e9


class StepEmbedding(tf.keras.layers.Layer):
    """Diffusion step t -> ``[..., d]``: sinusoidal features, then a two-layer MLP (as in DDPM).

    Call args:
      t: int32 of any shape.

    Returns:
      float32 ``t.shape + [d]``.
    """

    def __init__(self, units: int, initializer: str = "he", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.initializer = initializer
        half = max(units // 2, 1)
        self._frequencies = tf.constant(
            [math.exp(-math.log(10000.0) * i / half) for i in range(half)], tf.float32)
        # Swish applied in call(): see there.
        self.hidden = tf.keras.layers.Dense(units,
                                            kernel_initializer=kernel_initializer(initializer),
                                            name="hidden")
        self.out = tf.keras.layers.Dense(units, kernel_initializer=kernel_initializer(initializer),
                                         name="out")

    def call(self, t):
        angles = tf.cast(t, tf.float32)[..., None] * self._frequencies
        features = tf.concat([tf.sin(angles), tf.cos(angles)], axis=-1)
        hidden = self.hidden(features)
        # swish(x) = x·σ(x), written with tanh: TF's CPU graph rewrites x·sigmoid(x)
        # into oneDNN's Swish, which cost ~0.1 ms per call on this [steps, d] input.
        return self.out(hidden * (0.5 + 0.5 * tf.tanh(0.5 * hidden)))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "initializer": self.initializer}


class CrossAttentionBlock(tf.keras.layers.Layer):
    """Multi-head cross-attention from interests to history items, then an FFN; post-norm residuals.

    Each interest has its own set of visible items (item pruning), so the mask
    is ``[batch, K, L]`` rather than one mask per sequence.

    Call args:
      queries: float32 ``[batch, K, d]``.
      items: float32 ``[batch, L, d]``, the values; keys are ``items + positions``.
      positions: float32 ``[>= L, d]`` added to the keys, or None.
      keep: bool ``[batch, K, L]``, True at the items this interest may see.

      training: apply dropout (``dropout``) to the attention weights and to each
        residual branch.

    Returns:
      ``(outputs [batch, K, d], attention [batch, K, L])``, the attention
      averaged over heads (0 at dropped items).
    """

    def __init__(self, units: int, heads: int = 2, ffn_factor: int = 2, initializer: str = "he",
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if units % heads:
            raise ValueError(f"heads ({heads}) must divide units ({units})")
        self.units, self.heads, self.ffn_factor = units, heads, ffn_factor
        self.initializer, self.dropout = initializer, dropout
        self.drop = tf.keras.layers.Dropout(dropout, name="dropout")

        def dense(width, name, **kw):
            # A fresh initializer per layer: one unseeded instance would give every layer the
            # same starting kernel (query = key = value).
            return tf.keras.layers.Dense(width, kernel_initializer=kernel_initializer(initializer),
                                         name=name, **kw)

        self.query = dense(units, "query", use_bias=False)
        self.key = dense(units, "key", use_bias=False)
        self.value = dense(units, "value", use_bias=False)
        self._head_units = units // heads
        self._head_blocks = tf.constant(
            np.kron(np.eye(heads), np.ones((units, self._head_units))), tf.float32)
        self.output_projection = dense(units, "output_projection")
        # ffn_factor 0: attention only (a leaner query tower).
        self.ffn_hidden = (dense(ffn_factor * units, "ffn_hidden", activation="relu")
                           if ffn_factor else None)
        self.ffn_out = dense(units, "ffn_out") if ffn_factor else None
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6,
                                                                 name="attention_norm")
        self.ffn_norm = (tf.keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
                         if ffn_factor else None)
        self._folded = None  # (W_qk, W_vo) variables once fold_for_inference() ran

    def call(self, queries, items, positions, keep, training=False):
        # Textbook multi-head attention (keys = items + positions, values =
        # items), computed in a re-associated order that gives the same result
        # with far fewer and larger products: per head,
        #   logits_h = (x W_q,h)(k W_k,h)^T = x (W_q,h W_k,h^T) k^T,
        #   out     = sum_h (A_h items) (W_v,h W_o,h) + b_o,
        # so the query side is one [d, heads·d] matmul, the value and output
        # projections one [heads·d, d] matmul, both on K·heads rows instead of
        # L history rows, and the positions enter as q·P^T instead of a
        # [batch, L, d] sum. Measured: the refiner's share of the query tower
        # at batch 256 fell by half against split-and-transpose heads.
        # K and L are static in every model here; then no reshape below needs a
        # run-time shape op (at batch 1 in graph mode each op is a cost).
        k = queries.shape[1] if queries.shape[1] is not None else tf.shape(queries)[1]
        length = items.shape[1] if items.shape[1] is not None else tf.shape(items)[1]
        d, h, e = self.units, self.heads, self._head_units
        w_qk, w_vo = self._head_products()
        q_items = tf.reshape(tf.matmul(tf.reshape(queries, [-1, d]), w_qk), [-1, d])
        logits = tf.matmul(tf.reshape(q_items, [-1, k * h, d]), items, transpose_b=True)
        if positions is not None:
            logits += tf.reshape(tf.matmul(q_items, positions[:length], transpose_b=True),
                                 [-1, k * h, length])
        logits = tf.reshape(logits, [-1, k, h, length]) / math.sqrt(e)
        keep = keep[:, :, None, :]  # one mask for every head
        logits = tf.where(keep, logits, _MASKED)
        attention = softmax_last(logits)  # [batch, K, heads, L]
        # An interest with no visible item would spread attention over padding; zero it.
        attention *= tf.cast(keep, attention.dtype)
        # Inference never builds the dropout ops (the served graph stays as lean).
        dropped = self.drop(attention, training=True) if training and self.dropout else attention
        context_items = tf.matmul(tf.reshape(dropped, [-1, k * h, length]), items)
        context = tf.matmul(tf.reshape(context_items, [-1, h * d]), w_vo)
        context = tf.reshape(context + self.output_projection.bias, [-1, k, d])
        if training and self.dropout:
            context = self.drop(context, training=True)
        outputs = self.attention_norm(queries + context)
        if self.ffn_factor:
            branch = dense_last(self.ffn_out, dense_last(self.ffn_hidden, outputs))
            if training and self.dropout:
                branch = self.drop(branch, training=True)
            outputs = self.ffn_norm(outputs + branch)
        return outputs, tf.reduce_mean(attention, axis=2)

    def fold_for_inference(self):
        """Stores :meth:`_head_products` in two non-trainable variables that calls then read.

        Saves their six ops (0.04 ms at batch 1) on every call of a served
        model. Later changes to the kernels are not seen until the next fold.
        """
        self._folded = tuple(
            store_folded(self, variable, name, value)
            for variable, name, value in zip(self._folded or (None, None),
                                             ("folded_w_qk", "folded_w_vo"),
                                             self._compute_head_products(), strict=True))

    def _head_products(self):
        if self._folded is not None:
            return self._folded
        return self._compute_head_products()

    def _compute_head_products(self):
        """``(W_qk [d, heads·d], W_vo [heads·d, d])``: per head, W_q,h W_k,h^T and W_v,h W_o,h.

        Each is one matmul against a block-diagonal copy of the other kernel
        (tiled, then masked), not an einsum: oneDNN's CPU Einsum took about
        0.2 ms per call whatever the size, most of DMI's extra latency at batch 1
        in graph mode; per-head slices and concats were as fast in graph mode
        but slower under XLA. This form matched the einsum under XLA.
        """
        blocks = self._head_blocks  # [heads·d, heads·e]: 1 where row and column head agree
        k_blocks = tf.tile(self.key.kernel, [self.heads, 1]) * blocks
        v_blocks = tf.tile(self.value.kernel, [self.heads, 1]) * blocks
        w_qk = tf.matmul(self.query.kernel, k_blocks, transpose_b=True)
        w_vo = tf.matmul(v_blocks, self.output_projection.kernel)
        return w_qk, w_vo

    def build(self, input_shape):
        # The projections are used through their kernels only; build them here.
        for layer in (self.query, self.key, self.value, self.output_projection):
            layer.build([None, self.units])
        if self.ffn_factor:
            build_dense(self.ffn_hidden, self.units)
            build_dense(self.ffn_out, self.ffn_factor * self.units)
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "heads": self.heads,
                "ffn_factor": self.ffn_factor, "initializer": self.initializer,
                "dropout": self.dropout}


class CrossAttentionDenoiser(tf.keras.layers.Layer):
    """``x̂0 = f(x_t + e(t); pruned history)``: L cross-attention blocks and a linear head.

    Args:
      units: d.
      max_length: L, the number of position embeddings.
      layers: number of blocks.
      heads, ffn_factor, dropout: of every block.

    Call args:
      x_t: float32 ``[batch, K, d]``.
      t: int32 ``[batch]`` (one step per example) or a scalar (one for all).
      history_embeddings: float32 ``[batch, L, d]``.
      keep: bool ``[batch, K, L]``.
      training: dropout on (training draws only).

    Returns:
      ``(x0_hat [batch, K, d], attention [batch, K, L])``, the last block's attention.
    """

    def __init__(self, units: int, max_length: int, layers: int = 1, heads: int = 2,
                 ffn_factor: int = 2, initializer: str = "he", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.max_length, self.layers = units, max_length, layers
        self.heads, self.ffn_factor, self.initializer = heads, ffn_factor, initializer
        self.dropout = dropout
        self.step_embedding = StepEmbedding(units, initializer, name="step_embedding")
        self.blocks = [CrossAttentionBlock(units, heads, ffn_factor, initializer, dropout,
                                           name=f"block_{i}")
                       for i in range(layers)]
        self.head = tf.keras.layers.Dense(units, kernel_initializer=kernel_initializer(initializer),
                                          name="head")
        self.positions = self.add_weight(
            "positions", shape=[max_length, units],
            initializer=position_initializer(initializer, max_length, units))

    def memory(self, history_embeddings):
        """What every step attends to: the items (values) and the key positions."""
        # Positions enter the keys only, so the values stay in item space (as in ComiRec-SA).
        return history_embeddings, self.positions

    def fold_for_inference(self):
        for block in self.blocks:
            block.fold_for_inference()

    def denoise(self, x_t, step, memory, keep, training=False):
        """:meth:`call` with the step embedded (``step``: ``[batch or 1, d]``) and the
        history prepared by :meth:`memory`."""
        items, positions = memory
        hidden = x_t + step[:, None, :]
        attention = None
        for block in self.blocks:
            hidden, attention = block(hidden, items, positions, keep, training=training)
        build_dense(self.head, self.units)
        return dense_last(self.head, hidden), attention

    def call(self, x_t, t, history_embeddings, keep, training=False):
        return self.denoise(x_t, self.step_embedding(tf.reshape(t, [-1])),
                            self.memory(history_embeddings), keep, training=training)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "max_length": self.max_length,
                "layers": self.layers, "heads": self.heads, "ffn_factor": self.ffn_factor,
                "initializer": self.initializer, "dropout": self.dropout}


class MLPDenoiser(tf.keras.layers.Layer):
    """The ablation without collaborative evidence: ``x̂0 = MLP([x_t; e(t)])``, no history.

    Same call signature as :class:`CrossAttentionDenoiser`; the returned
    attention is all zeros (no history item is used).
    """

    def __init__(self, units: int, max_length: int, layers: int = 1, heads: int = 2,
                 ffn_factor: int = 2, initializer: str = "he", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        del heads, dropout  # Accepted so both denoisers are built from the same config.
        self.units, self.max_length, self.layers = units, max_length, layers
        self.ffn_factor, self.initializer = ffn_factor, initializer
        self.step_embedding = StepEmbedding(units, initializer, name="step_embedding")
        self.hidden = [tf.keras.layers.Dense(max(ffn_factor, 1) * units, activation="gelu",
                                             kernel_initializer=kernel_initializer(initializer),
                                             name=f"hidden_{i}")
                       for i in range(layers)]
        self.head = tf.keras.layers.Dense(units, kernel_initializer=kernel_initializer(initializer),
                                          name="head")

    def memory(self, history_embeddings):
        return ()  # no history

    def fold_for_inference(self):
        pass  # no weight-only products

    def denoise(self, x_t, step, memory, keep, training=False):
        step = step[:, None, :]  # [batch or 1, 1, d]
        hidden = tf.concat([x_t, tf.broadcast_to(step, tf.shape(x_t))], axis=-1)
        for layer in self.hidden:
            hidden = layer(hidden)
        return self.head(hidden), tf.zeros(tf.shape(keep), tf.float32)

    def call(self, x_t, t, history_embeddings, keep, training=False):
        return self.denoise(x_t, self.step_embedding(tf.reshape(t, [-1])), (), keep)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "max_length": self.max_length,
                "layers": self.layers, "ffn_factor": self.ffn_factor,
                "initializer": self.initializer}
