"""ItemKNN: item-item cosine similarity from training co-occurrence, a non-neural baseline."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dmi_tf.data.dataset import SplitData
from dmi_tf.errors import ConfigError, DataError

#: Largest item table (padding row included) ItemKNN accepts: the model is a
#: dense ``[num_items, num_items]`` float32 matrix (20,000 items: 1.6 GB, and
#: each scoring batch multiplies by all of it).
MAX_ITEMS = 20_000

# Elements of the largest temporary array built at once (co-occurrence pairs,
# counts, top-neighbour masks): 2**22 int64 = 32 MB.
_CHUNK = 1 << 22


def _cooccurrence(train: SplitData, num_items: int) -> np.ndarray:
    """``C[i, j] = |U_i ∩ U_j|`` over the users (rows) of ``train``, float32 ``[M, M]``.

    Each (user, item) counts once. For every interaction ``(u, i)`` the pairs
    ``(i, j)``, ``j`` in ``u``'s items, are generated in chunks of interactions
    sorted by item and counted with ``np.bincount`` into a band of rows of
    ``C``; the work is ``Σ_u |items(u)|²`` and memory stays at one chunk.
    """
    m = num_items
    lengths = train.lengths()
    users = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    keys = np.unique(users * m + np.asarray(train.items, np.int64))  # binary, sorted by user
    users, items = keys // m, keys % m
    user_len = np.bincount(users, minlength=len(lengths)).astype(np.int64)
    user_start = np.cumsum(user_len) - user_len

    order = np.argsort(items, kind="stable")
    row_item, row_user = items[order], users[order]
    pairs = user_len[row_user]  # pairs each interaction (u, i) emits
    pair_end = np.cumsum(pairs)
    max_rows = max(1, _CHUNK // m)

    co = np.zeros((m, m), np.float32)
    start, n = 0, len(order)
    while start < n:
        first = int(row_item[start])
        done = int(pair_end[start - 1]) if start else 0
        stop = min(int(np.searchsorted(pair_end, done + _CHUNK, side="right")),
                   int(np.searchsorted(row_item, first + max_rows, side="left")))
        stop = max(stop, start + 1)
        span = int(row_item[stop - 1]) - first + 1
        counts = pairs[start:stop]
        rows = np.repeat(row_item[start:stop] - first, counts)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = items[np.repeat(user_start[row_user[start:stop]], counts) + within]
        band = np.bincount(rows * m + cols, minlength=span * m)
        co[first : first + span] += band.reshape(span, m)
        start = stop
    return co


def _keep_top_neighbors(sim: np.ndarray, neighbors: int) -> None:
    """Zeroes, in place, all but each row's ``neighbors`` largest entries.

    Ties at the cut keep the lower column indices, so the result is deterministic.
    """
    m = sim.shape[1]
    if neighbors >= m:
        return
    rows = max(1, _CHUNK // m)
    for r0 in range(0, sim.shape[0], rows):
        block = sim[r0 : r0 + rows]  # a view: edits land in sim
        kth = -np.partition(-block, neighbors - 1, axis=1)[:, neighbors - 1 : neighbors]
        greater = block > kth
        equal = block == kth
        room = neighbors - greater.sum(axis=1, keepdims=True)
        keep = greater | (equal & (np.cumsum(equal, axis=1, dtype=np.int32) <= room))
        block[~keep] = 0.0


def item_cosine_similarity(train: SplitData, num_items: int,
                           neighbors: int | None = None) -> np.ndarray:
    """Item-item cosine similarity of binary user sets, float32 ``[num_items, num_items]``.

    ``sim[i, j] = |U_i ∩ U_j| / sqrt(|U_i| |U_j|)`` (0 when either set is
    empty), ``sim[i, i] = 0``, row and column 0 (padding) all zero. With
    ``neighbors``, row ``i`` keeps only its ``neighbors`` largest entries (the
    items most similar to ``i``), so the matrix is no longer symmetric.
    """
    sim = _cooccurrence(train, num_items)
    users_per_item = np.diag(sim).copy()
    inv_norm = np.zeros_like(users_per_item)
    has_users = users_per_item > 0
    inv_norm[has_users] = 1.0 / np.sqrt(users_per_item[has_users])
    sim *= inv_norm[:, None]
    sim *= inv_norm[None, :]
    np.fill_diagonal(sim, 0.0)
    sim[0, :] = 0.0
    sim[:, 0] = 0.0
    if neighbors is not None:
        _keep_top_neighbors(sim, neighbors)
    return sim


class ItemKNN(tf.Module):
    """Scores an item by the sum of its cosine similarities to the history items.

    ``score(u, j) = Σ_{h in history(u)} sim(j, h)`` over the (up to L) history
    positions, padding ignored, a repeated item counted at each position.
    Similarities are binary-co-occurrence cosines over the training users
    (:func:`item_cosine_similarity`). In the retrievers' interface it is one
    interest, the history's multi-hot counts ``[batch, 1, num_items]``,
    against the similarity matrix as the item table ``[num_items,
    num_items]``, so the shared retrieval and metrics code evaluates it
    unchanged.

    Args:
      train: the training split; each row is one user.
      num_items: item table size, padding row 0 included; at most ``MAX_ITEMS``.
      neighbors: keep, for each item ``j``, only its ``neighbors`` most similar
        items ``h`` (row ``j`` of the matrix); None keeps all.

    Raises:
      DataError: more than ``MAX_ITEMS`` items, or an item id outside ``1..num_items-1``.
      ConfigError: ``neighbors`` is not None or a positive int.
    """

    trainable = False

    def __init__(self, train: SplitData, num_items: int, neighbors: int | None = None,
                 name: str = "item_knn"):
        super().__init__(name=name)
        if num_items > MAX_ITEMS:
            raise DataError(
                f"item_knn supports at most {MAX_ITEMS:,} items (padding included), this dataset "
                f"has {num_items:,}: its model is a dense num_items x num_items float32 "
                f"similarity matrix ({num_items**2 * 4 / 1e9:.1f} GB here), scored in full "
                "for every batch. Use an embedding model (e.g. youtube_dnn) for this catalogue."
            )
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
        self.num_items = num_items
        self.neighbors = neighbors
        self.similarity = tf.constant(item_cosine_similarity(train, num_items, neighbors))
        self._not_padding = tf.constant(np.arange(num_items) > 0, tf.float32)

    def interests(self, history, training=False):
        """History ids int ``[batch, L]`` (0 = padding) -> counts float32 ``[batch, 1, M]``."""
        history = tf.convert_to_tensor(history)
        counts = tf.math.bincount(history, minlength=self.num_items, maxlength=self.num_items,
                                  dtype=tf.float32, axis=-1)
        return (counts * self._not_padding)[:, tf.newaxis, :]

    def candidate_embeddings(self):
        """The similarity matrix float32 ``[num_items, num_items]``; row ``j`` scores item ``j``."""
        return self.similarity
