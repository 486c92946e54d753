"""Keras callbacks of a training run: divergence, model selection on validation, fault tolerance.

:class:`DivergenceGuard` stops a run whose loss or weights stopped being
finite; :class:`ValidationCallback` keeps the best weights by the selection
metric in ``checkpoints/``; :class:`BackupCallback` writes the whole training
state to ``backup/`` and :func:`restore_backup` reads it back when a run resumes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import tensorflow as tf

from dmi_tf import distribute
from dmi_tf.errors import UserError
from dmi_tf.io_utils import atomic_write_text
from dmi_tf.optimizers import averaged_weights

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss or the weights stopped being finite; the run cannot be selected or resumed."""


def non_finite_variables(variables) -> list[str]:
    """The names of the floating-point variables holding a NaN or an infinity.

    Each part of a sharded variable is checked where it lives (a parameter
    server's shard is not copied over; only the answer is).
    """
    def finite(part) -> bool:
        with tf.device(part.device):
            return bool(tf.reduce_all(tf.math.is_finite(part)))

    return [v.name for v in variables
            if v.dtype.is_floating and not all(map(finite, getattr(v, "variables", [v])))]


class DivergenceGuard(tf.keras.callbacks.Callback):
    """Stops training, with an error naming the cause and the fix, once it diverged.

    Checked at the end of every Keras epoch (``train.checkpoint_steps``), before
    validation and the checkpoints run, so a diverged model is never selected as
    the best nor written to ``backup/``: the epoch's mean loss (a NaN or infinite
    batch makes it so) and every trainable weight must be finite. NaN scores would
    otherwise rank items in catalogue order, which on real data comes close to
    MostPopular and looks like a result. Per-batch checks would cost a device
    sync a step; an epoch is the unit of what is kept anyway.
    """

    def __init__(self, checkpoint_steps: int, learning_rate: float):
        super().__init__()
        self.checkpoint_steps = checkpoint_steps
        self.learning_rate = learning_rate

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.checkpoint_steps
        loss = float((logs or {}).get("loss", 0.0))
        if math.isfinite(loss) and not (bad := non_finite_variables(
                self.model.trainable_variables)):
            return
        what = f"the loss is {loss}" if not math.isfinite(loss) else (
            f"weights are not finite ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
        raise TrainingDiverged(
            f"training diverged by step {step:,}: {what}. The last finite best checkpoint (if "
            "any) is kept and nothing non-finite was saved; lower train.learning_rate (it is "
            f"{self.learning_rate:g}) and train again in a new --out.")


class ValidationCallback(tf.keras.callbacks.Callback):
    """Evaluates on the validation split every ``steps_per_eval`` steps; keeps the best.

    A Keras epoch is ``train.checkpoint_steps`` long (``steps_per_eval`` by
    default), so validation runs at the end of every ``steps_per_eval /
    checkpoint_steps``-th epoch, and stops after ``patience`` evaluations without a
    better metric. Its state (:meth:`state`) goes into every
    fault-tolerance checkpoint, so a resumed run keeps its history and patience.
    """

    def __init__(self, evaluate_fn, metric, patience, steps_per_eval, manager, writer,
                 batch_size, checkpoint_steps=None, strategy=None):
        super().__init__()
        self.evaluate_fn = evaluate_fn
        self.metric = metric
        self.patience = patience
        self.steps_per_eval = steps_per_eval
        self.checkpoint_steps = checkpoint_steps or steps_per_eval
        self.manager = manager
        self.writer = writer
        self.batch_size = batch_size
        self.strategy = strategy or tf.distribute.get_strategy()
        self.best = -math.inf
        self.best_step = 0
        self.wait = 0
        self.history: list[dict] = []
        self._since = time.perf_counter()
        self._since_step = 0

    def state(self) -> dict:
        """What a resumed run needs to continue model selection exactly."""
        return {"best": self.best, "best_step": self.best_step, "wait": self.wait,
                "history": self.history}

    def load_state(self, state: dict) -> None:
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.wait, self.history = int(state["wait"]), list(state["history"])

    @property
    def stopped_early(self) -> bool:
        return self.wait >= self.patience

    def on_train_begin(self, logs=None):
        self._since = time.perf_counter()
        self._since_step = -1  # set by the first epoch

    def on_epoch_begin(self, epoch, logs=None):
        if self._since_step < 0:
            self._since, self._since_step = time.perf_counter(), epoch * self.checkpoint_steps

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.checkpoint_steps
        if step % self.steps_per_eval:
            return
        seconds = time.perf_counter() - self._since
        speed = (step - self._since_step) * self.batch_size / max(seconds, 1e-9)
        # With train.ema_momentum, the average is what is validated and kept.
        with averaged_weights(self.model):
            metrics = self.evaluate_fn()
            # Multi-worker: every worker must take the same decision (saving is a collective).
            value = distribute.agree_on_mean(self.strategy, metrics[self.metric])
            improved = math.isfinite(value) and value > self.best
            if improved:
                self.best, self.best_step, self.wait = value, step, 0
                self.manager.save(checkpoint_number=step)
            else:
                self.wait += 1
        with self.writer.as_default(step=step):
            for name, v in metrics.items():
                tf.summary.scalar(f"valid/{name}", v)
        loss = (logs or {}).get("loss", float("nan"))
        self.history.append({"step": step, "loss": float(loss), **metrics})
        served = ""
        if "served_interests" in metrics:  # model.choose_interests: what validation chose
            served = (" serving all interests" if metrics["served_interests"] == 0
                      else f" serving {metrics['served_interests']} interest(s)")
        log.info(f"step {step}: loss {loss:.4f}, valid {self.metric} {value:.4f}{served}"
                 f"{' (best)' if improved else f' (best {self.best:.4f} at {self.best_step})'}"
                 f", {speed:,.0f} sequences/s")
        if self.stopped_early:
            log.info(f"early stop: no better valid {self.metric} in {self.patience} evaluations")
            self.model.stop_training = True
        self._since, self._since_step = time.perf_counter(), step


class BackupCallback(tf.keras.callbacks.Callback):
    """Fault tolerance: the whole training state, saved atomically every Keras epoch.

    Keras' ``BackupAndRestore`` restores weights and the epoch but restarts the
    input from its beginning; this one also keeps the data position (the step:
    the stream is seeded per batch, so :func:`dmi_tf.training.fit` skips to it) and the
    validation history. Files, in ``RUN_DIR/backup/``: ``ckpt-<step>`` (model,
    optimizer with its step counter, the DMI refiner's ``tf.random.Generator``)
    and ``progress-<step>.json``, written before the checkpoint index names the
    step, so the index only ever names a complete pair. The last two are kept (a
    worker killed while saving leaves its previous one for the others to agree on).
    """

    KEEP = 2

    def __init__(self, directory: str, checkpoint: tf.train.Checkpoint, checkpoint_steps: int,
                 progress_fn):
        super().__init__()
        self.directory = directory
        self.checkpoint_steps = checkpoint_steps
        self.progress_fn = progress_fn
        self.manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=self.KEEP,
                                                  checkpoint_name="ckpt")

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.checkpoint_steps
        atomic_write_text(os.path.join(self.directory, f"progress-{step}.json"),
                          json.dumps({"step": step, **self.progress_fn()}) + "\n")
        self.manager.save(checkpoint_number=step)
        kept = {f"progress-{_checkpoint_step(path)}.json" for path in self.manager.checkpoints}
        for name in os.listdir(self.directory):
            if name.startswith("progress-") and name.endswith(".json") and name not in kept:
                os.remove(os.path.join(self.directory, name))


def _checkpoint_step(path: str) -> int:
    return int(path.rsplit("-", 1)[1])


def restore_backup(directory: str, checkpoint: tf.train.Checkpoint,
                   strategy: tf.distribute.Strategy) -> tuple[int, dict | None, str | None]:
    """Restores the last fault-tolerance checkpoint in ``directory``, if any.

    Every worker of a multi-worker run restores the same step: the smallest of
    their latest ones (one killed while saving is one checkpoint behind).

    Returns:
      ``(step, progress, path)``; ``(0, None, None)`` when there is none.
    """
    latest = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    step = distribute.agree_on_min(strategy, _checkpoint_step(latest) if latest else 0)
    if step == 0:
        return 0, None, None
    path = os.path.join(directory, f"ckpt-{step}")
    if not tf.io.gfile.exists(path + ".index"):
        raise UserError(f"{directory} has no checkpoint of step {step}, the step the other "
                        "workers resume from; restart every worker from the same checkpoints "
                        "(or remove the backup/ folders to start again).")
    # Slot variables the optimizer creates on its first step are restored then.
    checkpoint.restore(path).assert_existing_objects_matched()
    with open(os.path.join(directory, f"progress-{step}.json"), encoding="utf-8") as f:
        return step, json.load(f), path
