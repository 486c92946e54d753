"""ComiRec preprocessing, the split files (write and load) and the prepare command line."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from dmi_tf.data import splits as splits_module
from dmi_tf.data.dataset import Dataset, RawLog, SplitData
from dmi_tf.data.prepare import main, prepare, split_sizes
from dmi_tf.data.splits import format_timestamp, load_dataset, write_dataset
from dmi_tf.errors import DataError

# A hand-built log, in file order: (user, item, timestamp).
# Item counts: pop 17, zeta 8, alpha 8 (a tie: zeta appears first), edge 5 (exactly the
# threshold; 2 of its 5 come from "diluted", who is dropped: single pass keeps it), rare 4.
# So the vocabulary is ["", "pop", "zeta", "alpha", "edge"].
# Users: "few" has 4 interactions; "diluted" has 5, but one is with "rare", so only 4 with kept
# items. Kept users, in first-appearance order: u1 u2 u3 u4 u5 u6.
HAND_LOG = [
    ("u1", "zeta", 5), ("u1", "alpha", 3), ("u1", "pop", 3), ("u1", "pop", 1), ("u1", "edge", 9),
    ("few", "pop", 1), ("few", "pop", 2), ("few", "zeta", 3), ("few", "alpha", 4),
    ("diluted", "rare", 1), ("diluted", "pop", 2), ("diluted", "pop", 3),
    ("diluted", "edge", 4), ("diluted", "edge", 5),
    ("u2", "alpha", 10), ("u2", "zeta", 20), ("u2", "pop", 30), ("u2", "rare", 40),
    ("u2", "pop", 50), ("u2", "edge", 60),
    ("u3", "pop", 1), ("u3", "pop", 1), ("u3", "pop", 1), ("u3", "zeta", 1), ("u3", "alpha", 1),
    ("u4", "zeta", 2), ("u4", "alpha", 2), ("u4", "zeta", 1), ("u4", "alpha", 1), ("u4", "pop", 5),
    ("u4", "rare", 3),
    ("u5", "pop", 7), ("u5", "zeta", 8), ("u5", "alpha", 9), ("u5", "edge", 10), ("u5", "pop", 11),
    ("u5", "rare", 12),
    ("u6", "alpha", 4), ("u6", "zeta", 4), ("u6", "pop", 4), ("u6", "pop", 4), ("u6", "pop", 0),
]
HAND_VOCABULARY = ["", "pop", "zeta", "alpha", "edge"]
HAND_KEPT_USERS = ["u1", "u2", "u3", "u4", "u5", "u6"]
# Each kept user's kept interactions, stable-sorted by time: (items, timestamps).
HAND_SEQUENCES = {
    "u1": ([1, 3, 1, 2, 4], [1, 3, 3, 5, 9]),      # alpha@3 before pop@3: file order
    "u2": ([3, 2, 1, 1, 4], [10, 20, 30, 50, 60]),  # rare@40 dropped
    "u3": ([1, 1, 1, 2, 3], [1, 1, 1, 1, 1]),       # all tied: file order
    "u4": ([2, 3, 2, 3, 1], [1, 1, 2, 2, 5]),
    "u5": ([1, 2, 3, 4, 1], [7, 8, 9, 10, 11]),
    "u6": ([1, 3, 2, 1, 1], [0, 4, 4, 4, 4]),
}


def make_log(rows, source="hand.log"):
    return RawLog(users=[u for u, _, _ in rows], items=[i for _, i, _ in rows],
                  timestamps=np.asarray([t for _, _, t in rows], dtype=np.float64),
                  source=source)


def module_level_shuffle(values, seed=1230):
    """The protocol's literal ``random.seed(1230); random.shuffle(users)``."""
    state = random.getstate()
    try:
        random.seed(seed)
        values = list(values)
        random.shuffle(values)
        return values
    finally:
        random.setstate(state)


def sequences_by_raw_user(dataset, shuffled):
    """{raw user: (items, timestamps)} over the three splits, via processed id = shuffled index."""
    out = {}
    for split in (dataset.train, dataset.valid, dataset.test):
        for k, uid in enumerate(split.user_ids.tolist()):
            a, b = split.row_splits[k], split.row_splits[k + 1]
            out[shuffled[uid]] = (split.items[a:b].tolist(), split.timestamps[a:b].tolist())
    return out


# --------------------------------------------------------------------------- prepare


def test_prepare_hand_log_vocabulary_and_filters():
    dataset = prepare(make_log(HAND_LOG), name="hand")
    assert dataset.name == "hand"
    assert dataset.vocabulary == HAND_VOCABULARY  # popularity order, tie in appearance order
    assert dataset.num_items == 5
    users = sum(s.num_users for s in (dataset.train, dataset.valid, dataset.test))
    assert users == 6  # "few" and "diluted" dropped
    assert sum(s.num_interactions for s in (dataset.train, dataset.valid, dataset.test)) == 30


def test_prepare_hand_log_split_and_order():
    dataset = prepare(make_log(HAND_LOG))
    shuffled = module_level_shuffle(HAND_KEPT_USERS)
    # 6 users: int(4.8) = 4 train, int(5.4) = 5 -> 1 valid, 1 test.
    assert dataset.train.user_ids.tolist() == [0, 1, 2, 3]
    assert dataset.valid.user_ids.tolist() == [4]
    assert dataset.test.user_ids.tolist() == [5]
    assert sequences_by_raw_user(dataset, shuffled) == {
        u: (items, [float(t) for t in ts]) for u, (items, ts) in HAND_SEQUENCES.items()}


def test_prepare_min_count_is_a_parameter():
    # With min_count=4, "rare" (4) is kept too, after "edge" (5); "few" now qualifies.
    dataset = prepare(make_log(HAND_LOG), min_count=4)
    assert dataset.vocabulary == [*HAND_VOCABULARY, "rare"]
    assert sum(s.num_users for s in (dataset.train, dataset.valid, dataset.test)) == 8


@pytest.mark.parametrize("n", [6, 7, 8, 9, 10, 11, 12, 19, 57, 100, 943])
def test_split_sizes_match_int_truncation(n):
    train_end, valid_end = split_sizes(n)
    assert train_end == int(n * 0.8) and valid_end == int(n * 0.9)


def test_split_sizes_hand_values():
    assert split_sizes(12) == (9, 10)   # 9.6 -> 9, 10.8 -> 10: 9 / 1 / 2
    assert split_sizes(943) == (754, 848)  # ML-100k: 754 / 94 / 95


def comirec_reference(rows, min_count=5, seed=1230):
    """A literal transcription of ComiRec's data.py (dicts, Python sorts, module random)."""
    users = defaultdict(list)
    item_count = defaultdict(int)
    for u, i, t in rows:
        item_count[i] += 1
        users[u].append((i, float(t)))
    items = sorted(item_count.items(), key=lambda x: x[1], reverse=True)
    item_total = 0
    for index, (_, num) in enumerate(items):
        if num >= min_count:
            item_total = index + 1
        else:
            break
    item_map = {items[k][0]: k + 1 for k in range(item_total)}
    user_ids = [u for u in users if sum(i in item_map for i, _ in users[u]) >= min_count]
    user_ids = module_level_shuffle(user_ids, seed)
    n = len(user_ids)
    bounds = [(0, int(n * 0.8)), (int(n * 0.8), int(n * 0.9)), (int(n * 0.9), n)]
    out = []
    for lo, hi in bounds:
        split = []
        for uid in range(lo, hi):
            seq = sorted(users[user_ids[uid]], key=lambda x: x[1])
            split.append((uid, [item_map[i] for i, _ in seq if i in item_map],
                          [t for i, t in seq if i in item_map]))
        out.append(split)
    vocabulary = [""] + [items[k][0] for k in range(item_total)]
    return out, vocabulary


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prepare_matches_comirec_reference_on_random_logs(seed):
    rng = np.random.default_rng(seed)
    n = 4000
    rows = list(zip(
        [f"u{k}" for k in rng.zipf(1.3, n) % 300],
        [f"i{k}" for k in rng.zipf(1.2, n) % 500],
        rng.integers(0, 40, n).tolist(),  # few distinct timestamps: many ties
        strict=True))
    dataset = prepare(make_log(rows), seed=1230 + seed)
    reference, vocabulary = comirec_reference(rows, seed=1230 + seed)
    assert dataset.vocabulary == vocabulary
    for split, expected in zip((dataset.train, dataset.valid, dataset.test), reference,
                               strict=True):
        assert split.user_ids.tolist() == [uid for uid, _, _ in expected]
        assert [split.sequence(k).tolist() for k in range(split.num_users)] == \
            [items for _, items, _ in expected]
        got_ts = [split.timestamps[split.row_splits[k]:split.row_splits[k + 1]].tolist()
                  for k in range(split.num_users)]
        assert got_ts == [ts for _, _, ts in expected]


def test_prepare_no_item_reaches_min_count():
    rows = [(f"u{k}", f"i{k % 3}", k) for k in range(12)]  # each item 4 times
    with pytest.raises(DataError, match=r"no item has >= 5 interactions.*lower --min-count"):
        prepare(make_log(rows))


def test_prepare_one_item_is_too_few():
    rows = [(f"u{k % 2}", "only", k) for k in range(10)] + [("u0", "other", 99)]
    with pytest.raises(DataError, match=r"only 1 item.*at least 2"):
        prepare(make_log(rows))


def test_prepare_too_few_users_for_three_splits():
    rows = [(f"u{u}", f"i{k % 2}", k) for u in range(5) for k in range(5)]
    with pytest.raises(DataError) as e:
        prepare(make_log(rows))
    message = str(e.value)
    assert "only 5 user(s)" in message and "4/0/1" in message
    assert "--min-count" in message


def test_prepare_empty_log():
    with pytest.raises(DataError, match="no interactions"):
        prepare(make_log([]))


# --------------------------------------------------------------------------- split files


def test_write_format(tmp_path):
    dataset = prepare(make_log(HAND_LOG))
    out = tmp_path / "hand"
    write_dataset(dataset, out)
    assert sorted(os.listdir(out)) == ["item_map.txt", "test.txt", "train.txt", "valid.txt"]
    assert (out / "item_map.txt").read_text() == "pop,1\nzeta,2\nalpha,3\nedge,4\n"
    shuffled = module_level_shuffle(HAND_KEPT_USERS)
    test_user = shuffled[5]
    items, ts = HAND_SEQUENCES[test_user]
    assert (out / "test.txt").read_text() == "".join(
        f"5,{i},{p},{t}\n" for p, (i, t) in enumerate(zip(items, ts, strict=True)))
    assert os.listdir(tmp_path) == ["hand"]  # no temporary folder left behind


def test_format_timestamp():
    assert format_timestamp(881250949.0) == "881250949"
    assert format_timestamp(0.0) == "0"
    assert format_timestamp(-3.0) == "-3"
    assert format_timestamp(1.5) == "1.5"
    assert format_timestamp(0.1) == "0.1"
    assert float(format_timestamp(1 / 3)) == 1 / 3


def test_round_trip(tmp_path):
    dataset = prepare(make_log(HAND_LOG))
    dataset.train.timestamps[0] = 1.25  # a non-integral timestamp survives too
    write_dataset(dataset, tmp_path / "hand")
    loaded = load_dataset(tmp_path / "hand")
    assert loaded.name == "hand"
    assert loaded.vocabulary == dataset.vocabulary
    for name in ("train", "valid", "test"):
        a, b = getattr(dataset, name), getattr(loaded, name)
        np.testing.assert_array_equal(a.user_ids, b.user_ids)
        np.testing.assert_array_equal(a.row_splits, b.row_splits)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        assert b.items.dtype == np.int64 and b.timestamps.dtype == np.float64


def test_write_is_byte_identical_when_rerun(tmp_path):
    dataset = prepare(make_log(HAND_LOG))
    write_dataset(dataset, tmp_path / "a")
    first = {f: (tmp_path / "a" / f).read_bytes() for f in os.listdir(tmp_path / "a")}
    write_dataset(prepare(make_log(HAND_LOG)), tmp_path / "a")  # over an existing folder
    write_dataset(prepare(make_log(HAND_LOG)), tmp_path / "b")
    for folder in ("a", "b"):
        assert {f: (tmp_path / folder / f).read_bytes()
                for f in os.listdir(tmp_path / folder)} == first


def test_write_rejects_comma_in_raw_id(tmp_path):
    rows = [(u, "a,b" if i == "pop" else i, t) for u, i, t in HAND_LOG]
    with pytest.raises(DataError, match=r"'a,b'.*comma"):
        write_dataset(prepare(make_log(rows)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_write_crash_leaves_no_half_written_file(tmp_path, monkeypatch):
    out = tmp_path / "out"  # a folder of other files: the splits are moved in one by one
    out.mkdir()
    (out / "notes.md").write_text("where the log came from\n")
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    real = splits_module._write_lines
    calls = []

    def crash_on_second_file(path, lines):
        calls.append(path)
        if len(calls) == 2:
            real(path, lines[: len(lines) // 2])
            raise OSError(28, "No space left on device")
        real(path, lines)

    monkeypatch.setattr(splits_module, "_write_lines", crash_on_second_file)
    other = prepare(make_log(HAND_LOG), seed=7)
    with pytest.raises(DataError, match="No space left"):
        write_dataset(other, out)
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["out"]


def write_files(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_load_comirec_three_column_files(tmp_path):
    # ComiRec's released form: <name>_train.txt etc., user,item,position, no item map.
    # User 4's lines are out of position order and interleaved with user 2's.
    write_files(tmp_path / "book_data", {
        "book_train.txt": "4,7,1\n2,3,0\n4,5,0\n2,9,1\n4,6,2\n",
        "book_valid.txt": "0,1,0\n0,2,1\n",
        "book_test.txt": "1,12,0\n1,1,1\n",
    })
    dataset = load_dataset(tmp_path / "book_data")
    assert dataset.name == "book"
    assert dataset.train.user_ids.tolist() == [4, 2]  # first-appearance order
    assert [dataset.train.sequence(k).tolist() for k in range(2)] == [[5, 7, 6], [3, 9]]
    assert dataset.train.timestamps is None
    assert dataset.valid.sequence(0).tolist() == [1, 2]
    assert dataset.vocabulary == ["", *[str(k) for k in range(1, 13)]]  # max id 12 is in test
    assert load_dataset(tmp_path / "book_data", name="books").name == "books"


def test_load_plain_names_with_item_map_and_stable_positions(tmp_path):
    write_files(tmp_path / "d", {
        "train.txt": "0,2,1,10\n0,1,0,5\n0,4,1,10\n1,2,0,7\n",  # two lines at position 1
        "valid.txt": "2,1,0,1\n",
        "test.txt": "\n3,2,0,1.5\n\n",
        "item_map.txt": "B01,1\nB,02,2\nC,4\n",  # index 3 unused; a comma in a raw id is read
    })
    dataset = load_dataset(tmp_path / "d")
    assert dataset.train.sequence(0).tolist() == [1, 2, 4]
    assert dataset.train.timestamps.tolist() == [5.0, 10.0, 10.0, 7.0]
    assert dataset.test.timestamps.tolist() == [1.5]
    assert dataset.vocabulary == ["", "B01", "B,02", "3", "C"]


def test_load_refuses_split_items_the_item_map_lacks(tmp_path):
    # One stray index grew the catalogue to 9,999 items of invented raw ids (test recall 0),
    # found only at export.
    write_files(tmp_path / "d", {
        "train.txt": "0,1,0\n0,2,1\n", "valid.txt": "5,1,0\n",
        "test.txt": "6,2,0\n6,9999,1\n6,1,2\n", "item_map.txt": "a,1\nb,2\n",
    })
    path = str(tmp_path / "d" / "test.txt")
    with pytest.raises(DataError, match=rf"{re.escape(path)}:2: item id 9999 is not in .*"
                                        r"item_map\.txt \(2 items, ids 1\.\.2.*prepare it again"):
        load_dataset(tmp_path / "d")


def test_load_missing_folder(tmp_path):
    with pytest.raises(DataError,
                       match=r"does not exist.*train\.txt.*python -m dmi_tf\.data\.prepare"):
        load_dataset(tmp_path / "nope")


def test_load_missing_split_file(tmp_path):
    write_files(tmp_path / "d", {"train.txt": "0,1,0\n", "test.txt": "1,1,0\n"})
    with pytest.raises(DataError, match=r"has no valid\.txt.*python -m dmi_tf\.data\.prepare"):
        load_dataset(tmp_path / "d")


@pytest.mark.parametrize("bad, problem", [
    ("1,2", "2 fields"),
    ("1,x,1", "must be integers"),
    ("1,2,1,9", "4 fields where the file's first line has 3"),
    ("1,0,1", "item id 0 < 1"),
    ("1,-4,1", "item id -4 < 1"),
    ("1,99999999999999999999,1", "must be integers"),
])
def test_load_malformed_line(tmp_path, bad, problem):
    write_files(tmp_path / "d", {"train.txt": "0,1,0\n\n" + bad + "\n",
                                 "valid.txt": "5,1,0\n", "test.txt": "6,1,0\n"})
    path = str(tmp_path / "d" / "train.txt")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "d")
    assert f"{path}:3:" in str(e.value) and problem in str(e.value) and bad in str(e.value)


def test_load_non_numeric_timestamp(tmp_path):
    write_files(tmp_path / "d", {"train.txt": "0,1,0,5\n", "valid.txt": "5,1,0,later\n",
                                 "test.txt": "6,1,0,1\n"})
    with pytest.raises(DataError, match=r"valid\.txt:1:.*'later'"):
        load_dataset(tmp_path / "d")


def test_load_user_in_two_splits(tmp_path):
    write_files(tmp_path / "d", {"train.txt": "0,1,0\n7,1,0\n", "valid.txt": "5,1,0\n",
                                 "test.txt": "7,2,0\n"})
    with pytest.raises(DataError, match=r"user 7 appears in both train\.txt and test\.txt"):
        load_dataset(tmp_path / "d")


def test_load_empty_train(tmp_path):
    write_files(tmp_path / "d", {"train.txt": "\n", "valid.txt": "5,1,0\n",
                                 "test.txt": "6,1,0\n"})
    with pytest.raises(DataError, match=r"train\.txt has no interactions"):
        load_dataset(tmp_path / "d")


def test_load_malformed_item_map(tmp_path):
    write_files(tmp_path / "d", {"train.txt": "0,1,0\n", "valid.txt": "5,1,0\n",
                                 "test.txt": "6,1,0\n", "item_map.txt": "a,1\nb,one\n"})
    with pytest.raises(DataError, match=r"item_map\.txt:2:.*'one'"):
        load_dataset(tmp_path / "d")


def test_load_fast_and_slow_paths_agree(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    split = SplitData.from_sequences(
        list(range(n // 10)),
        [rng.integers(1, 50, 10) for _ in range(n // 10)],
        [np.sort(rng.integers(0, 1000, 10)) + 0.5 * (k % 2) for k in range(n // 10)])
    empty = SplitData.from_sequences([], [], [])
    write_dataset(Dataset(split, empty, empty, ["", *[f"r{k}" for k in range(1, 50)]]),
                  tmp_path / "d")
    path = str(tmp_path / "d" / "train.txt")
    fast = splits_module._parse_split(path)
    slow = splits_module._parse_split_slow(path, None)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)
    loaded = load_dataset(tmp_path / "d")
    np.testing.assert_array_equal(loaded.train.items, split.items)
    np.testing.assert_array_equal(loaded.train.timestamps, split.timestamps)


# --------------------------------------------------------------------------- command line

HAND_INTER = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
    f"{u}\t{i}\t{t}\n" for u, i, t in HAND_LOG)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dmi_tf.data.prepare", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_writes_byte_identical_files_twice(tmp_path):
    (tmp_path / "hand.inter").write_text(HAND_INTER)
    outputs = []
    for out in ("a", "b"):
        code = main(["--input", str(tmp_path / "hand.inter"), "--format", "recbole",
                     "--out", str(tmp_path / out), "--name", "hand"])
        assert code == 0
        outputs.append({f: (tmp_path / out / f).read_bytes()
                        for f in sorted(os.listdir(tmp_path / out))})
    assert outputs[0] == outputs[1]
    assert load_dataset(tmp_path / "a").vocabulary == HAND_VOCABULARY


def test_cli_refuses_an_out_that_holds_another_data_set(tmp_path, capsys):
    # It replaced the split files and kept the old data set's item_cate.txt, which training
    # then read with the new items.
    (tmp_path / "hand.inter").write_text(HAND_INTER)
    out = tmp_path / "out"
    args = ["--input", str(tmp_path / "hand.inter"), "--format", "recbole", "--out", str(out)]
    assert main(args) == 0
    (out / "item_cate.txt").write_text("1,0\n2,1\n")
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    assert main(args) == 0  # the same data set again: nothing changes, item_cate.txt stays
    other = tmp_path / "other.inter"
    other.write_text(HAND_INTER.replace("pop", "pip"))
    assert main(["--input", str(other), "--format", "recbole", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} already holds another data set (item_cate.txt, "
                          "item_map.txt, test.txt, train.txt, valid.txt)")
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["hand.inter", "other.inter", "out"]


def test_cli_summary(tmp_path, capsys):
    (tmp_path / "hand.inter").write_text(HAND_INTER)
    assert main(["--input", str(tmp_path / "hand.inter"), "--format", "recbole",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "out: 4 items, train 4 users / 20 interactions, valid 1 users / 5 interactions, " \
           "test 1 users / 5 interactions" in out
    assert str(tmp_path / "out") in out


def test_cli_malformed_input_exits_2(tmp_path):
    bad = tmp_path / "bad.inter"
    bad.write_text(HAND_INTER + "u9\tpop\n")
    result = run_cli("--input", str(bad), "--format", "recbole", "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"{bad}:{HAND_INTER.count(chr(10)) + 1}:" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_cli_missing_input_exits_2(tmp_path):
    missing = tmp_path / "missing.inter"
    result = run_cli("--input", str(missing), "--format", "recbole", "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]
    assert result.stdout == ""


def test_cli_unknown_format_and_small_data(tmp_path, capsys):
    (tmp_path / "hand.inter").write_text(HAND_INTER)
    assert main(["--input", str(tmp_path / "hand.inter"), "--format", "csv",
                 "--out", str(tmp_path / "o")]) == 2
    assert "error: unknown input format 'csv'" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "hand.inter"), "--format", "recbole",
                 "--out", str(tmp_path / "o"), "--min-count", "9"]) == 2
    assert "lower --min-count" in capsys.readouterr().err
