"""Reading a run directory back: its config, its vocabulary and its best model.

A run directory written by ``python -m dmi_tf.train`` holds everything needed
to rebuild the trained model (``config.yaml``, ``vocabulary.txt``,
``checkpoints/``); export and offline evaluation start here.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf.callbacks import non_finite_variables
from dmi_tf.data.loading import load_data
from dmi_tf.data.vocabulary import read_vocabulary
from dmi_tf.errors import UserError
from dmi_tf.models import build_model

#: Models without trained weights (built from the training split): no user tower to serve,
#: nothing to warm-start from.
UNTRAINED = ("most_popular", "item_knn")


@dataclasses.dataclass
class Run:
    """A restored run.

    Attributes:
      config: the resolved config the run was trained with.
      vocabulary: raw item id of every item index; index 0 is padding (``""``
        or the dataset's padding token).
      model: the trained model (``interests``, ``coarse_interests``, ``explain``,
        ``candidate_embeddings``), weights restored from the best checkpoint.
      dataset: the run's dataset (training statistics feed MostPopular / item-kNN).
      checkpoint: the checkpoint path restored, or None for models without weights.
    """

    config: config_lib.Config
    vocabulary: list[str]
    model: object
    dataset: object
    checkpoint: str | None


def read_run(run_dir: str, overrides: list[str] | tuple = ()) -> tuple[config_lib.Config,
                                                                       list[str]]:
    """A run directory's config and vocabulary, without its data or weights.

    Raises:
      UserError: ``config.yaml`` or ``vocabulary.txt`` is missing or unreadable.
    """
    config_path = os.path.join(run_dir, "config.yaml")
    vocab_path = os.path.join(run_dir, "vocabulary.txt")
    for path in (config_path, vocab_path):
        if not os.path.isfile(path):
            raise UserError(f"{run_dir!r} is not a run directory: {os.path.basename(path)} is "
                            "missing; pass the --out directory of `python -m dmi_tf.train`.")
    try:
        return config_lib.load(config_path, overrides), read_vocabulary(vocab_path)
    except (OSError, UnicodeDecodeError) as e:  # the user's files, not a bug
        raise UserError(f"cannot read the run {run_dir!r}: {e}; check its files' permissions "
                        "and that they are the ones python -m dmi_tf.train wrote.") from None


def restore_model(run_dir: str, config: config_lib.Config, num_items: int, train):
    """The run's model, built for ``num_items`` rows, with its best checkpoint restored.

    Args:
      train: the training split (MostPopular and item-kNN are built from it; the
        trained models only take the loss's statistics from it, which serving ignores).

    Returns:
      ``(model, checkpoint path or None for models without weights)``.

    Raises:
      UserError: a trained model without a checkpoint, or with one that does not restore
        or holds non-finite weights.
    """
    model = build_model(config, num_items, train)
    if not isinstance(model, tf.keras.Model):
        return model, None
    checkpoint_path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if checkpoint_path is None:
        raise UserError(f"{run_dir!r} has no checkpoint in checkpoints/: the training did "
                        "not reach its first validation; train longer or pick another run.")
    # Build the variables, then restore; the loss's state is not needed to serve.
    model.interests(tf.zeros([1, config.data.max_length], tf.int32))
    try:
        tf.train.Checkpoint(model=model).restore(checkpoint_path).expect_partial()
    except (tf.errors.OpError, ValueError) as e:
        raise UserError(f"cannot restore {checkpoint_path}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0]}; the checkpoint is unreadable, "
                        "truncated or from another model.") from None
    # Training refuses to keep non-finite weights; a checkpoint holding them is not a model.
    if bad := non_finite_variables(model.variables):
        raise UserError(f"{checkpoint_path} holds non-finite weights ({', '.join(bad[:3])}): "
                        "the run diverged. Train again with a lower train.learning_rate.")
    return model, checkpoint_path


def load_run(run_dir: str, overrides: list[str] | tuple = ()) -> Run:
    """Rebuilds the model of ``run_dir`` and restores its best checkpoint.

    Args:
      run_dir: the ``--out`` directory of ``python -m dmi_tf.train``.
      overrides: ``section.key=value`` changes that keep the weights valid, e.g.
        ``diffusion.infer_steps=4`` (inference-time settings).

    Raises:
      UserError: the directory is not a finished run (the message names what is missing).
    """
    config, vocabulary = read_run(run_dir, overrides)
    dataset = load_data(config)
    if dataset.num_items != len(vocabulary):
        raise UserError(f"{os.path.join(run_dir, 'vocabulary.txt')} has {len(vocabulary)} items "
                        f"but the run's data ({config.data.path or 'synthetic'}) has "
                        f"{dataset.num_items}; the data changed since training. Export from the "
                        "data the run was trained on.")
    model, checkpoint_path = restore_model(run_dir, config, dataset.num_items, dataset.train)
    return Run(config, vocabulary, model, dataset, checkpoint_path)
