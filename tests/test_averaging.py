"""train.ema_momentum: validation, the selected checkpoint and so the export use the
moving average of the weights; training itself goes on from its own weights."""

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf import optimizers, training
from dmi_tf.data.synthetic import synthetic_dataset
from dmi_tf.models import build_model


def test_averaged_weights_swaps_the_average_in_and_back_out():
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(4,))])
    model.compile(tf.keras.optimizers.Adam(0.1, use_ema=True, ema_momentum=0.5), "mse")
    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32), np.ones((32, 3))
    for _ in range(3):  # not fit(): it ends by copying the averages into the weights
        model.train_on_batch(x, y)
    raw = [v.numpy() for v in model.trainable_variables]
    optimizer = model.optimizer
    average = [optimizer._model_variables_moving_average[
        optimizer._index_dict[optimizer._var_key(v)]].numpy() for v in model.trainable_variables]
    assert not np.allclose(raw[0], average[0])  # else the test could not fail
    with optimizers.averaged_weights(model):
        for v, a in zip(model.trainable_variables, average, strict=True):
            np.testing.assert_array_equal(v.numpy(), a)
    for v, r in zip(model.trainable_variables, raw, strict=True):
        np.testing.assert_array_equal(v.numpy(), r)
    with optimizers.averaged_weights(model):  # the averages were put back unchanged too
        np.testing.assert_array_equal(model.trainable_variables[0].numpy(), average[0])


def test_averaged_weights_is_a_no_op_without_a_moving_average():
    model = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(4,))])
    model.compile("adam", "mse")
    before = model.trainable_variables[0].numpy()
    with optimizers.averaged_weights(model):
        np.testing.assert_array_equal(model.trainable_variables[0].numpy(), before)


def _trained_distance(tmp_path, momentum):
    """How far training moved the selected weights from their initial values."""
    config = config_lib.load(None, [
        "model.name=comirec_sa", "data.synthetic.num_users=200", "data.synthetic.num_items=150",
        "data.synthetic.num_topics=6", "model.embedding_dim=16", "loss.num_negatives=64",
        "train.batch_size=32", "train.max_steps=40", "train.steps_per_eval=20",
        "train.steps_per_execution=10", "train.learning_rate=0.01",
        f"train.ema_momentum={momentum}"])
    dataset, _ = synthetic_dataset(config.data.synthetic)
    tf.keras.utils.set_random_seed(0)
    model = build_model(config, dataset.num_items, dataset.train)
    model.interests(tf.zeros([1, config.data.max_length], tf.int32))
    initial = [v.numpy() for v in model.trainable_variables]
    seen = []
    training.fit(model, config, dataset, str(tmp_path / f"run-{momentum}"),
                 lambda: seen.append([v.numpy() for v in model.trainable_variables]) or {
                     "recall@50": float(len(seen))}, verbose=0)
    distance = max(float(np.abs(v.numpy() - w).max())
                   for v, w in zip(model.trainable_variables, initial, strict=True))
    validated = max(float(np.abs(v - w).max()) for v, w in zip(seen[-1], initial, strict=True))
    return distance, validated


@pytest.mark.slow
def test_validation_and_the_selected_checkpoint_use_the_average(tmp_path):
    # A momentum this close to 1 keeps the average at the initial weights for 40 steps.
    frozen, frozen_validated = _trained_distance(tmp_path, 0.999999)
    moved, moved_validated = _trained_distance(tmp_path, 0.0)
    assert moved > 0.05 and moved_validated > 0.05
    assert frozen < 1e-3 and frozen_validated < 1e-3
