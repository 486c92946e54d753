"""The time split: windows, filters, the cut files, evaluation's cut and the command line."""

from __future__ import annotations

import numpy as np
import pytest

from dmi_tf.data.dataset import RawLog
from dmi_tf.data.pipeline import evaluation_arrays
from dmi_tf.data.prepare import main
from dmi_tf.data.splits import load_dataset, write_dataset
from dmi_tf.data.time_split import cut_times, parse_cutoff, time_split
from dmi_tf.errors import DataError, UserError


def make_log(rows, source="hand.log"):
    return RawLog(users=[u for u, _, _ in rows], items=[i for _, i, _ in rows],
                  timestamps=np.asarray([t for _, _, t in rows], dtype=np.float64),
                  source=source)


# Windows start at 100 (valid) and 200 (test); min_count 2.
# Before 100: a x4, b x3, c x2, d x1 (d is dropped: its count is on the training period only,
# although it is popular later), so the vocabulary is ["", "a", "b", "c"].
HAND = [
    ("u1", "a", 10), ("u1", "b", 20), ("u1", "a", 150), ("u1", "d", 160), ("u1", "c", 250),
    ("u2", "a", 30), ("u2", "c", 40), ("u2", "b", 50), ("u2", "b", 210),
    ("u3", "a", 5), ("u3", "b", 6), ("u3", "c", 7),                    # no window activity
    ("u4", "a", 60), ("u4", "b", 120),                                  # valid, then nothing
    ("u5", "d", 90), ("u5", "d", 130), ("u5", "d", 140), ("u5", "a", 230), ("u5", "b", 240),
    ("u6", "b", 150), ("u6", "a", 220),                                 # no history before 100
]


def test_hand_log_windows_and_filters():
    data = time_split(make_log(HAND), min_count=2, valid_start=100, test_start=200)
    assert data.vocabulary == ["", "a", "b", "c"]
    # Train: users with >= 2 kept items before 100, cut there (user ids = first appearance).
    assert data.train.user_ids.tolist() == [0, 1, 2]
    assert [data.train.sequence(u).tolist() for u in range(3)] == [[1, 2], [1, 3, 2], [1, 2, 3]]
    # Valid: u1 (history a b, target a; d is unknown), u4 (a | b). u6 has no history.
    assert data.valid.user_ids.tolist() == [0, 3]
    assert [data.valid.sequence(u).tolist() for u in range(2)] == [[1, 2, 1], [1, 2]]
    assert data.valid.history_lengths.tolist() == [2, 1]
    # Test: u1 (a b a | c), u2 (a c b | b), u5 (history: only d before 200, unknown -> out),
    # u6 (b | a).
    assert data.test.user_ids.tolist() == [0, 1, 5]
    assert [data.test.sequence(u).tolist() for u in range(3)] == [[1, 2, 1, 3], [1, 3, 2, 2],
                                                                   [2, 1]]
    assert data.test.history_lengths.tolist() == [3, 3, 1]


def random_log(seed, users=60, items=40, n=1500):
    rng = np.random.default_rng(seed)
    return RawLog(users=[f"u{u}" for u in rng.integers(0, users, n)],
                  items=[f"i{i}" for i in rng.zipf(1.3, n) % items],
                  timestamps=rng.integers(0, 1000, n).astype(np.float64) + 1e9, source="random")


@pytest.mark.parametrize("seed", range(5))
def test_no_target_before_its_history_and_no_training_after_the_cutoff(seed):
    log = random_log(seed)
    valid_start, test_start = cut_times(log.timestamps, (0.6, 0.8))
    data = time_split(log, 3, valid_start, test_start)
    assert data.train.timestamps.max() < valid_start
    raw_before = [i for i, t in zip(log.items, log.timestamps, strict=True) if t < valid_start]
    for raw in data.vocabulary[1:]:
        assert raw_before.count(raw) >= 3  # items are counted on the training period
    for split, start, end in ((data.valid, valid_start, test_start),
                              (data.test, test_start, np.inf)):
        assert split.num_users > 0
        for u in range(split.num_users):
            h = split.history_lengths[u]
            times = split.timestamps[split.row_splits[u]:split.row_splits[u + 1]]
            assert h >= 1 and len(times) > h
            assert np.all(np.diff(times) >= 0)
            assert times[h - 1] < start <= times[h]  # every target after the history's last item
            assert times[-1] < end


def test_round_trip_and_evaluation_cut(tmp_path):
    data = time_split(make_log(HAND), min_count=2, valid_start=100, test_start=200)
    write_dataset(data, tmp_path / "d")
    assert (tmp_path / "d" / "valid_cut.txt").read_text() == "0,2\n3,1\n"
    assert (tmp_path / "d" / "test_cut.txt").read_text() == "0,3\n1,3\n5,1\n"
    loaded = load_dataset(tmp_path / "d")  # users in several splits are allowed here
    for name in ("valid", "test"):
        np.testing.assert_array_equal(getattr(loaded, name).history_lengths,
                                      getattr(data, name).history_lengths)
    assert loaded.train.history_lengths is None
    history, targets, row_splits = evaluation_arrays(loaded.test, max_length=2)
    np.testing.assert_array_equal(history, [[2, 1], [3, 2], [2, 0]])  # the last L before the cut
    np.testing.assert_array_equal(targets, [3, 2, 1])
    np.testing.assert_array_equal(row_splits, [0, 1, 2, 3])


def test_cut_files_are_checked(tmp_path):
    write_dataset(time_split(make_log(HAND), 2, 100, 200), tmp_path / "d")
    cut = tmp_path / "d" / "valid_cut.txt"
    for text, problem in (("0,2\n", "no line for user 3"), ("0,2\n3,1\n9,1\n", "not in the split"),
                          ("0,3\n3,1\n", "history length must be 1..2"),
                          ("0,2\n3,1\n3,1\n", "already has a cut"), ("0;2\n3,1\n", "not a user")):
        cut.write_text(text)
        with pytest.raises(DataError, match=problem):
            load_dataset(tmp_path / "d")
    cut.unlink()  # one split cut, the other not: the folder is not a time split
    with pytest.raises(DataError, match="appears in both"):
        load_dataset(tmp_path / "d")


def test_cut_times_from_fractions_and_dates():
    ts = np.arange(10, dtype=np.float64) * 10 + 5
    assert cut_times(ts) == (85.0, 95.0)
    assert cut_times(ts, (0.5, 0.7)) == (55.0, 75.0)
    assert cut_times(ts, cutoffs=(50.0, 60.0)) == (50.0, 60.0)
    with pytest.raises(UserError, match="0 < a < b < 1"):
        cut_times(ts, (0.9, 0.8))
    with pytest.raises(UserError, match="not both"):
        cut_times(ts, (0.5, 0.7), (1.0, 2.0))
    with pytest.raises(UserError, match="must start before"):
        cut_times(ts, cutoffs=(60.0, 50.0))
    with pytest.raises(DataError, match="both shares fall on"):
        cut_times(np.ones(10), (0.5, 0.7))
    assert parse_cutoff("1998-03-07") == 889228800.0
    assert parse_cutoff("1998-03-07T02:00") == 889236000.0
    assert parse_cutoff("1998-03-07T04:00+02:00") == 889236000.0
    assert parse_cutoff(" 889237269 ") == 889237269.0
    with pytest.raises(UserError, match="neither a date"):
        parse_cutoff("March")


def test_errors_name_the_cause():
    no_time = RawLog(users=["u"] * 6, items=list("abcabc"), timestamps=np.arange(6.0),
                     source="seq.txt")
    with pytest.raises(DataError, match=r"no time column.*--split user"):
        time_split(no_time, 1)
    with pytest.raises(DataError, match=r"the log runs from 5 .*to 250"):
        time_split(make_log(HAND), 2, 300, 400)
    with pytest.raises(DataError, match="the valid split of this time split is empty"):
        time_split(make_log(HAND), 2, 100, 110)


def _write_inter(path, rows, with_time=True):
    header = "user_id:token\titem_id:token" + ("\ttimestamp:float" if with_time else "")
    lines = [f"{u}\t{i}" + (f"\t{t}" if with_time else "") for u, i, t in rows]
    path.write_text("\n".join([header, *lines]) + "\n")


def test_cli(tmp_path, capsys):
    rows = [(u, i, t + 1e9) for u, i, t in HAND]
    _write_inter(tmp_path / "log.inter", rows)
    args = ["--input", str(tmp_path / "log.inter"), "--format", "recbole", "--min-count", "2"]
    assert main([*args, "--out", str(tmp_path / "d"), "--split", "time",
                 "--time-cutoffs", f"{1e9 + 100:.0f},{1e9 + 200:.0f}"]) == 0
    out = capsys.readouterr().out
    assert "valid_cut.txt, test_cut.txt" in out and "train before 1000000100 (2001-09-09" in out
    assert load_dataset(tmp_path / "d").test.history_lengths.tolist() == [3, 3, 1]
    for extra, message in ((["--split", "time", "--seed", "3"], "--seed shuffles users"),
                           (["--time-fractions", "0.5,0.7"], "add --split time"),
                           (["--split", "time", "--time-fractions", "0.5"], "two comma-separated"),
                           (["--split", "time", "--time-cutoffs", "x,y"], "neither a date")):
        assert main([*args, "--out", str(tmp_path / "e"), *extra]) == 2
        assert message in capsys.readouterr().err
    _write_inter(tmp_path / "plain.inter", rows, with_time=False)
    assert main(["--input", str(tmp_path / "plain.inter"), "--format", "recbole",
                 "--out", str(tmp_path / "f"), "--split", "time"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no time column" in err and err.count("\n") == 1


def _write_format(path, fmt, rows):
    """``rows`` (user, item, timestamp) in the file form of reader ``fmt``."""
    import json

    ids = {name: str(k + 1) for k, name in enumerate(sorted({u for u, _, _ in rows}
                                                             | {i for _, i, _ in rows}))}
    lines = {
        "movielens": [f"{ids[u]}\t{ids[i]}\t3\t{t:.0f}" for u, i, t in rows],
        "amazon": [json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": int(t)})
                   for u, i, t in rows],
        "taobao": [f"{ids[u]},{ids[i]},1,pv,{t:.0f}" for u, i, t in rows],
        "sequences": [f"{ids[u]} {ids[i]}" for u, i, _ in sorted(rows, key=lambda r: r[0])],
    }[fmt]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("fmt", ["movielens", "amazon", "taobao", "sequences"])
def test_every_reader_with_timestamps(tmp_path, capsys, fmt):
    _write_format(tmp_path / "log", fmt, [(u, i, t + 1e9) for u, i, t in HAND])
    code = main(["--input", str(tmp_path / "log"), "--format", fmt, "--min-count", "2",
                 "--out", str(tmp_path / "d"), "--split", "time",
                 "--time-cutoffs", "1000000100,1000000200"])
    if fmt == "sequences":  # the file's order is its only time
        assert code == 2 and "no time column" in capsys.readouterr().err
        return
    assert code == 0
    data = load_dataset(tmp_path / "d")
    assert data.test.history_lengths.tolist() == [3, 3, 1]
    assert data.valid.history_lengths.tolist() == [2, 1]
