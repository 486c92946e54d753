"""The diffusion refiner's parts: schedule, forward and DDIM steps, pruning, denoisers, refiner."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import masked_history

from dmi_tf.layers.diffusion import (
    CrossAttentionDenoiser,
    DiffusionRefiner,
    GateCombiner,
    MLPDenoiser,
    NoiseSchedule,
    SumCombiner,
    keep_top_items,
    reverse_timesteps,
)


def test_schedule_is_linear_beta_scaled_by_s():
    schedule = NoiseSchedule(steps=3, scale=2.0)
    # betas 2e-4, ~2.02e-2, 4e-2 -> alpha_bar = cumprod(1 - beta), alpha_bar_0 = 1.
    betas = np.linspace(2e-4, 4e-2, 3)
    expected = np.concatenate([[1.0], np.cumprod(1 - betas)])
    np.testing.assert_allclose(schedule.alpha_bar.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(NoiseSchedule(5, scale=0.0).alpha_bar.numpy(), np.ones(6))


def test_forward_step_matches_the_closed_form_and_leaves_masked_out_dims_untouched():
    schedule = NoiseSchedule(steps=20)
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(3, 8)).astype(np.float32)
    noise = rng.normal(size=(3, 8)).astype(np.float32)
    dims = rng.random((3, 8)) < 0.5
    t = np.array([1, 7, 20], np.int32)
    out = schedule.forward(x0, t, noise, dims).numpy()
    a = schedule.alpha_bar.numpy()[t][:, None]
    closed = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
    np.testing.assert_allclose(out[dims], closed[dims], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[~dims], x0[~dims])
    # Step 0 is the data itself.
    np.testing.assert_allclose(schedule.forward(x0, np.zeros(3, np.int32), noise,
                                                np.ones((3, 8), bool)).numpy(), x0, rtol=1e-6)


def test_ddim_step_recovers_x0_when_the_prediction_is_exact():
    schedule = NoiseSchedule(steps=20)
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(2, 4)).astype(np.float32)
    noise = rng.normal(size=(2, 4)).astype(np.float32)
    a = schedule.alpha_bar.numpy()
    x_t = (np.sqrt(a[10]) * x0 + np.sqrt(1 - a[10]) * noise).astype(np.float32)
    # To t' = 4, the implied noise is carried: sqrt(a4) x0 + sqrt(1 - a4) eps.
    x_4 = schedule.ddim_step(x_t, x0, tf.constant(10), tf.constant(4)).numpy()
    np.testing.assert_allclose(x_4, np.sqrt(a[4]) * x0 + np.sqrt(1 - a[4]) * noise, rtol=1e-5)
    np.testing.assert_allclose(schedule.ddim_step(x_t, x0, tf.constant(10), tf.constant(0)), x0,
                               rtol=1e-5)
    # No noise at all (s = 0): the update is the prediction, not a division by zero.
    flat = NoiseSchedule(steps=20, scale=0.0)
    out = flat.ddim_step(x_t, x0, tf.constant(10), tf.constant(4)).numpy()
    np.testing.assert_allclose(out, x0, rtol=1e-6)


def test_reverse_timesteps_go_from_the_start_to_zero():
    np.testing.assert_array_equal(reverse_timesteps(5, 1), [5, 0])
    np.testing.assert_array_equal(reverse_timesteps(8, 4), [8, 6, 4, 2, 0])
    np.testing.assert_array_equal(reverse_timesteps(0, 2), [0, 0, 0])


def test_keep_top_items_keeps_the_r_best_real_items():
    scores = np.array([[[0.1, 0.5, 0.3, 0.9, 0.8]]], np.float32)
    mask = np.array([[True, True, True, True, False]])  # item 4 is padding despite its score
    keep = keep_top_items(scores, mask, 2).numpy()
    np.testing.assert_array_equal(keep, [[[False, True, False, True, False]]])
    np.testing.assert_array_equal(keep_top_items(scores, mask, None).numpy()[0, 0], mask[0])
    # Fewer real items than r: all of them.
    short = np.array([[True, False, False, False, False]])
    np.testing.assert_array_equal(keep_top_items(scores, short, 3).numpy()[0, 0], short[0])


def denoiser_inputs(seed=0, batch=3, k=2, length=6, d=8):
    x, mask = masked_history(seed, batch, length, d)
    rng = np.random.default_rng(seed + 1)
    x_t = rng.normal(size=(batch, k, d)).astype(np.float32)
    keep = np.broadcast_to(mask[:, None, :], (batch, k, length))
    return x_t, x, mask, keep


@pytest.mark.parametrize("cls", [CrossAttentionDenoiser, MLPDenoiser])
def test_denoisers_shapes_and_per_example_or_shared_steps(cls):
    layer = cls(units=8, max_length=6, layers=2, heads=2)
    x_t, h, _, keep = denoiser_inputs()
    out, attention = layer(x_t, np.array([1, 5, 9], np.int32), h, keep)
    assert out.shape == (3, 2, 8) and attention.shape == (3, 2, 6)
    shared, _ = layer(x_t, tf.constant(5), h, keep)
    per_example, _ = layer(x_t, np.array([5, 5, 5], np.int32), h, keep)
    np.testing.assert_allclose(shared.numpy(), per_example.numpy(), rtol=1e-5, atol=1e-5)


def test_cross_attention_sees_only_kept_items():
    layer = CrossAttentionDenoiser(units=8, max_length=6, heads=2)
    x_t, h, mask, keep = denoiser_inputs()
    keep = keep.copy()
    keep[0, 0, 0] = False  # interest 0 of user 0 may not see item 0
    out, attention = layer(x_t, tf.constant(3), h, keep)
    a = attention.numpy()
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
    assert np.all(a[~keep] == 0)
    changed = h.copy()
    changed[~mask] = 1e3  # padding
    changed[0, 0] = 1e3  # hidden from interest 0 of user 0, visible to its interest 1
    out2, _ = layer(x_t, tf.constant(3), changed, keep)
    np.testing.assert_allclose(out2.numpy()[1:], out.numpy()[1:], rtol=1e-5)
    np.testing.assert_allclose(out2.numpy()[0, 0], out.numpy()[0, 0], rtol=1e-5)
    assert not np.allclose(out2.numpy()[0, 1], out.numpy()[0, 1])


def test_cross_attention_equals_textbook_multi_head_attention():
    from dmi_tf.layers.diffusion import CrossAttentionBlock
    block = CrossAttentionBlock(units=8, heads=2, ffn_factor=2)
    x_t, h, _, keep = denoiser_inputs(3)
    positions = np.random.default_rng(4).normal(size=(6, 8)).astype(np.float32)
    keys = h + positions
    out, attention = block(x_t, h, positions, keep)
    wq, wk, wv = (block.query.kernel.numpy(), block.key.kernel.numpy(),
                  block.value.kernel.numpy())
    q, k, v = x_t @ wq, keys @ wk, h @ wv  # [b, K, d], [b, L, d], [b, L, d]
    heads = []
    probs = []
    for i in range(2):
        s = slice(4 * i, 4 * i + 4)
        logits = np.einsum("bke,ble->bkl", q[..., s], k[..., s]) / 2.0
        logits = np.where(keep, logits, -np.inf)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        probs.append(p)
        heads.append(np.einsum("bkl,ble->bke", p, v[..., s]))
    context = np.concatenate(heads, -1) @ block.output_projection.kernel.numpy()
    context += block.output_projection.bias.numpy()

    def norm(x, layer):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * layer.gamma.numpy() + layer.beta.numpy()

    hidden = norm(x_t + context, block.attention_norm)
    ffn = np.maximum(hidden @ block.ffn_hidden.kernel.numpy() + block.ffn_hidden.bias.numpy(), 0)
    expected = norm(hidden + ffn @ block.ffn_out.kernel.numpy() + block.ffn_out.bias.numpy(),
                    block.ffn_norm)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(attention.numpy(), np.mean(probs, axis=0), rtol=1e-5, atol=1e-6)


def test_combiners():
    coarse = np.ones((2, 3), np.float32)
    refined = np.full((2, 3), 3.0, np.float32)
    np.testing.assert_allclose(SumCombiner(0.5)(coarse, refined).numpy(), 2.5)
    gate = GateCombiner(3)
    out = gate(coarse, refined).numpy()
    assert np.all((out > 1.0) & (out < 3.0))  # a per-dimension convex mix


def test_gate_combiner_is_the_gate_of_the_concatenation():
    rng = np.random.default_rng(0)
    coarse, refined = (rng.normal(size=(2, 4, 5)).astype(np.float32) for _ in range(2))
    gate = GateCombiner(5, initial_bias=0.3)
    out = gate(coarse, refined).numpy()
    kernel, bias = (w.numpy() for w in gate.gate.weights)
    g = 1 / (1 + np.exp(-(np.concatenate([coarse, refined], -1) @ kernel + bias)))
    np.testing.assert_allclose(out, g * coarse + (1 - g) * refined, rtol=1e-5, atol=1e-6)
    assert kernel.shape == (10, 5)


def refiner(**kwargs):
    options = dict(units=8, max_length=6, steps=20, heads=2)
    options.update(kwargs)
    return DiffusionRefiner(**options)


def refiner_inputs(seed=0, k=2):
    x_t, h, mask, _ = denoiser_inputs(seed, k=k)
    attention = np.random.default_rng(seed).random((3, k, 6)).astype(np.float32) * mask[:, None]
    return x_t, h, mask, attention


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [{}, {"infer_steps": 4, "keep_items": 2}, {"infer_steps": 8},
                                    {"denoiser": "mlp", "combine": "sum"}])
def test_reverse_pass_is_deterministic_and_compiles_with_xla(kwargs):
    layer = refiner(**kwargs)
    v, h, mask, attention = refiner_inputs()
    eager, weights = layer(v, h, mask, attention)
    again, _ = layer(v, h, mask, attention)
    np.testing.assert_array_equal(eager.numpy(), again.numpy())  # bit-equal on CPU
    assert eager.shape == (3, 2, 8) and weights.shape == (3, 2, 6)
    compiled = tf.function(layer, jit_compile=True)
    xla, _ = compiled(tf.constant(v), tf.constant(h), tf.constant(mask),
                                tf.constant(attention))
    np.testing.assert_allclose(xla.numpy(), eager.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(xla.numpy(), compiled(v, h, mask, attention)[0].numpy())
    if kwargs.get("keep_items"):
        assert np.all((weights.numpy() > 0).sum(-1) <= 2)


def test_reverse_pass_ignores_padding():
    layer = refiner(infer_steps=2, keep_items=3)
    v, h, mask, attention = refiner_inputs()
    changed = h.copy()
    changed[~mask] = 1e3
    np.testing.assert_allclose(layer(v, changed, mask, attention)[0].numpy(),
                               layer(v, h, mask, attention)[0].numpy(), rtol=1e-5)


def test_train_refine_noises_and_reaches_every_weight():
    layer = refiner(keep_items=3)
    v, h, mask, attention = refiner_inputs()
    v0 = tf.constant(v[:, 0])
    with tf.GradientTape() as tape:
        u, x0_hat = layer.train_refine(v0, h, mask, attention[:, 0])
        loss = tf.reduce_sum(u ** 2) + tf.reduce_sum(x0_hat ** 2)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert u.shape == (3, 8) and x0_hat.shape == (3, 8)
    names = [w.name for w, g in zip(layer.trainable_variables, grads, strict=True)
             if g is None or not np.any(tf.convert_to_tensor(g).numpy())]
    assert not names, f"no gradient reaches {names}"
    # A fresh draw each call (training noise), from a seeded generator.
    u2, _ = layer.train_refine(v0, h, mask, attention[:, 0])
    assert not np.allclose(u.numpy(), u2.numpy())


def test_refiner_config_round_trip():
    layer = refiner(infer_steps=3, keep_items=4, combine="sum", sum_weight=0.5, seed=7)
    v, h, mask, attention = refiner_inputs()
    out = layer(v, h, mask, attention)[0]
    clone = DiffusionRefiner.from_config(layer.get_config())
    clone(v, h, mask, attention)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(v, h, mask, attention)[0].numpy(), out.numpy(), rtol=1e-6)
    assert clone.get_config() == layer.get_config()


def test_refiner_rejects_zero_steps():
    with pytest.raises(ValueError, match="infer_steps"):
        refiner(infer_steps=0)
