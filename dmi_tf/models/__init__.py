"""Model registry: ``model.name`` -> a built model."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dmi_tf.config import Config
from dmi_tf.layers.initializers import embedding_initializer
from dmi_tf.layers.pooling import GRUPooling, MaskedMeanPooling
from dmi_tf.losses import retrieval_task
from dmi_tf.models.base import MultiInterestModel
from dmi_tf.models.most_popular import MostPopular

MODEL_NAMES = ("youtube_dnn", "most_popular")


def item_counts(train_items: np.ndarray, num_items: int) -> np.ndarray:
    """Training interactions per item index ``[num_items]``."""
    return np.bincount(train_items, minlength=num_items).astype(np.int64)


def build_model(config: Config, num_items: int, counts: np.ndarray):
    """Builds the model ``config.model.name`` for a table of ``num_items`` rows.

    Args:
      config: the run config.
      num_items: item table size, padding row included.
      counts: int ``[num_items]`` training interactions per item.
    """
    name = config.model.name
    if name == "most_popular":
        return MostPopular(counts)
    seed = config.train.seed
    d = config.model.embedding_dim
    item_embedding = tf.keras.layers.Embedding(
        num_items, d, embeddings_initializer=embedding_initializer(config.model.initializer, seed),
        name="item_embedding")
    if name == "youtube_dnn":
        pooling = MaskedMeanPooling if config.model.pooling == "mean" else GRUPooling
        extractor = pooling(d, initializer=config.model.initializer, name="extractor")
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    task = retrieval_task(config.loss, item_embedding, counts, seed=seed)
    return MultiInterestModel(item_embedding, extractor, task, name=name)
