"""A run's step budget: validation interval, step cap and checkpoint interval, in steps.

Configs may give them in steps (``train.steps_per_eval``, ``train.max_steps``) or in
passes over the training targets (``train.epochs_per_eval``, ``train.max_epochs``);
this is the one place that turns the second into the first, from the data's size.
"""

from __future__ import annotations

import dataclasses
import math

from dmi_tf import config as config_lib
from dmi_tf.data.dataset import SplitData
from dmi_tf.data.pipeline import targets_per_epoch
from dmi_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Budget:
    """Attributes:
      steps_per_eval: steps between validations (one Keras epoch is ``checkpoint_steps``).
      max_steps: the step cap, a multiple of ``steps_per_eval``.
      checkpoint_steps: steps between fault-tolerance checkpoints; divides ``steps_per_eval``.
      steps_per_epoch: steps of one pass over the training targets.
    """

    steps_per_eval: int
    max_steps: int
    checkpoint_steps: int
    steps_per_epoch: int

    def describe(self) -> str:
        return (f"up to {self.max_steps:,} steps ({self.max_steps / self.steps_per_epoch:.1f} "
                f"epochs of {self.steps_per_epoch:,} steps), validation every "
                f"{self.steps_per_eval:,} steps")


def training_budget(config: config_lib.Config, train: SplitData,
                    targets_after: float | None = None) -> Budget:
    """The step budget of ``config`` on the training split ``train``.

    ``targets_after``: only interactions newer than it are targets (a warm start's
    new data, ``pipeline.first_targets``), so an epoch is a pass over those.

    Raises:
      ConfigError: ``train.checkpoint_steps`` does not divide the validation interval
        that ``train.epochs_per_eval`` gives on this data.
    """
    tc, data = config.train, config.data
    targets = targets_per_epoch(train, data.min_target_position, data.training_targets,
                                targets_after)
    steps_per_epoch = max(1, math.ceil(targets / tc.batch_size))
    steps_per_eval = tc.steps_per_eval
    if tc.epochs_per_eval is not None:
        steps_per_eval = max(1, round(tc.epochs_per_eval * steps_per_epoch))
    max_steps = tc.max_steps
    if tc.max_epochs is not None:
        max_steps = max(1, round(tc.max_epochs * steps_per_epoch))
    max_steps = math.ceil(max_steps / steps_per_eval) * steps_per_eval
    checkpoint_steps = tc.checkpoint_steps or steps_per_eval
    if steps_per_eval % checkpoint_steps:
        raise ConfigError(
            f"train.checkpoint_steps ({checkpoint_steps}) must divide the validation interval, "
            f"{steps_per_eval} steps here (train.epochs_per_eval {tc.epochs_per_eval} of "
            f"{steps_per_epoch} steps); set it to null or to a divisor.")
    return Budget(steps_per_eval, max_steps, checkpoint_steps, steps_per_epoch)
