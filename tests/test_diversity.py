"""Tests for ComiRec's controllable aggregation (retrieval.diverse_merge,
retrieval.retrieve_diverse) and the Diversity@k metric (metrics.diversity)."""

from collections import defaultdict

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf.metrics import diversity
from dmi_tf.retrieval import diverse_merge, merge_interest_topk, retrieve, retrieve_diverse

NEG_INF = float("-inf")


def _comirec_greedy(scores, ids, categories, k, coef):
    """ComiRec's evaluate_full(coef=...) loop, transcribed (one user at a time).

    Sorts the K*N candidates by score (stable), keeps each item's first copy,
    then k times takes the first maximiser of score - coef * (selected items of
    its category).
    """
    out = []
    for user_scores, user_ids in zip(scores, ids, strict=True):
        pairs = sorted(zip(user_ids.ravel(), user_scores.ravel(), strict=True),
                       key=lambda x: x[1], reverse=True)
        items, seen = [], set()
        for item, score in pairs:
            if item >= 0 and item not in seen:
                items.append((item, score, categories[item]))
                seen.add(item)
        cate_count = defaultdict(int)
        picked = []
        for _ in range(k):
            if not items:
                picked.append(-1)
                continue
            best = 0
            best_value = items[0][1] - coef * cate_count[items[0][2]]
            for j in range(1, len(items)):
                value = items[j][1] - coef * cate_count[items[j][2]]
                if value > best_value:
                    best, best_value = j, value
                elif items[j][1] < best_value:
                    break
            picked.append(items[best][0])
            cate_count[items[best][2]] += 1
            items.pop(best)
        out.append(picked)
    return np.array(out)


# ---------------------------------------------------------------------------
# diverse_merge

# One user, K = 2 interests, N = 3. Item 2 is retrieved by both interests.
SCORES = np.array([[[0.9, 0.8, 0.7], [0.6, 0.85, 0.1]]], np.float32)
IDS = np.array([[[1, 2, 3], [4, 2, 5]]], np.int32)
# Categories of ids 0..5: items 1, 2, 3 are in category 0, item 4 in 1, item 5 in 2.
CATEGORIES = np.array([9, 0, 0, 0, 1, 2], np.int32)


def test_zero_weight_equals_merge_on_the_hand_example():
    scores, ids = diverse_merge(SCORES, IDS, CATEGORIES, 4, 0.0)
    want_scores, want_ids = merge_interest_topk(SCORES, IDS, 4)
    np.testing.assert_array_equal(ids.numpy(), [[1, 2, 3, 4]])
    np.testing.assert_array_equal(ids.numpy(), want_ids.numpy())
    np.testing.assert_array_equal(scores.numpy(), want_scores.numpy())


@pytest.mark.parametrize("k", [1, 5, 12])
def test_zero_weight_equals_merge_with_duplicates_ties_and_empty_slots(k):
    rng = np.random.default_rng(k)
    # Scores on a coarse grid (many ties), ids from a small range (many
    # duplicates), some -1 slots and one -inf score of a real item.
    scores = rng.integers(0, 4, size=(6, 3, 4)).astype(np.float32)
    ids = rng.integers(1, 9, size=(6, 3, 4)).astype(np.int32)
    ids[rng.random(ids.shape) < 0.2] = -1
    ids[5] = -1
    ids[5, 0, 0] = 3
    scores[0, 1, 2] = NEG_INF
    categories = rng.integers(0, 3, size=9).astype(np.int32)
    scores_got, ids_got = diverse_merge(scores, ids, categories, k, 0)
    scores_want, ids_want = merge_interest_topk(scores, ids, k)
    np.testing.assert_array_equal(ids_got.numpy(), ids_want.numpy())
    np.testing.assert_array_equal(scores_got.numpy(), scores_want.numpy())


def test_large_weight_picks_new_categories_first():
    # Merge order (best copy of each item): 1 (.9, cat 0), 2 (.85, cat 0; interest 1's copy),
    # 3 (.7, cat 0), 4 (.6, cat 1), 5 (.1, cat 2). Objective = score + .5 * (selected items
    # of another category):
    #   step 0, selected {}:          1: .9  2: .85  3: .7  4: .6  5: .1        -> 1
    #   step 1, selected {1}:         2: .85 + 0 = .85   3: .7 + 0 = .7
    #                                 4: .6 + .5 = 1.1   5: .1 + .5 = .6         -> 4
    #   step 2, selected {1, 4}:      2: .85 + .5 = 1.35 3: .7 + .5 = 1.2
    #                                 5: .1 + 2 * .5 = 1.1                       -> 2
    #   step 3, selected {1, 4, 2}:   3: .7 + .5 = 1.2   5: .1 + 3 * .5 = 1.6    -> 5
    # The plain merge would give 1, 2, 3, 4; item 4 (.6) and item 5 (.1) overtake the
    # higher-scored same-category items 2 and 3.
    scores, ids = diverse_merge(SCORES, IDS, CATEGORIES, 4, 0.5)
    np.testing.assert_array_equal(ids.numpy(), [[1, 4, 2, 5]])
    # The original scores, not the objective; item 2 keeps its best copy's .85.
    np.testing.assert_array_equal(scores.numpy(), np.float32([[0.9, 0.6, 0.85, 0.1]]))
    # All five distinct items (k = 6 > 5): item 2 appears once, the last slot is empty.
    scores, ids = diverse_merge(SCORES, IDS, CATEGORIES, 6, 0.5)
    np.testing.assert_array_equal(ids.numpy(), [[1, 4, 2, 5, 3, -1]])
    assert scores.numpy()[0, -1] == NEG_INF


def test_equal_objectives_go_to_the_first_in_merge_order():
    # q (id 7, score .25, cat 1) comes first in the flattened input, p (id 8, .75,
    # cat 0) later; a (id 6, 1.0, cat 0) is selected first. With λ = .5 at step 1:
    # p: .75 + 0 = .75, q: .25 + .5 = .75 (exact in binary). The tie goes to the
    # earlier item in merge order, i.e. the higher score: p, then q.
    scores = np.array([[[0.25, 1.0], [0.75, 0.0]]], np.float32)
    ids = np.array([[[7, 6], [8, -1]]], np.int32)
    categories = np.array([0, 0, 0, 0, 0, 0, 0, 1, 0], np.int32)
    _, got = diverse_merge(scores, ids, categories, 3, 0.5)
    np.testing.assert_array_equal(got.numpy(), [[6, 8, 7]])


def test_empty_slots():
    scores = np.array([[[2.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
    ids = np.array([[[3, -1], [3, -1]], [[-1, -1], [-1, -1]]], np.int64)
    categories = np.array([0, 0, 0, 1], np.int32)
    got_scores, got_ids = diverse_merge(scores, ids, categories, 3, 10.0)
    assert got_ids.dtype == tf.int64
    np.testing.assert_array_equal(got_ids.numpy(), [[3, -1, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(
        got_scores.numpy(), [[2.0, NEG_INF, NEG_INF], [NEG_INF, NEG_INF, NEG_INF]]
    )


@pytest.mark.parametrize("coef", [0.05, 0.3, 2.0])
def test_matches_comirec_loop_on_random_lists(coef):
    rng = np.random.default_rng(int(coef * 100))
    scores = rng.normal(size=(8, 4, 5)).astype(np.float32)
    ids = rng.integers(1, 30, size=(8, 4, 5)).astype(np.int32)
    categories = rng.integers(0, 4, size=30).astype(np.int32)
    _, got = diverse_merge(scores, ids, categories, 10, coef)
    np.testing.assert_array_equal(got.numpy(), _comirec_greedy(scores, ids, categories, 10, coef))


def test_diverse_merge_in_tf_function_with_dynamic_batch_and_tensor_weight():
    @tf.function(input_signature=[tf.TensorSpec([None, 2, 3], tf.float32),
                                  tf.TensorSpec([None, 2, 3], tf.int32),
                                  tf.TensorSpec([], tf.float32)])
    def merge(scores, ids, weight):
        return diverse_merge(scores, ids, CATEGORIES, 4, weight)

    for batch in (1, 3):
        scores, ids = np.repeat(SCORES, batch, 0), np.repeat(IDS, batch, 0)
        got_scores, got_ids = merge(scores, ids, tf.constant(0.5))
        np.testing.assert_array_equal(got_ids.numpy(), [[1, 4, 2, 5]] * batch)
        np.testing.assert_array_equal(got_scores.numpy(),
                                      np.float32([[0.9, 0.6, 0.85, 0.1]] * batch))
    _, got_ids = merge(SCORES, IDS, tf.constant(0.0))
    np.testing.assert_array_equal(got_ids.numpy(), [[1, 2, 3, 4]])
    assert len(merge._list_all_concrete_functions()) == 1
    assert merge.get_concrete_function().structured_outputs[1].shape.as_list() == [None, 4]


def test_diverse_merge_jit_compile():
    merge = tf.function(lambda s, i: diverse_merge(s, i, CATEGORIES, 4, 0.5), jit_compile=True)
    _, ids = merge(tf.constant(SCORES), tf.constant(IDS))
    np.testing.assert_array_equal(ids.numpy(), [[1, 4, 2, 5]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 7}, "only K\\*N=6"),
        ({"k": 0}, "positive"),
        ({"diversity_weight": -0.1}, ">= 0"),
        ({"diversity_weight": float("nan")}, ">= 0"),
        ({"diversity_weight": float("inf")}, "finite"),
        ({"categories": CATEGORIES.astype(np.float32)}, "integer"),
    ],
)
def test_diverse_merge_rejects_bad_arguments(kwargs, match):
    args = {"scores": SCORES, "ids": IDS, "categories": CATEGORIES, "k": 4,
            "diversity_weight": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        diverse_merge(**args)


def test_retrieve_diverse():
    rng = np.random.default_rng(0)
    interests = rng.normal(size=(5, 3, 8)).astype(np.float32)
    items = rng.normal(size=(40, 8)).astype(np.float32)
    categories = rng.integers(0, 5, size=40).astype(np.int32)
    # λ = 0 is retrieve.
    got_scores, got_ids = retrieve_diverse(interests, items, 6, categories, 0.0)
    want_scores, want_ids = retrieve(interests, items, 6)
    np.testing.assert_array_equal(got_ids.numpy(), want_ids.numpy())
    np.testing.assert_array_equal(got_scores.numpy(), want_scores.numpy())
    # λ > 0 is the ComiRec loop over each interest's exact top-6 (streamed blocks too).
    per_interest = np.einsum("bkd,md->bkm", interests, items)
    per_interest[:, :, 0] = -np.inf
    top = np.argsort(-per_interest, axis=2, kind="stable")[:, :, :6]
    want = _comirec_greedy(np.take_along_axis(per_interest, top, 2), top, categories, 6, 0.7)
    _, got_ids = retrieve_diverse(interests, items, 6, categories, 0.7, block_size=16)
    np.testing.assert_array_equal(got_ids.numpy(), want)
    assert len(set(got_ids.numpy()[0])) == 6


# ---------------------------------------------------------------------------
# diversity

# Categories of ids 0..4: 1 and 2 in category 0, 3 in 1, 4 in 2.
METRIC_CATEGORIES = np.array([7, 0, 0, 1, 2], np.int32)


def test_diversity_by_hand():
    ids = np.array(
        [
            [3, 1, 2, 4],  # see below
            [3, -1, 1, -1],  # items 3, 1: one pair, different -> 1
            [1, 2, -1, -1],  # items 1, 2: one pair, same category -> 0
            [2, -1, -1, -1],  # one item: no pair -> 0
            [-1, -1, -1, -1],  # nothing retrieved -> 0
        ],
        np.int32,
    )
    # Row 0, k = 4: pairs (3,1) 1, (3,2) 1, (3,4) 1, (1,2) 0, (1,4) 1, (2,4) 1 -> 5 / 6.
    np.testing.assert_allclose(
        diversity(ids, METRIC_CATEGORIES, 4).numpy(), [5 / 6, 1, 0, 0, 0], rtol=1e-6
    )
    # k = 3 keeps 3, 1, 2 in row 0: (3,1) 1, (3,2) 1, (1,2) 0 -> 2 / 3; row 1 keeps 3, 1.
    got = diversity(ids, METRIC_CATEGORIES, 3)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), [2 / 3, 1, 0, 0, 0], rtol=1e-6)


def test_diversity_in_tf_function_with_dynamic_shapes():
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64)])
    def div(ids):
        return diversity(ids, METRIC_CATEGORIES, 3)

    np.testing.assert_allclose(div(tf.constant([[3, 1, 2, 4]], tf.int64)).numpy(), [2 / 3])
    np.testing.assert_allclose(div(tf.constant([[1, 2, 4], [4, 3, -1]], tf.int64)).numpy(),
                               [2 / 3, 1.0], rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least k=3"):
        div(tf.constant([[1, 2]], tf.int64))


def test_diversity_rejects_short_lists_and_bad_k():
    with pytest.raises(ValueError, match="retrieve at least 5"):
        diversity(np.ones((2, 4), np.int32), METRIC_CATEGORIES, 5)
    with pytest.raises(ValueError, match="positive"):
        diversity(np.ones((2, 4), np.int32), METRIC_CATEGORIES, 0)
