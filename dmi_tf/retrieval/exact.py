"""Exact top-K by inner product over an item table, streamed over item blocks, and
:func:`retrieve`, the protocol's multi-interest retrieval built on it."""

from __future__ import annotations

import tensorflow as tf

from dmi_tf.retrieval.checks import (
    EMPTY_ID,
    check_positive_int,
    check_rank,
    floor_scores,
    static_dim,
)
from dmi_tf.retrieval.merge import merge_interest_topk

# Item rows per score block. Peak extra memory is one [queries, block] float32 score
# block, so the two callers want different sizes:
#: evaluation scores many users at once (256 users x K = 4 interests: 256 MiB of scores
#: at 65,536 rows), so its blocks bound memory; the default of every function here;
EVAL_BLOCK_SIZE = 65536
#: an index serves few users per call (0.5 MB of scores per query vector), where each
#: block adds a top-k and a merge: a 100,000-item table in one block rather than two,
#: 8 users, K = 4, 2 cores: 7.1 -> 5.6 ms.
INDEX_BLOCK_SIZE = 131072

#: Chunk width of the two-stage top-k (best of 16-128 measured: 64).
_TOPK_CHUNK = 64


def _row_topk(scores: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``tf.math.top_k(scores, k)`` of a ``[Q, n]`` block, the same values, indices and ties.

    A wide block goes in two stages: the rows are cut into chunks of
    ``_TOPK_CHUNK`` columns, the ``k`` chunks with the highest maxima are kept
    (in column order) and one top-``k`` runs over their columns. Exact: an
    item of the top-``k`` lies in a chunk whose maximum beats every chunk left
    out, or ``k`` other chunks would hold ``k`` better items; ties resolve to
    lower chunks, then lower columns, as in one ``top_k``. One top-``k`` over
    100,001 columns cost 35 ms for 64 rows on one core, the two stages 12 ms.
    """
    n = scores.shape[1]
    chunk = _TOPK_CHUNK
    if n is None or n < 4 * k * chunk:
        return tf.math.top_k(scores, k=k, sorted=True)
    num_chunks = -(-n // chunk)
    kept = min(k, num_chunks)
    if num_chunks * chunk > n:  # -inf padding sorts after every real column
        scores = tf.pad(scores, [[0, 0], [0, num_chunks * chunk - n]],
                        constant_values=float("-inf"))
    chunks = tf.reshape(scores, [-1, num_chunks, chunk])
    # sorted=True: its tie order (lower index first) is the documented one on every device.
    _, best_chunks = tf.math.top_k(tf.reduce_max(chunks, axis=2), k=kept, sorted=True)
    best_chunks = -tf.math.top_k(-best_chunks, k=kept, sorted=True).values  # column order
    width = kept * chunk
    candidates = tf.reshape(tf.gather(chunks, best_chunks, batch_dims=1), [-1, width])
    columns = tf.reshape(best_chunks[:, :, tf.newaxis] * chunk + tf.range(chunk), [-1, width])
    values, pos = tf.math.top_k(candidates, k=k, sorted=True)
    return values, tf.gather(columns, pos, batch_dims=1)


class ItemColumns(tf.Module):
    """An item table stored for fast exact scoring on a CPU: transposed, in blocks.

    Scoring a few queries against ``[M, d]`` rows needs a transposed MatMul,
    which oneDNN runs much slower than the same product against ``[d, M]``
    columns (one user over 100,001 items, K = 4, 2 cores: about 1.4x faster
    with columns at batch 1 to 16, the same at batch 64; ``docs/experiments.md``,
    "Serving"). This holds the real rows (row 0, padding, is never scored) as
    ``[d, n]`` blocks of at most ``block_size`` items, each its own variable,
    so a block is read whole, never sliced out of a larger tensor. On a GPU
    the layout makes no difference.

    It is a copy (a snapshot of the table when it was built), stored in a
    SavedModel next to the model's own table: an export with it holds the
    item table twice.

    Args:
      item_embeddings: float ``[M, d]``, row 0 padding; static shape.
      block_size: items per block (the last block may be narrower).
    """

    def __init__(self, item_embeddings, block_size: int = INDEX_BLOCK_SIZE,
                 name: str = "item_columns"):
        super().__init__(name=name)
        check_positive_int("block_size", block_size)
        table = tf.convert_to_tensor(item_embeddings)
        check_rank("item_embeddings", table, 2, "[M, d]")
        num_rows, dim = table.shape
        if num_rows is None or dim is None or num_rows < 2:
            raise ValueError(f"item_embeddings needs a static shape [M, d] with M >= 2 (a "
                             f"padding row and an item), got {table.shape}.")
        self.num_rows = num_rows
        self.first_rows = tuple(range(1, num_rows, block_size))
        self.blocks = [
            tf.Variable(tf.transpose(table[start:min(start + block_size, num_rows)]),
                        trainable=False, name=f"block_{i}")
            for i, start in enumerate(self.first_rows)
        ]

    @property
    def dtype(self) -> tf.DType:
        return self.blocks[0].dtype

    @property
    def dim(self) -> int:
        return self.blocks[0].shape[0]


def exact_topk(
    queries: tf.Tensor,
    candidates: tf.Tensor,
    k: int,
    block_size: int = EVAL_BLOCK_SIZE,
    exclude_padding: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Exact top-``k`` candidates by inner product, streamed over candidate blocks.

    Args:
      queries: float ``[Q, d]``; ``Q`` may be dynamic.
      candidates: float ``[M, d]`` (a tensor or variable of the same dtype), e.g.
        the item embedding table. Row 0 is padding when ``exclude_padding``. Or
        the same table as :class:`ItemColumns`, whose blocks replace
        ``block_size`` and which never scores row 0.
      k: static number of results per query; ``1 <= k <= M - 1`` (``<= M``
        without padding exclusion).
      block_size: candidate rows scored at once. Peak extra memory is one
        ``[Q, block_size]`` score block, never ``[Q, M]``; when all (real) rows
        fit in one block and ``M`` is static, they are scored in one MatMul.
      exclude_padding: never return row 0.

    Returns:
      ``(scores, indices)``: ``scores`` ``[Q, k]`` in the queries' dtype, sorted
      descending, ties in favour of the lower row index (as ``tf.math.top_k``);
      ``indices`` int32 ``[Q, k]``, rows of ``candidates``. A NaN or -inf
      score is ranked (and returned) as the lowest finite value of the dtype.
      If ``M`` is only known at run time and has fewer than ``k`` real rows,
      the missing slots get index -1 and score -inf.

    Raises:
      ValueError: ``k`` or ``block_size`` is not a positive int, a rank or the
        embedding size does not match, or ``k`` exceeds the number of real
        candidates when that is known statically.
    """
    return _exact_topk(queries, candidates, k, block_size, exclude_padding, group=1)


def _exact_topk(queries, candidates, k, block_size, exclude_padding, group):
    """:func:`exact_topk`; with ``group > 1``, consecutive groups of queries share one result
    list, each candidate scored by its best query of the group."""
    check_positive_int("k", k)
    check_positive_int("block_size", block_size)
    queries = tf.convert_to_tensor(queries)
    if isinstance(candidates, ItemColumns):
        return _topk_columns(queries, candidates, k, exclude_padding, group)
    candidates = tf.convert_to_tensor(candidates, dtype=queries.dtype)
    check_rank("candidates", candidates, 2, "[M, d]")
    _check_queries(queries, candidates.shape[-1])

    offset = 1 if exclude_padding else 0
    static_m = candidates.shape[0]
    if static_m is not None:
        num_real = static_m - offset
        _check_k_fits(k, static_m, exclude_padding)
        if num_real <= block_size:
            return _topk_single_block(queries, candidates, k, offset, group)
        return _topk_static_blocks(queries, candidates, k, block_size, offset, group)
    return _topk_streamed(queries, candidates, k, block_size, offset, group)


def _check_k_fits(k: int, num_rows: int, exclude_padding: bool) -> None:
    num_real = num_rows - (1 if exclude_padding else 0)
    if k > num_real:
        raise ValueError(
            f"k={k} but the candidate table has only {num_real} retrievable rows "
            f"({num_rows} rows{', row 0 is padding' if exclude_padding else ''}); "
            f"use k <= {num_real}."
        )


def _check_queries(queries: tf.Tensor, dim: int | None) -> None:
    check_rank("queries", queries, 2, "[Q, d]")
    if not queries.dtype.is_floating:
        raise ValueError(f"queries must be floating point, got {queries.dtype.name}.")
    if queries.shape[-1] is not None and dim is not None and queries.shape[-1] != dim:
        raise ValueError(f"queries have embedding size {queries.shape[-1]} but candidates have "
                         f"{dim}; they must match.")


def _topk_columns(queries, columns: ItemColumns, k, exclude_padding, group):
    """Top-``k`` over :class:`ItemColumns` blocks: one ``[Q, d] x [d, n]`` MatMul each."""
    if not exclude_padding:
        raise ValueError("ItemColumns hold the real rows only (row 0 is padding); "
                         "exclude_padding=False needs the [M, d] table.")
    _check_queries(queries, columns.dim)
    if queries.dtype != columns.dtype:
        raise ValueError(f"queries are {queries.dtype.name} but the columns are "
                         f"{columns.dtype.name}; they must match.")
    _check_k_fits(k, columns.num_rows, exclude_padding=True)
    return _topk_unrolled(
        [(first_row, lambda block=block: block)
         for first_row, block in zip(columns.first_rows, columns.blocks, strict=True)],
        queries, k, group, transposed=True)


def _group_max(scores: tf.Tensor, group: int) -> tf.Tensor:
    """``[Q * group, n]`` -> ``[Q, n]``: each candidate's best score over a group of queries."""
    if group == 1:
        return scores
    return tf.reduce_max(tf.reshape(scores, tf.stack([-1, group, tf.shape(scores)[1]])), axis=1)


def _block_scores(queries: tf.Tensor, rows: tf.Tensor, group: int,
                  transposed: bool = False) -> tf.Tensor:
    """``[Q * group, d]`` x ``[n, d]`` (or ``[d, n]`` when ``transposed``) -> floored
    ``[Q, n]`` scores, the best of each group.

    Flooring after the group max touches ``group`` times fewer scores (it cost
    more than the max itself on ``[256, 100001]``); a NaN from any query of a
    group therefore ranks that candidate lowest for the whole group. Except
    under XLA, whose CPU max skips NaN: there such a candidate ranks by the
    group's other scores (only non-finite embeddings tell the two apart;
    ``tests/test_retrieval.py`` compares like with like there).
    """
    return floor_scores(_group_max(tf.matmul(queries, rows, transpose_b=not transposed), group))


def _topk_single_block(
    queries: tf.Tensor, candidates: tf.Tensor, k: int, offset: int, group: int = 1
) -> tuple[tf.Tensor, tf.Tensor]:
    return _topk_from_column(_block_scores(queries, candidates, group), k, offset)


def _topk_from_column(scores: tf.Tensor, k: int, offset: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-``k`` of floored ``[Q, n]`` scores, columns below ``offset`` never returned."""
    # Masking column 0 (instead of slicing the scores) avoids copying them.
    if offset:
        is_real = tf.range(tf.shape(scores)[1]) >= offset
        scores = tf.where(is_real[tf.newaxis, :], scores, float("-inf"))
    return _row_topk(scores, k)


def _merge_block(best_scores, best_indices, scores, first_row, k):
    """Running top-``k`` merged with one block's ``[Q, n]`` scores (rows from ``first_row``)."""
    block_scores, block_pos = _row_topk(scores, min(k, scores.shape[1]))  # blocks are static
    if best_scores is None:
        return block_scores, block_pos + first_row
    # Running results first: they hold lower row indices, so on equal
    # scores top_k keeps them, and the -inf placeholders (index -1) always
    # win over -inf block padding, which therefore never leaves the loop.
    merged_scores = tf.concat([best_scores, block_scores], axis=1)
    merged_indices = tf.concat([best_indices, block_pos + first_row], axis=1)
    # Narrower than k only while unrolled slices narrower than k accumulate.
    best_scores, pos = tf.math.top_k(merged_scores, k=min(k, merged_scores.shape[1]), sorted=True)
    return best_scores, tf.gather(merged_indices, pos, batch_dims=1)


def _topk_static_blocks(
    queries: tf.Tensor, candidates: tf.Tensor, k: int, block_size: int, offset: int, group: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """A static table in static slices of at most ``block_size`` rows, unrolled.

    Each block is a dim-0 slice of the table where the streamed loop gathers
    (copies) its rows: 62 vs 93 ms for 64 users over 100,001 items, K = 4, on
    one core.
    """
    num_rows = candidates.shape[0]
    starts = range(offset, num_rows, block_size)
    return _topk_unrolled(
        [(start, lambda start=start: candidates[start:min(start + block_size, num_rows)])
         for start in starts], queries, k, group, transposed=False)


def _topk_unrolled(blocks, queries, k, group, transposed):
    """Merged top-``k`` over static blocks ``(first_row, rows_fn)``, one at a time.

    ``rows_fn()`` gives the block, ``[n, d]`` rows or (``transposed``) ``[d, n]``
    columns. Each block's MatMul waits for the previous block's merge, so one
    score block is in flight, as in the streamed loop.
    """
    best_scores = best_indices = None
    for first_row, rows_fn in blocks:
        deps = [] if best_scores is None else [best_scores, best_indices]
        with tf.control_dependencies(deps):
            scores = _block_scores(queries, rows_fn(), group, transposed)
        best_scores, best_indices = _merge_block(best_scores, best_indices, scores, first_row, k)
    return best_scores, best_indices


def _topk_streamed(
    queries: tf.Tensor, candidates: tf.Tensor, k: int, block_size: int, offset: int,
    group: int = 1,
) -> tuple[tf.Tensor, tf.Tensor]:
    num_rows = tf.shape(candidates)[0]
    num_blocks = (num_rows - offset + block_size - 1) // block_size
    num_queries = tf.shape(queries)[0] // group
    neg_inf = tf.constant(float("-inf"), queries.dtype)

    def body(block, best_scores, best_indices):
        start = offset + block * block_size
        # Every block has the same static shape (good for XLA): rows past the
        # end are clamped to a real row for the gather and then scored -inf.
        rows = start + tf.range(block_size)
        in_table = rows < num_rows
        block_rows = tf.gather(candidates, tf.minimum(rows, num_rows - 1))
        scores = _block_scores(queries, block_rows, group)
        scores = tf.where(in_table[tf.newaxis, :], scores, neg_inf)
        best_scores, best_indices = _merge_block(best_scores, best_indices, scores, start, k)
        return block + 1, best_scores, best_indices

    _, scores, indices = tf.while_loop(
        lambda block, *_: block < num_blocks,
        body,
        (
            tf.constant(0),
            tf.fill(tf.stack([num_queries, k]), neg_inf),
            tf.fill(tf.stack([num_queries, k]), tf.constant(EMPTY_ID, tf.int32)),
        ),
        # One block in flight bounds memory at one [Q, block_size] score block;
        # the blocks are serial on a GPU stream anyway.
        parallel_iterations=1,
    )
    return scores, indices


def retrieve(
    interests: tf.Tensor,
    item_embeddings: tf.Tensor,
    k: int,
    block_size: int = EVAL_BLOCK_SIZE,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-``k`` distinct items for each user from ``K`` interest vectors.

    The protocol's multi-interest retrieval: each interest retrieves its exact
    top-``k`` over the whole item table (row 0 excluded) and the ``K * k``
    candidates are merged by score, each item once with its best score. That
    list is exactly the top-``k`` of items scored by their best interest (an
    item in the merged top-``k`` is in its best interest's own top-``k``), which
    is what this computes: one top-``k`` over ``max_K`` scores, streamed over
    item blocks, instead of K top-``k`` plus a merge (9.0 -> 7.6 ms for one user
    over 100,000 items, K = 4, measured). Equal scores keep the lower item id.
    This is the function evaluation, export and serving call.

    Args:
      interests: float ``[B, K, d]``; ``B`` may be dynamic.
      item_embeddings: float ``[M, d]``, row 0 is padding; ``k <= M - 1``; or
        the same table as :class:`ItemColumns` (faster on a CPU at small batches).
      k: static number of items per user.
      block_size: item rows scored at once (see ``exact_topk``).

    Returns:
      ``(scores, ids)``: float ``[B, k]`` descending and int32 ``[B, k]`` item
      ids (rows of ``item_embeddings``), each id at most once per user.
    """
    interests = tf.convert_to_tensor(interests)
    check_rank("interests", interests, 3, "[B, K, d]")
    num_interests, dim = interests.shape[1], interests.shape[2]
    if num_interests is None:  # unknown K: per-interest lists, then the merge
        scores, ids = per_interest_topk(interests, item_embeddings, k, block_size)
        return merge_interest_topk(scores, ids, k)
    flat = tf.reshape(interests, tf.stack([-1, tf.shape(interests)[2]]))
    flat.set_shape([None, dim])
    return _exact_topk(flat, item_embeddings, k, block_size, exclude_padding=True,
                       group=num_interests)


def retrieve_from_scores(scores: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-``k`` items for each user from a score of every item, as ``retrieve`` ranks them.

    For models that score the catalogue directly (item-kNN's ``score_items``)
    rather than through interest vectors and an item table. The ordering
    contract is ``retrieve``'s: scores descending, equal scores to the lower
    item id, row 0 (padding) never returned, NaN and -inf ranked as the
    lowest finite value.

    Args:
      scores: float ``[B, M]``, column ``j`` the score of item ``j``; ``k <= M - 1``.
      k: static number of items per user.

    Returns:
      ``(scores, ids)``: float ``[B, k]`` descending and int32 ``[B, k]`` item ids.
    """
    check_positive_int("k", k)
    scores = tf.convert_to_tensor(scores)
    check_rank("scores", scores, 2, "[B, M]")
    if scores.shape[1] is not None:
        _check_k_fits(k, scores.shape[1], exclude_padding=True)
    return _topk_from_column(floor_scores(scores), k, offset=1)


def per_interest_topk(
    interests: tf.Tensor, item_embeddings: tf.Tensor, k: int, block_size: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Each interest's exact top-``k``: ``[B, K, d]`` -> scores, int32 ids ``[B, K, k]``."""
    interests = tf.convert_to_tensor(interests)
    check_rank("interests", interests, 3, "[B, K, d]")
    batch = tf.shape(interests)[0]
    num_interests, dim = static_dim(interests, 1), static_dim(interests, 2)
    flat = tf.reshape(interests, tf.stack([batch * num_interests, dim]))
    if isinstance(dim, int):
        flat.set_shape([None, dim])
    scores, ids = exact_topk(flat, item_embeddings, k, block_size=block_size)
    per_interest = tf.stack([batch, num_interests, k])
    scores = tf.reshape(scores, per_interest)
    ids = tf.reshape(ids, per_interest)
    if isinstance(num_interests, int):
        scores.set_shape([None, num_interests, k])
        ids.set_shape([None, num_interests, k])
    return scores, ids
