import numpy as np
import pytest
import tensorflow as tf
from helpers import input_and_weight_gradients, masked_history

from dmi_tf.layers.ops import softmax_last
from dmi_tf.layers.readout import HardReadout, LabelAwareReadout
from dmi_tf.layers.self_attentive import SelfAttentiveExtractor


def inputs(seed=0, batch=3, length=6, d=4):
    return masked_history(seed, batch, length, d)


def test_shapes_and_attention_rows_sum_to_one_over_real_items():
    layer = SelfAttentiveExtractor(num_interests=2, units=4, max_length=6)
    x, mask = inputs()
    interests, attention = layer.attend(x, mask)
    assert interests.shape == (3, 2, 4) and attention.shape == (3, 2, 6)
    a = attention.numpy()
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-6)
    assert np.all(a[0, :, 3:] == 0) and np.all(a[1, :, 1:] == 0)
    # A single real item takes all the attention, so every interest is that item.
    np.testing.assert_allclose(interests.numpy()[1], np.repeat(x[1, :1], 2, axis=0), rtol=1e-6)


def test_matches_the_formula():
    layer = SelfAttentiveExtractor(num_interests=3, units=4, max_length=6, hidden_factor=2)
    x, mask = inputs(1)
    interests, attention = layer.attend(x, mask)
    w1, b1 = layer.w1.kernel.numpy(), layer.w1.bias.numpy()
    w2, b2 = layer.w2.kernel.numpy(), layer.w2.bias.numpy()
    # A = softmax_L(W2 tanh(W1 (H + P)^T)), masked; V = A H.
    logits = (np.tanh((x + layer.positions.numpy()) @ w1 + b1) @ w2 + b2).transpose(0, 2, 1)
    logits = np.where(mask[:, None, :], logits, -np.inf)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(attention.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(interests.numpy(), expected @ x, rtol=1e-5, atol=1e-6)


def test_masked_positions_never_influence_the_output():
    layer = SelfAttentiveExtractor(num_interests=2, units=4, max_length=6)
    x, mask = inputs()
    y = x.copy()
    y[~mask] = 1e3
    np.testing.assert_allclose(layer(x, mask).numpy(), layer(y, mask).numpy(), rtol=1e-6)


def test_all_padding_history_gives_zeros():
    layer = SelfAttentiveExtractor(num_interests=2, units=4, max_length=6)
    x, _ = inputs()
    out = layer(x, np.zeros((3, 6), bool)).numpy()
    assert np.all(out == 0)


def test_shorter_history_uses_the_first_positions():
    layer = SelfAttentiveExtractor(num_interests=2, units=4, max_length=6)
    x, mask = inputs()
    full = layer(x, mask).numpy()
    short = layer(x[:, :3], mask[:, :3]).numpy()
    np.testing.assert_allclose(short[0], full[0], rtol=1e-6)  # user 0 has 3 real items


def test_gradients_reach_every_weight_and_the_inputs():
    layer = SelfAttentiveExtractor(num_interests=2, units=4, max_length=6)
    grads = input_and_weight_gradients(layer, *inputs())
    assert len(layer.trainable_variables) == 5  # w1, b1, w2, b2, positions
    # W2's bias adds one constant per interest to logits that a softmax over L
    # normalises: its true gradient is zero (as in test_dmi), and it is checked as such.
    names = ["input", *(v.name for v in layer.trainable_variables)]
    for name, g in zip(names, grads, strict=True):
        assert g is not None, name
        if name.endswith("w2/bias:0"):
            np.testing.assert_allclose(g, 0.0, atol=1e-6)
        else:
            assert np.abs(g).sum() > 0, name


def test_config_round_trip_gives_the_same_layer():
    layer = SelfAttentiveExtractor(2, 4, 6, hidden_factor=3, use_positions=False,
                                   initializer="glorot", name="sa")
    x, mask = inputs()
    out = layer(x, mask)
    clone = SelfAttentiveExtractor.from_config(layer.get_config())
    clone(x, mask)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x, mask).numpy(), out.numpy(), rtol=1e-6)
    assert clone.get_config() == layer.get_config()


def test_compiles_with_xla_and_dynamic_batch():
    layer = SelfAttentiveExtractor(2, 4, 6)
    x, mask = inputs()
    eager = layer(x, mask).numpy()
    fn = tf.function(layer.call, jit_compile=True, input_signature=[
        tf.TensorSpec([None, 6, 4], tf.float32), tf.TensorSpec([None, 6], tf.bool)])
    np.testing.assert_allclose(fn(x, mask).numpy(), eager, rtol=1e-5, atol=1e-6)


def test_label_aware_readout_weights_interests_by_softmax_of_powered_scores():
    interests = tf.constant([[[1.0, 0.0], [0.0, 2.0]]])
    target = tf.constant([[1.0, 1.0]])  # scores 1 and 2
    for p in (1.0, 2.0):
        w = np.exp([1.0 ** p, 2.0 ** p])
        w /= w.sum()
        expected = w[0] * np.array([1.0, 0.0]) + w[1] * np.array([0.0, 2.0])
        out = LabelAwareReadout(p)(interests, target).numpy()[0]
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    # A large power approaches the hard readout.
    np.testing.assert_allclose(LabelAwareReadout(30.0)(interests, target).numpy(),
                               HardReadout()(interests, target).numpy(), atol=1e-6)


def test_label_aware_readout_is_finite_for_negative_scores_and_fractional_power():
    interests = tf.constant([[[-1.0, 0.0], [0.0, 1.0]]])
    out = LabelAwareReadout(0.5)(interests, tf.constant([[1.0, 1.0]]))
    assert np.all(np.isfinite(out.numpy()))
    assert LabelAwareReadout.from_config(LabelAwareReadout(0.5).get_config()).power == 0.5


@pytest.mark.parametrize("readout", ["hard", "label_aware"])
def test_readouts_pass_gradients_to_interests(readout):
    layer = HardReadout() if readout == "hard" else LabelAwareReadout()
    interests = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(interests)
        total = tf.reduce_sum(layer(interests, tf.ones([2, 4])))
    grad = tape.gradient(total, interests).numpy()
    assert np.abs(grad).sum() > 0


def test_softmax_last_equals_tf_softmax_with_masked_and_large_logits():
    logits = np.random.default_rng(3).normal(size=(3, 4, 20)).astype(np.float32) * 30
    logits[0, 1, 5:] = -1e9  # masked positions, as the extractor and the denoiser mask them
    logits[1, 2] = 80.0  # a large constant row: no overflow, uniform weights
    got = softmax_last(tf.constant(logits)).numpy()
    np.testing.assert_allclose(got, tf.nn.softmax(logits, axis=-1).numpy(), rtol=1e-5, atol=1e-7)
    assert np.all(got[0, 1, 5:] == 0) and np.allclose(got[1, 2], 1 / 20)
