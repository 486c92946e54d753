import numpy as np
import pytest
import tensorflow as tf

from dmi_tf.config import LossConfig
from dmi_tf.losses import InBatchRetrieval, SampledSoftmaxRetrieval, retrieval_task


def table(num_items=6, d=3, seed=0):
    layer = tf.keras.layers.Embedding(num_items, d)
    layer.build(None)
    layer.embeddings.assign(np.random.default_rng(seed).normal(size=(num_items, d)))
    return layer


class FixedSampler(SampledSoftmaxRetrieval):
    """Hands the loss known negatives and expected counts, so the value can be computed by hand."""

    def __init__(self, item_embedding, negatives, true_q, neg_q, **kwargs):
        super().__init__(item_embedding, num_negatives=len(negatives), **kwargs)
        self.fixed = (tf.constant(negatives, tf.int32), tf.constant(true_q, tf.float32),
                      tf.constant(neg_q, tf.float32))

    def sample(self, candidate_ids):
        return self.fixed


def reference_loss(q, pos, neg, true_q, neg_q, pos_ids, neg_ids, logq, remove_hits):
    losses = []
    for i in range(len(q)):
        logits = [q[i] @ pos[i] - (np.log(true_q[i]) if logq else 0.0)]
        for j in range(len(neg)):
            if remove_hits and neg_ids[j] == pos_ids[i]:
                continue  # an accidental hit leaves the softmax
            logits.append(q[i] @ neg[j] - (np.log(neg_q[j]) if logq else 0.0))
        logits = np.array(logits)
        losses.append(np.log(np.exp(logits).sum()) - logits[0])
    return np.mean(losses)


@pytest.mark.parametrize("logq", [True, False])
@pytest.mark.parametrize("remove_hits", [True, False])
def test_sampled_softmax_matches_hand_computation(logq, remove_hits):
    emb = table()
    E = emb.embeddings.numpy()
    pos_ids = np.array([1, 3])
    negatives = [2, 3, 5]  # 3 is an accidental hit for row 1
    true_q, neg_q = [0.5, 0.25], [0.4, 0.25, 0.1]
    task = FixedSampler(emb, negatives, true_q, neg_q, logq_correction=logq,
                        remove_accidental_hits=remove_hits)
    q = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    loss = task(q, tf.gather(emb.embeddings, pos_ids), candidate_ids=pos_ids)
    expected = reference_loss(q, E[pos_ids], E[negatives], true_q, neg_q, pos_ids, negatives,
                              logq, remove_hits)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


def test_sampler_never_draws_padding_and_caps_at_catalogue():
    emb = table(num_items=6)
    task = SampledSoftmaxRetrieval(emb, num_negatives=100, seed=3)
    assert task.num_negatives == 5  # only 5 real items
    ids, true_q, neg_q = task.sample(tf.constant([1, 2]))
    assert sorted(ids.numpy().tolist()) == [1, 2, 3, 4, 5]  # unique, never 0
    assert true_q.shape == (2,) and neg_q.shape == (5,)


def test_log_uniform_prefers_popular_ids():
    emb = table(num_items=1001)
    task = SampledSoftmaxRetrieval(emb, num_negatives=50, seed=0)
    ids = np.concatenate([task.sample(tf.constant([1]))[0].numpy() for _ in range(20)])
    assert ids.min() >= 1 and np.mean(ids <= 100) > 0.5  # ids are popularity ranks


def test_gradients_reach_the_table_through_negatives():
    emb = table()
    task = SampledSoftmaxRetrieval(emb, num_negatives=5, seed=0)
    q = tf.constant(np.ones((2, 3), np.float32))
    with tf.GradientTape() as tape:
        loss = task(q, tf.gather(emb.embeddings, [1, 2]), candidate_ids=tf.constant([1, 2]))
    grad = tf.convert_to_tensor(tape.gradient(loss, emb.embeddings)).numpy()
    assert np.all(grad[0] == 0)  # padding never takes part
    assert np.all(np.abs(grad[1:]).sum(axis=1) > 0)


def test_in_batch_is_tfrs_retrieval_with_logq():
    emb = table()
    probabilities = np.array([0, 0.5, 0.2, 0.1, 0.1, 0.1], np.float32)
    task = InBatchRetrieval(probabilities)
    q = np.random.default_rng(2).normal(size=(3, 3)).astype(np.float32)
    ids = np.array([1, 2, 4])
    c = emb.embeddings.numpy()[ids]
    logits = q @ c.T - np.log(probabilities[ids])[None, :]
    expected = np.mean([np.log(np.exp(row).sum()) - row[i] for i, row in enumerate(logits)])
    loss = task(q, c, candidate_ids=ids, compute_metrics=False)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


def test_config_switch_selects_the_task():
    emb = table()
    counts = np.array([0, 5, 4, 3, 2, 1])
    assert isinstance(retrieval_task(LossConfig(), emb, counts), SampledSoftmaxRetrieval)
    assert isinstance(retrieval_task(LossConfig(kind="in_batch"), emb, counts), InBatchRetrieval)


def test_negatives_drawn_on_the_pipeline_give_the_same_loss():
    emb = table(num_items=50)
    task = SampledSoftmaxRetrieval(emb, num_negatives=20, seed=1)
    features = task.add_negatives({"target": tf.constant([3, 4])})
    ids, true_q, neg_q = features["negatives"]
    assert ids.shape == (20,) and true_q.shape == (2,) and neg_q.shape == (20,)
    q = tf.constant(np.ones((2, 3), np.float32))
    pos = tf.gather(emb.embeddings, [3, 4])
    given = task(q, pos, candidate_ids=tf.constant([3, 4]), negatives=features["negatives"])
    fixed = FixedSampler(emb, ids.numpy(), true_q.numpy(), neg_q.numpy())
    np.testing.assert_allclose(given.numpy(),
                               fixed(q, pos, candidate_ids=tf.constant([3, 4])).numpy(),
                               rtol=1e-6)


def test_negatives_with_replacement_can_repeat_and_exceed_the_catalogue():
    emb = table(num_items=6)
    task = SampledSoftmaxRetrieval(emb, num_negatives=40, seed=0, unique=False)
    ids, _, neg_q = task.sample(tf.constant([1, 2]))
    ids = ids.numpy()
    assert len(ids) == 40 and ids.min() >= 1 and ids.max() <= 5
    assert len(set(ids.tolist())) < 40  # repeats
    # With replacement the expected count is num_sampled * p(id), p log-uniform over ranks 0..4.
    p = (np.log(ids + 1) - np.log(ids)) / np.log(6)  # rank = id - 1
    np.testing.assert_allclose(neg_q.numpy(), 40 * p, rtol=1e-5)
    assert retrieval_task(LossConfig(unique_negatives=False, num_negatives=40), emb,
                          np.ones(6)).num_negatives == 40
