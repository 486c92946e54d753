"""Model registry: ``model.name`` -> a built model.

Every model offers ``interests(history [batch, L]) -> [batch, K, d]`` and
``candidate_embeddings() -> [num_items, d]``, so evaluation, export and
serving treat them alike. Trainable ones are ``tfrs.Model`` subclasses
(:class:`MultiInterestModel`) differing only in their extractor layer.
ItemKNN also scores items directly, ``score_items(history) -> [batch,
num_items]``, which evaluation uses instead: its item "table" is ``[num_items,
num_items]``, built only for small catalogues.
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import tensorflow as tf

from dmi_tf.config import Config, ModelConfig
from dmi_tf.data.dataset import SplitData
from dmi_tf.layers.capsule import CapsuleRouting
from dmi_tf.layers.diffusion import DiffusionRefiner
from dmi_tf.layers.initializers import embedding_initializer
from dmi_tf.layers.pooling import GRUPooling, MaskedMeanPooling
from dmi_tf.layers.readout import HardReadout, LabelAwareReadout
from dmi_tf.layers.self_attentive import SelfAttentiveExtractor
from dmi_tf.layers.transformer import CausalTransformerExtractor
from dmi_tf.losses import retrieval_task
from dmi_tf.models.base import MultiInterestModel
from dmi_tf.models.dmi import DMI
from dmi_tf.models.item_knn import ItemKNN
from dmi_tf.models.most_popular import MostPopular

# The config's `model.name` choices are the one list of models.
MODEL_NAMES = typing.get_args(typing.get_type_hints(ModelConfig)["name"])


def item_counts(train_items: np.ndarray, num_items: int) -> np.ndarray:
    """Training interactions per item index ``[num_items]``."""
    return np.bincount(train_items, minlength=num_items).astype(np.int64)


def build_extractor(config: Config) -> tf.keras.layers.Layer:
    """The query tower's extractor ``(history_embeddings, mask) -> [batch, K, d]``.

    DMI's extractor is its backbone, ``model.extractor``.
    """
    m = config.model
    if m.name == "dmi":
        m = dataclasses.replace(m, name=m.extractor)
        config = dataclasses.replace(config, model=m)
    d, k, length = m.embedding_dim, m.num_interests, config.data.max_length
    if m.name == "youtube_dnn":
        pooling = MaskedMeanPooling if m.pooling == "mean" else GRUPooling
        return pooling(d, initializer=m.initializer, name="extractor")
    if m.name == "sasrec":
        return CausalTransformerExtractor(d, length, layers=m.transformer_layers,
                                          heads=m.transformer_heads, dropout=m.dropout,
                                          initializer=m.initializer, name="extractor")
    if m.name == "comirec_sa":
        return SelfAttentiveExtractor(k, d, length, hidden_factor=m.attention_hidden_factor,
                                      initializer=m.initializer, name="extractor")
    if m.name in ("mind", "comirec_dr"):
        return CapsuleRouting(k, d, length, mode=m.name, iterations=m.routing_iterations,
                              dynamic_interests=m.dynamic_interests, initializer=m.initializer,
                              seed=config.train.seed, name="extractor")
    raise ValueError(f"model {m.name!r} has no extractor; expected one of {MODEL_NAMES}")


def build_refiner(config: Config) -> DiffusionRefiner | None:
    """DMI's refiner from ``config.diffusion``; None when ρ = 0 (the backbone alone)."""
    c = config.diffusion
    if c.noise_dims_ratio == 0:
        return None
    return DiffusionRefiner(
        config.model.embedding_dim, config.data.max_length, steps=c.steps,
        noise_scale=c.noise_scale, noise_dims_ratio=c.noise_dims_ratio, denoiser=c.denoiser,
        layers=c.layers, heads=c.heads, ffn_factor=c.ffn_factor, keep_items=c.keep_items,
        combine=c.combine, sum_weight=c.sum_weight, gate_bias=c.gate_bias,
        infer_steps=max(c.infer_steps, 1),
        infer_start=c.infer_start, initializer=config.model.initializer, seed=config.train.seed,
        dropout=c.dropout, name="refiner")


def build_model(config: Config, num_items: int, train: SplitData):
    """Builds ``config.model.name`` for an item table of ``num_items`` rows.

    Args:
      config: the run config.
      num_items: item table size, padding row included.
      train: the training split (popularity, co-occurrence, logQ statistics).
    """
    name = config.model.name
    counts = item_counts(train.items, num_items)
    if name == "most_popular":
        return MostPopular(counts)
    if name == "item_knn":
        return ItemKNN(train, num_items, neighbors=config.model.knn_neighbors)
    seed = config.train.seed
    item_embedding = tf.keras.layers.Embedding(
        num_items, config.model.embedding_dim,
        embeddings_initializer=embedding_initializer(config.model.initializer, seed),
        name="item_embedding")
    readout = (HardReadout() if config.model.readout == "hard"
               else LabelAwareReadout(config.model.readout_power))
    cosine = config.model.score == "cosine"
    task = retrieval_task(config.loss, item_embedding, counts, seed=seed, normalize=cosine)
    shared = {"score": config.model.score, "dropout": config.model.dropout,
              "routing_weight": config.loss.routing_weight,
              "choose_interests": config.model.choose_interests, "name": name}
    if name == "dmi":
        return DMI(item_embedding, build_extractor(config), task, build_refiner(config),
                   recon_weight=config.diffusion.recon_weight,
                   backbone_loss_weight=config.diffusion.backbone_loss_weight,
                   train_interests=config.diffusion.train_interests,
                   infer_steps=config.diffusion.infer_steps, **shared)
    return MultiInterestModel(item_embedding, build_extractor(config), task, readout, **shared)
