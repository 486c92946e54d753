"""Tests for dmi_tf.models.item_knn: the similarity matrix and retrieval through it."""

import math
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf.data.dataset import SplitData
from dmi_tf.data.pipeline import evaluation_dataset
from dmi_tf.errors import ConfigError, DataError
from dmi_tf.evaluate import evaluate, evaluate_per_user
from dmi_tf.models import item_knn
from dmi_tf.models.item_knn import DEFAULT_NEIGHBORS, DENSE_MAX_ITEMS, ItemKNN
from dmi_tf.retrieval import retrieve

# 3 users, items 1..4 (table of 5 rows, 0 = padding). User b clicks item 2
# twice: co-occurrence is binary, so that counts once.
#   U_1 = {a}, U_2 = {a, b}, U_3 = {a, b, c}, U_4 = {c}
TRAIN = SplitData.from_sequences([0, 1, 2], [[1, 2, 3], [2, 3, 2], [3, 4]])
NUM_ITEMS = 5
S12 = 1 / math.sqrt(1 * 2)  # |U_1 ∩ U_2| = 1      -> 0.7071
S13 = 1 / math.sqrt(1 * 3)  # |U_1 ∩ U_3| = 1      -> 0.5774
S23 = 2 / math.sqrt(2 * 3)  # |U_2 ∩ U_3| = 2      -> 0.8165
S34 = 1 / math.sqrt(3 * 1)  # |U_3 ∩ U_4| = 1      -> 0.5774
# sim(1, 4) = sim(2, 4) = 0: no common user.
WANT = np.array(
    [
        [0, 0, 0, 0, 0],
        [0, 0, S12, S13, 0],
        [0, S12, 0, S23, 0],
        [0, S13, S23, 0, S34],
        [0, 0, 0, S34, 0],
    ],
    np.float32,
)


def test_similarity_matrix_by_hand():
    model = ItemKNN(TRAIN, NUM_ITEMS)
    np.testing.assert_allclose(model.candidate_embeddings().numpy(), WANT, rtol=1e-6)


def test_interests_are_history_counts_without_padding():
    model = ItemKNN(TRAIN, NUM_ITEMS)
    got = model.interests(tf.constant([[3, 3, 1, 0], [0, 0, 0, 0]], tf.int32)).numpy()
    np.testing.assert_array_equal(got, [[[0, 1, 0, 2, 0]], [[0, 0, 0, 0, 0]]])


def test_retrieve_top_k_by_hand():
    model = ItemKNN(TRAIN, NUM_ITEMS)
    history = tf.constant([[1, 0], [4, 2], [3, 3]], tf.int32)
    scores, ids = retrieve(model.interests(history), model.candidate_embeddings(), 3)
    # [1]:    item 2 = S12 = .707, item 3 = S13 = .577, items 1 and 4 = 0 (tie -> lower id 1).
    # [4, 2]: item 1 = sim(1,4) + sim(1,2) = 0 + .707; item 2 = sim(2,4) + sim(2,2) = 0;
    #         item 3 = S34 + S23 = 1.394; item 4 = sim(4,4) + sim(4,2) = 0 (tie -> 2 first).
    # [3, 3]: the repeat counts twice: item 1 = 2 * S13 = 1.155, item 2 = 2 * S23 = 1.633,
    #         item 4 = 2 * S34 = 1.155 (ties item 1), item 3 = 0.
    np.testing.assert_array_equal(ids.numpy(), [[2, 3, 1], [3, 1, 2], [2, 1, 4]])
    np.testing.assert_allclose(
        scores.numpy(),
        [[S12, S13, 0], [S34 + S23, S12, 0], [2 * S23, 2 * S13, 2 * S34]],
        rtol=1e-6,
    )


def test_neighbors_keep_each_rows_top_with_ties_to_lower_id():
    model = ItemKNN(TRAIN, NUM_ITEMS, neighbors=2)
    # Row 3 is [0, S13, S23, 0, S34] with S13 == S34: S23 and the tie's lower id 1 stay.
    want = WANT.copy()
    want[3, 4] = 0
    np.testing.assert_allclose(model.candidate_embeddings().numpy(), want, rtol=1e-6)

    model = ItemKNN(TRAIN, NUM_ITEMS, neighbors=1)
    sim = model.candidate_embeddings().numpy()
    # Each row keeps its single best item: 1 -> 2, 2 -> 3, 3 -> 2, 4 -> 3.
    np.testing.assert_array_equal(np.argmax(sim[1:], axis=1), [2, 3, 2, 3])
    np.testing.assert_array_equal((sim > 0).sum(axis=1), [0, 1, 1, 1, 1])
    # History [4, 2]: item 3 = sim(3,4) + sim(3,2) = 0 + S23 (row 3 kept only item 2),
    # item 1 = sim(1,4) + sim(1,2) = S12; items 2 and 4 score 0.
    _, ids = retrieve(model.interests(tf.constant([[4, 2]])), sim, 2)
    np.testing.assert_array_equal(ids.numpy(), [[3, 1]])


def random_train(seed, num_users=40, num_items=23, max_length=15):
    """Users of 1..max_length random items (repeats included) from ``1..num_items-1``."""
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(1, num_items, size=rng.integers(1, max_length))
                 for _ in range(num_users)]
    return SplitData.from_sequences(np.arange(num_users), sequences), sequences


def dense_reference(sequences, num_items, neighbors):
    """The dense float32 computation ItemKNN did before it went sparse, one row at a time.

    Same float32 operations in the same order, so the result must be equal to
    the bit; truncation keeps a row's largest entries, ties to the lower column.
    """
    users = np.zeros((len(sequences), num_items), np.float32)
    for u, seq in enumerate(sequences):
        users[u, seq] = 1.0
    co = users.T @ users  # exact: small integers
    inv_norm = np.zeros(num_items, np.float32)
    has_users = np.diag(co) > 0
    inv_norm[has_users] = 1.0 / np.sqrt(np.diag(co)[has_users])
    sim = co * inv_norm[:, None] * inv_norm[None, :]
    np.fill_diagonal(sim, 0.0)
    if neighbors is not None:
        for row in sim:
            order = np.lexsort((np.arange(num_items), -row))  # value desc, then column asc
            row[order[neighbors:]] = 0.0
    return sim


@pytest.mark.parametrize("neighbors", [None, 1, 2, 5])
@pytest.mark.parametrize("chunk", [37, 1 << 22])
def test_sparse_similarity_equals_the_dense_one(monkeypatch, neighbors, chunk):
    # A tiny chunk cuts the rows into many blocks, and rows emitting more than
    # 37 pairs take the one-row path; the default chunk holds everything at once.
    monkeypatch.setattr(item_knn, "_CHUNK", chunk)
    # Few users over few items: many equal similarities, so ties at the cut.
    train, sequences = random_train(seed=neighbors or 0)
    lists = item_knn.item_cosine_similarity(train, 23, neighbors)
    np.testing.assert_array_equal(lists.to_dense(), dense_reference(sequences, 23, neighbors))
    assert lists.items.dtype == np.int32 and lists.values.dtype == np.float32


def test_cooccurrence_blocks_are_bounded_by_the_chunk(monkeypatch):
    monkeypatch.setattr(item_knn, "_CHUNK", 37)
    train, sequences = random_train(seed=3)
    pairs = {}
    blocks = list(item_knn._cooccurrence_rows(*item_knn._user_item_sets(train, 23), 23))
    for rows, cols, counts in blocks:
        # A block is whole rows: one with more than 37 pairs comes alone.
        assert len(np.unique(rows)) == 1 or counts.sum() <= 37
        pairs.update({(r, c): n for r, c, n in zip(rows, cols, counts, strict=True)})
    assert len(blocks) > 5
    rows = np.concatenate([b[0] for b in blocks])
    assert np.all(np.diff(rows) >= 0)  # rows ascending across blocks
    users = np.zeros((len(sequences), 23))
    for u, seq in enumerate(sequences):
        users[u, seq] = 1.0
    want = users.T @ users
    assert pairs == {(r, c): want[r, c] for r, c in zip(*np.nonzero(want), strict=True)}


def test_building_holds_no_dense_matrix(monkeypatch):
    # 20,001 rows: a dense float32 [M, M] matrix would be 1.6 GB. One user of 300
    # items makes each item's row 300 pairs, more than the chunk: the one-row
    # path's [M] counts are then the largest arrays.
    monkeypatch.setattr(item_knn, "_CHUNK", 256)
    num_items = 20_001
    train = SplitData.from_sequences([0, 1], [np.arange(1, 301), [5, 20_000]])
    item_knn.item_cosine_similarity(TRAIN, NUM_ITEMS, neighbors=7)  # NumPy's first-call setup
    tracemalloc.start()  # NumPy reports its arrays to it
    try:
        lists = item_knn.item_cosine_similarity(train, num_items, neighbors=7)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * num_items * 8  # a few [M] int64 arrays
    # Item 20,000 keeps item 5; item 5 keeps 7 items of the first user (1/√2 each,
    # as is item 20,000: the tie goes to the lower ids).
    assert len(lists.values) == 300 * 7 + 1


def test_in_tf_function_with_dynamic_batch():
    model = ItemKNN(TRAIN, NUM_ITEMS)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def top(history):
        return retrieve(model.interests(history), model.candidate_embeddings(), 2)[1]

    np.testing.assert_array_equal(top(tf.constant([[1, 0]])).numpy(), [[2, 3]])
    np.testing.assert_array_equal(top(tf.constant([[1], [3], [4]])).numpy(),
                                  [[2, 3], [2, 1], [3, 1]])


def test_large_catalogue_keeps_the_default_neighbors_and_no_dense_table(capsys):
    # One user of 250 items: each item has 249 neighbours, of which it keeps 200.
    train = SplitData.from_sequences([0], [np.arange(1, 251)])
    model = ItemKNN(train, DENSE_MAX_ITEMS + 1)
    assert model.neighbors == DEFAULT_NEIGHBORS == 200
    assert model.num_similarities == 250 * 200
    assert "keeps its 200 most similar items" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"kept sparse\. Score with model\.score_items"):
        model.candidate_embeddings()
    # At the limit, null still keeps every neighbour, and says nothing.
    model = ItemKNN(train, DENSE_MAX_ITEMS)
    assert model.neighbors is None and model.num_similarities == 250 * 249
    assert capsys.readouterr().out == ""


def test_score_items_sums_each_history_positions_column_by_hand():
    model = ItemKNN(TRAIN, NUM_ITEMS)
    scores = model.score_items(tf.constant([[3, 3, 1, 0], [4, 2, 0, 0], [0, 0, 0, 0]], tf.int32))
    # score(j) = Σ over positions of sim(j, h): column h of the matrix; item 3 counts twice.
    np.testing.assert_allclose(
        scores.numpy(),
        [2 * WANT[:, 3] + WANT[:, 1], WANT[:, 4] + WANT[:, 2], np.zeros(NUM_ITEMS)],
        rtol=1e-6,
    )


def test_score_items_of_truncated_lists_by_hand():
    # Row 3 keeps S23 and S13 (the tie with S34 goes to the lower id), so item 4
    # in a history adds nothing to item 3.
    model = ItemKNN(TRAIN, NUM_ITEMS, neighbors=2)
    scores = model.score_items(tf.constant([[4, 4]], tf.int32)).numpy()
    np.testing.assert_allclose(scores, [[0, 0, 0, 0, 0]])
    scores = model.score_items(tf.constant([[2, 1]], tf.int32)).numpy()
    np.testing.assert_allclose(scores, [[0, S12, S12, S23 + S13, 0]], rtol=1e-6)


class DenseView:
    """An ItemKNN seen through the retrievers' interface only: today's dense path."""

    def __init__(self, model):
        self.model = model

    def interests(self, history, training=False):
        return self.model.interests(history)

    def candidate_embeddings(self):
        return self.model.candidate_embeddings()


@pytest.mark.parametrize("neighbors", [None, 3])
def test_evaluation_equals_the_dense_path(neighbors):
    train, _ = random_train(seed=7, num_users=60, num_items=40, max_length=20)
    held_out, _ = random_train(seed=8, num_users=30, num_items=40, max_length=30)
    model = ItemKNN(train, 40, neighbors=neighbors)
    history = held_out.items[:20].reshape(2, 10).astype(np.int32)
    np.testing.assert_allclose(model.score_items(history).numpy(),
                               model.interests(history).numpy()[:, 0] @ model.candidate_embeddings()
                               .numpy().T, rtol=1e-6)
    data = evaluation_dataset(held_out, 8, 7)  # batches of 7: a short last one
    categories = np.arange(40) % 3
    for kwargs in ({}, {"categories": categories, "diversity_weight": 0.1}):
        sparse = evaluate_per_user(model, data, cutoffs=[5, 10], **kwargs)
        dense = evaluate_per_user(DenseView(model), data, cutoffs=[5, 10], **kwargs)
        assert sparse.keys() == dense.keys()
        for name, values in dense.items():
            np.testing.assert_array_equal(sparse[name], values, err_msg=name)
        assert evaluate(model, data, cutoffs=[5, 10], **kwargs) == \
            evaluate(DenseView(model), data, cutoffs=[5, 10], **kwargs)


@pytest.mark.parametrize("neighbors", [0, -1, True, 2.0])
def test_bad_neighbors(neighbors):
    with pytest.raises(ConfigError, match="neighbors"):
        ItemKNN(TRAIN, NUM_ITEMS, neighbors=neighbors)


def test_item_id_outside_table_is_a_data_error():
    with pytest.raises(DataError, match=r"1\.\.3"):
        ItemKNN(TRAIN, 4)
