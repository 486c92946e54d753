"""Readers of raw interaction logs.

Each reader returns a :class:`~dmi_tf.data.dataset.RawLog`: the interactions in
file order, raw user and item ids as strings, timestamps as float64. Every
interaction counts as implicit feedback (ratings are ignored).

A malformed line is a :class:`~dmi_tf.errors.DataError` that names the file and
the 1-based line number, shows the line and the expected form; no line is ever
skipped silently (blank lines are not interactions and are skipped). Any input
may be gzip-compressed (detected from its first bytes).

Formats (``read_raw(path, fmt)`` with ``fmt`` in :data:`FORMATS`):

- ``recbole``: RecBole atomic ``.inter`` file, tab-separated, typed header such as
  ``user_id:token  item_id:token  rating:float  timestamp:float``. Columns are found by
  the field name before the colon; without a ``timestamp`` column the interaction's
  index in the file (0, 1, 2, ...) is its timestamp.
- ``movielens``: ``u.data`` (``user<TAB>item<TAB>rating<TAB>ts``), ``ratings.dat``
  (``user::item::rating::ts``) or ``ratings.csv`` (header ``userId,movieId,rating,timestamp``),
  told apart by the first line.
- ``amazon``: review JSON lines with ``reviewerID``, ``asin`` and ``unixReviewTime``.
- ``taobao``: ``UserBehavior.csv``, ``user,item,category,behavior,timestamp`` without a
  header; only page views (behavior ``pv``) are kept.
- ``sequences``: the form sequential-recommendation papers share (SASRec, S3-Rec,
  the Amazon Beauty and Toys files): whitespace-separated ``user item item ...``, one
  user a line, or ``user item``, one interaction a line with each user's lines in time
  order. Which of the two a file is is told from the lines, and
  both read the same way, as a user followed by that user's next items. There is no
  time column: the order of the file is the time order, so an interaction's index in
  the file is its timestamp.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from collections.abc import Callable, Iterator
from itertools import compress
from operator import methodcaller

import numpy as np

from dmi_tf.data.dataset import RawLog
from dmi_tf.errors import DataError

FORMATS = ("recbole", "movielens", "amazon", "taobao", "sequences")

_CHUNK_BYTES = 1 << 22  # bytes read and parsed at a time
_SHOW = 120  # characters of a bad line shown in an error message
_GZIP_MAGIC = b"\x1f\x8b"
_TAOBAO_BEHAVIORS = ("pv", "buy", "cart", "fav")

_RECBOLE_FORM = (
    "tab-separated values matching the header, e.g. "
    "'196<TAB>242<TAB>3<TAB>881250949' under 'user_id:token<TAB>item_id:token<TAB>"
    "rating:float<TAB>timestamp:float'"
)
_UDATA_FORM = "'user<TAB>item<TAB>rating<TAB>timestamp', e.g. '196<TAB>242<TAB>3<TAB>881250949'"
_DAT_FORM = "'user::item::rating::timestamp', e.g. '1::1193::5::978300760'"
_CSV_FORM = "'userId,movieId,rating,timestamp', e.g. '1,296,5.0,1147880044'"
_AMAZON_FORM = (
    'one JSON object a line, e.g. {"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", '
    '"unixReviewTime": 1252800000, ...}'
)
_SEQUENCES_FORM = (
    "whitespace-separated 'user item item ...' (one user a line) or 'user item' (one "
    "interaction a line), e.g. '1 17 4 23'"
)
_TAOBAO_FORM = (
    "'user,item,category,behavior,timestamp' with behavior one of pv/buy/cart/fav, "
    "e.g. '1,2268318,2520377,pv,1511544070'"
)


# ---------------------------------------------------------------------------
# Shared helpers


def _shorten(line: str) -> str:
    return line if len(line) <= _SHOW else line[: _SHOW - 3] + "..."


def bad_line(path: str, lineno: int, line: str, problem: str, expected: str) -> DataError:
    """The error for a malformed line: file, 1-based line number, problem, the line, the form."""
    return DataError(
        f"{path}:{lineno}: malformed line ({problem}): {_shorten(line)!r}; expected {expected}. "
        "Fix or remove the line."
    )


def check_input_file(path: str | os.PathLike) -> str:
    """Returns ``path`` as a string, or raises DataError if it is not a readable file."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise DataError(f"input file {p} does not exist; check the path")
    if os.path.isdir(p):
        raise DataError(f"input {p} is a folder; give the path of the interaction file inside it")
    return p


def _open_binary(path: str):
    """Opens ``path`` for reading bytes, transparently un-gzipping it."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
        if magic == _GZIP_MAGIC:
            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check its permissions") from e


def _chunks(path: str, skip_lines: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yields ``(lineno, block)``: blocks of whole lines and the 1-based number of each first line.

    The first ``skip_lines`` physical lines (a header) are skipped. A broken gzip stream is a
    DataError naming the file.
    """
    lineno = 1
    with _open_binary(path) as f:
        try:
            for _ in range(skip_lines):
                if not f.readline():
                    return
                lineno += 1
            rest = b""
            while True:
                block = f.read(_CHUNK_BYTES)
                if not block:
                    if rest:
                        yield lineno, rest
                    return
                block = rest + block
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    rest = block
                    continue
                yield lineno, block[:cut]
                lineno += block.count(b"\n", 0, cut)
                rest = block[cut:]
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"{path}: could not be read after line {lineno} ({e}); "
                "the file is truncated or not a valid gzip file"
            ) from e


def _block_lines(path: str, lineno: int, block: bytes) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a block, decoded, without line ends, with their numbers."""
    for k, raw in enumerate(block.split(b"\n")):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{lineno + k}: not valid UTF-8 text ({e.reason} at byte {e.start}): "
                f"{_shorten(repr(raw))}; the file must be UTF-8 encoded"
            ) from e
        if lineno + k == 1 and line.startswith("\ufeff"):
            line = line[1:]  # a byte-order mark is not part of the data
        line = line.rstrip("\r")
        if line.strip():
            yield lineno + k, line


def iter_lines(path: str, skip_lines: int = 0) -> Iterator[tuple[int, str]]:
    """Yields ``(lineno, line)`` for each non-blank line, 1-based, without the line end.

    Decoding errors and broken gzip streams are DataErrors naming the file (and line).
    """
    for lineno, block in _chunks(path, skip_lines):
        yield from _block_lines(path, lineno, block)


def _first_line(path: str) -> tuple[int, str] | None:
    """The first non-blank line and its number, or None for an empty file."""
    lines = iter_lines(path)
    try:
        return next(lines, None)
    finally:
        lines.close()


def parse_timestamp(value: str) -> float:
    """A finite float from a text field; raises ValueError otherwise."""
    t = float(value)
    if not math.isfinite(t):
        raise ValueError(f"timestamp {value!r} is not finite")
    return t


def _make_log(path: str, users: list[str], items: list[str], ts, empty_hint: str) -> RawLog:
    if not items:
        raise DataError(f"{path} has no interactions ({empty_hint}); give a non-empty file")
    return RawLog(users=users, items=items, timestamps=np.asarray(ts, dtype=np.float64),
                  source=path)


def _fast_block(lineno: int, block: bytes, sep: str, ncols: int,
                cols: tuple[int, int, int | None], behavior_col: int | None):
    """Parses a block of well-formed lines with bulk string operations.

    Returns ``(users, items, timestamps or None, behaviors or None)``, or None when anything
    is unusual (a bad line, a blank line, a stray carriage return, bad UTF-8): the caller then
    reads the block line by line, which reports the exact line or handles the unusual case.
    """
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            return None
    body = text[:-1] if text.endswith("\n") else text
    lines = body.split("\n")
    if "" in lines or set(map(methodcaller("count", sep), lines)) != {ncols - 1}:
        return None
    if len(sep) > 1 and (sep[0] + "\n" in body or "\n" + sep[-1] in body):
        return None  # e.g. 'a::b:' then ':c': joining lines could shift a separator
    # Every line has exactly ncols fields, so the fields of the whole block, in order, are
    # the block split at separators and line ends.
    fields = body.replace("\n", sep).split(sep)
    n = len(lines)
    ucol, icol, tcol = cols
    users = list(map(str.strip, fields[ucol::ncols]))
    items = list(map(str.strip, fields[icol::ncols]))
    if "" in users or "" in items:
        return None
    ts = None
    if tcol is not None:
        try:
            ts = np.fromiter(map(float, fields[tcol::ncols]), dtype=np.float64, count=n)
        except ValueError:
            return None
        if not np.isfinite(ts).all():
            return None
    behaviors = None
    if behavior_col is not None:
        behaviors = list(map(str.strip, fields[behavior_col::ncols]))
        if not set(behaviors) <= set(_TAOBAO_BEHAVIORS):
            return None
    return users, items, ts, behaviors


def _read_delimited(
    path: str,
    sep: str,
    ncols: int,
    cols: tuple[int, int, int | None],
    expected: str,
    skip_lines: int = 0,
    behavior_col: int | None = None,
) -> tuple[list[str], list[str], np.ndarray]:
    """Reads ``sep``-separated lines of exactly ``ncols`` fields.

    ``cols`` gives the user, item and timestamp column (None: the interaction's index in the
    log is its timestamp). ``skip_lines`` physical lines (a header) are skipped. With
    ``behavior_col``, that column must be a Taobao behaviour and only page views are kept.
    Well-formed blocks of lines are parsed in bulk; a block with anything unusual is read
    line by line, so that a malformed line is reported with its number. Equal ids share one
    string object, which saves memory on logs of millions of lines.
    """
    users: list[str] = []
    items: list[str] = []
    ts: list[np.ndarray] = []
    user_ids: dict[str, str] = {}
    item_ids: dict[str, str] = {}
    for lineno, block in _chunks(path, skip_lines):
        parsed = _fast_block(lineno, block, sep, ncols, cols, behavior_col)
        if parsed is None:
            parsed = _slow_block(path, lineno, block, sep, ncols, cols, expected, behavior_col)
        u, i, t, behaviors = parsed
        if t is None:
            t = np.arange(len(items), len(items) + len(i), dtype=np.float64)
        if behaviors is not None:
            keep = [b == "pv" for b in behaviors]
            u, i, t = list(compress(u, keep)), list(compress(i, keep)), t[np.asarray(keep, bool)]
        users += map(user_ids.setdefault, u, u)
        items += map(item_ids.setdefault, i, i)
        ts.append(t)
    return users, items, np.concatenate(ts) if ts else np.zeros([0], np.float64)


def _slow_block(path: str, lineno: int, block: bytes, sep: str, ncols: int,
                cols: tuple[int, int, int | None], expected: str, behavior_col: int | None):
    """Line-by-line version of :func:`_fast_block` that raises on the first malformed line."""
    ucol, icol, tcol = cols
    users: list[str] = []
    items: list[str] = []
    ts: list[float] | None = None if tcol is None else []
    behaviors: list[str] | None = None if behavior_col is None else []
    for k, line in _block_lines(path, lineno, block):
        fields = line.split(sep)
        if len(fields) != ncols:
            raise bad_line(path, k, line, f"{len(fields)} fields, not {ncols}", expected)
        u = fields[ucol].strip()
        i = fields[icol].strip()
        if not u or not i:
            raise bad_line(path, k, line, "empty user or item id", expected)
        if ts is not None:
            try:
                ts.append(parse_timestamp(fields[tcol]))
            except ValueError:
                raise bad_line(path, k, line,
                               f"timestamp {fields[tcol].strip()!r} is not a number",
                               expected) from None
        if behaviors is not None:
            behavior = fields[behavior_col].strip()
            if behavior not in _TAOBAO_BEHAVIORS:
                raise bad_line(path, k, line, f"behavior {behavior!r} is not one of "
                               f"{'/'.join(_TAOBAO_BEHAVIORS)}", expected)
            behaviors.append(behavior)
        users.append(u)
        items.append(i)
    return users, items, None if ts is None else np.asarray(ts, dtype=np.float64), behaviors


# ---------------------------------------------------------------------------
# Readers


def read_recbole(path: str | os.PathLike) -> RawLog:
    """Reads a RecBole atomic ``.inter`` file (tab-separated, typed header)."""
    path = check_input_file(path)
    first = _first_line(path)
    if first is None:
        raise DataError(f"{path} is empty; a RecBole .inter file starts with a typed header "
                        "such as 'user_id:token<TAB>item_id:token<TAB>timestamp:float'")
    lineno, header = first
    names = [field.split(":", 1)[0].strip() for field in header.split("\t")]
    if not any(":" in field for field in header.split("\t")):
        raise bad_line(path, lineno, header, "no typed header",
                       "a RecBole header such as "
                       "'user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float'")
    for needed in ("user_id", "item_id"):
        if needed not in names:
            raise bad_line(path, lineno, header, f"the header has no {needed} field",
                           f"a header with user_id:token and item_id:token fields (found "
                           f"{', '.join(names)})")
    cols = (names.index("user_id"), names.index("item_id"),
            names.index("timestamp") if "timestamp" in names else None)
    users, items, ts = _read_delimited(path, "\t", len(names), cols, _RECBOLE_FORM,
                                       skip_lines=lineno)
    return _make_log(path, users, items, ts, "only a header")


def read_movielens(path: str | os.PathLike) -> RawLog:
    """Reads MovieLens ``u.data``, ``ratings.dat`` or ``ratings.csv``, told apart by content."""
    path = check_input_file(path)
    first = _first_line(path)
    if first is None:
        raise DataError(f"{path} is empty; give a MovieLens u.data, ratings.dat or ratings.csv")
    lineno, line = first
    if "::" in line:
        users, items, ts = _read_delimited(path, "::", 4, (0, 1, 3), _DAT_FORM)
    elif "\t" in line:
        users, items, ts = _read_delimited(path, "\t", 4, (0, 1, 3), _UDATA_FORM)
    elif "," in line:
        names = [f.strip().strip('"') for f in line.split(",")]
        if "userId" in names:  # ratings.csv header: locate the columns by name
            for needed in ("userId", "movieId", "timestamp"):
                if needed not in names:
                    raise bad_line(path, lineno, line, f"the header has no {needed} column",
                                   "the header 'userId,movieId,rating,timestamp'")
            cols = (names.index("userId"), names.index("movieId"), names.index("timestamp"))
            users, items, ts = _read_delimited(path, ",", len(names), cols, _CSV_FORM,
                                               skip_lines=lineno)
        else:  # headerless ratings.csv
            users, items, ts = _read_delimited(path, ",", 4, (0, 1, 3), _CSV_FORM)
    else:
        raise bad_line(path, lineno, line, "not a known MovieLens ratings format",
                       f"u.data lines {_UDATA_FORM}, ratings.dat lines {_DAT_FORM}, or "
                       f"ratings.csv lines {_CSV_FORM}")
    return _make_log(path, users, items, ts, "no rating lines")


def _json_id(value) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def read_amazon(path: str | os.PathLike) -> RawLog:
    """Reads Amazon review JSON lines (``reviewerID``, ``asin``, ``unixReviewTime``); gz ok."""
    path = check_input_file(path)
    users: list[str] = []
    items: list[str] = []
    ts: list[float] = []
    user_ids: dict[str, str] = {}
    item_ids: dict[str, str] = {}
    for lineno, line in iter_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problem = f"not valid JSON: {e.msg} at column {e.colno}"
            if line.lstrip().startswith("{'"):
                problem += ("; this looks like the Python-literal ('loose JSON') form of the 2014 "
                            "dump: use the strict JSON files or convert each line with "
                            "json.dumps(ast.literal_eval(line))")
            raise bad_line(path, lineno, line, problem, _AMAZON_FORM) from None
        if not isinstance(record, dict):
            raise bad_line(path, lineno, line, "not a JSON object", _AMAZON_FORM)
        missing = [k for k in ("reviewerID", "asin", "unixReviewTime") if k not in record]
        if missing:
            raise bad_line(path, lineno, line, f"missing key {', '.join(missing)}", _AMAZON_FORM)
        u = _json_id(record["reviewerID"])
        i = _json_id(record["asin"])
        if u is None or i is None:
            raise bad_line(path, lineno, line, "reviewerID and asin must be non-empty strings",
                           _AMAZON_FORM)
        t = record["unixReviewTime"]
        try:
            if isinstance(t, bool) or not isinstance(t, (int, float, str)):
                raise ValueError
            t = parse_timestamp(t) if isinstance(t, str) else float(t)
            if not math.isfinite(t):
                raise ValueError
        except (ValueError, OverflowError):
            raise bad_line(path, lineno, line,
                           f"unixReviewTime {record['unixReviewTime']!r} is not a number",
                           _AMAZON_FORM) from None
        users.append(user_ids.setdefault(u, u))  # equal ids share one string
        items.append(item_ids.setdefault(i, i))
        ts.append(t)
    return _make_log(path, users, items, ts, "no review lines")


def read_taobao(path: str | os.PathLike) -> RawLog:
    """Reads Taobao ``UserBehavior.csv`` (no header), keeping page views (``pv``) only."""
    path = check_input_file(path)
    users, items, ts = _read_delimited(path, ",", 5, (0, 1, 4), _TAOBAO_FORM, behavior_col=3)
    return _make_log(path, users, items, ts, "no 'pv' (page view) lines")


def read_sequences(path: str | os.PathLike) -> RawLog:
    """Reads ``user item item ...`` lines (or ``user item`` pairs), whitespace-separated; gz ok.

    The layout is told from the lines: a line with more than one item makes the file
    one user a line, and a user on two lines of such a file is an error naming both
    (two users given one id, or two files joined); with every line a single pair,
    each line is one interaction and a user's lines may be anywhere in the file.
    Interactions are in file order and take their index in the file as timestamp, so
    ``prepare``'s stable time sort keeps each user's items in file order.
    """
    path = check_input_file(path)
    users: list[str] = []
    items: list[str] = []
    user_ids: dict[str, str] = {}
    item_ids: dict[str, str] = {}
    first_line: dict[str, int] = {}
    repeated: tuple[int, int, str] | None = None  # (first line, line, text) of a user's 2nd line
    one_user_a_line = False
    for lineno, line in iter_lines(path):
        fields = line.split()
        if len(fields) < 2:
            raise bad_line(path, lineno, line, "a user with no item", _SEQUENCES_FORM)
        user = user_ids.setdefault(fields[0], fields[0])
        one_user_a_line |= len(fields) > 2
        seen = first_line.setdefault(user, lineno)
        if seen != lineno and repeated is None:
            repeated = (seen, lineno, line)
        if one_user_a_line and repeated is not None:
            seen, lineno, line = repeated
            raise bad_line(path, lineno, line,
                           f"user {line.split()[0]!r} already had line {seen}, and lines with "
                           "several items make this a one-user-a-line file", _SEQUENCES_FORM)
        users += [user] * (len(fields) - 1)
        items += map(item_ids.setdefault, fields[1:], fields[1:])
    return _make_log(path, users, items, np.arange(len(items), dtype=np.float64),
                     "no sequence lines")


_READERS: dict[str, Callable[[str | os.PathLike], RawLog]] = {
    "recbole": read_recbole,
    "movielens": read_movielens,
    "amazon": read_amazon,
    "taobao": read_taobao,
    "sequences": read_sequences,
}


def read_raw(path: str | os.PathLike, fmt: str) -> RawLog:
    """Reads a raw log in format ``fmt`` (one of :data:`FORMATS`)."""
    reader = _READERS.get(fmt)
    if reader is None:
        raise DataError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
    return reader(path)
