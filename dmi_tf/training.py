"""The training loop: the training stream, and :func:`fit`, which trains until validation
stops improving (resuming an unfinished run, under any ``tf.distribute`` strategy)."""

from __future__ import annotations

import logging
import os
import sys
import time

import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf import distribute
from dmi_tf.budget import training_budget
from dmi_tf.callbacks import BackupCallback, DivergenceGuard, ValidationCallback, restore_backup
from dmi_tf.data.pipeline import training_dataset
from dmi_tf.optimizers import compile_for_training

log = logging.getLogger(__name__)


def training_stream(model: tf.keras.Model, config: config_lib.Config, dataset,
                    batch_size: int | None = None, num_shards: int = 1, shard_index: int = 0,
                    skip: int = 0, targets_after: float | None = None) -> tf.data.Dataset:
    """The endless training stream of ``dataset.train``, with the loss's per-batch input work.

    Args:
      batch_size: rows per batch (default ``train.batch_size``; a replica's share
        under a strategy).
      num_shards, shard_index: keep every ``num_shards``-th batch, from ``shard_index``
        (one input pipeline of several).
      skip: batches of this shard to skip, the position of a resumed run. They are
        drawn (target positions, then sampled negatives) and dropped, so the stream
        continues exactly where it was; that costs the input work alone, 2.6 ms per
        batch with 1,280 negatives from 1,349 items (measured on 2 cores).
      targets_after: only interactions newer than this timestamp are targets
        (``pipeline.first_targets``); None: every one.
    """
    batches = training_dataset(
        dataset.train, config.data.max_length, batch_size or config.train.batch_size,
        config.data.min_target_position, seed=config.train.seed,
        targets=config.data.training_targets, after=targets_after)
    if num_shards > 1:
        batches = batches.shard(num_shards, shard_index)
    stream = model.training_stream(batches)
    return stream.skip(skip) if skip else stream


def fit(model: tf.keras.Model, config: config_lib.Config, dataset, run_dir: str,
        validate, verbose: int | None = None, strategy: tf.distribute.Strategy | None = None,
        role: distribute.Role | None = None, resume: bool = True, callbacks=(),
        targets_after: float | None = None) -> dict:
    """Trains until validation stops improving; leaves the best weights in ``model``.

    Args:
      model: built in ``strategy.scope()``.
      run_dir: where this process writes (``checkpoints/``, ``backup/``, ``tensorboard/``).
      validate: a callable returning the validation metrics of ``model``.
      strategy, role: the distribution (default: one device).
      resume: continue from ``run_dir/backup`` if it holds a checkpoint.
      callbacks: more Keras callbacks, run before the validation and the checkpoints.
      targets_after: train on the interactions newer than this timestamp alone
        (histories still reach back before it); None: on every one.

    Returns:
      ``best_step``, ``steps``, ``train_seconds`` and the validation ``history``.
    """
    tc = config.train
    strategy = strategy or tf.distribute.get_strategy()
    role = role or distribute.Role(config.distribute.strategy)
    budget = training_budget(config, dataset.train, targets_after)
    checkpoint_steps = budget.checkpoint_steps
    with strategy.scope():
        compile_for_training(model, config, budget.max_steps)
        # Every variable the forward pass owns exists before a restore.
        model.interests(tf.zeros([1, config.data.max_length], tf.int32))
    checkpoint = tf.train.Checkpoint(model=model)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, "checkpoints"),
                                         max_to_keep=1, checkpoint_name="best")
    log_dir = os.path.join(run_dir, "tensorboard")
    callback = ValidationCallback(
        validate, config.eval.selection_metric, tc.patience, budget.steps_per_eval, manager,
        tf.summary.create_file_writer(os.path.join(log_dir, "validation")), tc.batch_size,
        checkpoint_steps, strategy)
    backup_dir = os.path.join(run_dir, "backup")
    state = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                train_counter=model._train_counter)
    step, progress, restored = (restore_backup(backup_dir, state, strategy) if resume
                                else (0, None, None))
    spent = 0.0
    if progress is not None:
        callback.load_state(progress["validation"])
        spent = float(progress["train_seconds"])
    epochs = budget.max_steps // checkpoint_steps
    log.info(f"training {config.model.name} with batches of {tc.batch_size}: "
             f"{budget.describe()}")
    if restored:
        log.info(f"resuming from step {step:,} ({restored})")
    if distribute.is_parameter_server(strategy):
        log.info("parameter_server: item table in "
                 f"{distribute.describe_placement(model.candidate_embeddings())}")
    t0 = time.perf_counter()
    if step < epochs * checkpoint_steps and not callback.stopped_early:
        train = distribute.training_input(
            strategy, role, tc.batch_size,
            lambda batch, shards, index, skip: training_stream(
                model, config, dataset, batch, shards, index, skip, targets_after), step)
        backup = BackupCallback(backup_dir, state, checkpoint_steps, lambda: {
            "validation": callback.state(),
            "train_seconds": round(spent + time.perf_counter() - t0, 1)})
        # The guard runs first: nothing non-finite is validated, selected or backed up.
        guard = DivergenceGuard(checkpoint_steps, tc.learning_rate)
        model.fit(train, epochs=epochs, initial_epoch=step // checkpoint_steps,
                  steps_per_epoch=checkpoint_steps,
                  callbacks=[guard, *callbacks, callback, backup, tf.keras.callbacks.TensorBoard(
                      log_dir, update_freq=_tensorboard_frequency(strategy, budget.steps_per_eval),
                      profile_batch=0)],
                  verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    train_seconds = spent + time.perf_counter() - t0
    callback.writer.flush()
    checkpoint.restore(manager.latest_checkpoint).expect_partial()
    return {"best_step": callback.best_step,
            "steps": len(callback.history) * budget.steps_per_eval,
            "train_seconds": round(train_seconds, 1), "history": callback.history}


def _tensorboard_frequency(strategy, steps_per_eval: int):
    # The parameter-server coordinator only sees whole epochs.
    if distribute.is_parameter_server(strategy):
        return "epoch"
    return max(1, steps_per_eval // 10)
