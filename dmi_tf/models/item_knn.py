"""ItemKNN: item-item cosine similarity from training co-occurrence, a non-neural baseline.

The similarity is sparse from end to end, so the model scales to catalogues of
hundreds of thousands of items: it is computed a block of rows at a time
(:func:`_cooccurrence_rows`, temporaries of at most ``_CHUNK`` pairs), each
item keeps its ``neighbors`` most similar items, and the kept entries are
stored transposed (:class:`NeighborLists`): for each history item, the items
that keep it as a neighbour. Scoring a batch gathers its history items' lists
and sums them into ``[batch, M]`` scores; no ``[M, M]`` matrix is ever built,
except on request (:meth:`ItemKNN.candidate_embeddings`) for small catalogues.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from dmi_tf.data.dataset import SplitData
from dmi_tf.errors import ConfigError, DataError

#: Largest item table (padding row included) with which ``neighbors=None``
#: keeps every similarity, and for which ``candidate_embeddings()`` builds
#: the dense ``[M, M]`` matrix (20,000 items: 1.6 GB of float32).
DENSE_MAX_ITEMS = 20_000

#: Neighbours each item keeps when ``neighbors`` is None and the table is
#: larger than ``DENSE_MAX_ITEMS``: all of them could be almost ``M**2``
#: entries (popular items co-occur with nearly everything); 200 are at most
#: 1.6 KB an item. Against keeping all, Recall@50 moves by less than a point:
#: built-in synthetic data (2,000 items) valid / test 0.660 / 0.665 against
#: 0.659 / 0.671; 20,000 items of ``benchmarks/knn_scale.py``'s generator
#: 0.679 against 0.685 (50 neighbours: 0.680). Size and speed: that script.
DEFAULT_NEIGHBORS = 200

# Co-occurrence pairs generated at once; the temporaries of a block (pairs,
# their keys, the sort) are a few arrays of this many int64: 2**22 -> 32 MB each.
_CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True)
class NeighborLists:
    """The kept similarities ``sim[j, h]`` by history item ``h``: a CSR matrix of ``sim^T``.

    For a history item ``h``, ``items[indptr[h]:indptr[h + 1]]`` are the items
    ``j`` that keep ``h`` among their neighbours (ascending) and ``values`` of
    the same slice their ``sim[j, h]``. Row 0 (padding) is empty.

    Attributes:
      indptr: int64 ``[M + 1]``.
      items: int32 ``[nnz]``.
      values: float32 ``[nnz]``.
    """

    indptr: np.ndarray
    items: np.ndarray
    values: np.ndarray

    @property
    def num_items(self) -> int:
        return len(self.indptr) - 1

    def to_dense(self) -> np.ndarray:
        """``sim`` as a float32 ``[M, M]`` matrix: row ``j`` holds item ``j``'s neighbours."""
        m = self.num_items
        dense = np.zeros((m, m), np.float32)
        history_items = np.repeat(np.arange(m), np.diff(self.indptr))
        dense[self.items, history_items] = self.values
        return dense


def _user_item_sets(train: SplitData, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct items, ``(users, items)`` int64 ``[n]`` sorted by user, then item."""
    lengths = train.lengths()
    users = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    keys = np.sort(users * num_items + np.asarray(train.items, np.int64))
    # Not np.unique: NumPy 2.4's hash-based unique took 3 s for 2M keys, the sort 0.2 s.
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    return keys // num_items, keys % num_items


def _cooccurrence_rows(users: np.ndarray, items: np.ndarray, num_items: int):
    """Yields the nonzero ``C[i, j] = |U_i ∩ U_j|`` as ``(rows, cols, counts)``, int64 ``[n]``.

    ``(users, items)`` are the distinct interactions, sorted by user
    (:func:`_user_item_sets`). Every interaction ``(u, i)`` emits the pairs
    ``(i, j)``, ``j`` in ``u``'s items; the interactions, sorted by item, are
    cut into blocks of whole rows emitting at most ``_CHUNK`` pairs, which are
    counted by sorting their keys. A row alone emitting more (a very popular
    item) is counted into one ``[M]`` array, ``_CHUNK`` pairs at a time. The
    work is ``Σ_u |items(u)|²``; rows come in ascending order, each in one
    block, sorted by column, the diagonal ``C[i, i] = |U_i|`` included.
    """
    m = num_items
    user_len = np.bincount(users).astype(np.int64)
    user_start = np.cumsum(user_len) - user_len
    order = np.argsort(items, kind="stable")
    row_item, row_user = items[order], users[order]
    pair_end = np.cumsum(user_len[row_user])  # pairs emitted by interactions [0, k]

    def pairs(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of the pairs emitted by sorted interactions ``[start, stop)``."""
        counts = user_len[row_user[start:stop]]
        rows = np.repeat(row_item[start:stop], counts)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, items[np.repeat(user_start[row_user[start:stop]], counts) + within]

    def chunk_end(start: int, stop: int) -> int:
        """The end of the longest run of interactions from ``start`` (at least one, at most
        ``stop``) emitting at most ``_CHUNK`` pairs."""
        done = int(pair_end[start - 1]) if start else 0
        end = int(np.searchsorted(pair_end, done + _CHUNK, side="right"))
        return min(max(end, start + 1), stop)

    start, n = 0, len(row_item)
    while start < n:
        stop = chunk_end(start, n)
        if stop < n:  # back to the start of the row cut in two, so every row is whole
            stop = int(np.searchsorted(row_item, row_item[stop], side="left"))
        if stop > start:
            rows, cols = pairs(start, stop)
            first = int(rows[0])
            keys, counts = np.unique((rows - first) * m + cols, return_counts=True)
            yield keys // m + first, keys % m, counts
        else:  # one row with more than _CHUNK pairs
            item = row_item[start]
            stop = int(np.searchsorted(row_item, item, side="right"))
            row = np.zeros(m, np.int64)
            while start < stop:
                end = chunk_end(start, stop)
                row += np.bincount(pairs(start, end)[1], minlength=m)
                start = end
            cols = np.flatnonzero(row)
            yield np.full(len(cols), item, np.int64), cols, row[cols]
        start = stop


def _keep_top_neighbors(rows: np.ndarray, values: np.ndarray, neighbors: int) -> np.ndarray:
    """Mask of the entries each row keeps: its ``neighbors`` largest values.

    ``rows`` ascending and each row's entries in ascending column order (as
    :func:`_cooccurrence_rows` yields them); ``values`` positive float32. Ties
    at the cut keep the lower columns, so the result is deterministic.
    """
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else rows
    length = np.diff(np.r_[first, len(rows)])
    keep = np.repeat(length <= neighbors, length)  # short rows keep every entry
    long = np.flatnonzero(~keep)
    # One int64 key per entry: row, then value descending (a positive float's
    # bits grow with it). The sort is stable, so equal values keep column order.
    key = (rows[long].astype(np.int64) << 32) - values[long].view(np.uint32)
    order = long[np.argsort(key, kind="stable")]
    long_length = length[length > neighbors]
    rank = np.arange(len(long)) - np.repeat(np.cumsum(long_length) - long_length, long_length)
    keep[order[rank < neighbors]] = True
    return keep


def _transposed(parts: list, num_items: int) -> NeighborLists:
    """Kept entries in row-major blocks ``(rows, cols, values)`` -> the lists by column.

    Each block is placed into the preallocated lists and then dropped from
    ``parts`` (which this empties), so the peak stays near the entries' own
    size (12 bytes each) instead of a global sort's. Within a list the rows
    stay ascending.
    """
    lengths = np.zeros(num_items, np.int64)
    for _, cols, _ in parts:
        lengths += np.bincount(cols, minlength=num_items)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = np.empty(indptr[-1], np.int32)
    values = np.empty(indptr[-1], np.float32)
    free = indptr[:-1].copy()  # the next free slot of each list
    parts.reverse()
    while parts:
        rows, cols, block_values = parts.pop()
        order = np.argsort(cols, kind="stable")  # stable: the block's rows stay ascending
        cols = cols[order]
        slot = free[cols] + np.arange(len(cols)) - np.searchsorted(cols, cols, side="left")
        items[slot], values[slot] = rows[order], block_values[order]
        free += np.bincount(cols, minlength=num_items)
    return NeighborLists(indptr, items, values)


def item_cosine_similarity(train: SplitData, num_items: int,
                           neighbors: int | None = None) -> NeighborLists:
    """Item-item cosine similarity of binary user sets, each item's top ``neighbors`` kept.

    ``sim[i, j] = |U_i ∩ U_j| / sqrt(|U_i| |U_j|)`` (0 when either set is
    empty), ``sim[i, i] = 0``, row and column 0 (padding) all zero. With
    ``neighbors``, row ``i`` keeps only its ``neighbors`` largest entries (the
    items most similar to ``i``), so the matrix is no longer symmetric. The
    rows are computed a block at a time and only kept entries are stored: 12
    bytes each during the build, 8 in the result.
    """
    users, items = _user_item_sets(train, num_items)
    users_per_item = np.bincount(items, minlength=num_items).astype(np.float32)
    inv_norm = np.zeros_like(users_per_item)
    has_users = users_per_item > 0
    inv_norm[has_users] = 1.0 / np.sqrt(users_per_item[has_users])
    kept = []
    for rows, cols, counts in _cooccurrence_rows(users, items, num_items):
        off_diagonal = rows != cols
        rows, cols = rows[off_diagonal].astype(np.int32), cols[off_diagonal].astype(np.int32)
        # The dense matrix's float32 operations in its order: (C[i, j] / |U_i|^½) / |U_j|^½.
        values = counts[off_diagonal].astype(np.float32) * inv_norm[rows] * inv_norm[cols]
        if neighbors is not None:
            keep = _keep_top_neighbors(rows, values, neighbors)
            rows, cols, values = rows[keep], cols[keep], values[keep]
        kept.append((rows, cols, values))
    return _transposed(kept, num_items)


class ItemKNN(tf.Module):
    """Scores an item by the sum of its cosine similarities to the history items.

    ``score(u, j) = Σ_{h in history(u)} sim(j, h)`` over the (up to L) history
    positions, padding ignored, a repeated item counted at each position.
    Similarities are binary-co-occurrence cosines over the training users
    (:func:`item_cosine_similarity`), each item keeping its ``neighbors`` most
    similar items. Evaluation calls :meth:`score_items`, which needs no
    ``[M, M]`` matrix; :meth:`interests` and :meth:`candidate_embeddings` give
    the same scores in the retrievers' interface (the history's multi-hot
    counts against the dense similarity matrix) for catalogues of at most
    ``DENSE_MAX_ITEMS`` rows.

    Args:
      train: the training split; each row is one user.
      num_items: item table size, padding row 0 included.
      neighbors: keep, for each item ``j``, only its ``neighbors`` most similar
        items ``h`` (row ``j`` of the matrix). None keeps all of them up to
        ``DENSE_MAX_ITEMS`` items, and ``DEFAULT_NEIGHBORS`` above (a line says so).

    Raises:
      DataError: an item id outside ``1..num_items-1``.
      ConfigError: ``neighbors`` is not None or a positive int.
    """

    trainable = False

    def __init__(self, train: SplitData, num_items: int, neighbors: int | None = None,
                 name: str = "item_knn"):
        super().__init__(name=name)
        if neighbors is not None and (isinstance(neighbors, bool) or not isinstance(neighbors, int)
                                      or neighbors < 1):
            raise ConfigError(
                f"item_knn neighbors (model.knn_neighbors) must be a positive int or null, "
                f"got {neighbors!r}."
            )
        items = np.asarray(train.items)
        if items.size and (items.min() < 1 or items.max() >= num_items):
            raise DataError(
                f"item ids must lie in 1..{num_items - 1} for a table of {num_items} rows; "
                f"the training split holds ids {items.min()}..{items.max()}."
            )
        if neighbors is None and num_items > DENSE_MAX_ITEMS:
            neighbors = DEFAULT_NEIGHBORS
            print(f"item_knn: {num_items:,} item rows, more than {DENSE_MAX_ITEMS:,}: each item "
                  f"keeps its {neighbors} most similar items (model.knn_neighbors: null keeps all "
                  "only up to that size; set model.knn_neighbors to choose)", flush=True)
        self.num_items = num_items
        self.neighbors = neighbors
        lists = item_cosine_similarity(train, num_items, neighbors)
        self.num_similarities = len(lists.values)
        self._indptr = tf.constant(lists.indptr)
        self._items = tf.constant(lists.items)
        self._values = tf.constant(lists.values)
        self._not_padding = tf.constant(np.arange(num_items) > 0, tf.float32)
        self._dense = None

    def neighbor_lists(self) -> NeighborLists:
        """The stored similarities, by history item (see :class:`NeighborLists`)."""
        return NeighborLists(self._indptr.numpy(), self._items.numpy(), self._values.numpy())

    def score_items(self, history) -> tf.Tensor:
        """History ids int ``[batch, L]`` (0 = padding) -> scores float32 ``[batch, M]``.

        Gathers the neighbour list of the item at each history position and
        sums each user's lists into a weighted histogram over the items; the
        work is the lists' total length, the memory one ``[batch, M]`` table.
        """
        history = tf.convert_to_tensor(history)
        flat = tf.reshape(history, [-1])
        # Row r: the list positions of flattened history position r.
        entries = tf.ragged.range(tf.gather(self._indptr, flat), tf.gather(self._indptr, flat + 1))
        user_splits = entries.row_splits[::tf.shape(history, tf.int64)[1]]  # L rows a user

        def by_user(table):  # [batch, None]: the table's entries of each user's lists
            return tf.RaggedTensor.from_row_splits(tf.gather(table, entries.flat_values),
                                                   user_splits, validate=False)

        # score[b, j] = Σ sim(j, h) over b's entries naming j. A ragged bincount
        # sums in entry order (deterministic); 5x faster than a segment sum into
        # [batch * M] cells at 200,000 items.
        scores = tf.math.bincount(by_user(self._items), weights=by_user(self._values),
                                  minlength=self.num_items, maxlength=self.num_items, axis=-1)
        scores.set_shape([None, self.num_items])
        return scores

    def interests(self, history, training=False):
        """History ids int ``[batch, L]`` (0 = padding) -> counts float32 ``[batch, 1, M]``."""
        history = tf.convert_to_tensor(history)
        counts = tf.math.bincount(history, minlength=self.num_items, maxlength=self.num_items,
                                  dtype=tf.float32, axis=-1)
        return (counts * self._not_padding)[:, tf.newaxis, :]

    def candidate_embeddings(self):
        """The similarity matrix float32 ``[num_items, num_items]``; row ``j`` scores item ``j``.

        Built on the first call, for at most ``DENSE_MAX_ITEMS`` items.

        Raises:
          DataError: the catalogue is larger than ``DENSE_MAX_ITEMS``.
        """
        m = self.num_items
        if m > DENSE_MAX_ITEMS:
            raise DataError(
                f"item_knn has {m:,} items (padding included), more than {DENSE_MAX_ITEMS:,}: "
                f"its dense similarity matrix would take {m * m * 4 / 1e9:.1f} GB, so it is kept "
                "sparse. Score with model.score_items(history) (evaluation does), or use an "
                "embedding model (e.g. youtube_dnn) where an item table is needed."
            )
        if self._dense is None:
            with tf.init_scope():  # an eager constant, also when first called in a tf.function
                self._dense = tf.constant(self.neighbor_lists().to_dense())
        return self._dense
