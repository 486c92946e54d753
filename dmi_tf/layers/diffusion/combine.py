"""How a refined interest meets the coarse one."""

from __future__ import annotations

import tensorflow as tf

from dmi_tf.layers.initializers import kernel_initializer
from dmi_tf.layers.ops import matmul_last


class GateCombiner(tf.keras.layers.Layer):
    """``g = σ(W [v0; v̂0] + b)``, ``u = g ⊙ v0 + (1 - g) ⊙ v̂0``: a per-dimension choice.

    ``initial_bias`` > 0 starts the gate on the coarse interest (g ≈ σ(b)).

    Call args:
      coarse, refined: float32 ``[..., d]``.

    Returns:
      float32 ``[..., d]``.
    """

    def __init__(self, units: int, initializer: str = "he", initial_bias: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.initializer = initializer
        self.initial_bias = initial_bias
        # Holds W [2d, d] and b only: call() applies them to the two halves itself.
        self.gate = tf.keras.layers.Dense(
            units, kernel_initializer=kernel_initializer(initializer),
            bias_initializer=tf.keras.initializers.Constant(initial_bias), name="gate")

    def build(self, input_shape):
        self.gate.build([None, 2 * self.units])
        super().build(input_shape)

    def call(self, coarse, refined):
        # W [v0; v̂0] as v0 W_top + v̂0 W_bottom: the same function without the concat,
        # which cost more CPU time than the gate's matmul on [256, K, 2d] inputs.
        d = self.units
        kernel = self.gate.kernel
        logits = (matmul_last(coarse, kernel[:d]) + matmul_last(refined, kernel[d:])
                  + self.gate.bias)
        g = tf.sigmoid(logits)
        return g * coarse + (1.0 - g) * refined

    def get_config(self):
        return {**super().get_config(), "units": self.units, "initializer": self.initializer,
                "initial_bias": self.initial_bias}


class SumCombiner(tf.keras.layers.Layer):
    """``u = v0 + λ · v̂0``.

    Call args:
      coarse, refined: float32 ``[..., d]``.
    """

    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, coarse, refined):
        return coarse + self.weight * refined

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}
