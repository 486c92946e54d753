"""Step budgets in epochs, the learning-rate schedule and decoupled weight decay."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf.budget import training_budget
from dmi_tf.config import from_dict
from dmi_tf.data.dataset import SplitData
from dmi_tf.errors import ConfigError
from dmi_tf.optimizers import WarmupCosine, compile_for_training

# 3 users of 6, 10 and 5 items: targets from position 4 are 2 + 6 + 1 = 9, users 3.
TRAIN = SplitData.from_sequences([0, 1, 2], [list(range(1, 7)), list(range(1, 11)),
                                             list(range(1, 6))])


def budget(**train):
    data = {"training_targets": train.pop("targets", "random")}
    return training_budget(from_dict({"train": {"batch_size": 2, **train}, "data": data}), TRAIN)


def test_steps_are_kept_when_no_epochs_are_given():
    b = budget(steps_per_eval=5, max_steps=12)
    assert (b.steps_per_eval, b.max_steps, b.checkpoint_steps) == (5, 15, 5)  # whole validations


def test_epochs_count_users_or_every_target():
    # random: 3 users -> 2 steps of 2; every: 9 targets -> 5 steps.
    assert budget(epochs_per_eval=1, max_epochs=10).steps_per_epoch == 2
    b = budget(targets="every", epochs_per_eval=2, max_epochs=10)
    assert (b.steps_per_epoch, b.steps_per_eval, b.max_steps) == (5, 10, 50)
    assert "10.0 epochs" in b.describe()


def test_checkpoint_steps_must_divide_an_epoch_based_interval():
    with pytest.raises(ConfigError, match="checkpoint_steps"):
        budget(targets="every", epochs_per_eval=1, checkpoint_steps=2)  # 5 steps


def test_warmup_then_cosine_by_hand():
    schedule = WarmupCosine(1.0, warmup_steps=4, decay_steps=14)
    lr = [float(schedule(s)) for s in (0, 1, 3, 4, 9, 14, 20)]
    # Warm-up: (s + 1) / 4; then (1 + cos(pi (s - 4) / 10)) / 2, and 0 from step 14 on.
    np.testing.assert_allclose(lr, [0.25, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
    assert float(WarmupCosine(0.1)(100)) == pytest.approx(0.1)  # constant


def test_weight_decay_is_decoupled_from_the_gradient():
    config = from_dict({"train": {"learning_rate": 0.1, "weight_decay": 0.5,
                                  "steps_per_execution": 1}})

    class Tiny(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable([2.0, -4.0])

    model = Tiny()
    compile_for_training(model, config)
    # A zero gradient: Adam's step is 0, so only the decay w -= lr * wd * w acts.
    model.optimizer.apply_gradients([(tf.zeros(2), model.w)])
    np.testing.assert_allclose(model.w.numpy(), [2.0 * 0.95, -4.0 * 0.95], rtol=1e-6)


def test_weight_decay_needs_adam():
    with pytest.raises(ConfigError, match="lazy_adam"):
        from_dict({"train": {"weight_decay": 0.1, "optimizer": "lazy_adam"}})


def test_cosine_schedule_decays_over_the_budget():
    config = from_dict({"train": {"learning_rate": 0.2, "lr_schedule": "cosine"}})
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.build([None, 1])
    compile_for_training(model, config, max_steps=100)
    optimizer = model.optimizer

    def rate_at(step):  # the rate the optimizer applies at that step
        optimizer.iterations.assign(step)
        optimizer.apply_gradients(zip([tf.zeros_like(v) for v in model.trainable_variables],
                                      model.trainable_variables, strict=True))
        return float(optimizer.learning_rate)

    assert rate_at(50) == pytest.approx(0.1, rel=1e-5)
    assert math.isclose(rate_at(100), 0.0, abs_tol=1e-7)
