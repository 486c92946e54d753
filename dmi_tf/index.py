"""Top-K indexes over a run's item table: exact (streamed MatMul + TopK) or ScaNN.

Both sit behind one interface, :class:`TopKIndex` (as TFRS's ``TopK`` layers):

* ``search(queries [Q, d], k)``: each query's top-``k`` item rows;
* ``retrieve(interests [B, K, d], k)``: a user's top-``k`` distinct items from
  its ``K`` interests, per-interest top-``k`` then
  :func:`dmi_tf.retrieval.merge_interest_topk`, the merge evaluation uses;
* ``is_exact()``: whether results equal the exact inner-product top-``k``.

:class:`ExactIndex` calls :func:`dmi_tf.retrieval.retrieve` itself, so its
results are evaluation's (to the bit over the table's rows; over the faster
transposed copy, the same ids with scores to float rounding); it only uses ops
with GPU kernels, and a SavedModel holding it loads in any TensorFlow (stock
TF-Serving included).
:class:`ScannIndex` wraps TFRS's ``ScaNN`` layer (CPU only); a SavedModel
holding it needs the ``Scann`` op namespace at save time
(:attr:`TopKIndex.op_namespaces`) and ScaNN's ops in the loading process:
stock TF-Serving cannot load it.

Ids are rows of the item table (row 0, padding, is never returned); empty
slots carry id -1 and score -inf, as everywhere in :mod:`dmi_tf.retrieval`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import tensorflow as tf

from dmi_tf.errors import ConfigError
from dmi_tf.retrieval import (
    EMPTY_ID,
    INDEX_BLOCK_SIZE,
    ItemColumns,
    exact_topk,
    merge_interest_topk,
    retrieve,
)

__all__ = [
    "ExactIndex",
    "IndexConfig",
    "ScannConfig",
    "ScannIndex",
    "TopKIndex",
    "build_index",
    "resolve_scann",
]

INDEX_KINDS = ("exact", "scann")
LAYOUTS = ("columns", "rows")


@dataclasses.dataclass
class ScannConfig:
    """ScaNN's tree + asymmetric-hashing settings; ``None`` = computed from the catalogue.

    See :func:`resolve_scann` for the defaults (measured on a 1,000,000-item
    catalogue in ``docs/experiments.md``).
    """

    # Partitions of the catalogue (k-means tree leaves); default ~sqrt(items).
    num_leaves: int | None = None
    # Leaves scored per query: the main recall/latency knob; default 20% of the leaves.
    num_leaves_to_search: int | None = None
    # Candidates re-scored exactly (float32) after the quantized search;
    # default max(10 k, 200); 0 turns re-scoring off (scores stay approximate).
    num_reordering_candidates: int | None = None
    # Quantization: dimensions per asymmetric-hashing block (4 bits each).
    # Larger = smaller, faster, less accurate.
    dimensions_per_block: int = 2
    # k-means iterations when training the tree.
    training_iterations: int = 12


@dataclasses.dataclass
class IndexConfig:
    """Which index serves a run's top-K, and its settings."""

    kind: Literal["exact", "scann"] = "exact"
    # Exact index: item rows scored at once (peak memory is one [queries, block] block).
    block_size: int = INDEX_BLOCK_SIZE
    # Exact index: "columns" keeps a transposed copy of the table (faster on a CPU at
    # small batches, the table stored twice in an export); "rows" scores the
    # model's own table (one copy).
    layout: Literal["columns", "rows"] = "columns"
    scann: ScannConfig = dataclasses.field(default_factory=ScannConfig)


@dataclasses.dataclass(frozen=True)
class ResolvedScann:
    """ScaNN settings with every default filled in (what the index is built with)."""

    num_leaves: int
    num_leaves_to_search: int
    num_reordering_candidates: int
    dimensions_per_block: int
    training_iterations: int


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def resolve_scann(num_candidates: int, k: int, config: ScannConfig | None = None) -> ResolvedScann:
    """Fills the unset ScaNN settings from the catalogue size and ``k``.

    * ``num_leaves = round(sqrt(n))`` (ScaNN's rule of thumb), at most ``n``;
    * ``num_leaves_to_search = ceil(20% of the leaves)``, at least
      ``min(leaves, 8)``; small catalogues search a larger share, which costs
      little there;
    * ``num_reordering_candidates = max(10 k, 200)``, at most ``n`` (ScaNN's
      examples re-score 10 k; it costs d multiply-adds per candidate).

    On 1,000,000 overlapping-cluster items (1,000 leaves, 200 searched, 500
    re-scored for k=50) recall@50 against the exact index is above 0.95 at a
    fraction of its latency; 10% of the leaves sat at the 0.95 edge there
    (``docs/experiments.md``, "ScaNN index").

    Args:
      num_candidates: n, the number of real (non-padding) items indexed.
      k: results per query the index must return.
      config: explicit settings; ``None`` fields are computed.

    Raises:
      ConfigError: a setting is out of range (the message names it).
    """
    config = config or ScannConfig()
    if num_candidates < 1:
        raise ConfigError("the ScaNN index needs at least one item to index.")
    checks = {
        "num_leaves": config.num_leaves,
        "num_leaves_to_search": config.num_leaves_to_search,
    }
    for key, value in checks.items():
        if value is not None and not _positive(value):
            raise ConfigError(f"index.scann.{key} must be a positive int or null, got {value!r}.")
    reorder = config.num_reordering_candidates
    if reorder is not None and (not isinstance(reorder, int) or isinstance(reorder, bool)
                                or reorder < 0):
        raise ConfigError("index.scann.num_reordering_candidates must be an int >= 0 (0 = no "
                          f"exact re-scoring) or null, got {reorder!r}.")
    for key in ("dimensions_per_block", "training_iterations"):
        if not _positive(getattr(config, key)):
            raise ConfigError(f"index.scann.{key} must be a positive int, "
                              f"got {getattr(config, key)!r}.")

    leaves = config.num_leaves or max(1, round(math.sqrt(num_candidates)))
    if leaves > num_candidates:
        raise ConfigError(f"index.scann.num_leaves={leaves} but only {num_candidates} items are "
                          f"indexed; use at most {num_candidates} leaves.")
    to_search = config.num_leaves_to_search or max(min(leaves, 8), math.ceil(0.2 * leaves))
    if to_search > leaves:
        raise ConfigError(f"index.scann.num_leaves_to_search={to_search} exceeds num_leaves="
                          f"{leaves}; search at most every leaf.")
    if reorder is None:
        reorder = min(max(10 * k, 200), num_candidates)
    if reorder and reorder < k:
        raise ConfigError(f"index.scann.num_reordering_candidates={reorder} is below k={k}: "
                          "re-scoring must keep at least k candidates; raise it or set 0.")
    return ResolvedScann(leaves, to_search, reorder, config.dimensions_per_block,
                         config.training_iterations)


class TopKIndex(tf.Module):
    """A top-K index over an item table ``[M, d]`` whose row 0 is padding."""

    #: Op namespaces a SavedModel holding this index must whitelist
    #: (``tf.saved_model.SaveOptions(namespace_whitelist=...)``); a loader
    #: without those custom ops cannot load it.
    op_namespaces: tuple[str, ...] = ()

    def __init__(self, num_items: int, dim: int, name: str | None = None):
        super().__init__(name=name)
        self.num_items = num_items
        self.dim = dim

    def is_exact(self) -> bool:
        raise NotImplementedError

    def describe(self) -> dict:
        """The index's kind and settings, for logs and export metadata."""
        raise NotImplementedError

    def search(self, queries: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Top-``k`` item rows of each query: float ``[Q, d]`` -> (scores, int32 ids) ``[Q, k]``."""
        raise NotImplementedError

    def retrieve(self, interests: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
        """A user's top-``k`` distinct items from its interests.

        Args:
          interests: float ``[B, K, d]``; ``B`` may be dynamic, ``K`` and ``d`` static.
          k: static number of items per user.

        Returns:
          ``(scores [B, k], ids int32 [B, k])``, scores descending, each id once.
        """
        interests = tf.convert_to_tensor(interests)
        num_interests, dim = interests.shape[1], interests.shape[2]
        if num_interests is None or dim is None:
            raise ValueError(f"interests need static K and d, got shape {interests.shape}.")
        batch = tf.shape(interests)[0]
        scores, ids = self.search(tf.reshape(interests, [-1, dim]), k)
        shape = tf.stack([batch, num_interests, k])
        return merge_interest_topk(tf.reshape(scores, shape), tf.reshape(ids, shape), k)


class ExactIndex(TopKIndex):
    """Exact inner-product top-K, streamed over item blocks (:func:`dmi_tf.retrieval.exact_topk`).

    The table is held in variables, so a SavedModel stores it in its variables
    (no 2 GB graph-constant limit). MatMul, TopKV2, GatherV2 and While all have
    GPU kernels: this is the index for GPU serving.

    Args:
      item_embeddings: float32 ``[M, d]``, row 0 padding.
      block_size: item rows scored at once; peak extra memory is one
        ``[queries, block_size]`` score block.
      layout: ``columns`` (default) scores a transposed copy of the table
        (:class:`dmi_tf.retrieval.ItemColumns`), which oneDNN multiplies about
        1.4x faster on a CPU for 1-16 users; an export then stores the table
        twice. ``rows`` scores the table as given: a ``tf.Variable`` (e.g. the
        model's item table) is used as it is, not copied, so an export stores
        the table once. Same results either way (scores to float rounding).
    """

    def __init__(self, item_embeddings, block_size: int = INDEX_BLOCK_SIZE,
                 layout: str = "columns", name: str = "exact_index"):
        if isinstance(item_embeddings, tf.Variable) and item_embeddings.dtype == tf.float32:
            table = item_embeddings
        else:
            table = np.asarray(item_embeddings, np.float32)
        _check_table(tuple(table.shape))
        super().__init__(table.shape[0], table.shape[1], name=name)
        if not _positive(block_size):
            raise ConfigError(f"index.block_size must be a positive int, got {block_size!r}.")
        if layout not in LAYOUTS:
            raise ConfigError(f"index.layout is {layout!r}; it must be one of "
                              f"{', '.join(LAYOUTS)}.")
        self.block_size = block_size
        self.layout = layout
        if layout == "columns":
            self.item_embeddings = ItemColumns(table, block_size)
        elif isinstance(table, tf.Variable):
            self.item_embeddings = table
        else:
            self.item_embeddings = tf.Variable(table, trainable=False, name="item_embeddings")

    def is_exact(self) -> bool:
        return True

    def describe(self) -> dict:
        return {"kind": "exact", "block_size": self.block_size, "layout": self.layout}

    def search(self, queries, k):
        return exact_topk(queries, self.item_embeddings, k, block_size=self.block_size)

    def retrieve(self, interests, k):
        # Literally evaluation's function, so export and evaluation cannot drift.
        return retrieve(interests, self.item_embeddings, k, block_size=self.block_size)


class ScannIndex(TopKIndex):
    """Approximate top-K with TFRS's ``ScaNN`` layer (k-means tree + asymmetric hashing).

    The padding row is not indexed; ScaNN's rows ``0..M-2`` are item rows
    ``1..M-1``. ScaNN returns fewer than ``k`` results when the searched leaves
    hold fewer items; the missing slots become id -1, score -inf.

    Args:
      item_embeddings: float32 ``[M, d]``, row 0 padding.
      k: the most results a query will ask for (the searcher's default).
      config: ScaNN settings; unset ones come from :func:`resolve_scann`.
    """

    op_namespaces = ("Scann",)

    def __init__(self, item_embeddings, k: int, config: ScannConfig | None = None,
                 name: str = "scann_index"):
        # TFRS imports scann's ops; importing it only here keeps the exact path free of them.
        import tensorflow_recommenders as tfrs

        table = np.asarray(item_embeddings, np.float32)
        _check_table(table.shape)
        super().__init__(table.shape[0], table.shape[1], name=name)
        if not _positive(k) or k > table.shape[0] - 1:
            raise ConfigError(f"k={k} must be between 1 and the {table.shape[0] - 1} items.")
        self.k = k
        self.settings = resolve_scann(table.shape[0] - 1, k, config)
        s = self.settings
        if not tfrs.layers.factorized_top_k._HAVE_SCANN:
            raise ConfigError("the ScaNN index needs the scann package (pip install "
                              "'scann[tf]==1.4.2'); use the exact index instead.")
        self.layer = tfrs.layers.factorized_top_k.ScaNN(
            k=k, num_leaves=s.num_leaves, num_leaves_to_search=s.num_leaves_to_search,
            training_iterations=s.training_iterations,
            dimensions_per_block=s.dimensions_per_block,
            num_reordering_candidates=s.num_reordering_candidates or None, name="scann")
        self.layer.index(tf.constant(table[1:]))

    def is_exact(self) -> bool:
        return False

    def describe(self) -> dict:
        return {"kind": "scann", **dataclasses.asdict(self.settings)}

    def search(self, queries, k):
        if not _positive(k) or k > self.k:
            raise ValueError(f"this ScaNN index was built for k <= {self.k}, got k={k}.")
        scores, rows = self.layer(tf.convert_to_tensor(queries, tf.float32), k=k)
        found = tf.math.is_finite(scores)  # ScaNN marks missing neighbours with NaN
        scores = tf.where(found, scores, float("-inf"))
        ids = tf.where(found, rows + 1, EMPTY_ID)
        # ScaNN's width is the most neighbours any query found; pad it to k.
        missing = k - tf.shape(scores)[1]
        scores = tf.pad(scores, [[0, 0], [0, missing]], constant_values=float("-inf"))
        ids = tf.pad(ids, [[0, 0], [0, missing]], constant_values=EMPTY_ID)
        return tf.ensure_shape(scores, [None, k]), tf.ensure_shape(ids, [None, k])


def _check_table(shape: tuple) -> None:
    if len(shape) != 2 or shape[0] < 2 or shape[1] < 1:
        raise ConfigError(f"the item table must be [num_items, d] with a padding row and at "
                          f"least one item, got shape {tuple(shape)}.")


def build_index(item_embeddings, config: IndexConfig | None = None, k: int = 100) -> TopKIndex:
    """Builds the configured index over an item table ``[M, d]`` (row 0 padding).

    Args:
      item_embeddings: float ``[M, d]``, e.g. ``model.candidate_embeddings()``
        (a variable is shared by the exact index, not copied).
      config: kind and settings (default: exact).
      k: the most results per query (ScaNN builds its searcher for it).
    """
    config = config or IndexConfig()
    if config.kind == "exact":
        return ExactIndex(item_embeddings, block_size=config.block_size, layout=config.layout)
    if config.kind == "scann":
        return ScannIndex(item_embeddings, k, config.scann)
    raise ConfigError(f"index.kind is {config.kind!r}; it must be one of {', '.join(INDEX_KINDS)}.")
