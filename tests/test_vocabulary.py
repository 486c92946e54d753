"""Stable item indices across data versions: prepare --vocabulary, and its sources."""

from __future__ import annotations

import numpy as np
import pytest

from dmi_tf.data.dataset import RawLog
from dmi_tf.data.prepare import main, prepare
from dmi_tf.data.splits import load_dataset
from dmi_tf.data.time_split import time_split
from dmi_tf.data.vocabulary import load_vocabulary
from dmi_tf.errors import DataError


def counted_log(counts: dict[str, int], users: int = 12, seed: int = 0) -> RawLog:
    """Each item ``counts[item]`` times, spread over ``users`` users, in shuffled time order."""
    rng = np.random.default_rng(seed)
    items = [item for item, n in counts.items() for _ in range(n)]
    rng.shuffle(items)
    return RawLog(users=[f"u{k % users}" for k in range(len(items))], items=items,
                  timestamps=np.arange(len(items), dtype=np.float64) * 10 + 5, source="log")


OLD = {"a": 30, "b": 20, "c": 10, "d": 6}
# In the new log: a and c stay, b is gone, d is rare now (kept: it is known), e and f are new
# and popular enough, g is new and too rare.
NEW = {"a": 25, "c": 30, "d": 2, "e": 40, "f": 12, "g": 3}


def test_known_ids_keep_their_index_and_new_items_follow_by_popularity():
    old = prepare(counted_log(OLD), min_count=5)
    assert old.vocabulary == ["", "a", "b", "c", "d"]
    new = prepare(counted_log(NEW, seed=1), min_count=5, vocabulary=old.vocabulary)
    assert new.vocabulary == ["", "a", "b", "c", "d", "e", "f"]
    index = {raw: i for i, raw in enumerate(new.vocabulary)}
    items = np.concatenate([s.items for s in (new.train, new.valid, new.test)])
    # d's 2 interactions are kept (a known item is never dropped), g's are not.
    assert np.sum(items == index["d"]) == 2 and np.sum(items == index["e"]) == 40
    assert len(items) == 25 + 30 + 2 + 40 + 12
    # Without the old vocabulary the same log is numbered from scratch.
    assert prepare(counted_log(NEW, seed=1), 5).vocabulary == ["", "e", "c", "a", "f"]


def test_time_split_keeps_indices_too():
    old = ["", "x", "c", "a"]
    new = time_split(counted_log(NEW), 5, valid_start=800, test_start=1000, vocabulary=old)
    assert new.vocabulary[:4] == old and set(new.vocabulary[4:]) <= {"e", "f"}


def test_vocabulary_sources(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "vocabulary.txt").write_text("\nx\ny\n")
    assert load_vocabulary(tmp_path / "run") == ["", "x", "y"]
    (tmp_path / "version" / "assets").mkdir(parents=True)
    (tmp_path / "version" / "assets" / "vocabulary.txt").write_text("x\ny\n")
    assert load_vocabulary(tmp_path / "version") == ["", "x", "y"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "item_map.txt").write_text("y,2\nx,1\n")
    assert load_vocabulary(tmp_path / "data") == ["", "x", "y"]
    (tmp_path / "comirec").mkdir()
    (tmp_path / "comirec" / "book_item_map.txt").write_text("x,1\ny,2\n")
    assert load_vocabulary(tmp_path / "comirec") == ["", "x", "y"]


@pytest.mark.parametrize("files, problem", [
    ({"vocabulary.txt": "\nx\nx\n"}, "index 2 is also index 1"),
    ({"vocabulary.txt": "\nx\n\n"}, "index 2 is '': ids must be non-empty"),
    ({"vocabulary.txt": "pad\nx\n"}, "index 0 is padding"),
    ({"item_map.txt": "x,1\ny,3\n"}, "no raw id for index 2"),
    ({"notes.txt": "x"}, "is not a run directory"),
])
def test_vocabulary_errors(tmp_path, files, problem):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=problem):
        load_vocabulary(tmp_path)


def _write_log(path, log):
    rows = zip(log.users, log.items, log.timestamps, strict=True)
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                    + "".join(f"{u}\t{i}\t{t:.0f}\n" for u, i, t in rows))


def test_cli_keeps_every_known_index(tmp_path, capsys):
    _write_log(tmp_path / "old.inter", counted_log(OLD))
    _write_log(tmp_path / "new.inter", counted_log(NEW, seed=1))
    assert main(["--input", str(tmp_path / "old.inter"), "--format", "recbole",
                 "--out", str(tmp_path / "v1")]) == 0
    new_args = ["--input", str(tmp_path / "new.inter"), "--format", "recbole",
                "--vocabulary", str(tmp_path / "v1")]
    assert main([*new_args, "--out", str(tmp_path / "v2")]) == 0
    out = capsys.readouterr().out
    assert f"vocabulary: 4 items keep their indices from {tmp_path / 'v1'} (3 of them in this " \
           "data), 2 new items at 5..6" in out
    v1, v2 = load_vocabulary(tmp_path / "v1"), load_dataset(tmp_path / "v2").vocabulary
    assert v2[:len(v1)] == v1 and v2 == ["", "a", "b", "c", "d", "e", "f"]
    assert main([*new_args, "--out", str(tmp_path / "v2b")]) == 0  # re-running: same files
    for name in ("train.txt", "valid.txt", "test.txt", "item_map.txt"):
        assert (tmp_path / "v2" / name).read_bytes() == (tmp_path / "v2b" / name).read_bytes()
    assert main([*new_args[:4], "--vocabulary", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "v3")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
