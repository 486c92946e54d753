import numpy as np
import pytest
import tensorflow as tf

from dmi_tf.config import LossConfig
from dmi_tf.losses import (
    FullSoftmaxRetrieval,
    InBatchRetrieval,
    SampledSoftmaxRetrieval,
    retrieval_task,
    softmax_loss,
)


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
    assert isinstance(retrieval_task(LossConfig(kind="full_softmax"), emb, counts),
                      FullSoftmaxRetrieval)


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


# --------------------------------------------------------------------------- full softmax, REMI


@pytest.mark.parametrize("temperature", [1.0, 0.1])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_full_softmax_is_sampled_softmax_with_every_item_and_no_correction(temperature, beta):
    emb = table(num_items=7, d=4)
    ids = np.array([2, 6, 1])
    q = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    pos = tf.gather(emb.embeddings, ids)
    full = FullSoftmaxRetrieval(emb, temperature=temperature, hard_negative_beta=beta)
    # Every real item drawn once; each row's own positive is removed as an accidental hit.
    every = FixedSampler(emb, [1, 2, 3, 4, 5, 6], np.ones(3), np.ones(6), logq_correction=False,
                         remove_accidental_hits=True, temperature=temperature,
                         hard_negative_beta=beta)
    np.testing.assert_allclose(full(q, pos, candidate_ids=ids).numpy(),
                               every(q, pos, candidate_ids=ids).numpy(), rtol=1e-5)


def test_full_softmax_by_hand():
    # Items 1..3 in 2-D (row 0 padding must never count); one user q = (1, 0).
    emb = table(num_items=4, d=2)
    emb.embeddings.assign([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q = tf.constant([[1.0, 0.0]])
    # Logits 1, 0, -1; the positive is item 2: loss = log(e + 1 + 1/e) - 0 = 1.4076.
    loss = FullSoftmaxRetrieval(emb)(q, tf.gather(emb.embeddings, [2]), candidate_ids=[2])
    np.testing.assert_allclose(loss.numpy(), np.log(np.e + 1 + 1 / np.e), rtol=1e-6)


def test_hard_negative_weights_by_hand():
    # Positive logit 0, negatives 1 and -1, beta = 1: weights e/m and (1/e)/m with
    # m = (e + 1/e)/2, so the negatives' sum is (e·e + (1/e)·(1/e)) / m.
    pos, neg = tf.constant([0.0]), tf.constant([[1.0, -1.0]])
    m = (np.e + 1 / np.e) / 2
    expected = np.log(1 + (np.e**2 + np.e**-2) / m)
    np.testing.assert_allclose(softmax_loss(pos, neg, 1.0, 1.0).numpy(), [expected], rtol=1e-6)
    # beta = 0 is the plain softmax: log(1 + e + 1/e).
    np.testing.assert_allclose(softmax_loss(pos, neg, 1.0, 0.0).numpy(),
                               [np.log(1 + np.e + 1 / np.e)], rtol=1e-6)
    # A masked negative leaves the sum and the mean weight: only logit 1 remains, weight 1.
    masked = tf.constant([[1.0, -1e9]])
    np.testing.assert_allclose(softmax_loss(pos, masked, 1.0, 1.0).numpy(), [np.log(1 + np.e)],
                               rtol=1e-6)
    # Harder negatives weigh more: the loss grows with beta when negatives are spread.
    assert softmax_loss(pos, neg, 1.0, 2.0).numpy()[0] > expected


def test_hard_negatives_need_a_softmax_loss():
    from dmi_tf.config import from_dict
    from dmi_tf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"loss\.hard_negative_beta"):
        from_dict({"loss": {"kind": "in_batch", "hard_negative_beta": 1.0}})


def test_cosine_tasks_normalise_the_rows_they_look_up():
    emb = table(num_items=6, d=3)
    ids = np.array([1, 4])
    q = tf.math.l2_normalize(np.random.default_rng(5).normal(size=(2, 3)).astype(np.float32), -1)
    unit = tf.math.l2_normalize(emb.embeddings, axis=-1)
    scaled = table(num_items=6, d=3)
    scaled.embeddings.assign(emb.embeddings * np.arange(1, 7, dtype=np.float32)[:, None])
    a = FullSoftmaxRetrieval(emb, temperature=0.2, normalize=True)(
        q, tf.gather(unit, ids), candidate_ids=ids)
    b = FullSoftmaxRetrieval(scaled, temperature=0.2, normalize=True)(
        q, tf.gather(unit, ids), candidate_ids=ids)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)  # row norms do not matter
