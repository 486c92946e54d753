"""Retrieval losses, as tasks with TFRS's ``tasks.Retrieval`` call signature.

Both tasks are called as ``task(query_embeddings, candidate_embeddings,
candidate_ids=...)`` with the user vectors ``[batch, d]`` and the embeddings and
ids of their positive items, exactly like ``tfrs.tasks.Retrieval``, so the
model's ``compute_loss`` is the same whichever ``loss.kind`` is configured:

* ``sampled_softmax`` (default, ComiRec's protocol): every row is scored
  against its positive and one set of negatives shared by the batch, drawn from
  the whole item table (log-uniform over popularity-ranked ids by default),
  with logQ correction and accidental hits removed.
* ``full_softmax``: every item of the catalogue is a negative, the exact
  softmax over the table (a ``[batch, items]`` logit matrix: 12k items x batch
  128 is 6 MB). It equals ``sampled_softmax`` with every item drawn once, no
  logQ correction and accidental hits removed.
* ``in_batch``: ``tfrs.tasks.Retrieval`` itself; the other positives of the
  batch are the negatives, with logQ correction from training-split item
  frequencies (in-batch negatives over-penalise popular items without it).

The two softmax tasks also take REMI's interest-aware hard negatives
(``loss.hard_negative_beta``, Xie et al., RecSys 2023). All losses are means
over the batch (TFRS's default SUM makes the loss scale with the batch size).
With ``model.score: cosine`` the tasks L2-normalise the item rows they look up
(the model normalises the user vectors and positives).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from dmi_tf.config import LossConfig

# Large enough to remove a logit from the softmax, small enough to stay finite.
_MASK_LOGIT = -1e9
# Feature key of negatives drawn on the input pipeline.
NEGATIVES = "negatives"


def softmax_loss(positive_logits, negative_logits, temperature: float = 1.0,
                 hard_negative_beta: float = 0.0):
    """Per-row ``-log softmax`` of the positive against its negatives; ``[batch]``.

    Args:
      positive_logits: float32 ``[batch]``.
      negative_logits: float32 ``[batch, S]``; entries equal to ``_MASK_LOGIT`` are
        not negatives (removed accidental hits, the padding row).
      temperature: every logit is divided by it.
      hard_negative_beta: REMI's β. With β > 0 the negatives' sum
        ``Σ_j exp(x_j)`` becomes ``Σ_j w_j exp(x_j)`` with ``w_j = exp(β x_j) /
        mean_j exp(β x_j)``: harder negatives weigh more, and the mean weight is 1
        (REMI's ``sampled_softmax_loss``; gradients flow through the weights
        too, as there). In log space: ``log Σ w_j e^{x_j} = LSE((1+β) x) - LSE(β x)
        + log S``, S the row's number of negatives.
    """
    valid = negative_logits > _MASK_LOGIT / 2
    positive = positive_logits / temperature
    negative = negative_logits / temperature
    if hard_negative_beta == 0.0:
        logits = tf.concat([positive[:, None], tf.where(valid, negative, _MASK_LOGIT)], axis=1)
        return tf.reduce_logsumexp(logits, axis=1) - positive
    count = tf.reduce_sum(tf.cast(valid, tf.float32), axis=1)

    def lse(scale):
        return tf.reduce_logsumexp(tf.where(valid, scale * negative, _MASK_LOGIT), axis=1)

    log_negatives = lse(1.0 + hard_negative_beta) - lse(hard_negative_beta) + tf.math.log(
        tf.maximum(count, 1.0))
    log_negatives = tf.where(count > 0, log_negatives, _MASK_LOGIT)
    return tf.reduce_logsumexp(tf.stack([positive, log_negatives], axis=1), axis=1) - positive


def _reduce(losses, sample_weight):
    if sample_weight is not None:
        losses *= tf.cast(tf.reshape(sample_weight, [-1]), losses.dtype)
    return tf.reduce_mean(losses)


class SampledSoftmaxRetrieval(tf.keras.layers.Layer):
    """Sampled softmax with negatives shared across the batch.

    Args:
      item_embedding: the candidate tower, an ``Embedding`` over ``num_items``
        rows whose row 0 is padding (never sampled).
      num_negatives: negatives per batch, shared by all rows (capped at the
        number of real items).
      sampler: ``log_uniform`` (Zipfian over ids; ids are popularity-ranked by
        ``prepare``, so this approximates popularity) or ``uniform``.
      logq_correction: subtract log of the expected sample count from every
        logit, which makes the sampled loss an unbiased estimate of the full softmax.
      remove_accidental_hits: mask a sampled negative equal to the row's positive.
      temperature: logits are divided by it.
      seed: seed of the sampler.
      unique: draw distinct negatives (ComiRec, TF's sampled softmax) or with
        replacement (REMI's port); logQ uses the matching expected counts.
      hard_negative_beta: REMI's β (:func:`softmax_loss`); 0 = off.
      normalize: L2-normalise the negatives' rows (``model.score: cosine``).
    """

    def __init__(self, item_embedding: tf.keras.layers.Embedding, num_negatives: int = 1280,
                 sampler: str = "log_uniform", logq_correction: bool = True,
                 remove_accidental_hits: bool = True, temperature: float = 1.0,
                 seed: int | None = None, unique: bool = True, hard_negative_beta: float = 0.0,
                 normalize: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = item_embedding
        self.hard_negative_beta = hard_negative_beta
        self.normalize = normalize
        self.unique = unique
        self.num_real_items = item_embedding.input_dim - 1
        if self.num_real_items < 1:
            raise ValueError("the item table has no real items (only the padding row)")
        # Distinct draws cannot outnumber the catalogue; draws with replacement can.
        self.num_negatives = min(num_negatives, self.num_real_items) if unique else num_negatives
        if sampler not in ("log_uniform", "uniform"):
            raise ValueError(f"unknown sampler {sampler!r}; expected log_uniform or uniform")
        self.sampler = sampler
        self.logq_correction = logq_correction
        self.remove_accidental_hits = remove_accidental_hits
        self.temperature = temperature
        self.seed = seed

    def sample(self, candidate_ids):
        """Draws the shared negatives for a batch.

        Args:
          candidate_ids: int ``[batch]``, the positives (ids ``1..N``).

        Returns:
          ``(negative_ids [S] int32, positive_expected_count [batch],
          negative_expected_count [S])``.
        """
        # Samplers draw from [0, N); shifting by one keeps the padding row out.
        true_classes = tf.cast(tf.reshape(candidate_ids, [-1, 1]), tf.int64) - 1
        sampler_fn = (tf.random.log_uniform_candidate_sampler if self.sampler == "log_uniform"
                      else tf.random.uniform_candidate_sampler)
        sampled, true_expected, sampled_expected = sampler_fn(
            true_classes=true_classes, num_true=1, num_sampled=self.num_negatives,
            unique=self.unique,
            range_max=self.num_real_items, seed=self.seed)
        return tf.cast(sampled, tf.int32) + 1, true_expected[:, 0], sampled_expected

    def add_negatives(self, features: dict) -> dict:
        """Draws a batch's negatives on the input pipeline (``dataset.map(task.add_negatives)``).

        The sampler needs no model weights, so drawing it in ``tf.data``
        overlaps it with the training step (on a 1,349-item catalogue, 1,280
        unique log-uniform draws take ~3 ms, a quarter of a step) and keeps
        the step itself free of sampler ops.

        Args:
          features: a training batch with ``"target"`` int ``[batch]``.

        Returns:
          ``features`` plus ``"negatives"``: the :meth:`sample` triple.
        """
        return {**features, NEGATIVES: self.sample(features["target"])}

    def call(self, query_embeddings, candidate_embeddings, sample_weight=None,
             candidate_sampling_probability=None, candidate_ids=None, compute_metrics=True,
             compute_batch_metrics=True, negatives=None):
        """Returns the mean sampled-softmax loss.

        Args:
          query_embeddings: float32 ``[batch, d]``, the user vectors.
          candidate_embeddings: float32 ``[batch, d]``, their positives' embeddings.
          candidate_ids: int ``[batch]``, the positives' ids (required).
          negatives: the :meth:`sample` triple when drawn on the input pipeline
            (:meth:`add_negatives`); drawn here when None.
          sample_weight, candidate_sampling_probability, compute_metrics,
          compute_batch_metrics: accepted for signature compatibility with
            ``tfrs.tasks.Retrieval``; the sampler supplies its own probabilities.
        """
        if candidate_ids is None:
            raise ValueError("SampledSoftmaxRetrieval needs candidate_ids (the positives' ids)")
        if negatives is None:
            negatives = self.sample(candidate_ids)
        negative_ids, true_expected, sampled_expected = negatives
        # embedding_lookup reads only the needed rows of each shard when the table
        # is partitioned over parameter servers (tf.gather would join the shards).
        negatives = tf.nn.embedding_lookup(self.item_embedding.embeddings, negative_ids)
        if self.normalize:
            negatives = tf.math.l2_normalize(negatives, axis=-1)
        positive_logits = tf.reduce_sum(query_embeddings * candidate_embeddings, axis=1)
        negative_logits = tf.matmul(query_embeddings, negatives, transpose_b=True)
        if self.logq_correction:
            positive_logits -= tf.math.log(true_expected)
            negative_logits -= tf.math.log(sampled_expected)[None, :]
        if self.remove_accidental_hits:
            hits = tf.equal(tf.cast(candidate_ids, tf.int32)[:, None], negative_ids[None, :])
            negative_logits = tf.where(hits, _MASK_LOGIT, negative_logits)
        losses = softmax_loss(positive_logits, negative_logits, self.temperature,
                              self.hard_negative_beta)
        return _reduce(losses, sample_weight)


class FullSoftmaxRetrieval(tf.keras.layers.Layer):
    """The exact softmax over every item of the table (padding row 0 excluded).

    Args:
      item_embedding: the candidate tower, an ``Embedding`` whose row 0 is padding.
      temperature: logits are divided by it.
      hard_negative_beta: REMI's β (:func:`softmax_loss`); 0 = off.
      normalize: L2-normalise the table's rows (``model.score: cosine``).
    """

    def __init__(self, item_embedding: tf.keras.layers.Embedding, temperature: float = 1.0,
                 hard_negative_beta: float = 0.0, normalize: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = item_embedding
        self.temperature = temperature
        self.hard_negative_beta = hard_negative_beta
        self.normalize = normalize

    def call(self, query_embeddings, candidate_embeddings, sample_weight=None,
             candidate_sampling_probability=None, candidate_ids=None, compute_metrics=True,
             compute_batch_metrics=True):
        """Returns the mean full-softmax loss.

        Args:
          query_embeddings: float32 ``[batch, d]``, the user vectors.
          candidate_embeddings: float32 ``[batch, d]``, their positives' embeddings
            (unused: the positive's logit is read from the full logit row).
          candidate_ids: int ``[batch]``, the positives' ids ``1..N`` (required).
          sample_weight, candidate_sampling_probability, compute_metrics,
          compute_batch_metrics: as in ``tfrs.tasks.Retrieval``; no sampling here.
        """
        if candidate_ids is None:
            raise ValueError("FullSoftmaxRetrieval needs candidate_ids (the positives' ids)")
        # Rows 1.. only: the padding row is never a candidate, and no mask is needed for it.
        table = self.item_embedding.embeddings[1:]
        if self.normalize:
            table = tf.math.l2_normalize(table, axis=-1)
        logits = tf.matmul(query_embeddings, table, transpose_b=True)  # [batch, items - 1]
        column = tf.cast(candidate_ids, tf.int32) - 1
        positive_logits = tf.gather(logits, column, axis=1, batch_dims=1)
        if self.hard_negative_beta == 0.0:
            # The positive's own column is its term of the softmax sum.
            losses = (tf.reduce_logsumexp(logits / self.temperature, axis=1)
                      - positive_logits / self.temperature)
        else:
            is_positive = tf.equal(tf.range(tf.shape(logits)[1])[None, :], column[:, None])
            losses = softmax_loss(positive_logits, tf.where(is_positive, _MASK_LOGIT, logits),
                                  self.temperature, self.hard_negative_beta)
        return _reduce(losses, sample_weight)


class InBatchRetrieval(tfrs.tasks.Retrieval):
    """``tfrs.tasks.Retrieval`` with logQ correction from training-split item frequencies.

    Args:
      item_probabilities: float ``[num_items]``, each item's share of training
        interactions (used only when ``logq_correction``).
    """

    def __init__(self, item_probabilities: np.ndarray | None = None,
                 remove_accidental_hits: bool = True, temperature: float = 1.0, **kwargs):
        super().__init__(
            loss=tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE),
            temperature=temperature, remove_accidental_hits=remove_accidental_hits, **kwargs)
        self.item_probabilities = (None if item_probabilities is None
                                   else tf.constant(item_probabilities, tf.float32))

    def call(self, query_embeddings, candidate_embeddings, sample_weight=None,
             candidate_sampling_probability=None, candidate_ids=None, compute_metrics=True,
             compute_batch_metrics=True):
        if candidate_sampling_probability is None and self.item_probabilities is not None:
            if candidate_ids is None:
                raise ValueError("logQ correction needs candidate_ids")
            candidate_sampling_probability = tf.gather(self.item_probabilities, candidate_ids)
        return super().call(
            query_embeddings, candidate_embeddings, sample_weight=sample_weight,
            candidate_sampling_probability=candidate_sampling_probability,
            candidate_ids=candidate_ids, compute_metrics=compute_metrics,
            compute_batch_metrics=compute_batch_metrics)


def retrieval_task(config: LossConfig, item_embedding: tf.keras.layers.Embedding,
                   item_counts: np.ndarray, seed: int | None = None,
                   normalize: bool = False) -> tf.keras.layers.Layer:
    """The configured loss task.

    Args:
      config: the ``loss:`` section.
      item_embedding: the candidate tower.
      item_counts: int ``[num_items]``, training interactions per item (for in-batch logQ).
      seed: sampler seed.
      normalize: items are scored by cosine (``model.score: cosine``): the task
        L2-normalises the rows it looks up.
    """
    if config.kind == "sampled_softmax":
        return SampledSoftmaxRetrieval(
            item_embedding, num_negatives=config.num_negatives, sampler=config.sampler,
            logq_correction=config.logq_correction,
            remove_accidental_hits=config.remove_accidental_hits,
            temperature=config.temperature, seed=seed, unique=config.unique_negatives,
            hard_negative_beta=config.hard_negative_beta, normalize=normalize)
    if config.kind == "full_softmax":
        return FullSoftmaxRetrieval(item_embedding, temperature=config.temperature,
                                    hard_negative_beta=config.hard_negative_beta,
                                    normalize=normalize)
    probabilities = None
    if config.logq_correction:
        # Items never seen in training still get a small probability, so log q stays finite.
        counts = np.maximum(np.asarray(item_counts, np.float64), 1.0)
        probabilities = (counts / counts.sum()).astype(np.float32)
    return InBatchRetrieval(probabilities, remove_accidental_hits=config.remove_accidental_hits,
                            temperature=config.temperature)
