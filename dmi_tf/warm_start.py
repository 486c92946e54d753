"""Warm start: a new run starts from a previous run's weights (``train --warm-start RUN_DIR``).

Retraining every day on a little more data need not start from zero. The new
model is built as a fresh run builds it (same seed, so the same initial
weights), then every weight of the source run's best checkpoint is copied in:

* the item table row by row, **by raw id** (the runs' ``vocabulary.txt``): the
  row of an item both runs know is the source's, bit for bit; an item only the
  new data has keeps its fresh initial row; an item only the source knew is
  dropped. Indices need not match (``prepare --vocabulary`` keeps them, but a
  renumbered folder works too);
* every other weight (extractor, refiner, position embeddings) as it is.

Then it trains on what the source has not seen (``train.warm_start_targets: new``,
the default): the training targets are the interactions newer than the source
run's newest training interaction, each user's older ones still its history
(:func:`new_data_start`). An epoch is one pass over them. This is the daily
incremental update: on MovieLens-100k's time split, fine-tuning on all the data
again at the cold run's schedule (``all``) gained no steps over a cold run, while
the new window alone reached the cold run's best validation R@50 in 0.15-0.29 of
its steps, at 0.02 lower R@50 on the window after (BENCHMARKS.md, "Warm start").

The optimizer starts fresh (its moments belong to the old data's steps). The
source must be the same model with the same shapes: ``model.name``, d and K are
checked first by name, then every weight's shape. The run records what it
started from in ``RUN_DIR/warm_start.json`` and under ``warm_start`` in
``metrics.json``; an unfinished warm-started run resumes only with the same
``--warm-start`` (its ``config.yaml`` is that of a cold run of the same config).
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf import runs
from dmi_tf.data.dataset import SplitData
from dmi_tf.data.loading import load_data
from dmi_tf.data.pipeline import targets_per_epoch
from dmi_tf.data.time_split import describe_time
from dmi_tf.data.vocabulary import shared_rows
from dmi_tf.errors import DataError, UserError
from dmi_tf.io_utils import atomic_write_text

WARM_START_FILE = "warm_start.json"
# What must be equal before any weight is compared: the "model, d or K".
SAME_KEYS = (("model", "name"), ("model", "embedding_dim"), ("model", "num_interests"))


def check_start(out_dir: str, source_dir: str | None, model_name: str) -> None:
    """Before a run writes anything: a start it can have, and the one it had when resumed.

    Raises:
      UserError: a warm start of a model without weights; ``out_dir`` was
        warm-started from another run (or from one, and ``source_dir`` is None), or
        it started cold and has trained (a backup checkpoint) while ``source_dir``
        is given.
    """
    if source_dir is not None and model_name in runs.UNTRAINED:
        raise _no_weights(model_name)
    record = read_record(out_dir)
    if record is not None:
        recorded = record["run"]
        if source_dir is None or os.path.abspath(source_dir) != recorded:
            raise UserError(f"run directory {out_dir!r} holds an unfinished run warm-started from "
                            f"{recorded}; resume it with --warm-start {recorded}, or choose a new "
                            "--out.")
    elif source_dir is not None and tf.train.latest_checkpoint(os.path.join(out_dir, "backup")):
        raise UserError(f"run directory {out_dir!r} holds an unfinished run that started cold; "
                        "resume it without --warm-start, or choose a new --out.")


def warm_start(model: tf.keras.Model, config: config_lib.Config, vocabulary: list[str],
               source_dir: str) -> dict:
    """Copies the weights of the run in ``source_dir`` into ``model`` (module docstring).

    Args:
      model: the new run's model, built by ``build_model`` and not trained yet (in
        the strategy's scope under a strategy).
      config: the new run's config.
      vocabulary: the new data's raw id of every item row.
      source_dir: a ``python -m dmi_tf.train`` run directory with a checkpoint.

    Returns:
      The record written to ``warm_start.json``: the source run and checkpoint, and
      how many items were carried, new and dropped.

    Raises:
      UserError: the source is not a run, has no weights, or is another model or shape.
    """
    source_config, source_vocabulary = runs.read_run(source_dir)
    _check_same_model(source_config, config, source_dir)
    if not isinstance(model, tf.keras.Model):
        raise _no_weights(config.model.name)
    # Every weight gets its fresh-run initial value before anything else draws numbers.
    model.interests(tf.zeros([1, config.data.max_length], tf.int32))
    empty = SplitData.from_sequences([], [])  # the loss's statistics are not needed
    source, checkpoint = runs.restore_model(source_dir, source_config, len(source_vocabulary),
                                            empty)
    table = model.item_embedding.embeddings
    targets, values = model.variables, source.variables
    mismatch = _first_mismatch(targets, values, table)
    if mismatch:
        differences = config_lib.differences(source_config, config)
        raise UserError(
            f"the weights of {source_dir!r} do not fit this model ({mismatch}); these settings "
            f"differ: {'; '.join(differences[:4]) or 'none'}. Warm-start from a run of the same "
            "architecture, or train without --warm-start.")
    new_rows, old_rows = shared_rows(vocabulary, source_vocabulary)
    for target, value in zip(targets, values, strict=True):
        if target is table:
            rows = table.numpy()
            rows[new_rows] = value.numpy()[old_rows]
            target.assign(rows)
        else:
            target.assign(value)
    carried = int(np.count_nonzero(new_rows))  # row 0, padding, is no item
    return {"run": os.path.abspath(source_dir), "checkpoint": os.path.abspath(checkpoint),
            "model": source_config.model.name, "source_items": len(source_vocabulary) - 1,
            "items": len(vocabulary) - 1, "carried_items": carried,
            "new_items": len(vocabulary) - 1 - carried,
            "dropped_items": len(source_vocabulary) - 1 - carried}


def train_data_end(train: SplitData) -> float | None:
    """The newest timestamp of a training split; None without timestamps or interactions."""
    if train.timestamps is None or not len(train.timestamps):
        return None
    return float(train.timestamps.max())


def new_data_start(config: config_lib.Config, train: SplitData,
                   source_dir: str) -> dict | None:
    """Where the training targets of a run warm-started from ``source_dir`` begin.

    With ``train.warm_start_targets: new``, the newest timestamp in the source
    run's training split (``train_data_end`` in its ``metrics.json``, or read from
    its ``data.path`` for a run without it): only interactions of ``train`` newer
    than it are targets. ``all``: None, every interaction is.

    Returns:
      None, or ``{"targets_after": timestamp, "new_targets": count}`` (the count of
      target positions in ``train`` newer than it).

    Raises:
      UserError: the source's data cannot be read or has no timestamps, or
        ``train`` has no interaction newer than the source's; each names
        ``train.warm_start_targets=all`` as the way to train on everything.
    """
    if config.train.warm_start_targets == "all":
        return None
    fix = "or set train.warm_start_targets=all to train on all the data (docs/lifecycle.md)"
    metrics_path = os.path.join(source_dir, "metrics.json")
    recorded = {}
    if os.path.isfile(metrics_path):
        with open(metrics_path, encoding="utf-8") as f:
            recorded = json.load(f)
    if "train_data_end" in recorded:
        after = recorded["train_data_end"]
    else:
        # Only an older run needs its config (and data) read here; warm_start reads it anyway.
        source_config, _ = runs.read_run(source_dir)
        try:
            after = train_data_end(load_data(source_config).train)
        except (DataError, OSError) as e:
            raise UserError(f"--warm-start {source_dir!r}: its training data "
                            f"({source_config.data.path}) tells which interactions are new, and "
                            f"it cannot be read ({e}); restore it, {fix}.") from None
    if after is None or train.timestamps is None:
        raise UserError(f"--warm-start {source_dir!r}: telling new interactions from old needs "
                        f"timestamps in both runs' training data; prepare both from a log with "
                        f"timestamps, {fix}.")
    try:
        count = targets_per_epoch(train, config.data.min_target_position, "every", after)
    except DataError:
        raise UserError(f"--warm-start {source_dir!r}: no training interaction in "
                        f"{config.data.path} is newer than the source's newest, "
                        f"{describe_time(after)}, so "
                        f"there is nothing new to train on; give the new data as --data, "
                        f"{fix}.") from None
    return {"targets_after": after, "new_targets": count}


def _no_weights(model_name: str) -> UserError:
    return UserError(f"model {model_name!r} has no trained weights to start from; drop "
                     "--warm-start (MostPopular and item-kNN are built from the data).")


def write_record(out_dir: str, record: dict) -> None:
    atomic_write_text(os.path.join(out_dir, WARM_START_FILE), json.dumps(record, indent=2) + "\n")


def read_record(run_dir: str) -> dict | None:
    """What the run in ``run_dir`` started from, or None for a cold start."""
    path = os.path.join(run_dir, WARM_START_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def describe(record: dict) -> str:
    """One line for the log: where the run started, what became of the items, what it trains on."""
    targets = ("every training interaction a target" if record.get("targets_after") is None
               else f"{record['new_targets']:,} targets after the source's newest data, "
               f"{describe_time(record['targets_after'])}")
    return (f"warm start from {record['run']} ({os.path.basename(record['checkpoint'])}): "
            f"{record['carried_items']:,} item rows carried, {record['new_items']:,} new "
            f"(initialised as in a fresh run), {record['dropped_items']:,} dropped; {targets}")


def _check_same_model(source: config_lib.Config, config: config_lib.Config,
                      source_dir: str) -> None:
    for section, key in SAME_KEYS:
        there, here = getattr(getattr(source, section), key), getattr(getattr(config, section), key)
        if there != here:
            raise UserError(f"--warm-start {source_dir!r} trained {section}.{key} {there!r}, this "
                            f"config has {here!r}; a warm start needs the same model, d and K: "
                            "set them as the source run had them, or train without --warm-start.")


def _first_mismatch(targets, values, table) -> str | None:
    """The first weight whose shape differs (the item table only in width), or None."""
    if len(targets) != len(values):
        return f"{len(values)} weights there, {len(targets)} here"
    for target, value in zip(targets, values, strict=True):
        same = (target.shape[1:] == value.shape[1:] if target is table
                else target.shape == value.shape)
        if not same:
            return f"{target.name}: {value.shape} there, {target.shape} here"
    return None
