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


def routing_variance(weights, units: int):
    """REMI's routing regulariser per user: ``Σ_k (Σ_l (A_kl - mean_l A_k)² / d)²``.

    It grows when an interest's weight piles onto few history items (routing
    collapse). Written as REMI's ``calculate_atten_loss`` computes it: the mean
    runs over all L positions, padding (weight 0) included, and the sum of squares
    is divided by d, the embedding width.

    Args:
      weights: float32 ``[batch, K, L]``, each interest's weights over the history
        (attention, or routing coupling), 0 at padding.
      units: d.

    Returns:
      float32 ``[batch]``.
    """
    centred = weights - tf.reduce_mean(weights, axis=2, keepdims=True)
    variance = tf.reduce_sum(tf.square(centred), axis=2) / units
    return tf.reduce_sum(tf.square(variance), axis=1)


class MultiInterestModel(tfrs.Model):
    """Query tower + item tower + loss, as a ``tfrs.Model``.

    Args:
      item_embedding: ``Embedding(num_items, d)``; row 0 is padding.
      extractor: a layer ``(history_embeddings [batch, L, d], mask [batch, L]) -> [batch, K, d]``.
      task: a retrieval task called like ``tfrs.tasks.Retrieval`` (see ``losses.py``).
      readout: ``(interests [batch, K, d], target_embeddings [batch, d]) -> [batch, d]``.
      score: ``dot`` (inner product) or ``cosine``: interests and item rows
        L2-normalised everywhere they meet (loss, readout, retrieval, export).
      dropout: on the history's item embeddings in training.
      routing_weight: REMI's λ of :func:`routing_variance` (extractors with ``attend``),
        summed over the batch as REMI does.
      choose_interests: interest 0 is an anchor, trained on every target besides the
        readout's choice (:meth:`anchor_loss`), and the model serves either the anchor
        alone or all K interests, whichever validation prefers
        (:meth:`interest_choices`, :meth:`use_interests`): one setting that is good
        whether the data rewards one interest or several.
    """

    def __init__(self, item_embedding: tf.keras.layers.Embedding, extractor: tf.keras.layers.Layer,
                 task: tf.keras.layers.Layer, readout: tf.keras.layers.Layer | None = None,
                 score: str = "dot", dropout: float = 0.0, routing_weight: float = 0.0,
                 choose_interests: bool = False, **kwargs):
        super().__init__(**kwargs)
        if score not in ("dot", "cosine"):
            raise ValueError(f"score must be 'dot' or 'cosine', got {score!r}")
        if routing_weight and not hasattr(extractor, "attend"):
            raise ValueError(f"routing regularisation needs an extractor with attend(); "
                             f"{type(extractor).__name__} has none")
        self.item_embedding = item_embedding
        self.extractor = extractor
        self.task = task
        self.readout = readout or HardReadout()
        self.score = score
        self.dropout = dropout
        self.routing_weight = routing_weight
        self.embedding_dropout = tf.keras.layers.Dropout(dropout, name="embedding_dropout")
        # How many interests are served (0 = all K); checkpointed with the weights, so
        # the choice validation made travels with them into evaluation and export.
        self.served_interests = (tf.Variable(0, trainable=False, name="served_interests")
                                 if choose_interests else None)

    def interest_choices(self) -> tuple[int, ...]:
        """The numbers of served interests validation chooses from (0 = all K); () = no choice."""
        return (0, 1) if self.served_interests is not None else ()

    def use_interests(self, count: int) -> None:
        """Serves the first ``count`` interests from now on (0 = all); see :meth:`_served`."""
        self.served_interests.assign(count)

    def _served(self, interests):
        """``[batch, K, ...]`` with the interests not served replaced by interest 0.

        A copy of interest 0 adds no candidate to the max-merge of the retrieval, so
        the shape (and every signature of an export) stays ``[batch, K, d]``. Applied
        to interests and to their explanation weights ``[batch, K, L]`` alike.
        """
        if self.served_interests is None:
            return interests
        k = tf.shape(interests)[1]
        count = tf.where(self.served_interests > 0, self.served_interests, k)
        served = tf.range(k) < count
        return tf.where(served[None, :, None], interests, interests[:, :1, :])

    def _embed(self, history, training=False):
        """History ids ``[batch, L]`` -> ``(embeddings [batch, L, d], mask [batch, L])``."""
        history = tf.convert_to_tensor(history)
        embeddings = self.item_embedding(history)
        if training and self.dropout:
            embeddings = self.embedding_dropout(embeddings, training=True)
        return embeddings, history > 0

    def _scored(self, vectors):
        """User or item vectors as retrieval scores them (L2-normalised for cosine)."""
        return tf.math.l2_normalize(vectors, axis=-1) if self.score == "cosine" else vectors

    def _items(self, ids):
        """Item ids -> their vectors as retrieval scores them ``[..., d]``."""
        return self._scored(self.item_embedding(ids))

    def _extract(self, history, training=False):
        """``(embeddings, mask, interests, weights or None)`` of a history batch."""
        embeddings, mask = self._embed(history, training)
        if hasattr(self.extractor, "attend"):
            interests, weights = self.extractor.attend(embeddings, mask, training=training)
            return embeddings, mask, interests, weights
        return embeddings, mask, self.extractor(embeddings, mask, training=training), None

    def interests(self, history, training=False):
        """History ids int ``[batch, L]`` (0 = padding) -> interests float32 ``[batch, K, d]``."""
        return self._served(self._scored(self._extract(history, training)[2]))

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
            return self._served(self.extractor.attend(embeddings, mask)[1])
        weights = tf.cast(mask, tf.float32)
        weights /= tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)
        return weights[:, None, :]

    def call(self, history, training=False):
        return self.interests(history, training=training)

    def candidate_embeddings(self):
        """The item table float32 ``[num_items, d]`` as retrieval scores it; row 0 is padding.

        The variable itself with ``score: dot``; its L2-normalised rows (a tensor) with cosine.
        """
        if self.score == "cosine":
            return self._scored(self.item_embedding.embeddings)
        return self.item_embedding.embeddings

    def training_stream(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """Adds the loss's per-batch input work (sampled negatives) to a training stream."""
        if not isinstance(self.task, SampledSoftmaxRetrieval):
            return dataset
        # Sequential, so the seeded sampler draws the same negatives on every run;
        # it still runs on its own tf.data thread, beside the training step.
        return dataset.map(self.task.add_negatives).prefetch(tf.data.AUTOTUNE)

    def compute_loss(self, features, training=False):
        _, _, interests, weights = self._extract(features[HISTORY], training)
        interests = self._scored(interests)
        target_embeddings = self._items(features[TARGET])
        loss = self._retrieval_loss(self.readout(interests, target_embeddings),
                                    target_embeddings, features)
        if self.served_interests is not None:
            loss += self._retrieval_loss(interests[:, 0], target_embeddings, features)
        return loss + self._routing_loss(weights)

    def _routing_loss(self, weights):
        if not self.routing_weight:
            return 0.0
        units = self.item_embedding.output_dim
        return self.routing_weight * tf.reduce_sum(routing_variance(weights, units))

    def _retrieval_loss(self, user, target_embeddings, features):
        """The task's loss for user vectors ``[batch, d]`` against the batch's targets."""
        extra = {"negatives": features[NEGATIVES]} if NEGATIVES in features else {}
        return self.task(user, target_embeddings, candidate_ids=features[TARGET], **extra)
