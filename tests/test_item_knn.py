"""Tests for dmi_tf.models.item_knn: the similarity matrix and retrieval through it."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf.data.dataset import SplitData
from dmi_tf.errors import ConfigError, DataError
from dmi_tf.models import item_knn
from dmi_tf.models.item_knn import MAX_ITEMS, ItemKNN
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


def test_chunked_cooccurrence_matches_dense(monkeypatch):
    rng = np.random.default_rng(0)
    num_items = 23
    sequences = [rng.integers(1, num_items, size=rng.integers(1, 15)) for _ in range(40)]
    train = SplitData.from_sequences(np.arange(40), sequences)
    dense = np.zeros((40, num_items), np.float64)
    for u, seq in enumerate(sequences):
        dense[u, seq] = 1.0
    want = dense.T @ dense
    # A tiny chunk forces many bands, single-row bands and items split across bands.
    monkeypatch.setattr(item_knn, "_CHUNK", 37)
    np.testing.assert_array_equal(item_knn._cooccurrence(train, num_items), want)
    monkeypatch.setattr(item_knn, "_CHUNK", 1 << 22)
    np.testing.assert_array_equal(item_knn._cooccurrence(train, num_items), want)


def test_in_tf_function_with_dynamic_batch():
    model = ItemKNN(TRAIN, NUM_ITEMS)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def top(history):
        return retrieve(model.interests(history), model.candidate_embeddings(), 2)[1]

    np.testing.assert_array_equal(top(tf.constant([[1, 0]])).numpy(), [[2, 3]])
    np.testing.assert_array_equal(top(tf.constant([[1], [3], [4]])).numpy(),
                                  [[2, 3], [2, 1], [3, 1]])


def test_too_many_items_is_a_data_error():
    with pytest.raises(DataError, match=f"at most {MAX_ITEMS:,} items"):
        ItemKNN(TRAIN, MAX_ITEMS + 1)


@pytest.mark.parametrize("neighbors", [0, -1, True, 2.0])
def test_bad_neighbors(neighbors):
    with pytest.raises(ConfigError, match="neighbors"):
        ItemKNN(TRAIN, NUM_ITEMS, neighbors=neighbors)


def test_item_id_outside_table_is_a_data_error():
    with pytest.raises(DataError, match=r"1\.\.3"):
        ItemKNN(TRAIN, 4)
