import numpy as np
import pytest
import tensorflow as tf
from helpers import input_and_weight_gradients, masked_history

from dmi_tf.layers.capsule import CapsuleRouting, squash

MODES = ["mind", "comirec_dr"]


def inputs(seed=0, batch=4, length=6, d=4):
    return masked_history(seed, batch, length, d)


def layer_for(mode, k=3, d=4, length=6, **kwargs):
    return CapsuleRouting(k, d, length, mode=mode, seed=7, **kwargs)


def numpy_predictions(layer, x, mask):
    """ê [batch, K, L, d] and initial logits [K, L] from the layer's weights."""
    k, d, length = layer.num_interests, layer.units, x.shape[1]
    x = np.where(mask[:, :, None], x, 0.0).astype(np.float64)
    if layer.mode == "mind":
        hat = x @ layer.bilinear.kernel.numpy().astype(np.float64)  # Dense: x @ [in, out]
        hat = np.repeat(hat[:, None], k, axis=1)
        return hat, layer.routing_logits.numpy()[:, :length].astype(np.float64)
    w = layer.bilinear_weights.numpy()[:length].astype(np.float64)  # [L, K*d, d]
    hat = np.zeros((x.shape[0], k, length, d))
    for b in range(x.shape[0]):
        for kk in range(k):
            for pos in range(length):
                hat[b, kk, pos] = w[pos, kk * d:(kk + 1) * d] @ x[b, pos]
    return hat, np.zeros((k, length))


def numpy_routing(layer, x, mask):
    """The routing written out with loops over examples, from the layer's weights."""
    hat, b0 = numpy_predictions(layer, x, mask)
    batch, k = x.shape[0], layer.num_interests
    active = layer.interest_mask(mask).numpy()
    out = np.zeros((batch, k, layer.units))
    couplings = np.zeros((batch, k, x.shape[1]))
    for b in range(batch):
        ku = active[b].sum()
        logits = b0.copy()  # re-initialised for every example
        for i in range(layer.iterations):
            c = np.zeros_like(logits)
            e = np.exp(logits[:ku] - logits[:ku].max(0))
            c[:ku] = e / e.sum(0)  # softmax over the (active) interests
            c[:, ~mask[b]] = 0.0
            z = np.einsum("kl,kld->kd", c, hat[b])
            norm2 = (z ** 2).sum(-1, keepdims=True)
            v = norm2 / (1 + norm2) * z / np.sqrt(norm2 + 1e-9)
            if i < layer.iterations - 1:
                logits = logits + np.einsum("kld,kd->kl", hat[b], v)
        if layer.mode == "mind":
            v = np.maximum(v @ layer.projection.kernel.numpy() + layer.projection.bias.numpy(), 0)
        v[ku:] = 0.0
        out[b] = v if mask[b].any() else 0.0
        couplings[b] = c
    return out, couplings


@pytest.mark.parametrize("mode", MODES)
def test_shapes(mode):
    layer = layer_for(mode)
    x, mask = inputs()
    interests, coupling = layer.attend(x, mask)
    assert interests.shape == (4, 3, 4) and coupling.shape == (4, 3, 6)
    assert layer(x, mask).shape == (4, 3, 4)
    # Shorter histories use the first positions.
    assert layer(x[:, :3], mask[:, :3]).shape == (4, 3, 4)
    with pytest.raises(ValueError, match="max_length"):
        layer(np.zeros((1, 7, 4), np.float32), np.ones((1, 7), bool))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dynamic", [False, True])
def test_matches_numpy_reference(mode, dynamic):
    layer = layer_for(mode, dynamic_interests=dynamic)
    x, mask = inputs(1)
    interests, coupling = layer.attend(x, mask)
    expected, expected_coupling = numpy_routing(layer, x, mask)
    np.testing.assert_allclose(interests.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(coupling.numpy(), expected_coupling, rtol=1e-5, atol=1e-6)
    # Coupling: a real item's coefficients sum to 1 over interests; padding gets none.
    c = coupling.numpy()
    np.testing.assert_allclose(c.sum(1)[mask], 1.0, rtol=1e-6)
    assert np.all(c.sum(1)[~mask] == 0)


@pytest.mark.parametrize("mode", MODES)
def test_masked_positions_never_influence_the_output(mode):
    layer = layer_for(mode, dynamic_interests=True)
    x, mask = inputs()
    y = x.copy()
    y[~mask] = 1e3
    z = x.copy()
    z[~mask] = np.nan
    out = layer(x, mask).numpy()
    np.testing.assert_allclose(layer(y, mask).numpy(), out, rtol=1e-6)
    np.testing.assert_allclose(layer(z, mask).numpy(), out, rtol=1e-6)
    # Nor the gradient.
    z = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        total = tf.reduce_sum(layer(z, mask))
    grads = tape.gradient(total, [z, *layer.trainable_variables])
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)
    assert np.all(grads[0].numpy()[~mask] == 0)


@pytest.mark.parametrize("mode", MODES)
def test_all_padding_history_gives_zeros(mode):
    layer = layer_for(mode)
    x, _ = inputs()
    interests, coupling = layer.attend(x, np.zeros((4, 6), bool))
    assert np.all(interests.numpy() == 0) and np.all(coupling.numpy() == 0)


def test_squash_keeps_direction_and_norms_below_one():
    z = tf.constant(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32) * 10)
    z = tf.concat([z, tf.zeros([1, 4])], axis=0)
    v = squash(z).numpy()
    norms = np.linalg.norm(v, axis=-1)
    assert np.all(norms < 1) and norms[-1] == 0
    cos = (v[:5] * z.numpy()[:5]).sum(-1) / norms[:5] / np.linalg.norm(z.numpy()[:5], axis=-1)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-5)
    # ComiRec-DR returns the squashed capsules themselves.
    layer = layer_for("comirec_dr")
    x, mask = inputs()
    assert np.all(np.linalg.norm(layer(x * 10, mask).numpy(), axis=-1) < 1)


@pytest.mark.parametrize("mode", MODES)
def test_deterministic_and_mind_logits_are_not_redrawn(mode):
    layer = layer_for(mode)
    x, mask = inputs()
    before = [w.numpy() for w in layer.weights]
    first = layer(x, mask).numpy()
    fn = tf.function(layer.call)
    np.testing.assert_array_equal(layer(x, mask).numpy(), first)
    np.testing.assert_allclose(fn(x, mask).numpy(), first, rtol=1e-5, atol=1e-6)
    for w, value in zip(layer.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), value)
    # A user's interests do not depend on who else is in the batch. Batches of other sizes may
    # sum in another order (on an AMD EPYC, 1.3e-8 apart on 0.011): equal up to float32 rounding.
    np.testing.assert_allclose(layer(x[2:3], mask[2:3]).numpy(), first[2:3], rtol=1e-6, atol=1e-6)
    if mode == "mind":
        assert not layer.routing_logits.trainable
        assert layer.routing_logits not in layer.trainable_variables
        # The same seed gives the same fixed logits.
        np.testing.assert_array_equal(layer_for(mode).routing_logits.numpy(),
                                      layer.routing_logits.numpy())
        assert np.abs(layer.routing_logits.numpy()).max() <= 2.0  # truncated at 2 std


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_the_bilinear_weights_and_the_inputs(mode):
    layer = layer_for(mode)
    grads = input_and_weight_gradients(layer, *inputs())
    assert len(layer.trainable_variables) == (3 if mode == "mind" else 1)
    assert all(g is not None and np.abs(g).sum() > 0 for g in grads)


def tf_dr_reference(w, x, mask, stop_earlier):
    """ComiRec-DR routing in TF, with or without stop_gradient before the last round."""
    k, d, length = 3, 4, x.shape[1]
    x = x * tf.cast(mask, x.dtype)[:, :, None]
    hat = tf.einsum("lod,bld->blo", w, x)
    hat = tf.transpose(tf.reshape(hat, [-1, length, k, d]), [0, 2, 1, 3])
    logits = tf.zeros([x.shape[0], k, length])
    for i in range(3):
        c = tf.nn.softmax(logits, axis=1) * tf.cast(mask, tf.float32)[:, None, :]
        h = tf.stop_gradient(hat) if stop_earlier and i < 2 else hat
        v = squash(tf.einsum("bkl,bkld->bkd", c, h))
        logits = logits + tf.einsum("bkld,bkd->bkl", h, v)
    return v


def test_dr_gradient_flows_only_through_the_last_round():
    layer = layer_for("comirec_dr")
    x, mask = inputs(2)
    target = tf.constant(np.random.default_rng(3).normal(size=(4, 3, 4)).astype(np.float32))

    def gradient(fn):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fn() * target)
        return tape.gradient(loss, layer.bilinear_weights).numpy()

    w = layer.bilinear_weights
    got = gradient(lambda: layer(x, mask))
    stopped = gradient(lambda: tf_dr_reference(w, x, mask, stop_earlier=True))
    unstopped = gradient(lambda: tf_dr_reference(w, x, mask, stop_earlier=False))
    np.testing.assert_allclose(got, stopped, rtol=1e-4, atol=1e-6)
    assert np.abs(got - unstopped).max() > 1e-4
    # A position padded for every user gives its maps no gradient.
    short = mask.copy()
    short[:, 5] = False
    grad = gradient(lambda: layer(x, short))
    assert np.all(grad[5] == 0) and np.abs(grad[:5]).sum() > 0


def test_dynamic_interest_mask():
    layer = CapsuleRouting(4, 4, 10, mode="mind", dynamic_interests=True, seed=0)
    mask = np.zeros((6, 10), bool)
    for row, n in enumerate([0, 1, 3, 4, 8, 10]):
        mask[row, :n] = True
    # K_u = max(1, min(4, floor(log2 n))): 0 -> 1, 1 -> 1, 3 -> 1, 4 -> 2, 8 -> 3, 10 -> 3.
    expected = np.array([1, 1, 1, 2, 3, 3])
    np.testing.assert_array_equal(layer.interest_mask(mask).numpy().sum(1), expected)
    assert np.all(layer.interest_mask(mask).numpy()[:, 0])  # the first K_u interests
    capped = CapsuleRouting(2, 4, 10, mode="mind", dynamic_interests=True)
    np.testing.assert_array_equal(capped.interest_mask(mask[4:5]).numpy(), [[True, True]])
    # Interests beyond K_u are zeros; the kept ones are not.
    x = np.random.default_rng(0).normal(size=(6, 10, 4)).astype(np.float32)
    out = layer(x, mask).numpy()
    kept = layer.interest_mask(mask).numpy()
    assert np.all(out[~kept] == 0)
    assert np.all(np.abs(out[kept][1:]).sum(-1) > 0)  # row 0 has no items: zeros
    # Without dynamic_interests every interest is kept.
    assert np.all(layer_for("mind").interest_mask(mask[:, :6]).numpy())


@pytest.mark.parametrize("mode", MODES)
def test_config_round_trip_gives_the_same_layer(mode):
    layer = CapsuleRouting(2, 4, 6, mode=mode, iterations=2, dynamic_interests=True,
                           initializer="glorot", seed=3, name="caps")
    x, mask = inputs()
    out = layer(x, mask)
    clone = CapsuleRouting.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x, mask).numpy(), out.numpy(), rtol=1e-6)
    other = CapsuleRouting(2, 4, 6, mode=mode, seed=4)
    assert not np.allclose(other(x, mask).numpy(), out.numpy())


def test_rejects_unknown_mode_and_iterations():
    with pytest.raises(ValueError, match="mode"):
        CapsuleRouting(2, 4, 6, mode="comirec_sa")
    with pytest.raises(ValueError, match="iterations"):
        CapsuleRouting(2, 4, 6, iterations=0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_compiles_with_xla_and_dynamic_batch(mode):
    layer = layer_for(mode, dynamic_interests=True)
    x, mask = inputs()
    eager = layer(x, mask).numpy()
    fn = tf.function(layer.call, jit_compile=True, input_signature=[
        tf.TensorSpec([None, 6, 4], tf.float32), tf.TensorSpec([None, 6], tf.bool)])
    np.testing.assert_allclose(fn(x, mask).numpy(), eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fn(x[:2], mask[:2]).numpy(), eager[:2], rtol=1e-5, atol=1e-6)
