"""Behaviour-to-interest (B2I) dynamic routing: MIND and ComiRec-DR extractors.

Follows ComiRec's TensorFlow ``CapsuleNetwork`` (THUDM/ComiRec, ``src/model.py``)
with ``bilinear_type=0`` (MIND) and ``bilinear_type=2`` (ComiRec-DR), except
where noted in :class:`CapsuleRouting`.
"""

from __future__ import annotations

import tensorflow as tf

from dmi_tf.layers.initializers import kernel_initializer

MODES = ("mind", "comirec_dr")

# Routing logits of interests a user does not have (dynamic K): their coupling is exactly 0.
_MASKED = -1e9


def _offset(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed + offset


def squash(z, axis: int = -1):
    """Capsule squash ``|z|²/(1+|z|²) · z/sqrt(|z|²+1e-9)`` (ComiRec's constants).

    Keeps the direction of ``z`` and maps its norm into [0, 1); ``z = 0`` gives
    0 with a finite gradient thanks to the 1e-9.
    """
    norm2 = tf.reduce_sum(tf.square(z), axis=axis, keepdims=True)
    return norm2 / (1.0 + norm2) / tf.sqrt(norm2 + 1e-9) * z


class CapsuleRouting(tf.keras.layers.Layer):
    """K interests as capsules routed from the history items (MIND, ComiRec-DR).

    Shapes: history ``[batch, L, d]`` (+ mask ``[batch, L]``) -> interests ``[batch, K, d]``.

    Each history item ``e_l`` is mapped to a prediction ``ê_kl`` for every
    interest k (the "bilinear" map), then routed for ``iterations`` rounds:

    * coupling ``c = softmax(b)`` over the K interests for each item (as in
      ComiRec and capsule networks: an item divides itself among interests),
      then set to 0 at padded positions, so padding never takes weight
      (PaddleRec#904 got the axis wrong);
    * ``z_k = Σ_l c_kl ê_kl`` and ``v_k = squash(z_k)``;
    * except after the last round, ``b_kl += <ê_kl, v_k>`` with ``ê`` under
      ``stop_gradient``: as in ComiRec, gradients flow only through the last
      round's ``Σ_l c_kl ê_kl``, not through the routing agreement.

    The routing logits ``b`` start from a per-layer ``[K, L]`` value and become
    per example after the first update; nothing is carried across examples or
    batches (DeepMatch#44 kept them in a variable across batches).

    ``mode="mind"`` (ComiRec ``bilinear_type=0``, ``relu_layer=True``): one
    shared map ``S: d -> d`` (a Dense without bias) gives the same ``ê_l = S e_l``
    to all K interests, so the interests differ only through the initial
    logits, which therefore cannot be all equal. ComiRec draws them from a
    truncated normal (std 1) anew for every batch, so the same user gets
    different interests at every call and retrieval is random at inference.
    Here they are drawn once (truncated normal, std 1, ``seed``) into a
    non-trainable ``[K, L]`` weight, saved with the model: routing is
    deterministic and the same at training and serving. After routing, a
    ReLU Dense ``d -> d`` (with bias) as in ComiRec's MIND. ComiRec's MIND map
    is ``tf.layers.dense(..., bias_initializer=None)``, which in TF1 still has a
    bias (Glorot-initialised); we follow the paper and have none.

    ``mode="comirec_dr"`` (``bilinear_type=2``): a map per position and
    interest, ``W [L, K*d, d]`` with ``ê_kl = W[l, k*d:(k+1)*d] · e_l``, so
    the interests differ by construction and the initial logits are zeros.
    No ReLU layer. ComiRec initialises W from N(0, 1); here every ``d x d``
    map is drawn by ``kernel_initializer(initializer)`` as a ``d -> d`` kernel
    (fan-in d), like every other dense weight of the library.

    ``dynamic_interests`` (MIND's dynamic K): a user with ``n_u`` real items
    has ``K_u = max(1, min(K, floor(log2 n_u)))`` interests. Only those take
    part in the routing (the softmax runs over the first ``K_u`` interests),
    and the others are returned as zeros; :meth:`interest_mask` says which are
    real. A zero interest scores 0 against every item, so a merge over
    interests that ignores the mask would pick it only when every real score
    is <= 0 — possible with unnormalised inner products, so retrieval should
    drop the masked interests rather than rely on the zeros.

    A history without any real item gives all-zero interests (also in
    ``mind`` mode, where the ReLU layer would otherwise return ``relu(bias)``).
    Values at padded positions never reach the output or its gradient; they
    are replaced by zeros before any arithmetic, so even NaN padding is safe.

    Args:
      num_interests: K.
      units: d, the item embedding width (interests have the same width).
      max_length: L, the longest history (``comirec_dr`` has one map per
        position; ``mind`` one initial logit per position). Shorter inputs use
        the first positions.
      mode: ``mind`` | ``comirec_dr``.
      iterations: routing rounds (ComiRec: 3).
      dynamic_interests: MIND's per-user ``K_u``.
      initializer: ``he`` | ``glorot`` | ``normal`` (see ``initializers.py``).
      seed: seeds the initial weights and MIND's fixed routing logits.

    Call args:
      history_embeddings: float32 ``[batch, L, d]``.
      mask: bool ``[batch, L]``, True at real items.

    Returns:
      interests float32 ``[batch, K, d]``. :meth:`attend` also returns the last
      round's coupling coefficients ``[batch, K, L]``.
    """

    def __init__(self, num_interests: int, units: int, max_length: int, mode: str = "mind",
                 iterations: int = 3, dynamic_interests: bool = False, initializer: str = "he",
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown capsule mode {mode!r}; expected one of {MODES}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.num_interests = num_interests
        self.units = units
        self.max_length = max_length
        self.mode = mode
        self.iterations = iterations
        self.dynamic_interests = dynamic_interests
        self.initializer = initializer
        self.seed = seed
        # Created here rather than in build() so that attend() works before any __call__.
        if mode == "mind":
            self.bilinear = tf.keras.layers.Dense(
                units, use_bias=False, kernel_initializer=kernel_initializer(initializer, seed),
                name="bilinear")
            self.bilinear.build([None, units])
            self.projection = tf.keras.layers.Dense(
                units, activation="relu",
                kernel_initializer=kernel_initializer(initializer, _offset(seed, 1)),
                name="projection")
            self.projection.build([None, units])
            self.routing_logits = self.add_weight(
                "routing_logits", shape=[num_interests, max_length], trainable=False,
                initializer=tf.keras.initializers.TruncatedNormal(
                    stddev=1.0, seed=_offset(seed, 2)))
        else:
            self.bilinear_weights = self.add_weight(
                "bilinear", shape=[max_length, num_interests * units, units],
                initializer=self._per_map_initializer)

    def _per_map_initializer(self, shape, dtype=None):
        """Draws each ``d x d`` map of ``W [L, K*d, d]`` as its own d -> d kernel."""
        length, width, units = shape
        maps = [kernel_initializer(self.initializer, _offset(self.seed, i))([units, units], dtype)
                for i in range(length * (width // units))]
        return tf.reshape(tf.stack(maps), shape)

    def interest_mask(self, mask):
        """bool ``[batch, K]``: True at the interests the user has (all, unless dynamic)."""
        mask = tf.cast(mask, tf.bool)
        k = self.num_interests
        if not self.dynamic_interests:
            return tf.ones([tf.shape(mask)[0], k], tf.bool)
        count = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        # floor(log2 n) >= j  <=>  n >= 2**j: integer-exact, no float log.
        thresholds = tf.constant([min(2 ** j, 2 ** 31 - 1) for j in range(1, k + 1)], tf.int32)
        k_u = tf.reduce_sum(tf.cast(count[:, None] >= thresholds[None, :], tf.int32), axis=1)
        k_u = tf.maximum(k_u, 1)
        return tf.range(k)[None, :] < k_u[:, None]

    def _predictions(self, x, length):
        """``(ê [batch, K or 1, L, d], initial logits [1, K, L])``."""
        k, d = self.num_interests, self.units
        if self.mode == "mind":
            # One shared map: [batch, 1, L, d], broadcast against K by matmul.
            hat = self.bilinear(x)[:, None, :, :]
            logits = tf.cast(self.routing_logits[:, :length], x.dtype)[None, :, :]
            return hat, logits
        w = tf.cast(self.bilinear_weights[:length], x.dtype)  # [L, K*d, d]
        hat = tf.einsum("lod,bld->blo", w, x)
        hat = tf.transpose(tf.reshape(hat, [-1, length, k, d]), [0, 2, 1, 3])
        return hat, tf.zeros([1, k, length], x.dtype)

    def attend(self, history_embeddings, mask, training=False):
        """Returns ``(interests [batch, K, d], coupling [batch, K, L])``.

        The coupling is the last round's ``c`` (0 at padding and at a dynamic
        user's missing interests); it sums to 1 over interests, not over items.
        ``training`` is accepted like every extractor's; routing has no dropout.
        """
        x = tf.convert_to_tensor(history_embeddings)
        mask = tf.cast(mask, tf.bool)
        if x.shape[1] is not None and x.shape[1] > self.max_length:
            raise ValueError(f"history length {x.shape[1]} exceeds max_length {self.max_length}")
        length = tf.shape(x)[1]
        x = tf.where(mask[:, :, None], x, tf.zeros_like(x))
        hat, logits = self._predictions(x, length)
        hat_stopped = tf.stop_gradient(hat)

        active = self.interest_mask(mask)  # [batch, K]
        keep = tf.logical_and(mask[:, None, :], active[:, :, None])  # [batch, K, L]
        for i in range(self.iterations):
            if self.dynamic_interests:
                logits = tf.where(active[:, :, None], logits, tf.cast(_MASKED, logits.dtype))
            coupling = tf.nn.softmax(logits, axis=1)
            coupling = tf.where(keep, coupling, tf.zeros_like(coupling))
            last = i == self.iterations - 1
            h = hat if last else hat_stopped
            # [batch, K, 1, L] @ [batch, K|1, L, d] -> [batch, K, 1, d]
            capsules = squash(tf.matmul(coupling[:, :, None, :], h)[:, :, 0, :])
            if not last:
                # <ê_kl, v_k>: [batch, K|1, L, d] @ [batch, K, d, 1] -> [batch, K, L]
                logits = logits + tf.matmul(h, capsules[:, :, :, None])[:, :, :, 0]

        interests = self.projection(capsules) if self.mode == "mind" else capsules
        has_items = tf.reduce_any(mask, axis=1)[:, None]
        real = tf.logical_and(active, has_items)[:, :, None]
        return tf.where(real, interests, tf.zeros_like(interests)), coupling

    def call(self, history_embeddings, mask):
        return self.attend(history_embeddings, mask)[0]

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests, "units": self.units,
                "max_length": self.max_length, "mode": self.mode, "iterations": self.iterations,
                "dynamic_interests": self.dynamic_interests, "initializer": self.initializer,
                "seed": self.seed}
