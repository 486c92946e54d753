"""The exported SavedModel: raw string item ids in, raw string item ids out.

Signatures (names from :mod:`serving.contract`; every input and output has a
leading batch dimension, as TF-Serving's server-side batching needs):

* ``serving_default`` and ``topk``: ``history`` string ``[batch, None]`` ->
  ``item_ids`` string ``[batch, k]`` ("" in empty slots), ``scores``
  float32 ``[batch, k]`` (-inf in empty slots) and ``known_ids`` int32
  ``[batch]`` (how many history ids the vocabulary knows, "" not counted);
* ``user_interests``: ``history`` -> ``interests`` and ``coarse_interests``
  float32 ``[batch, K, d]``;
* ``explain``: ``history`` -> ``items`` string ``[batch, K, L]`` (the history
  item behind each weight, "" where the weight is 0) and ``weights`` float32
  ``[batch, K, L]``.

``history`` holds raw item ids; "" is padding and may appear anywhere, unknown
ids are ignored like padding, and of a longer history the last ``L`` real
items are used, left-aligned, as in training. The vocabulary travels inside
the SavedModel as an asset (``assets/vocabulary.txt``, the raw ids of item
rows 1..M-1, one per line) read by two hash tables: string -> row and
row -> string.
"""

from __future__ import annotations

import os
import types

import numpy as np
import tensorflow as tf

from dmi_tf.data.pipeline import history_window
from dmi_tf.errors import UserError
from dmi_tf.index import TopKIndex
from serving import contract

# The file name of the vocabulary asset inside the SavedModel's assets/.
VOCABULARY_ASSET = "vocabulary.txt"


def check_vocabulary(vocabulary: list[str]) -> None:
    """Raises UserError unless rows 1.. hold distinct, non-empty, single-line raw ids.

    Row 0 is padding and is not exported; "" is reserved for padding on the wire.
    """
    if len(vocabulary) < 2:
        raise UserError("the run's vocabulary has no items (only the padding row); "
                        "train on data with at least one item.")
    seen: dict[str, int] = {}
    for row, raw in enumerate(vocabulary[1:], start=1):
        if raw == "" or "\n" in raw or "\r" in raw:
            raise UserError(f"vocabulary row {row} is {raw!r}: exported item ids must be "
                            "non-empty single-line strings (\"\" means padding).")
        if raw in seen:
            raise UserError(f"raw item id {raw!r} appears at vocabulary rows {seen[raw]} and "
                            f"{row}; ids must be unique to map back to one item.")
        seen[raw] = row


def write_vocabulary_asset(vocabulary: list[str], folder: str) -> str:
    """Writes rows 1.. of the vocabulary, one raw id per line; returns the file's path."""
    check_vocabulary(vocabulary)
    path = os.path.join(folder, VOCABULARY_ASSET)
    with open(path, "w", encoding=contract.ID_ENCODING, newline="\n") as f:
        f.writelines(raw + "\n" for raw in vocabulary[1:])
    return path


def encode_ids(ids) -> np.ndarray:
    """Raw ids (str, any shape) as the object array of bytes a request carries.

    The one way ids become bytes in the export (``contract.encode_id``), as the
    clients send them and the vocabulary asset holds them. NumPy's
    ``astype(bytes)`` would encode as ASCII and fail on any other id.
    """
    array = np.asarray(ids, dtype=object)
    out = np.empty(array.shape, dtype=object)
    out.ravel()[:] = [contract.encode_id(i) for i in array.ravel()]
    return out


def decode_ids(raw) -> np.ndarray:
    """The inverse of ``encode_ids``: bytes a signature returned -> str, any shape."""
    array = np.asarray(raw, dtype=object)
    out = np.empty(array.shape, dtype=object)
    out.ravel()[:] = [contract.decode_id(b) for b in array.ravel()]
    return out


class ServingModule(tf.Module):
    """A trained model and a top-K index behind string-id signatures.

    Args:
      model: anything with ``interests``, ``coarse_interests`` and ``explain``
        (``history int [B, L] -> [B, K, d]`` / ``[B, K, L]``), as every
        trainable model of ``dmi_tf.models`` offers.
      index: a :class:`dmi_tf.index.TopKIndex` over the model's item table.
      vocabulary_path: the asset written by :func:`write_vocabulary_asset`.
      num_items: M, item table rows including padding.
      max_length: L, the history length the model was trained with.
      k: items returned by ``topk``.
    """

    def __init__(self, model, index: TopKIndex, vocabulary_path: str, num_items: int,
                 max_length: int, k: int):
        super().__init__(name="dmi_serving")
        # Held outside tf.Module's tracking (a SimpleNamespace is not trackable),
        # so saving does not serialise the Keras model object; its weights are
        # tracked explicitly instead, which is all the signatures read.
        self._untracked = types.SimpleNamespace(model=model)
        self.model_variables = list(getattr(model, "variables", ()))
        self.index = index
        self.max_length = max_length
        self.k = k
        self.vocabulary = tf.saved_model.Asset(vocabulary_path)
        # Line i of the asset is item row i + 1; missing keys (unknown ids and
        # "") give -1, i.e. row 0, padding.
        self._row_of = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.vocabulary, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER, vocab_size=num_items - 1),
            default_value=-1)
        self._id_of = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.vocabulary, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE, vocab_size=num_items - 1),
            default_value="")
        spec = [tf.TensorSpec([None, None], tf.string, name=contract.HISTORY)]
        self.topk = tf.function(self._topk, input_signature=spec)
        self.user_interests = tf.function(self._user_interests, input_signature=spec)
        self.explain = tf.function(self._explain, input_signature=spec)

    def signatures(self) -> dict:
        topk = self.topk.get_concrete_function()
        return {contract.SERVING_DEFAULT: topk, contract.TOPK: topk,
                contract.USER_INTERESTS: self.user_interests.get_concrete_function(),
                contract.EXPLAIN: self.explain.get_concrete_function()}

    # --- wire format <-> item rows -------------------------------------------------

    def history_rows(self, history: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Raw ids string ``[B, T]`` -> the model's input int32 ``[B, L]`` and the known count.

        "" and unknown ids are dropped; of the known ids, in order, the last
        ``L`` are kept, left-aligned and padded with 0: training's own window
        (``history_window``). Also returns int32 ``[B]``, how many ids of each
        row the vocabulary knows ("" not counted), before the window.
        """
        rows = tf.cast(self._row_of.lookup(history) + 1, tf.int32)  # 0 = padding / unknown
        known = rows > 0
        count = tf.reduce_sum(tf.cast(known, tf.int32), axis=1)
        # Every row's known ids back to back, as the training window reads a split. The
        # leading 0 is not anyone's: the window of a row with no known id reads the slot
        # before its start (and masks it), which must exist for the first row too.
        items = tf.concat([[0], tf.boolean_mask(rows, known)], axis=0)
        end = 1 + tf.cumsum(count)
        window = history_window(items, end - count, end, self.max_length)
        return tf.ensure_shape(window, [None, self.max_length]), count

    def item_ids(self, rows: tf.Tensor) -> tf.Tensor:
        """Item rows (any shape; 0 padding and -1 empty give "") -> raw ids, same shape."""
        return self._id_of.lookup(tf.cast(rows, tf.int64) - 1)

    # --- signatures ----------------------------------------------------------------

    def _topk(self, history):
        rows, known = self.history_rows(history)
        scores, items = self.index.retrieve(self._untracked.model.interests(rows), self.k)
        return {contract.ITEM_IDS: self.item_ids(items), contract.SCORES: scores,
                contract.KNOWN_IDS: known}

    def _user_interests(self, history):
        rows, _ = self.history_rows(history)
        return {contract.INTERESTS: self._untracked.model.interests(rows),
                contract.COARSE_INTERESTS: self._untracked.model.coarse_interests(rows)}

    def _explain(self, history):
        rows, _ = self.history_rows(history)
        weights = self._untracked.model.explain(rows)  # [B, K, L]
        used = tf.where(weights > 0, rows[:, tf.newaxis, :], -1)
        return {contract.ITEMS: self.item_ids(used), contract.WEIGHTS: weights}
