"""Raw-log readers: every format, malformed lines (file and line named), empty and missing files."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from dmi_tf.data import readers as readers_module
from dmi_tf.data.readers import (
    FORMATS,
    read_amazon,
    read_movielens,
    read_raw,
    read_recbole,
    read_sequences,
    read_taobao,
)
from dmi_tf.errors import DataError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def check(log, users, items, timestamps):
    assert log.users == users
    assert log.items == items
    assert log.timestamps.dtype == np.float64
    np.testing.assert_array_equal(log.timestamps, np.asarray(timestamps, dtype=np.float64))


def assert_line_error(excinfo, path, lineno, shown):
    message = str(excinfo.value)
    assert f"{path}:{lineno}:" in message
    assert shown in message
    assert "expected" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- RecBole


def test_recbole_columns_found_by_name(tmp_path):
    # item_id first, an extra column, timestamp not last: columns are found by name.
    path = write(tmp_path, "x.inter",
                 "item_id:token\trating:float\ttimestamp:float\tuser_id:token\textra:token_seq\n"
                 "i1\t5\t100\tu1\ta b\n"
                 "\n"
                 "i2\t3\t99.5\tu2\t\n"
                 "i1\t1\t101\tu1\tc\n")
    log = read_recbole(path)
    check(log, ["u1", "u2", "u1"], ["i1", "i2", "i1"], [100, 99.5, 101])
    assert log.source == path


def test_recbole_without_timestamp_uses_line_index(tmp_path):
    path = write(tmp_path, "x.inter", "user_id:token\titem_id:token\nu1\ti1\nu2\ti2\n\nu1\ti3\n")
    check(read_recbole(path), ["u1", "u2", "u1"], ["i1", "i2", "i3"], [0, 1, 2])


def test_recbole_ml100k_style(tmp_path):
    path = write(tmp_path, "ml.inter",
                 "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                 "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    check(read_raw(path, "recbole"), ["196", "186"], ["242", "302"], [881250949, 891717742])


@pytest.mark.parametrize("bad, lineno", [
    ("u2\ti2\t7\n", 3),             # a field missing
    ("u2\ti2\t7\t9\t1\n", 3),       # a field too many
    ("u2\ti2\t7\tsoon\n", 3),       # non-numeric timestamp
    ("u2\t\t7\t9\n", 3),            # empty item id
])
def test_recbole_malformed_line(tmp_path, bad, lineno):
    path = write(tmp_path, "x.inter",
                 "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                 "u1\ti1\t5\t100\n" + bad + "u3\ti3\t1\t2\n")
    with pytest.raises(DataError) as e:
        read_recbole(path)
    assert_line_error(e, path, lineno, bad.rstrip("\n").split("\t")[0])


def test_recbole_header_without_user_id(tmp_path):
    path = write(tmp_path, "x.inter", "session_id:token\titem_id:token\ns1\ti1\n")
    with pytest.raises(DataError, match=r"x\.inter:1:.*no user_id field"):
        read_recbole(path)


def test_recbole_untyped_header(tmp_path):
    path = write(tmp_path, "x.inter", "196\t242\t3\t881250949\n")
    with pytest.raises(DataError, match=r"x\.inter:1:.*no typed header"):
        read_recbole(path)


def test_recbole_only_header_is_empty(tmp_path):
    path = write(tmp_path, "x.inter", "user_id:token\titem_id:token\n\n")
    with pytest.raises(DataError, match="no interactions"):
        read_recbole(path)


# --------------------------------------------------------------------------- MovieLens


def test_movielens_u_data(tmp_path):
    path = write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    check(read_movielens(path), ["196", "186"], ["242", "302"], [881250949, 891717742])


def test_movielens_ratings_dat(tmp_path):
    path = write(tmp_path, "ratings.dat", "1::1193::5::978300760\r\n1::661::3::978302109\r\n")
    check(read_movielens(path), ["1", "1"], ["1193", "661"], [978300760, 978302109])


def test_movielens_ratings_csv_with_header(tmp_path):
    path = write(tmp_path, "ratings.csv",
                 "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n2,306,3.5,1147868817\n")
    check(read_movielens(path), ["1", "2"], ["296", "306"], [1147880044, 1147868817])


def test_movielens_ratings_csv_columns_by_name(tmp_path):
    path = write(tmp_path, "ratings.csv", "movieId,userId,timestamp,rating\n296,1,10,5.0\n")
    check(read_movielens(path), ["1"], ["296"], [10])


@pytest.mark.parametrize("name, text, lineno, shown", [
    ("u.data", "196\t242\t3\t881250949\n186\t302\t3\n", 2, "186"),
    ("u.data", "196\t242\t3\t881250949\n186\t302\t3\tnever\n", 2, "never"),
    ("ratings.dat", "1::1193::5::978300760\n1::661::3::97830x\n", 2, "97830x"),
    ("ratings.dat", "1::1193::5::978300760\n\n1::661\n", 3, "1::661"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,296,5.0,1\n1,296,5.0\n", 3, "1,296,5.0"),
])
def test_movielens_malformed_line(tmp_path, name, text, lineno, shown):
    path = write(tmp_path, name, text)
    with pytest.raises(DataError) as e:
        read_movielens(path)
    assert_line_error(e, path, lineno, shown)


def test_movielens_unknown_layout(tmp_path):
    path = write(tmp_path, "ratings.txt", "196 242 3 881250949\n")
    with pytest.raises(DataError, match=r"ratings\.txt:1:.*not a known MovieLens"):
        read_movielens(path)


def test_movielens_header_only_is_empty(tmp_path):
    path = write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n")
    with pytest.raises(DataError, match="no interactions"):
        read_movielens(path)


# --------------------------------------------------------------------------- Amazon

AMAZON = [
    {"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1252800000},
    {"reviewerID": "A2", "asin": "B2", "unixReviewTime": 1252800001, "summary": "x, y"},
    {"reviewerID": "A1", "asin": "B2", "unixReviewTime": 1252799999},
]


def test_amazon_json_lines(tmp_path):
    path = write(tmp_path, "reviews.json", "\n".join(json.dumps(r) for r in AMAZON) + "\n\n")
    check(read_amazon(path), ["A1", "A2", "A1"], ["B1", "B2", "B2"],
          [1252800000, 1252800001, 1252799999])


def test_amazon_gzip(tmp_path):
    path = tmp_path / "reviews_Books_5.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in AMAZON:
            f.write(json.dumps(r) + "\n")
    check(read_raw(str(path), "amazon"), ["A1", "A2", "A1"], ["B1", "B2", "B2"],
          [1252800000, 1252800001, 1252799999])


@pytest.mark.parametrize("bad, problem", [
    ('{"reviewerID": "A3", "asin": "B3", "unixReviewTime": 1', "not valid JSON"),
    ('{"reviewerID": "A3", "unixReviewTime": 1}', "missing key asin"),
    ('{"reviewerID": "A3", "asin": "B3", "unixReviewTime": "June"}', "is not a number"),
    ('["A3", "B3", 1]', "not a JSON object"),
    ("{'reviewerID': 'A3', 'asin': 'B3', 'unixReviewTime': 1}", "loose JSON"),
])
def test_amazon_malformed_line(tmp_path, bad, problem):
    path = write(tmp_path, "reviews.json", json.dumps(AMAZON[0]) + "\n" + bad + "\n")
    with pytest.raises(DataError) as e:
        read_amazon(path)
    assert_line_error(e, path, 2, "A3")
    assert problem in str(e.value)


def test_amazon_malformed_line_in_gzip(tmp_path):
    path = tmp_path / "reviews.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(AMAZON[0]) + "\n" + json.dumps(AMAZON[1]) + "\nnot json\n")
    with pytest.raises(DataError) as e:
        read_amazon(str(path))
    assert_line_error(e, str(path), 3, "not json")


# --------------------------------------------------------------------------- Taobao


def test_taobao_keeps_page_views_only(tmp_path):
    path = write(tmp_path, "UserBehavior.csv",
                 "1,2268318,2520377,pv,1511544070\n"
                 "1,2333346,2520771,buy,1511561733\n"
                 "2,2576651,149192,pv,1511572885\n"
                 "1,3830808,4181361,cart,1511593493\n"
                 "1,4365585,2520377,fav,1511596146\n"
                 "1,2268318,2520377,pv,1511544000\n")
    check(read_taobao(path), ["1", "2", "1"], ["2268318", "2576651", "2268318"],
          [1511544070, 1511572885, 1511544000])


@pytest.mark.parametrize("bad, problem", [
    ("7,2333346,2520771,pv", "4 fields, not 5"),
    ("7,2333346,2520771,pv,15115x", "is not a number"),
    ("7,2333346,pv,2520771,1511561733", "behavior '2520771'"),
    ("7,2333346,2520771,buy,tomorrow", "is not a number"),  # checked on dropped lines too
])
def test_taobao_malformed_line(tmp_path, bad, problem):
    path = write(tmp_path, "UserBehavior.csv", "1,2268318,2520377,pv,1511544070\n" + bad + "\n")
    with pytest.raises(DataError) as e:
        read_taobao(path)
    assert_line_error(e, path, 2, bad)
    assert problem in str(e.value)


def test_taobao_without_page_views_is_empty(tmp_path):
    path = write(tmp_path, "UserBehavior.csv", "1,2333346,2520771,buy,1511561733\n")
    with pytest.raises(DataError, match="'pv'"):
        read_taobao(path)


# --------------------------------------------------------------------------- sequences


def test_sequences_one_user_a_line(tmp_path):
    # Tabs and runs of spaces both separate; the file's order is the time order.
    path = write(tmp_path, "beauty.txt", "1 10 11 12\n\n2\t11  13\n3 10\n")
    log = read_sequences(path)
    check(log, ["1", "1", "1", "2", "2", "3"], ["10", "11", "12", "11", "13", "10"],
          [0, 1, 2, 3, 4, 5])


def test_sequences_one_interaction_a_line(tmp_path):
    # Pairs: a user's lines need not be adjacent; each keeps its place in time.
    path = write(tmp_path, "pairs.txt", "1 10\n2 11\n1 12\n2 13\n")
    log = read_sequences(path)
    check(log, ["1", "2", "1", "2"], ["10", "11", "12", "13"], [0, 1, 2, 3])


def test_sequences_gzip(tmp_path):
    path = tmp_path / "seq.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("7 1 2\n8 2 3 4\n")
    log = read_sequences(str(path))
    check(log, ["7", "7", "8", "8", "8"], ["1", "2", "2", "3", "4"], [0, 1, 2, 3, 4])


def test_sequences_user_without_items(tmp_path):
    path = write(tmp_path, "seq.txt", "1 10 11\n2\n")
    with pytest.raises(DataError, match="a user with no item") as e:
        read_sequences(path)
    assert_line_error(e, path, 2, "'2'")


def test_sequences_user_on_two_lines_of_a_user_a_line_file(tmp_path):
    # Lines of several items make it a one-user-a-line file: user 1's second line is
    # named with the line it first had, whichever line revealed the layout.
    path = write(tmp_path, "seq.txt", "1 10\n2 11\n1 12\n3 10 11 12\n")
    with pytest.raises(DataError, match="user '1' already had line 1") as e:
        read_sequences(path)
    assert_line_error(e, path, 3, "'1 12'")


def test_sequences_split_matches_recbole_with_positions(tmp_path):
    # The reference numbers were made from the file as a RecBole .inter with each item's
    # place as its timestamp; both readers must give the same split.
    from dmi_tf.data.prepare import prepare

    rng = np.random.default_rng(0)
    lines, inter = [], ["user_id:token\titem_id:token\ttimestamp:float"]
    t = 0
    for user in range(1, 61):
        items = rng.integers(1, 25, size=rng.integers(5, 12)).tolist()
        lines.append(" ".join(map(str, [user, *items])))
        for item in items:
            inter.append(f"{user}\t{item}\t{t}")
            t += 1
    a = prepare(read_sequences(write(tmp_path, "s.txt", "\n".join(lines) + "\n")))
    b = prepare(read_recbole(write(tmp_path, "s.inter", "\n".join(inter) + "\n")))
    assert a.vocabulary == b.vocabulary
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(a, split).items, getattr(b, split).items)
        np.testing.assert_array_equal(getattr(a, split).row_splits, getattr(b, split).row_splits)


# --------------------------------------------------------------------------- all formats


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_file(tmp_path, fmt):
    path = write(tmp_path, "empty.txt", "")
    with pytest.raises(DataError, match=r"empty|no interactions") as e:
        read_raw(path, fmt)
    assert path in str(e.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_blank_lines_only_is_empty(tmp_path, fmt):
    path = write(tmp_path, "blank.txt", "\n  \n\n")
    with pytest.raises(DataError, match=r"empty|no interactions"):
        read_raw(path, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_nonexistent_path(tmp_path, fmt):
    path = str(tmp_path / "nowhere" / "data.txt")
    with pytest.raises(DataError, match="does not exist") as e:
        read_raw(path, fmt)
    assert path in str(e.value)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_raw(str(tmp_path), "taobao")


def test_unknown_format_lists_valid_ones(tmp_path):
    path = write(tmp_path, "u.data", "196\t242\t3\t881250949\n")
    with pytest.raises(DataError) as e:
        read_raw(path, "netflix")
    message = str(e.value)
    assert "'netflix'" in message
    for fmt in FORMATS:
        assert fmt in message


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"196\t242\t3\t881250949\n1\xff6\t302\t3\t891717742\n")
    with pytest.raises(DataError, match=r"u\.data:2: not valid UTF-8"):
        read_movielens(str(path))


def test_long_line_is_truncated_in_message(tmp_path):
    path = write(tmp_path, "u.data", "196\t242\t3\t881250949\n" + "x" * 5000 + "\n")
    with pytest.raises(DataError) as e:
        read_movielens(path)
    assert "u.data:2:" in str(e.value)
    assert len(str(e.value)) < 800


# --------------------------------------------------------------------------- bulk parsing


def slow_reference(path, sep, ncols, cols, skip_lines=0, behavior_col=None):
    """The whole file through the line-by-line parser only."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    block = b"\n".join(lines[skip_lines:])
    u, i, t, b = readers_module._slow_block(path, skip_lines + 1, block, sep, ncols, cols,
                                            "x", behavior_col)
    if t is None:
        t = np.arange(len(u), dtype=np.float64)
    if b is not None:
        keep = [x == "pv" for x in b]
        u = [x for x, k in zip(u, keep, strict=True) if k]
        i = [x for x, k in zip(i, keep, strict=True) if k]
        t = t[np.asarray(keep, bool)]
    return u, i, t.tolist()


IRREGULAR_TAOBAO = (
    "1,10,100,pv,5\n"
    "2,11,100,buy,6\n"
    "\n"
    " 3 , 12 ,100, pv , 7 \n"  # whitespace around fields
    "4,13,100,pv,8\r\n"         # a Windows line end
    + "".join(f"{k},{k % 7 + 1},9,{'pv' if k % 3 else 'cart'},{k}.5\n" for k in range(5, 60))
    + "   \n"
    "61,14,100,pv,1e3"          # no final line end
)


@pytest.mark.parametrize("chunk", [8, 16, 37, 64, 1 << 22])
def test_bulk_and_line_by_line_parsing_agree(tmp_path, monkeypatch, chunk):
    path = write(tmp_path, "UserBehavior.csv", "\ufeff" + IRREGULAR_TAOBAO)
    monkeypatch.setattr(readers_module, "_CHUNK_BYTES", chunk)
    log = read_taobao(path)
    u, i, t = slow_reference(path, ",", 5, (0, 1, 4), behavior_col=3)
    assert log.users == u and log.items == i and log.timestamps.tolist() == t
    assert log.users[:4] == ["1", "3", "4", "5"] and log.timestamps[-1] == 1000.0


@pytest.mark.parametrize("chunk", [8, 29, 1 << 22])
def test_bulk_parsing_of_ratings_dat_with_colons_in_ids(tmp_path, monkeypatch, chunk):
    text = ("u1::i:1::5::10\n:u2::i2::4::11\nu3:::i3::3::12\n"
            + "".join(f"u{k}::i{k}::1::{k}\n" for k in range(4, 30)))
    path = write(tmp_path, "ratings.dat", text)
    monkeypatch.setattr(readers_module, "_CHUNK_BYTES", chunk)
    log = read_movielens(path)
    u, i, t = slow_reference(path, "::", 4, (0, 1, 3))
    assert log.users == u and log.items == i and log.timestamps.tolist() == t
    assert log.users[:3] == ["u1", ":u2", "u3"] and log.items[:3] == ["i:1", "i2", ":i3"]


@pytest.mark.parametrize("chunk", [8, 64, 1 << 22])
def test_malformed_line_number_across_blocks(tmp_path, monkeypatch, chunk):
    lines = [f"{k}\t{k}\t5\t{k}" for k in range(1, 200)]
    lines[150] = "151\t151\t5"
    lines.insert(40, "")
    path = write(tmp_path, "u.data", "\n".join(lines) + "\n")
    monkeypatch.setattr(readers_module, "_CHUNK_BYTES", chunk)
    with pytest.raises(DataError) as e:
        read_movielens(path)
    assert_line_error(e, path, 152, "151\\t151\\t5")


@pytest.mark.parametrize("chunk", [8, 1 << 22])
def test_recbole_header_skipped_across_blocks(tmp_path, monkeypatch, chunk):
    path = write(tmp_path, "x.inter", "\n\nuser_id:token\titem_id:token\n"
                 + "".join(f"u{k}\ti{k}\n" for k in range(30)))
    monkeypatch.setattr(readers_module, "_CHUNK_BYTES", chunk)
    log = read_recbole(path)
    assert log.users == [f"u{k}" for k in range(30)]
    assert log.timestamps.tolist() == list(range(30))


def test_truncated_gzip(tmp_path):
    data = gzip.compress(("\n".join(json.dumps(r) for r in AMAZON * 200) + "\n").encode())
    path = tmp_path / "reviews.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or not a valid gzip file") as e:
        read_amazon(str(path))
    assert str(path) in str(e.value)
