"""Streaming readers of user histories (raw item ids, oldest first), for batch inference.

Formats (``--format``, or told from the name):

* ``csv`` (``.csv``): one user a line, ``user_id,item_id,item_id,...`` (no header;
  a line with the user alone is an empty history; ``""`` between commas is padding);
* ``jsonl`` (``.jsonl``, ``.json``, ``.ndjson``): one JSON object a line,
  ``{"user": "u1", "history": ["i1", "i2"]}`` (numbers are taken as their text);
* ``split``: a split file of a prepared folder (``train.txt``, ``valid.txt``,
  ``test.txt``: ``user_id,item_id,position[,timestamp]`` lines, each user's lines
  together, as ``prepare`` writes them); item ids are the folder's indices, turned
  into raw ids through the ``item_map.txt`` beside it. A user's history is its
  whole sequence in the file, by position.

Any of them may be gzip-compressed. Files are read a line at a time, so memory
does not grow with the file; blank lines are skipped, a malformed line is a
DataError naming the file and line.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator

from dmi_tf.data import splits
from dmi_tf.data.readers import bad_line, check_input_file
from dmi_tf.errors import DataError

FORMATS = ("csv", "jsonl", "split")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
_CSV_FORM = "'user_id,item_id,item_id,...' (raw ids, oldest first), e.g. 'u7,B00012,B00345'"
_JSON_FORM = '{"user": "u7", "history": ["B00012", "B00345"]}'
_SPLIT_FORM = "'user_id,item_id,position[,timestamp]' (integers), e.g. '7,17,0,881250949'"


def detect_format(path: str) -> str:
    """The format a file's name says (``split`` for a split file beside an item map)."""
    name = path[:-3] if path.endswith(".gz") else path
    suffix = os.path.splitext(name)[1].lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if suffix == ".txt" and _item_map_beside(path) is not None:
        return "split"
    raise DataError(f"cannot tell the format of {path} from its name; pass --format "
                    f"{'|'.join(FORMATS)}")


class HistoryReader:
    """Iterates ``(user, raw ids)`` over a histories file; :attr:`position` is the bytes read.

    Args:
      path: the file.
      fmt: one of :data:`FORMATS`.
    """

    def __init__(self, path: str, fmt: str):
        if fmt not in FORMATS:
            raise DataError(f"unknown histories format {fmt!r}; use one of {', '.join(FORMATS)}")
        if os.path.isdir(path):
            raise DataError(f"--histories {path} is a folder; give a file (for a prepared "
                            "folder, one of its split files, e.g. test.txt)")
        self.path, self.fmt = check_input_file(path), fmt
        self.size = os.path.getsize(path)
        self._raw = None
        self._vocabulary: dict[int, str] | None = None
        if fmt == "split":
            item_map = _item_map_beside(path)
            if item_map is None:
                raise DataError(f"{path} has no item_map.txt beside it to turn its item indices "
                                "into raw ids; give a split file of a folder prepare wrote")
            self._vocabulary = splits._read_item_map(item_map)

    @property
    def position(self) -> int:
        """Bytes of the file read so far (compressed bytes for a gzip file); all once read."""
        if self._raw is None:
            return 0
        return self.size if self._raw.closed else self._raw.tell()

    def __iter__(self) -> Iterator[tuple[str, list[str]]]:
        with open(self.path, "rb") as raw:
            self._raw = raw
            # The compressed bytes read measure progress through a gzip file.
            stream = gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw
            lines = self._lines(stream)
            if self.fmt == "split":
                yield from self._split_users(lines)
            else:
                parse = self._csv if self.fmt == "csv" else self._json
                for lineno, line in lines:
                    yield parse(lineno, line)

    def _lines(self, stream) -> Iterator[tuple[int, str]]:
        for lineno, data in enumerate(stream, start=1):
            try:
                line = data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise DataError(f"{self.path}:{lineno}: not UTF-8 text; histories files are "
                                "UTF-8") from None
            except (OSError, EOFError) as e:  # a broken gzip stream
                raise DataError(f"{self.path}: cannot read it ({e}); check the file") from e
            if line.strip():
                yield lineno, line

    def _csv(self, lineno: int, line: str) -> tuple[str, list[str]]:
        user, *items = line.split(",")
        if not user:
            raise bad_line(self.path, lineno, line, "no user id", _CSV_FORM)
        return user, items

    def _json(self, lineno: int, line: str) -> tuple[str, list[str]]:
        try:
            record = json.loads(line)
            user, history = record["user"], record["history"]
            if not isinstance(history, list) or isinstance(user, (list, dict)):
                raise TypeError
            return str(user), [str(item) for item in history]
        except (ValueError, KeyError, TypeError):
            raise bad_line(self.path, lineno, line, "not a JSON object with a user and a list "
                           "history", _JSON_FORM) from None

    def _split_users(self, lines) -> Iterator[tuple[str, list[str]]]:
        user, rows = None, []
        for lineno, line in lines:
            fields = line.split(",")
            try:
                if len(fields) not in (3, 4):
                    raise ValueError
                u, item, position = (int(f) for f in fields[:3])
            except ValueError:
                raise bad_line(self.path, lineno, line, "not 3 or 4 integer fields",
                               _SPLIT_FORM) from None
            if u != user:
                if user is not None:
                    yield self._split_history(user, rows)
                user, rows = u, []
            rows.append((position, item))
        if user is not None:
            yield self._split_history(user, rows)

    def _split_history(self, user: int, rows: list[tuple[int, int]]) -> tuple[str, list[str]]:
        rows.sort(key=lambda row: row[0])  # stable: ties keep the file's order
        return str(user), [self._vocabulary.get(item, str(item)) for _, item in rows]


def _item_map_beside(path: str) -> str | None:
    """The item map of the folder a split file is in (plain or ComiRec's prefix), if any."""
    folder, name = os.path.split(os.path.abspath(path))
    base = name[:-3] if name.endswith(".gz") else name
    for split in splits.SPLITS:
        if base.endswith(f"{split}.txt"):
            candidate = os.path.join(folder, base[: -len(f"{split}.txt")] + "item_map.txt")
            return candidate if os.path.isfile(candidate) else None
    return None
