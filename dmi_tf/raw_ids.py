"""Raw item ids <-> item rows: the one mapping of the exported signatures and of batch inference.

A vocabulary file holds the raw ids of item rows ``1..M-1``, one per line (row 0 is
padding and is not written; ``""`` means padding on the wire). Two hash tables
read it: raw id -> row and row -> raw id. A history of raw ids becomes the
model's input by dropping ``""`` and unknown ids and keeping, of the known ids in
order, the last ``L``, left-aligned and padded with 0: the training pipeline's own
window (``dmi_tf.data.pipeline.history_window``).

The export (``export/serving_module.py``) builds the tables from the SavedModel's
asset, ``python -m dmi_tf.predict`` from the run's vocabulary: the same file, the
same tables, the same windows.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from dmi_tf.data.pipeline import history_window
from dmi_tf.data.vocabulary import check_vocabulary

#: The vocabulary file's name (the SavedModel asset's too).
VOCABULARY_FILE = "vocabulary.txt"
# The item table for an external index: row i of the embeddings is the raw id on line i.
ITEM_EMBEDDINGS_FILE = "item_embeddings.npy"
ITEM_IDS_FILE = "item_ids.txt"


def write_vocabulary_file(vocabulary: list[str], folder: str) -> str:
    """Writes rows 1.. of the vocabulary, one raw id per line; returns the file's path.

    Raises:
      DataError: the raw ids are not distinct, non-empty single-line strings.
    """
    check_vocabulary(vocabulary, "the run's vocabulary")
    path = os.path.join(folder, VOCABULARY_FILE)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(raw + "\n" for raw in vocabulary[1:])
    return path


def write_item_embeddings(folder: str, table: np.ndarray, vocabulary: list[str]) -> None:
    """``item_embeddings.npy`` (float32 ``[M-1, d]``, rows 1..) and ``item_ids.txt`` (their raw
    ids, one a line): the item table as an external ANN index takes it."""
    np.save(os.path.join(folder, ITEM_EMBEDDINGS_FILE), np.asarray(table[1:], np.float32))
    with open(os.path.join(folder, ITEM_IDS_FILE), "w", encoding="utf-8", newline="\n") as f:
        f.writelines(raw + "\n" for raw in vocabulary[1:])


def lookup_tables(vocabulary_file, num_items: int):
    """``(row_of, id_of)``: raw id -> row - 1 (-1 when unknown or ``""``) and row - 1 -> raw id.

    Args:
      vocabulary_file: a path or a ``tf.saved_model.Asset`` of the file
        :func:`write_vocabulary_file` writes.
      num_items: M, item table rows including padding.
    """
    # Line i of the file is item row i + 1.
    row_of = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            vocabulary_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER, vocab_size=num_items - 1),
        default_value=-1)
    id_of = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            vocabulary_file, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
            tf.lookup.TextFileIndex.WHOLE_LINE, vocab_size=num_items - 1),
        default_value="")
    return row_of, id_of


def history_rows(row_of, history: tf.Tensor, max_length: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Raw ids string ``[B, T]`` ("" padding anywhere) -> the model's input and the known count.

    Returns:
      ``(rows int32 [B, L], known int32 [B])``: the window of each row's known ids,
      and how many ids of each row the vocabulary knows ("" not counted), before
      the window.
    """
    rows = _rows(row_of, history)
    known = rows > 0
    return _window(tf.boolean_mask(rows, known), tf.reduce_sum(tf.cast(known, tf.int32), axis=1),
                   max_length)


def ragged_history_rows(row_of, ids: tf.Tensor, lengths: tf.Tensor,
                        max_length: int) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`history_rows` of histories given back to back (no padding to the longest).

    Args:
      ids: string ``[N]``, every history's raw ids, oldest first, one history after another.
      lengths: int32 ``[B]``, how many of ``ids`` each history has.
    """
    rows = _rows(row_of, ids)
    known = rows > 0
    owner = tf.repeat(tf.range(tf.size(lengths)), lengths)
    count = tf.math.unsorted_segment_sum(tf.cast(known, tf.int32), owner, tf.size(lengths))
    return _window(tf.boolean_mask(rows, known), count, max_length)


def item_ids(id_of, rows: tf.Tensor) -> tf.Tensor:
    """Item rows (any shape; 0 padding and -1 empty give "") -> raw ids, same shape."""
    return id_of.lookup(tf.cast(rows, tf.int64) - 1)


def _rows(row_of, ids: tf.Tensor) -> tf.Tensor:
    return tf.cast(row_of.lookup(ids) + 1, tf.int32)  # 0 = padding or unknown


def _window(known_rows: tf.Tensor, count: tf.Tensor, max_length: int):
    """Every row's known ids back to back ``[N]`` and their counts ``[B]`` -> the windows."""
    # The leading 0 is not anyone's: the window of a row with no known id reads the slot
    # before its start (and masks it), which must exist for the first row too.
    items = tf.concat([[0], known_rows], axis=0)
    end = 1 + tf.cumsum(count)
    window = history_window(items, end - count, end, max_length)
    return tf.ensure_shape(window, [None, max_length]), count
