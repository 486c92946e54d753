"""Item vocabularies: the raw id of every item index, and where an earlier one is read from.

``prepare --vocabulary SOURCE`` numbers a new version of the data so that every
raw id SOURCE knows keeps its index (new items come after), which keeps a model's
item rows meaningful from one data version to the next. SOURCE is any of

* a run directory of ``python -m dmi_tf.train``: ``vocabulary.txt``, line ``i`` the
  raw id of index ``i`` (line 0, padding, empty);
* a split folder: ``item_map.txt`` (``raw_item_id,index``, or ComiRec's
  ``<name>_item_map.txt``);
* an exported model version: ``assets/vocabulary.txt``, line ``i`` the raw id of
  index ``i + 1``.
"""

from __future__ import annotations

import os

import numpy as np

from dmi_tf.data import splits
from dmi_tf.errors import DataError

RUN_VOCABULARY = "vocabulary.txt"
EXPORT_VOCABULARY = os.path.join("assets", "vocabulary.txt")


def read_vocabulary(path: str) -> list[str]:
    """A run's ``vocabulary.txt``: one raw id per line, line ``i`` for index ``i``."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def load_vocabulary(source: str | os.PathLike) -> list[str]:
    """The vocabulary of an earlier data version (module docstring): ``[""]`` + raw ids.

    Raises:
      DataError: SOURCE is none of the three, or its ids are not distinct and non-empty.
    """
    source = os.fspath(source)
    if os.path.isfile(os.path.join(source, RUN_VOCABULARY)):
        path = os.path.join(source, RUN_VOCABULARY)
        vocabulary = read_vocabulary(path)
    elif os.path.isfile(os.path.join(source, EXPORT_VOCABULARY)):
        path = os.path.join(source, EXPORT_VOCABULARY)
        vocabulary = ["", *read_vocabulary(path)]
    else:
        path = _item_map(source)
        mapping = splits._read_item_map(path)
        missing = sorted(set(range(1, max(mapping, default=0) + 1)) - set(mapping))
        if missing:
            raise DataError(f"{path} has no raw id for index {missing[0]} ({len(missing)} "
                            "indices have none), so those items could not keep their index; "
                            "give the run directory trained on it instead")
        vocabulary = ["", *(mapping[k] for k in range(1, len(mapping) + 1))]
    check_vocabulary(vocabulary, path)
    return vocabulary


def _item_map(folder: str) -> str:
    if os.path.isdir(folder):
        names = sorted(n for n in os.listdir(folder) if n == f"{splits.ITEM_MAP}.txt"
                       or n.endswith(f"_{splits.ITEM_MAP}.txt"))
        if len(names) == 1:
            return os.path.join(folder, names[0])
    raise DataError(
        f"--vocabulary {folder!r} is not a run directory (vocabulary.txt), a split folder "
        "(item_map.txt) or an exported model version (assets/vocabulary.txt); give the run, "
        "data or export whose item indices the new data must keep")


def check_vocabulary(vocabulary: list[str], source: str) -> None:
    """Raises DataError unless index 0 is padding (``""``) and indices 1.. hold distinct,
    non-empty, single-line raw ids: what maps each raw id to one item row and back."""
    if len(vocabulary) < 2:
        raise DataError(f"{source} has no items (only the padding row); train on data with at "
                        "least one item.")
    if vocabulary[0] != "":
        raise DataError(f"{source}: index 0 is padding and must be empty, found "
                        f"{vocabulary[0]!r}")
    seen: dict[str, int] = {}
    for index, raw in enumerate(vocabulary[1:], start=1):
        if raw == "" or "\n" in raw or "\r" in raw or raw in seen:
            problem = (f"is also index {seen[raw]}" if raw in seen else
                       f"is {raw!r}: ids must be non-empty single-line strings")
            raise DataError(f"{source}: the raw id of index {index} {problem}; a vocabulary "
                            "maps each raw id to one index (\"\" is padding)")
        seen[raw] = index


def shared_rows(new: list[str], old: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``new`` and of ``old`` that hold the same raw id (padding row 0 included).

    Returns:
      ``(new_rows, old_rows)``: int64 ``[n]`` each, ``new[new_rows[j]] == old[old_rows[j]]``,
      in ``new``'s order. Works whether or not ``new`` kept ``old``'s indices.
    """
    row_of = {raw: row for row, raw in enumerate(old)}
    pairs = [(row, row_of[raw]) for row, raw in enumerate(new) if raw in row_of]
    array = np.asarray(pairs, np.int64).reshape(-1, 2)
    return array[:, 0], array[:, 1]
