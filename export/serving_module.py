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

import types

import numpy as np
import tensorflow as tf

from dmi_tf import answers, raw_ids
from dmi_tf.index import TopKIndex
from serving import contract


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
      vocabulary_path: the asset written by ``dmi_tf.raw_ids.write_vocabulary_file``.
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
        # Unknown ids and "" give row 0, padding (dmi_tf.raw_ids, batch inference's mapping too).
        self._row_of, self._id_of = raw_ids.lookup_tables(self.vocabulary, num_items)
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
        (``raw_ids.history_rows``). Also returns int32 ``[B]``, how many ids of
        each row the vocabulary knows ("" not counted), before the window.
        """
        return raw_ids.history_rows(self._row_of, history, self.max_length)

    def item_ids(self, rows: tf.Tensor) -> tf.Tensor:
        """Item rows (any shape; 0 padding and -1 empty give "") -> raw ids, same shape."""
        return raw_ids.item_ids(self._id_of, rows)

    # --- signatures ----------------------------------------------------------------

    def _topk(self, history):
        rows, known = self.history_rows(history)
        ids, scores = answers.topk(self._untracked.model, self.index, self._id_of, rows, self.k)
        return {contract.ITEM_IDS: ids, contract.SCORES: scores, contract.KNOWN_IDS: known}

    def _user_interests(self, history):
        rows, _ = self.history_rows(history)
        refined, coarse = answers.interests(self._untracked.model, rows)
        return {contract.INTERESTS: refined, contract.COARSE_INTERESTS: coarse}

    def _explain(self, history):
        rows, _ = self.history_rows(history)
        items, weights = answers.explain(self._untracked.model, self._id_of, rows)
        return {contract.ITEMS: items, contract.WEIGHTS: weights}
