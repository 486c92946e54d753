"""What the retrieval functions share: the empty-slot id, the floor that ranks NaN and
-inf scores last, and the checks of their arguments (static ints, ranks)."""

from __future__ import annotations

import tensorflow as tf

#: Id of an empty result slot, in every output of :mod:`dmi_tf.retrieval`.
EMPTY_ID = -1


def check_positive_int(name: str, value: object) -> int:
    # bool is an int subclass; `k=True` is a bug, not k=1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive Python int, got {value!r}.")
    return value


def check_rank(name: str, tensor: tf.Tensor, rank: int, shape_doc: str) -> None:
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(
            f"{name} must have shape {shape_doc} (rank {rank}), got shape {tensor.shape}."
        )


def static_dim(tensor: tf.Tensor, axis: int) -> int | tf.Tensor:
    """The static size of ``axis`` when known, else the dynamic one (keeps shapes static)."""
    static = tensor.shape[axis]
    return static if static is not None else tf.shape(tensor)[axis]


def floor_scores(scores: tf.Tensor) -> tf.Tensor:
    """Maps -inf and NaN scores to the lowest finite value.

    Padding rows, block padding and empty slots are marked with -inf; a real
    candidate must always rank above them, or a non-finite embedding could
    make a padding index come out of the top-k.
    """
    lowest = tf.constant(scores.dtype.min, scores.dtype)
    # NaN >= x is False, so NaN is floored too.
    return tf.where(scores >= lowest, scores, lowest)
