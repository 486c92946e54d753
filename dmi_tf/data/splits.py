"""Processed split folders: ``train.txt``, ``valid.txt``, ``test.txt`` and ``item_map.txt``.

Split files have one interaction a line, each user's lines in time order, in either form:

- ``user_id,item_id,position`` (ComiRec's released files), or
- ``user_id,item_id,position,timestamp`` (REMI's; what :func:`write_dataset` writes).

``position`` is the 0-based index of the interaction in the user's sequence; item ids are
``1..N`` (0 is padding). ``item_map.txt`` holds ``raw_item_id,index`` lines (ComiRec's form).
ComiRec's and REMI's released folders name the files ``<name>_train.txt``, ...,
``<name>_item_map.txt``; :func:`load_dataset` reads those as they are.

A time split (``prepare --split time``) adds ``valid_cut.txt`` and ``test_cut.txt``,
``user_id,history_length`` lines, one per user of the split: the user's first
``history_length`` items are the history, the rest the targets of its window
(``SplitData.history_lengths``). Its splits share users (a valid user's history is
also training data), so only a folder with cut files may repeat a user across splits;
without them a split is cut as the protocol says (80% history).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import warnings

import numpy as np

from dmi_tf.data.dataset import Dataset, SplitData
from dmi_tf.data.readers import bad_line, iter_lines
from dmi_tf.errors import DataError
from dmi_tf.io_utils import new_directory

SPLITS = ("train", "valid", "test")
ITEM_MAP = "item_map"

_HOW_TO_MAKE = (
    "make one with `python -m dmi_tf.data.prepare --input FILE --format FMT --out DIR`"
)
_SPLIT_FORM = ("'user_id,item_id,position' or 'user_id,item_id,position,timestamp' "
               "(integers; item_id >= 1), e.g. '0,17,0,881250949'")
_ITEM_MAP_FORM = "'raw_item_id,index' with index >= 1, e.g. 'B000123,1'"
_CUT_FORM = "'user_id,history_length' with history_length >= 1, e.g. '17,12'"
# Suffix of a split's cut file: valid.txt -> valid_cut.txt.
CUT_SUFFIX = "_cut"
_CHUNK = 1 << 16  # lines formatted per write


# ---------------------------------------------------------------------------
# Writing


def format_timestamp(t: float) -> str:
    """Repr-stable text of a timestamp: integral values without ``.0``."""
    t = float(t)
    if not math.isfinite(t):
        raise DataError(f"timestamp {t} is not finite; timestamps must be finite numbers")
    if t.is_integer():
        return str(int(t))
    return repr(t)


def _split_text(split: SplitData) -> list[str]:
    """The split's lines, ``user,item,position[,timestamp]``, each user's in sequence order,
    as blocks of text."""
    row_splits = np.asarray(split.row_splits, dtype=np.int64)
    lengths = np.diff(row_splits)
    total = int(row_splits[-1]) if len(row_splits) else 0
    columns = [
        np.repeat(np.asarray(split.user_ids, dtype=np.int64), lengths),
        np.asarray(split.items[:total], dtype=np.int64),
        np.arange(total, dtype=np.int64) - np.repeat(row_splits[:-1], lengths),
    ]
    line = "%d,%d,%d\n"
    if split.timestamps is not None:
        ts = np.asarray(split.timestamps[:total], dtype=np.float64)
        if not np.all(np.isfinite(ts)):
            raise DataError("a split has a non-finite timestamp; timestamps must be finite")
        if np.all(ts == np.floor(ts)) and (total == 0 or np.max(np.abs(ts)) < 2.0**62):
            columns.append(ts.astype(np.int64))
            line = "%d,%d,%d,%d\n"
        else:
            columns = [c.astype(object) for c in columns]
            columns.append(np.asarray([format_timestamp(t) for t in ts.tolist()], dtype=object))
            line = "%d,%d,%d,%s\n"
    table = np.stack(columns, axis=1) if total else np.zeros([0, len(columns)], np.int64)
    blocks = []
    for k in range(0, total, _CHUNK):
        rows = table[k:k + _CHUNK]
        blocks.append((line * len(rows)) % tuple(rows.ravel().tolist()))
    return blocks


def _write_lines(path: str, blocks: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for block in blocks:
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def _file_holds(path: str, blocks: list[str]) -> bool:
    """Whether the file at ``path`` holds exactly the text ``blocks`` (read a block at a time)."""
    try:
        with open(path, "rb") as f:
            for block in blocks:
                data = block.encode("utf-8")
                if f.read(len(data)) != data:
                    return False
            return f.read(1) == b""
    except OSError:
        return False


def _dataset_files(folder: str) -> list[str]:
    """The files of ``folder`` that ``load_dataset`` would read as (part of) a data set."""
    # A time split's cut files too: left beside another data set, they would be read with it.
    parts = (*SPLITS, ITEM_MAP, "item_cate", *(f"{s}{CUT_SUFFIX}" for s in SPLITS))
    names = (f"{s}.txt" for s in parts)
    suffixes = tuple(f"_{s}.txt" for s in parts)
    wanted = set(names)
    return sorted(n for n in os.listdir(folder) if n in wanted or n.endswith(suffixes))


def write_dataset(dataset: Dataset, out_dir: str | os.PathLike) -> None:
    """Writes ``train.txt``, ``valid.txt``, ``test.txt`` and ``item_map.txt`` into ``out_dir``.

    Split lines are ``user_id,item_id,position,timestamp`` (``user_id,item_id,position`` for a
    split without timestamps); ``item_map.txt`` lines are ``raw_item_id,index`` for indices
    ``1..N`` in order. Everything is first written to a temporary folder next to ``out_dir``
    and then moved into place, so an interrupted run never leaves a half-written file. The
    output depends only on ``dataset``: re-running gives byte-identical files.

    Raises:
      DataError: ``out_dir`` already holds another data set. Replacing its split files
        would leave the rest (an ``item_cate.txt``, a ComiRec-named family) describing
        other items, and training would read them with the new splits.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    for index, raw in enumerate(dataset.vocabulary[1:], start=1):
        if any(c in raw for c in ",\n\r"):
            raise DataError(f"raw item id {raw!r} (index {index}) contains a comma or line break, "
                            "which item_map.txt cannot hold; rename such items in the input")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f"output {out_dir} exists and is not a folder; choose another --out")
    contents = {f"{s}.txt": _split_text(getattr(dataset, s)) for s in SPLITS}
    contents[f"{ITEM_MAP}.txt"] = ["".join(f"{raw},{index}\n" for index, raw
                                           in enumerate(dataset.vocabulary[1:], start=1))]
    contents.update(_cut_texts(dataset))
    if os.path.isdir(out_dir) and (existing := _dataset_files(out_dir)):
        if all(_file_holds(os.path.join(out_dir, f), blocks) for f, blocks in contents.items()):
            return  # this very data set (a re-run): its files, and any beside them, stand
        raise DataError(
            f"{out_dir} already holds another data set ({', '.join(existing)}); choose an empty "
            "or new --out, or remove those files first (files left from it, such as "
            "item_cate.txt, would be read with the new splits)")
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = new_directory(parent, f".{os.path.basename(out_dir)}.tmp-")
    except OSError as e:
        raise DataError(f"cannot write to {parent}: {e.strerror or e}; choose a writable --out") \
            from e
    try:
        for filename, lines in contents.items():
            _write_lines(os.path.join(tmp, filename), lines)
        if not os.path.exists(out_dir):
            try:
                os.rename(tmp, out_dir)  # the whole folder appears at once
                return
            except OSError:
                pass  # e.g. created meanwhile: fall back to moving file by file
        os.makedirs(out_dir, exist_ok=True)
        for filename in contents:  # each os.replace is atomic
            os.replace(os.path.join(tmp, filename), os.path.join(out_dir, filename))
    except OSError as e:
        raise DataError(f"cannot write the splits to {out_dir}: {e.strerror or e}; "
                        "choose a writable --out with free space") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cut_texts(dataset: Dataset) -> dict[str, list[str]]:
    """``<split>_cut.txt`` contents for the splits that record history lengths."""
    texts = {}
    for s in SPLITS:
        split = getattr(dataset, s)
        if split.history_lengths is not None:
            pairs = zip(split.user_ids.tolist(), split.history_lengths.tolist(), strict=True)
            texts[f"{s}{CUT_SUFFIX}.txt"] = ["".join(f"{u},{h}\n" for u, h in pairs)]
    return texts


# ---------------------------------------------------------------------------
# Reading


def _parse_int(text: str) -> int:
    """An int64 from a text field (no digit separators); raises ValueError otherwise."""
    if "_" in text:
        raise ValueError(text)
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{text} does not fit in 64 bits")
    return value


def _parse_split_slow(path: str, ncol_hint: int | None):
    """Line-by-line parse with exact errors; returns ``(users, items, positions, ts_or_None)``."""
    users: list[int] = []
    items: list[int] = []
    positions: list[int] = []
    ts: list[float] = []
    ncol = ncol_hint
    for lineno, line in iter_lines(path):
        fields = line.split(",")
        if ncol is None:
            ncol = len(fields)
        if len(fields) not in (3, 4):
            raise bad_line(path, lineno, line, f"{len(fields)} fields", _SPLIT_FORM)
        if len(fields) != ncol:
            raise bad_line(path, lineno, line,
                           f"{len(fields)} fields where the file's first line has {ncol}",
                           _SPLIT_FORM)
        try:
            u, i, p = (_parse_int(f) for f in fields[:3])
        except ValueError:
            raise bad_line(path, lineno, line, "user_id, item_id and position must be integers",
                           _SPLIT_FORM) from None
        if i < 1:
            raise bad_line(path, lineno, line, f"item id {i} < 1 (0 is padding)", _SPLIT_FORM)
        if ncol == 4:
            try:
                t = float(fields[3])
                if not math.isfinite(t):
                    raise ValueError
            except ValueError:
                raise bad_line(path, lineno, line, f"timestamp {fields[3].strip()!r} is not a "
                               "finite number", _SPLIT_FORM) from None
            ts.append(t)
        users.append(u)
        items.append(i)
        positions.append(p)
    return (np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64),
            np.asarray(positions, dtype=np.int64),
            np.asarray(ts, dtype=np.float64) if ncol == 4 else None)


def _first_line_columns(path: str) -> int | None:
    for _, line in iter_lines(path):
        return len(line.split(","))
    return None


def _parse_split(path: str):
    """Parses a split file with numpy's fast reader; any problem re-reads it line by line so
    that the error names the line."""
    ncol = _first_line_columns(path)
    if ncol in (3, 4):
        dtype = [("u", np.int64), ("i", np.int64), ("p", np.int64)]
        if ncol == 4:
            dtype.append(("t", np.float64))
        try:
            with open(path, "rb") as f:
                gz = f.read(2) == b"\x1f\x8b"
            if not gz:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    table = np.loadtxt(path, delimiter=",", dtype=dtype, comments=None,
                                       ndmin=1, encoding="utf-8")
                items = np.ascontiguousarray(table["i"])
                ts = np.ascontiguousarray(table["t"]) if ncol == 4 else None
                if len(items) and items.min() >= 1 and (ts is None or np.isfinite(ts).all()):
                    return (np.ascontiguousarray(table["u"]), items,
                            np.ascontiguousarray(table["p"]), ts)
        except (ValueError, Warning, io.UnsupportedOperation):
            pass
    return _parse_split_slow(path, None)


def _group(users: np.ndarray, items: np.ndarray, positions: np.ndarray,
           ts: np.ndarray | None) -> SplitData:
    """Users in first-appearance order; each user's items stable-sorted by position."""
    if len(users) == 0:
        return SplitData(np.zeros([0], np.int64), np.zeros([1], np.int64), np.zeros([0], np.int64),
                         None if ts is None else np.zeros([0], np.float64))
    uniq, first, inverse = np.unique(users, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    user_rank = rank[inverse.reshape(-1)]
    order = np.lexsort((positions, user_rank))  # stable: ties keep file order
    row_splits = np.concatenate([[0], np.cumsum(np.bincount(user_rank))]).astype(np.int64)
    return SplitData(
        user_ids=uniq[by_first].astype(np.int64),
        row_splits=row_splits,
        items=items[order],
        timestamps=None if ts is None else ts[order],
    )


def _find_files(folder: str) -> tuple[dict[str, str], str | None, str]:
    """The split and item-map paths of ``folder`` and the dataset's default name.

    Plain names (``train.txt``) win; otherwise one ``<name>_train.txt`` family is used.
    """
    plain = {s: os.path.join(folder, f"{s}.txt") for s in SPLITS}
    default_name = os.path.basename(os.path.normpath(folder)) or "dataset"
    if os.path.exists(plain["train"]):
        item_map = os.path.join(folder, f"{ITEM_MAP}.txt")
        return plain, item_map if os.path.exists(item_map) else None, default_name
    prefixes = sorted(f[: -len("_train.txt")] for f in os.listdir(folder)
                      if f.endswith("_train.txt"))
    if len(prefixes) == 1:
        pre = prefixes[0]
        files = {s: os.path.join(folder, f"{pre}_{s}.txt") for s in SPLITS}
        item_map = os.path.join(folder, f"{pre}_{ITEM_MAP}.txt")
        return files, item_map if os.path.exists(item_map) else None, pre
    if len(prefixes) > 1:
        raise DataError(f"dataset folder {folder} holds several datasets "
                        f"({', '.join(p + '_train.txt' for p in prefixes)}); keep one per folder")
    return plain, None, default_name


def _read_item_map(path: str) -> dict[int, str]:
    mapping: dict[int, str] = {}
    for lineno, line in iter_lines(path):
        raw, sep, index_text = line.rpartition(",")
        if not sep:
            raise bad_line(path, lineno, line, "no comma", _ITEM_MAP_FORM)
        try:
            index = _parse_int(index_text)
        except ValueError:
            raise bad_line(path, lineno, line, f"index {index_text!r} is not an integer",
                           _ITEM_MAP_FORM) from None
        if index < 1:
            raise bad_line(path, lineno, line, f"index {index} < 1 (0 is padding)",
                           _ITEM_MAP_FORM)
        if index in mapping:
            raise bad_line(path, lineno, line,
                           f"index {index} already maps to {mapping[index]!r}", _ITEM_MAP_FORM)
        mapping[index] = raw
    return mapping


def _read_item_categories(path: str, size: int) -> np.ndarray:
    """``item_cate.txt`` (ComiRec's ``item_index,category_id`` lines) -> int64 ``[size]``.

    Items without a line get category -1 (unknown).
    """
    categories = np.full(size, -1, np.int64)
    for lineno, line in iter_lines(path):
        try:
            index, category = (_parse_int(f) for f in line.split(","))
        except ValueError:  # not two fields, or not integers
            index = category = None
        if index is None or not 1 <= index < size or category < 0:
            raise bad_line(path, lineno, line, "not an item index and a category id",
                           f"'item_index,category_id' with 1 <= item_index < {size}, "
                           "category_id >= 0, e.g. '17,3'")
        categories[index] = category
    return categories


def _read_cuts(path: str, split: SplitData) -> np.ndarray:
    """A split's cut file -> int64 ``[U]`` history lengths in the split's user order.

    Every user of the split needs exactly one line, with ``1 <= history_length <
    its number of items`` (a non-empty history and at least one target).
    """
    row = {u: k for k, u in enumerate(split.user_ids.tolist())}
    lengths = np.full(split.num_users, -1, np.int64)
    sizes = split.lengths()
    for lineno, line in iter_lines(path):
        try:
            user, length = (_parse_int(f) for f in line.split(","))
        except ValueError:  # not two fields, or not integers
            raise bad_line(path, lineno, line, "not a user id and a history length",
                           _CUT_FORM) from None
        k = row.get(user)
        if k is None:
            raise bad_line(path, lineno, line, f"user {user} is not in the split", _CUT_FORM)
        if lengths[k] >= 0:
            raise bad_line(path, lineno, line, f"user {user} already has a cut", _CUT_FORM)
        if not 1 <= length < sizes[k]:
            raise bad_line(path, lineno, line,
                           f"user {user} has {int(sizes[k])} items, so its history length "
                           f"must be 1..{int(sizes[k]) - 1}", _CUT_FORM)
        lengths[k] = length
    if np.any(lengths < 0):
        missing = int(split.user_ids[np.argmax(lengths < 0)])
        raise DataError(f"{path} has no line for user {missing} ({int(np.sum(lengths < 0))} "
                        "users of the split have none); every user needs a history length: "
                        f"{_HOW_TO_MAKE} --split time")
    return lengths


def _check_items_are_mapped(files: dict[str, str], splits: dict[str, SplitData],
                            mapping: dict[int, str], item_map_path: str) -> None:
    """Raises DataError, naming the first line, if a split holds an item the item map lacks.

    With an item map, the map is the catalogue: an item outside it has no raw id,
    and one stray index (9999 in a 1,000-item map) would grow the item table to
    9,999 rows of invented ids, ruin the evaluation and surface only at export.
    """
    known = np.fromiter(mapping, dtype=np.int64, count=len(mapping))
    for s in SPLITS:
        stray = splits[s].items[~np.isin(splits[s].items, known)]
        if not len(stray):
            continue
        bad = int(stray[0])
        lineno, line = next((n, text) for n, text in iter_lines(files[s])
                            if _parse_int(text.split(",")[1]) == bad)
        raise DataError(
            f"{files[s]}:{lineno}: item id {bad} is not in {item_map_path} ({len(mapping):,} "
            f"items, ids {int(known.min())}..{int(known.max())}; {len(stray):,} lines of "
            f"{os.path.basename(files[s])} name ids it lacks): {line!r}. The split files and "
            "the item map must come from one data set: prepare it again into an empty folder.")


def load_dataset(path: str | os.PathLike, name: str | None = None) -> Dataset:
    """Loads a processed split folder (3- or 4-column split files, optional item map).

    Each split's users keep their first-appearance order in the file; each user's items are
    ordered by position (stable). An ``item_cate.txt`` beside the splits gives item categories;
    ``valid_cut.txt`` and ``test_cut.txt`` (a time split) give each user's history length.
    Without ``item_map.txt`` the vocabulary is
    ``["", "1", ..., str(max_item_id)]``; with it, ``vocabulary[index]`` is the raw id, every
    item of the splits must be in the map, and indices the map skips (rows no split uses)
    get ``str(index)``.

    Raises:
      DataError: a missing folder or file, a malformed line, an item id < 1, a user in two
        splits (allowed when valid and test have cut files), a cut file not covering its
        split, an empty train split, or (with an item map) an item the map lacks.
    """
    folder = os.fspath(path)
    contains = ("train.txt, valid.txt and test.txt (optionally item_map.txt), or ComiRec's "
                "<name>_train.txt, <name>_valid.txt, <name>_test.txt")
    if not os.path.exists(folder):
        raise DataError(f"dataset folder {folder} does not exist; it must contain {contains}: "
                        f"{_HOW_TO_MAKE}")
    if not os.path.isdir(folder):
        raise DataError(f"dataset path {folder} is not a folder; give the folder that contains "
                        f"{contains}")
    files, item_map_path, default_name = _find_files(folder)
    for s in SPLITS:
        if not os.path.isfile(files[s]):
            raise DataError(f"dataset folder {folder} has no {os.path.basename(files[s])}; it "
                            f"must contain {contains}: {_HOW_TO_MAKE}")

    splits: dict[str, SplitData] = {}
    max_item = 0
    for s in SPLITS:
        users, items, positions, ts = _parse_split(files[s])
        if len(items):
            max_item = max(max_item, int(items.max()))
        splits[s] = _group(users, items, positions, ts)
    if splits["train"].num_interactions == 0:
        raise DataError(f"{files['train']} has no interactions; the train split must not be "
                        f"empty: {_HOW_TO_MAKE}")
    for s in ("valid", "test"):  # the evaluated splits
        cut_path = files[s][: -len(".txt")] + f"{CUT_SUFFIX}.txt"
        if os.path.isfile(cut_path):
            splits[s].history_lengths = _read_cuts(cut_path, splits[s])
    # A time split shares users between splits; its evaluated splits say where to cut.
    timed = all(splits[s].history_lengths is not None for s in ("valid", "test"))
    disjoint = () if timed else (("train", "valid"), ("train", "test"), ("valid", "test"))
    for a, b in disjoint:
        both = np.intersect1d(splits[a].user_ids, splits[b].user_ids)
        if len(both):
            raise DataError(
                f"user {int(both[0])} appears in both {os.path.basename(files[a])} and "
                f"{os.path.basename(files[b])} ({len(both)} such users); the splits must be "
                f"user-disjoint: {_HOW_TO_MAKE}")

    mapping = _read_item_map(item_map_path) if item_map_path else {}
    if mapping:
        _check_items_are_mapped(files, splits, mapping, item_map_path)
    size = max([max_item, *mapping]) + 1
    vocabulary = [""] + [str(k) for k in range(1, size)]
    for index, raw in mapping.items():
        vocabulary[index] = raw
    # The category file sits beside the splits and shares their prefix (ComiRec's naming).
    categories_path = files["train"][: -len("train.txt")] + "item_cate.txt"
    categories = (_read_item_categories(categories_path, size)
                  if os.path.isfile(categories_path) else None)
    return Dataset(train=splits["train"], valid=splits["valid"], test=splits["test"],
                   vocabulary=vocabulary, name=name or default_name, item_categories=categories)
