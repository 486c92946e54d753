"""DMI's interest refiner: noise an interest, denoise it against the history, combine."""

from __future__ import annotations

import tensorflow as tf

from dmi_tf.layers.diffusion.combine import GateCombiner, SumCombiner
from dmi_tf.layers.diffusion.denoiser import CrossAttentionDenoiser, MLPDenoiser
from dmi_tf.layers.diffusion.pruning import keep_top_items
from dmi_tf.layers.diffusion.schedule import NoiseSchedule, reverse_timesteps
from dmi_tf.layers.ops import store_folded


class DiffusionRefiner(tf.keras.layers.Layer):
    """Refines coarse interests at the dimension level (docs/method.md, "DMI").

    Training (:meth:`train_refine`) noises one interest per example, the one
    meeting the target, to a random step t over a random share ρ of its
    dimensions, and denoises it in one shot. Inference (:meth:`call`) runs a
    deterministic DDIM-style reverse pass over all K interests at once from
    ``sqrt(ᾱ_T')·v``: no sampled noise, so the same history always gives the
    same interests.

    Args:
      units: d.
      max_length: L.
      steps: T.
      noise_scale: s.
      noise_dims_ratio: ρ.
      denoiser: ``attention`` | ``mlp``.
      layers, heads, ffn_factor: the denoiser's shape.
      keep_items: r, or None for all history items.
      combine: ``gate`` | ``sum``; ``sum_weight`` is λ of ``sum``; ``gate_bias`` the
        gate's initial bias (σ(b) = the coarse interest's starting share).
      infer_steps: S >= 1.
      infer_start: T' (None: T // 4).
      initializer: ``he`` | ``glorot`` | ``normal``.
      seed: seeds the training noise (a checkpointed ``tf.random.Generator``).
      dropout: the denoiser's dropout in training draws (:meth:`train_refine`).
    """

    def __init__(self, units: int, max_length: int, steps: int = 20, noise_scale: float = 1.0,
                 noise_dims_ratio: float = 0.5, denoiser: str = "attention", layers: int = 1,
                 heads: int = 2, ffn_factor: int = 2, keep_items: int | None = None,
                 combine: str = "gate", sum_weight: float = 1.0, gate_bias: float = 0.0,
                 infer_steps: int = 1,
                 infer_start: int | None = None, initializer: str = "he", seed: int = 0,
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if infer_steps < 1:
            raise ValueError(
                f"infer_steps must be >= 1 (S = 0 means no refiner), got {infer_steps}")
        self.units, self.max_length = units, max_length
        self.steps, self.noise_scale, self.noise_dims_ratio = steps, noise_scale, noise_dims_ratio
        self.denoiser_kind, self.layers, self.heads = denoiser, layers, heads
        self.ffn_factor, self.keep_items = ffn_factor, keep_items
        self.combine_kind, self.sum_weight, self.gate_bias = combine, sum_weight, gate_bias
        self.infer_steps = infer_steps
        self.infer_start = steps // 4 if infer_start is None else infer_start
        self.initializer, self.seed, self.dropout = initializer, seed, dropout
        self.schedule = NoiseSchedule(steps, noise_scale)
        self.noised_dims = round(noise_dims_ratio * units)
        denoiser_cls = {"attention": CrossAttentionDenoiser, "mlp": MLPDenoiser}[denoiser]
        self.denoiser = denoiser_cls(units, max_length, layers, heads, ffn_factor, initializer,
                                     dropout, name="denoiser")
        self.combiner = (GateCombiner(units, initializer, gate_bias, name="combiner")
                         if combine == "gate"
                         else SumCombiner(sum_weight, name="combiner"))
        self.rng = tf.random.Generator.from_seed(seed)
        self._timesteps = tf.constant(reverse_timesteps(self.infer_start, infer_steps))
        # One step needs no loop: graph mode then runs 1.7 ms instead of 2.3 ms at
        # batch 1 (CPU time, 2 cores); from S = 4 the while_loop is as fast as unrolling.
        self._unroll = infer_steps == 1
        self._folded_steps = None  # [S, d] variable once fold_for_inference() ran

    @property
    def folded(self) -> bool:
        return self._folded_steps is not None

    def fold_for_inference(self):
        """Stores what the reverse pass computes from weights alone in non-trainable variables.

        That is the step embeddings of the S reverse steps and the denoiser's
        per-head weight products: at batch 1 they are about a tenth of DMI's
        query-tower time (graph mode), and a served model recomputes them on
        every request otherwise. The answers stay the same (to float rounding).
        Export folds its copy of the model; a folded model refuses training
        (its folded values would go stale). Calling it again refreshes them.
        """
        self._folded_steps = store_folded(self, self._folded_steps, "folded_step_embeddings",
                                          self.denoiser.step_embedding(self._timesteps[:-1]))
        self.denoiser.fold_for_inference()

    def _dims_mask(self, batch):
        """bool ``[batch, d]`` with exactly ``round(ρ·d)`` True per row, at random places."""
        if self.noised_dims == 0:
            return tf.zeros([batch, self.units], tf.bool)
        scores = self.rng.uniform([batch, self.units])
        threshold = tf.math.top_k(scores, self.noised_dims).values[:, -1:]
        return scores >= threshold

    def train_refine(self, v0, history_embeddings, mask, attention):
        """One training draw for the interest ``v0`` that met each target.

        Args:
          v0: float32 ``[batch, d]``.
          history_embeddings: float32 ``[batch, L, d]``.
          mask: bool ``[batch, L]``.
          attention: float32 ``[batch, L]``, the extractor's weights for this interest.

        Returns:
          ``(u [batch, d], x0_hat [batch, d])``: the combined vector for the
          retrieval loss and the reconstruction for the denoising loss.
        """
        batch = tf.shape(v0)[0]
        t = self.rng.uniform([batch], 1, self.steps + 1, dtype=tf.int32)
        noise = self.rng.normal([batch, self.units])
        v_t = self.schedule.forward(v0, t, noise, self._dims_mask(batch))
        keep = keep_top_items(attention[:, None, :], mask, self.keep_items)
        x0_hat, _ = self.denoiser(v_t[:, None, :], t, history_embeddings, keep, training=True)
        x0_hat = x0_hat[:, 0, :]
        return self.combiner(v0, x0_hat), x0_hat

    def train_refine_all(self, interests, history_embeddings, mask, attention):
        """One training draw for every interest: :meth:`train_refine` on ``[batch, K, d]``.

        Each example draws one step t for all its interests and a fresh noise
        and dimension mask per interest.

        Args:
          interests: float32 ``[batch, K, d]``.
          history_embeddings: float32 ``[batch, L, d]``.
          mask: bool ``[batch, L]``.
          attention: float32 ``[batch, K, L]``, the extractor's weights.

        Returns:
          ``(u [batch, K, d], x0_hat [batch, K, d])``.
        """
        shape = tf.shape(interests)
        batch, k = shape[0], shape[1]
        t = self.rng.uniform([batch], 1, self.steps + 1, dtype=tf.int32)
        rows = batch * k
        noise = self.rng.normal([rows, self.units])
        v_t = self.schedule.forward(tf.reshape(interests, [rows, self.units]), tf.repeat(t, k),
                                    noise, self._dims_mask(rows))
        keep = keep_top_items(attention, mask, self.keep_items)
        x0_hat, _ = self.denoiser(tf.reshape(v_t, shape), t, history_embeddings, keep,
                                  training=True)
        return self.combiner(interests, x0_hat), x0_hat

    def call(self, interests, history_embeddings, mask, attention):
        """The deterministic reverse pass over all interests.

        Args:
          interests: float32 ``[batch, K, d]``, the coarse interests.
          history_embeddings: float32 ``[batch, L, d]``.
          mask: bool ``[batch, L]``.
          attention: float32 ``[batch, K, L]``, the extractor's weights.

        Returns:
          ``(refined [batch, K, d], weights [batch, K, L])``: the combined
          interests, and the denoiser's attention over the kept history items
          at the last step (0 at dropped items).
        """
        timesteps = self._timesteps
        dynamic = self.keep_items is not None
        memory = self.denoiser.memory(history_embeddings)
        static_keep = None if dynamic else keep_top_items(attention, mask, None)
        # [S, d]: the steps are fixed, so one MLP call covers them all.
        step_embeddings = (self._folded_steps if self.folded
                           else self.denoiser.step_embedding(timesteps[:-1]))

        def body(i, x, x0_hat, weights):
            t, t_next = timesteps[i], timesteps[i + 1]
            if dynamic:
                # The first step ranks items by the extractor's attention, as in
                # training; later ones by affinity to the current estimate.
                scores = tf.cond(
                    i > 0, lambda: tf.einsum("bkd,bld->bkl", x0_hat, history_embeddings),
                    lambda: attention)
                keep = keep_top_items(scores, mask, self.keep_items)
            else:
                keep = static_keep
            x0_hat, weights = self.denoiser.denoise(x, step_embeddings[i][None, :], memory, keep)
            return i + 1, self.schedule.ddim_step(x, x0_hat, t, t_next), x0_hat, weights

        state = (tf.constant(0), self.schedule.start(interests, timesteps[0]),
                 tf.zeros_like(interests), tf.zeros_like(attention))
        if self._unroll:
            for _ in range(self.infer_steps):
                state = body(*state)
        else:
            state = tf.while_loop(lambda i, *_: i < self.infer_steps, body, state,
                                  maximum_iterations=self.infer_steps)
        _, _, x0_hat, weights = state
        return self.combiner(interests, x0_hat), weights

    def get_config(self):
        return {**super().get_config(), "units": self.units, "max_length": self.max_length,
                "steps": self.steps, "noise_scale": self.noise_scale,
                "noise_dims_ratio": self.noise_dims_ratio, "denoiser": self.denoiser_kind,
                "layers": self.layers, "heads": self.heads, "ffn_factor": self.ffn_factor,
                "keep_items": self.keep_items, "combine": self.combine_kind,
                "sum_weight": self.sum_weight, "gate_bias": self.gate_bias,
                "infer_steps": self.infer_steps,
                "infer_start": self.infer_start, "initializer": self.initializer,
                "seed": self.seed, "dropout": self.dropout}
