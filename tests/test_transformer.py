"""SASRec's causal transformer: shapes, masking, causality, gradients, dropout only in training."""

import numpy as np
import tensorflow as tf
from helpers import input_and_weight_gradients, masked_history

from dmi_tf.layers.transformer import CausalTransformerExtractor


def layer(dropout=0.0, **kwargs):
    tf.keras.utils.set_random_seed(0)
    return CausalTransformerExtractor(4, 6, layers=2, heads=2, dropout=dropout, **kwargs)


def test_one_interest_read_at_the_last_real_item():
    x, mask = masked_history()  # users of 3, 1, 5 and 6 items
    extractor = layer()
    interests, weights = extractor.attend(x, mask)
    assert interests.shape == (4, 1, 4) and weights.shape == (4, 1, 6)
    w = weights.numpy()[:, 0]
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)  # attention of that position
    assert np.all(w[~mask] == 0)  # never on padding
    # Causal: the first user's interest is what a 3-item history gives, whatever follows.
    y = x.copy()
    y[0, 3:] = 100.0
    np.testing.assert_allclose(extractor(y, mask).numpy(), interests.numpy(), atol=1e-5)
    short = extractor(x[:, :3], mask[:, :3]).numpy()
    np.testing.assert_allclose(short[0], interests.numpy()[0], atol=1e-5)


def test_an_item_before_the_last_matters_and_an_empty_history_is_zero():
    x, mask = masked_history()
    extractor = layer()
    base = extractor(x, mask).numpy()
    y = x.copy()
    # Not a constant shift: layer norms cancel those.
    y[2, 0] += np.array([1.0, -1.0, 0.5, 0.0], np.float32)
    assert not np.allclose(extractor(y, mask).numpy()[2], base[2])
    empty = extractor(x, np.zeros_like(mask)).numpy()
    np.testing.assert_array_equal(empty, 0.0)


def test_gradients_reach_the_input_and_every_weight():
    x, mask = masked_history()
    grads = input_and_weight_gradients(layer(), x, mask)
    assert all(g is not None for g in grads)
    assert np.abs(grads[0][~mask]).sum() == 0  # padding gets no gradient
    assert all(np.abs(g).sum() > 0 for g in grads[1:])


def test_dropout_acts_in_training_only():
    x, mask = masked_history()
    extractor = layer(dropout=0.5)
    a, b = extractor(x, mask).numpy(), extractor(x, mask).numpy()
    np.testing.assert_array_equal(a, b)  # inference: deterministic, no dropout
    np.testing.assert_allclose(a, layer(dropout=0.0)(x, mask).numpy(), atol=1e-6)
    assert not np.allclose(extractor(x, mask, training=True).numpy(), a)


def test_round_trips_through_config():
    extractor = layer(dropout=0.25, initializer="glorot", name="sas")
    clone = CausalTransformerExtractor.from_config(extractor.get_config())
    assert (clone.layers, clone.heads, clone.dropout, clone.initializer, clone.name) == (
        2, 2, 0.25, "glorot", "sas")
