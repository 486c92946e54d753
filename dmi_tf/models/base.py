"""The one model structure every retriever shares.

A query tower maps a padded history ``[batch, L]`` to K interests
``[batch, K, d]``; the candidate tower is the item embedding table
``[num_items, d]`` (row 0 is padding), shared with the history lookup as in
ComiRec; a readout picks the interest that meets each training target; the
configured retrieval task turns (user vector, positive) into the loss.
Single-interest models are the K=1 case, so evaluation, export and serving
never need to know which model they hold.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from dmi_tf.data.pipeline import HISTORY, TARGET
from dmi_tf.layers.readout import HardReadout
from dmi_tf.losses import NEGATIVES, SampledSoftmaxRetrieval


class MultiInterestModel(tfrs.Model):
    """Query tower + item tower + loss, as a ``tfrs.Model``.

    Args:
      item_embedding: ``Embedding(num_items, d)``; row 0 is padding.
      extractor: a layer ``(history_embeddings [batch, L, d], mask [batch, L]) -> [batch, K, d]``.
      task: a retrieval task called like ``tfrs.tasks.Retrieval`` (see ``losses.py``).
      readout: ``(interests [batch, K, d], target_embeddings [batch, d]) -> [batch, d]``.
    """

    def __init__(self, item_embedding: tf.keras.layers.Embedding, extractor: tf.keras.layers.Layer,
                 task: tf.keras.layers.Layer, readout: tf.keras.layers.Layer | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = item_embedding
        self.extractor = extractor
        self.task = task
        self.readout = readout or HardReadout()

    def _embed(self, history):
        """History ids ``[batch, L]`` -> ``(embeddings [batch, L, d], mask [batch, L])``."""
        history = tf.convert_to_tensor(history)
        return self.item_embedding(history), history > 0

    def interests(self, history, training=False):
        """History ids int ``[batch, L]`` (0 = padding) -> interests float32 ``[batch, K, d]``."""
        return self.extractor(*self._embed(history), training=training)

    def fold_for_inference(self):
        """Prepares a serving copy: stores weight-only products the query tower would
        recompute per call. Nothing to fold here; DMI folds its refiner's."""

    def coarse_interests(self, history):
        """The extractor's interests ``[batch, K, d]`` before any refinement (DMI refines them)."""
        return self.interests(history)

    def explain(self, history):
        """Why each interest: weight of every history position ``[batch, K, L]`` (0 = not used).

        The extractor's attention (ComiRec-SA), routing coupling (MIND, ComiRec-DR)
        or uniform weights over the real items (pooling). DMI reports the history
        items its refiner kept, with their cross-attention weights.
        """
        embeddings, mask = self._embed(history)
        if hasattr(self.extractor, "attend"):
            return self.extractor.attend(embeddings, mask)[1]
        weights = tf.cast(mask, tf.float32)
        weights /= tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)
        return weights[:, None, :]

    def call(self, history, training=False):
        return self.interests(history, training=training)

    def candidate_embeddings(self):
        """The item table float32 ``[num_items, d]``; row 0 is padding."""
        return self.item_embedding.embeddings

    def training_stream(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """Adds the loss's per-batch input work (sampled negatives) to a training stream."""
        if not isinstance(self.task, SampledSoftmaxRetrieval):
            return dataset
        # Sequential, so the seeded sampler draws the same negatives on every run;
        # it still runs on its own tf.data thread, beside the training step.
        return dataset.map(self.task.add_negatives).prefetch(tf.data.AUTOTUNE)

    def compute_loss(self, features, training=False):
        interests = self.interests(features[HISTORY], training=training)
        target = features[TARGET]
        target_embeddings = self.item_embedding(target)
        return self._retrieval_loss(self.readout(interests, target_embeddings),
                                    target_embeddings, features)

    def _retrieval_loss(self, user, target_embeddings, features):
        """The task's loss for user vectors ``[batch, d]`` against the batch's targets."""
        extra = {"negatives": features[NEGATIVES]} if NEGATIVES in features else {}
        return self.task(user, target_embeddings, candidate_ids=features[TARGET], **extra)
