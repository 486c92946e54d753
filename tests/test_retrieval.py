"""Tests for dmi_tf.retrieval: exact_topk, merge_interest_topk, retrieve, retrieve_from_scores."""

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf.retrieval import (
    ItemColumns,
    exact_topk,
    merge_interest_topk,
    retrieve,
    retrieve_from_scores,
)

NEG_INF = float("-inf")


def _numpy_topk(queries, candidates, k, exclude_padding=True):
    """Brute force: full score matrix, stable sort (ties keep the lower index)."""
    scores = queries.astype(np.float64) @ candidates.astype(np.float64).T
    if exclude_padding:
        scores[:, 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def _python_merge(scores, ids, k):
    """Reference merge, one user at a time: best score per id, then stable sort."""
    out_scores, out_ids = [], []
    for user_scores, user_ids in zip(scores, ids, strict=True):
        best = {}
        for position, (s, i) in enumerate(zip(user_scores.ravel(), user_ids.ravel(), strict=True)):
            if i < 0:
                continue
            if i not in best or s > best[i][0]:
                best[i] = (s, position)
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[1][1]))[:k]
        ranked += [(-1, (-np.inf, 0))] * (k - len(ranked))
        out_ids.append([i for i, _ in ranked])
        out_scores.append([s for _, (s, _) in ranked])
    return np.array(out_scores), np.array(out_ids)


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ---------------------------------------------------------------------------
# exact_topk


@pytest.mark.parametrize(
    ("num_rows", "block_size", "k", "exclude_padding"),
    [
        (50, 65536, 5, True),  # single MatMul path
        (50, 16, 5, True),  # 49 real rows: 3 full blocks + a block of 1
        (50, 7, 10, True),  # block_size < k
        (50, 1, 4, True),  # one row per block
        (33, 8, 32, True),  # k = every real row
        (41, 8, 3, True),  # 40 real rows: exactly 5 blocks
        (40, 8, 3, False),  # 40 rows, padding row allowed
        (45, 8, 6, False),  # 45 rows: last block has 5 rows + 3 padded
    ],
)
def test_exact_topk_matches_numpy(num_rows, block_size, k, exclude_padding):
    queries = _random((6, 8), seed=num_rows)
    candidates = _random((num_rows, 8), seed=num_rows + 1)
    scores, indices = exact_topk(
        queries, candidates, k, block_size=block_size, exclude_padding=exclude_padding
    )
    want_scores, want_indices = _numpy_topk(queries, candidates, k, exclude_padding)
    assert indices.dtype == tf.int32
    assert scores.shape == (6, k)
    np.testing.assert_array_equal(indices.numpy(), want_indices)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5, atol=1e-5)


def test_exact_topk_in_tf_function_with_dynamic_batch():
    candidates = _random((30, 4), seed=3)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def topk(queries):
        return exact_topk(queries, candidates, 5, block_size=8)

    for batch in (1, 3, 7):  # one trace serves every batch size
        queries = _random((batch, 4), seed=batch)
        scores, indices = topk(queries)
        want_scores, want_indices = _numpy_topk(queries, candidates, 5)
        np.testing.assert_array_equal(indices.numpy(), want_indices)
        np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5, atol=1e-5)
    assert len(topk._list_all_concrete_functions()) == 1
    assert topk.get_concrete_function().structured_outputs[1].shape.as_list() == [None, 5]


def test_exact_topk_jit_compile_matches_numpy():
    candidates = _random((37, 4), seed=5)
    queries = _random((3, 4), seed=6)
    topk = tf.function(lambda q: exact_topk(q, candidates, 4, block_size=8), jit_compile=True)
    _, indices = topk(queries)
    np.testing.assert_array_equal(indices.numpy(), _numpy_topk(queries, candidates, 4)[1])


@pytest.mark.parametrize("block_size", [65536, 2])
def test_exact_topk_never_returns_padding_row(block_size):
    # Row 0 scores 100 against the query, far above every real row (<= 3).
    candidates = np.array([[100.0, 0.0], [3.0, 0.0], [2.0, 0.0], [1.0, 0.0]], np.float32)
    queries = np.array([[1.0, 0.0]], np.float32)
    scores, indices = exact_topk(queries, candidates, 3, block_size=block_size)
    np.testing.assert_array_equal(indices.numpy(), [[1, 2, 3]])
    np.testing.assert_allclose(scores.numpy(), [[3.0, 2.0, 1.0]])
    # The same call with the exclusion off does return row 0: the flag is what hides it.
    _, indices = exact_topk(queries, candidates, 3, block_size=block_size, exclude_padding=False)
    np.testing.assert_array_equal(indices.numpy(), [[0, 1, 2]])


@pytest.mark.parametrize("block_size", [65536, 3, 2])
def test_exact_topk_ties_lower_index_first_across_blocks(block_size):
    # Rows 1..6 all score 1.0, so the order is by index alone: 1, 2, 3, 4.
    candidates = np.ones((7, 2), np.float32)
    scores, indices = exact_topk(np.array([[0.5, 0.5]], np.float32), candidates, 4, block_size)
    np.testing.assert_array_equal(indices.numpy(), [[1, 2, 3, 4]])
    np.testing.assert_allclose(scores.numpy(), [[1.0, 1.0, 1.0, 1.0]])


@pytest.mark.parametrize("block_size", [65536, 2])
def test_exact_topk_non_finite_scores_never_beat_padding_exclusion(block_size):
    # Row 2 is NaN and row 3 -inf against the query; k = all 3 real rows must
    # still return rows 1..3, never the padding row 0 or a block-padding row.
    candidates = np.array(
        [[5.0, 0.0], [1.0, 0.0], [np.nan, 0.0], [-np.inf, 0.0]], np.float32
    )
    _, indices = exact_topk(np.array([[1.0, 0.0]], np.float32), candidates, 3, block_size)
    assert indices.numpy()[0, 0] == 1
    assert sorted(indices.numpy()[0].tolist()) == [1, 2, 3]


def test_exact_topk_streams_blocks_without_full_score_matrix(monkeypatch):
    # Every MatMul must score at most block_size candidates: spy on tf.matmul.
    widths = []
    real_matmul = tf.matmul

    def spy(a, b, *args, **kwargs):
        out = real_matmul(a, b, *args, **kwargs)
        widths.append(out.shape[-1])
        return out

    monkeypatch.setattr(tf, "matmul", spy)
    queries, candidates = _random((2, 4), seed=7), _random((101, 4), seed=8)
    _, indices = exact_topk(queries, candidates, 5, block_size=16)
    monkeypatch.undo()
    # A static table: 100 real rows / 16 -> 6 slices of 16 rows and one of 4.
    assert widths == [16] * 6 + [4]
    np.testing.assert_array_equal(indices.numpy(), _numpy_topk(queries, candidates, 5)[1])

    # A table of unknown size streams in a loop: 7 blocks of 16 (the last
    # one 4 real rows + 12 padded).
    widths.clear()
    monkeypatch.setattr(tf, "matmul", spy)
    dynamic = tf.function(
        lambda q, c: exact_topk(q, c, 5, block_size=16),
        input_signature=[tf.TensorSpec([None, 4], tf.float32)] * 2,
    )
    _, indices = dynamic(queries, candidates)
    monkeypatch.undo()
    assert widths == [16]
    np.testing.assert_array_equal(indices.numpy(), _numpy_topk(queries, candidates, 5)[1])

    # When the whole (static) table fits in one block it is scored in one
    # MatMul against the table itself, with no gathered copy of it.
    widths.clear()
    monkeypatch.setattr(tf, "matmul", spy)
    exact_topk(queries, candidates, 5, block_size=100)
    monkeypatch.undo()
    assert widths == [101]


@pytest.mark.parametrize("num_rows", [20_001, 20_000 + 37])  # a whole / a partial last chunk
@pytest.mark.parametrize("jit", [False, True])
def test_exact_topk_two_stage_wide_block_equals_numpy_with_ties(num_rows, jit):
    # Wide blocks take the two-stage top-k (chunk maxima first). Scores
    # rounded to 1/4 tie everywhere, some rows score -inf and one is NaN; the
    # result must still be the stable sort's, ties to the lower index.
    rng = np.random.default_rng(5)
    candidates = np.round(rng.normal(size=(num_rows, 2)) * 4) / 4
    candidates[:, 1] = 0.0
    candidates[rng.choice(num_rows, 50, replace=False), 0] = -np.inf
    candidates[123, 0] = np.nan
    candidates = candidates.astype(np.float32)
    queries = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    topk = tf.function(lambda q: exact_topk(q, candidates, 40), jit_compile=jit)
    scores, indices = topk(queries)
    want = candidates[np.newaxis, :, 0] * np.array([[1.0], [-1.0]], np.float32)
    want = np.where(np.isnan(want), -np.inf, want)  # -inf rows score +inf against query 1
    want[:, 0] = -np.inf
    order = np.argsort(-want, axis=1, kind="stable")[:, :40]
    np.testing.assert_array_equal(indices.numpy(), order)
    np.testing.assert_array_equal(scores.numpy(), np.take_along_axis(want, order, axis=1))


def test_exact_topk_rejects_k_above_real_rows():
    candidates = np.zeros((5, 2), np.float32)  # 4 real rows
    queries = np.zeros((1, 2), np.float32)
    with pytest.raises(ValueError, match="only 4 retrievable rows"):
        exact_topk(queries, candidates, 5)
    assert exact_topk(queries, candidates, 4)[1].shape == (1, 4)
    assert exact_topk(queries, candidates, 5, exclude_padding=False)[1].shape == (1, 5)


def test_exact_topk_dynamic_table_smaller_than_k_fills_empty_slots():
    @tf.function(
        input_signature=[tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None, 2], tf.float32)]
    )
    def topk(queries, candidates):
        return exact_topk(queries, candidates, 4, block_size=2)

    # 3 rows = padding + 2 real rows (scores 1, 2), k = 4: two empty slots.
    candidates = np.array([[9.0, 0.0], [1.0, 0.0], [2.0, 0.0]], np.float32)
    scores, indices = topk(np.array([[1.0, 0.0]], np.float32), candidates)
    np.testing.assert_array_equal(indices.numpy(), [[2, 1, -1, -1]])
    np.testing.assert_array_equal(scores.numpy(), [[2.0, 1.0, NEG_INF, NEG_INF]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be a positive"),
        ({"k": 2, "block_size": 0}, "block_size must be a positive"),
        ({"k": 2, "queries": np.zeros((1, 3), np.float32)}, "embedding size 3"),
    ],
)
def test_exact_topk_argument_errors(kwargs, message):
    args = {"queries": np.zeros((1, 2), np.float32), "candidates": np.zeros((5, 2), np.float32)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        exact_topk(**args)


# ---------------------------------------------------------------------------
# merge_interest_topk


def test_merge_keeps_best_score_of_duplicates_once():
    # interest 0: (5, .9) (7, .5) (9, .1); interest 1: (7, .8) (3, .5) (5, .2)
    # best per id: 5 -> .9, 7 -> .8 (not .5), 3 -> .5, 9 -> .1
    scores = tf.constant([[[0.9, 0.5, 0.1], [0.8, 0.5, 0.2]]])
    ids = tf.constant([[[5, 7, 9], [7, 3, 5]]])
    merged_scores, merged_ids = merge_interest_topk(scores, ids, 4)
    np.testing.assert_array_equal(merged_ids.numpy(), [[5, 7, 3, 9]])
    np.testing.assert_allclose(merged_scores.numpy(), [[0.9, 0.8, 0.5, 0.1]])
    # k = 3 cuts after the third distinct item.
    np.testing.assert_array_equal(merge_interest_topk(scores, ids, 3)[1].numpy(), [[5, 7, 3]])


def test_merge_ties_follow_interest_then_rank_order():
    # Flattened: (4, 1.0) (2, .5) | (8, 1.0) (6, .5). Equal scores keep that
    # order, so 4 before 8 and 2 before 6: [4, 8, 2, 6]. (Ordering by id
    # instead would give 8, 4 or 4, 8 then 6, 2 / 2, 6 - the first differs.)
    scores = tf.constant([[[1.0, 0.5], [1.0, 0.5]]])
    ids = tf.constant([[[4, 2], [8, 6]]])
    np.testing.assert_array_equal(merge_interest_topk(scores, ids, 4)[1].numpy(), [[4, 8, 2, 6]])
    # Reversing the interests reverses each tie: [8, 4, 6, 2].
    np.testing.assert_array_equal(
        merge_interest_topk(scores, tf.constant([[[8, 6], [4, 2]]]), 4)[1].numpy(),
        [[8, 4, 6, 2]],
    )


def test_merge_duplicate_with_equal_scores_appears_once():
    # id 3 has score .7 in both interests: one copy, then 1 (.6), 2 (.5).
    scores = tf.constant([[[0.7, 0.5], [0.7, 0.6]]])
    ids = tf.constant([[[3, 2], [3, 1]]])
    merged_scores, merged_ids = merge_interest_topk(scores, ids, 3)
    np.testing.assert_array_equal(merged_ids.numpy(), [[3, 1, 2]])
    np.testing.assert_allclose(merged_scores.numpy(), [[0.7, 0.6, 0.5]])


def test_merge_fewer_distinct_items_than_k():
    # Only 2 distinct ids (1, 2) among 4 candidates; k = 3 -> one empty slot.
    scores = tf.constant([[[0.4, 0.3], [0.2, 0.1]]])
    ids = tf.constant([[[1, 2], [2, 1]]], tf.int64)
    merged_scores, merged_ids = merge_interest_topk(scores, ids, 3)
    assert merged_ids.dtype == tf.int64
    np.testing.assert_array_equal(merged_ids.numpy(), [[1, 2, -1]])
    np.testing.assert_array_equal(merged_scores.numpy(), np.float32([[0.4, 0.3, NEG_INF]]))


def test_merge_drops_empty_input_slots():
    # -1 inputs are empty slots, even with a high score: they are never merged in.
    scores = tf.constant([[[0.9, 0.1], [0.5, 0.4]]])
    ids = tf.constant([[[-1, 4], [6, -1]]])
    np.testing.assert_array_equal(merge_interest_topk(scores, ids, 3)[1].numpy(), [[6, 4, -1]])


def test_merge_matches_python_reference_on_random_batch():
    rng = np.random.default_rng(11)
    # Ids from a small range so duplicates are common; scores rounded so ties are too.
    ids = rng.integers(1, 12, size=(8, 4, 5)).astype(np.int32)
    scores = np.round(rng.normal(size=(8, 4, 5)), 1).astype(np.float32)
    for k in (1, 5, 20):
        merged_scores, merged_ids = merge_interest_topk(scores, ids, k)
        want_scores, want_ids = _python_merge(scores, ids, k)
        np.testing.assert_array_equal(merged_ids.numpy(), want_ids)
        np.testing.assert_allclose(merged_scores.numpy(), want_scores)


def test_merge_rejects_k_above_candidates():
    with pytest.raises(ValueError, match="K\\*N=4"):
        merge_interest_topk(tf.zeros([1, 2, 2]), tf.zeros([1, 2, 2], tf.int32), 5)


# ---------------------------------------------------------------------------
# retrieve


def test_retrieve_single_interest_equals_plain_topk():
    items = _random((40, 6), seed=21)
    interests = _random((5, 1, 6), seed=22)
    scores, ids = retrieve(interests, items, 7, block_size=8)
    want_scores, want_ids = _numpy_topk(interests[:, 0], items, 7)
    np.testing.assert_array_equal(ids.numpy(), want_ids)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5, atol=1e-5)


def test_retrieve_two_interests_hand_computed():
    # items: 0 padding, 1 = (3, 0), 2 = (0, 2), 3 = (1, 1), 4 = (2.5, 2.5)
    items = np.array([[9, 9], [3, 0], [0, 2], [1, 1], [2.5, 2.5]], np.float32)
    # interest a = (1, 0): 1 -> 3, 4 -> 2.5, 3 -> 1, 2 -> 0   top-3: 1, 4, 3
    # interest b = (0, 1): 4 -> 2.5, 2 -> 2, 3 -> 1, 1 -> 0   top-3: 4, 2, 3
    # merged: 1 (3), 4 (2.5, both), 2 (2)
    interests = np.array([[[1, 0], [0, 1]]], np.float32)
    scores, ids = retrieve(interests, items, 3)
    np.testing.assert_array_equal(ids.numpy(), [[1, 4, 2]])
    np.testing.assert_allclose(scores.numpy(), [[3.0, 2.5, 2.0]])


def test_retrieve_matches_reference_jit_with_dynamic_batch():
    items = _random((60, 4), seed=31)

    @tf.function(input_signature=[tf.TensorSpec([None, 3, 4], tf.float32)], jit_compile=True)
    def serve(interests):
        return retrieve(interests, items, 6, block_size=16)

    for batch in (2, 5):
        interests = _random((batch, 3, 4), seed=batch)
        scores, ids = serve(interests)
        per_scores, per_ids = _numpy_topk(interests.reshape(-1, 4), items, 6)
        want_scores, want_ids = _python_merge(
            per_scores.reshape(batch, 3, 6), per_ids.reshape(batch, 3, 6), 6
        )
        np.testing.assert_array_equal(ids.numpy(), want_ids)
        np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5, atol=1e-5)
        assert all(len(set(row)) == 6 for row in ids.numpy().tolist())


@pytest.mark.parametrize("block_size", [65536, 9_000])
def test_retrieve_wide_catalogue_equals_per_interest_topk_and_merge(block_size):
    # A catalogue wide enough for the two-stage top-k, in one block and in
    # three static slices: the served list is the protocol's per-interest
    # top-k + merge.
    items = _random((25_001, 8), seed=51)
    interests = _random((3, 4, 8), seed=52)
    scores, ids = retrieve(interests, items, 50, block_size=block_size)
    per_scores, per_ids = _numpy_topk(interests.reshape(-1, 8), items, 50)
    want_scores, want_ids = _python_merge(
        per_scores.reshape(3, 4, 50), per_ids.reshape(3, 4, 50), 50
    )
    np.testing.assert_array_equal(ids.numpy(), want_ids)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_retrieve_survives_saved_model_round_trip(tmp_path, layout):
    # Export path: item table in a variable (or transposed blocks of it),
    # dynamic batch, reloaded signature must give the same ids as the live function.
    class Retriever(tf.Module):
        def __init__(self):
            super().__init__()
            table = _random((70, 4), seed=41)
            self.items = tf.Variable(table) if layout == "rows" else ItemColumns(table, 32)

        @tf.function(input_signature=[tf.TensorSpec([None, 2, 4], tf.float32)])
        def serve(self, interests):
            scores, ids = retrieve(interests, self.items, 5, block_size=32)
            return {"scores": scores, "ids": ids}

    module = Retriever()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    loaded = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    interests = _random((3, 2, 4), seed=42)
    got = loaded(interests=tf.constant(interests))
    want = module.serve(interests)
    np.testing.assert_array_equal(got["ids"].numpy(), want["ids"].numpy())
    np.testing.assert_array_equal(got["scores"].numpy(), want["scores"].numpy())


@pytest.mark.parametrize("jit", [False, True])
def test_retrieve_over_item_columns_equals_rows_with_ties_and_nan(jit):
    # Scores on a 1/4 grid tie everywhere, one item is NaN and some -inf: the
    # transposed blocks must rank exactly as the rows do (ties to the lower id).
    rng = np.random.default_rng(9)
    table = np.round(rng.normal(size=(301, 3)) * 4) / 4
    table[rng.choice(np.arange(1, 301), 20, replace=False), 0] = -np.inf
    table[57, 1] = np.nan
    table = table.astype(np.float32)
    interests = np.round(_random((4, 2, 3), seed=10) * 2) / 2
    columns = ItemColumns(table, block_size=64)  # 300 real rows: 4 blocks of 64 and one of 44
    want = tf.function(lambda i: retrieve(i, table, 40, block_size=64), jit_compile=jit)(interests)
    got = tf.function(lambda i: retrieve(i, columns, 40), jit_compile=jit)(interests)
    np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())


def test_item_columns_errors_name_the_problem():
    columns = ItemColumns(_random((11, 4), seed=1), block_size=4)
    queries = _random((2, 4), seed=2)
    with pytest.raises(ValueError, match="only 10 retrievable rows"):
        exact_topk(queries, columns, 11)
    with pytest.raises(ValueError, match="exclude_padding=False"):
        exact_topk(queries, columns, 3, exclude_padding=False)
    with pytest.raises(ValueError, match="embedding size 3"):
        exact_topk(_random((2, 3), seed=3), columns, 3)
    with pytest.raises(ValueError, match="M >= 2"):
        ItemColumns(np.zeros((1, 4), np.float32))


# ---------------------------------------------------------------------------
# retrieve_from_scores


@pytest.mark.parametrize("num_items", [12, 2000])  # 2,000: the two-stage top-k
def test_retrieve_from_scores_ranks_as_retrieve_with_ties_and_nan(num_items):
    # Integer scores tie everywhere and the padding column scores highest. As
    # one interest against an identity item table, retrieve sees the same
    # scores: both must return the same list.
    rng = np.random.default_rng(num_items)
    scores = rng.integers(0, 4, size=(5, num_items)).astype(np.float32)
    scores[:, 0] = 10.0
    k = min(10, num_items - 1)
    want = retrieve(scores[:, np.newaxis], np.eye(num_items, dtype=np.float32), k)
    got = tf.function(lambda s: retrieve_from_scores(s, k))(scores)
    np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
    # NaN and -inf (which the identity product would spread over the row) rank
    # as the lowest finite score, still above the padding.
    scores[1, 3] = np.nan
    scores[2, rng.choice(np.arange(1, num_items), num_items - 3, replace=False)] = -np.inf
    lowest = np.finfo(np.float32).min
    floored = np.where(scores >= lowest, scores, lowest)
    floored[:, 0] = -np.inf
    order = np.argsort(-floored, axis=1, kind="stable")[:, :k]
    got = retrieve_from_scores(scores, k)
    np.testing.assert_array_equal(got[1].numpy(), order)
    np.testing.assert_array_equal(got[0].numpy(), np.take_along_axis(floored, order, axis=1))


def test_retrieve_from_scores_errors_name_the_problem():
    with pytest.raises(ValueError, match="only 3 retrievable rows"):
        retrieve_from_scores(np.zeros((2, 4), np.float32), 4)
    with pytest.raises(ValueError, match=r"\[B, M\]"):
        retrieve_from_scores(np.zeros((2, 1, 4), np.float32), 2)
