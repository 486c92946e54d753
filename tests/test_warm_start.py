"""Warm start: item rows carried by raw id, the rest of the model carried, clear refusals,
and the command line from one data version to the next."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf import train
from dmi_tf.config import SyntheticConfig
from dmi_tf.data.dataset import RawLog, SplitData
from dmi_tf.data.prepare import prepare
from dmi_tf.data.splits import load_dataset, write_dataset
from dmi_tf.data.synthetic import generate_log
from dmi_tf.data.vocabulary import load_vocabulary, shared_rows
from dmi_tf.errors import UserError
from dmi_tf.models import build_model
from dmi_tf.warm_start import WARM_START_FILE, check_start, warm_start

EMPTY = SplitData.from_sequences([], [])
TINY = ["model.embedding_dim=8", "model.num_interests=2", "data.max_length=5"]


def test_shared_rows_follow_raw_ids_not_indices():
    new, old = shared_rows(["", "b", "x", "a", "c"], ["", "a", "b", "gone"])
    assert new.tolist() == [0, 1, 3] and old.tolist() == [0, 2, 1]


def fake_run(path, overrides, vocabulary, seed=7):
    """A run directory whose checkpoint holds a randomly built model (no training needed)."""
    config = config_lib.load(None, [*overrides, f"train.seed={seed}"])
    tf.keras.utils.set_random_seed(seed)
    model = build_model(config, len(vocabulary), EMPTY)
    model.interests(tf.zeros([1, config.data.max_length], tf.int32))
    os.makedirs(path)
    (path / "config.yaml").write_text(config_lib.dump_yaml(config))
    (path / "vocabulary.txt").write_text("".join(raw + "\n" for raw in vocabulary))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(path / "checkpoints"),
                               1, checkpoint_name="best").save(checkpoint_number=100)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["youtube_dnn", "dmi"])
def test_rows_carried_by_raw_id_new_rows_as_fresh_and_the_rest_carried(tmp_path, name):
    overrides = [*TINY, f"model.name={name}"]
    old_vocabulary = ["", "a", "b", "c", "gone"]
    source = fake_run(tmp_path / "old", overrides, old_vocabulary)
    vocabulary = ["", "c", "a", "new1", "b", "new2"]  # renumbered: carried by raw id
    config = config_lib.load(None, overrides)

    def fresh():
        tf.keras.utils.set_random_seed(0)
        model = build_model(config, len(vocabulary), EMPTY)
        model.interests(tf.zeros([1, 5], tf.int32))
        return model

    cold, model = fresh().item_embedding.embeddings.numpy(), fresh()
    tf.keras.utils.set_random_seed(0)
    model = build_model(config, len(vocabulary), EMPTY)
    record = warm_start(model, config, vocabulary, str(tmp_path / "old"))
    table, old_table = model.item_embedding.embeddings.numpy(), source.item_embedding.embeddings
    for row, raw in enumerate(vocabulary):
        if raw in old_vocabulary:  # bit for bit
            np.testing.assert_array_equal(table[row], old_table.numpy()[old_vocabulary.index(raw)])
        else:  # as the fresh run initialises it
            np.testing.assert_array_equal(table[row], cold[row])
    for mine, theirs in zip(model.variables[1:], source.variables[1:], strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert record["run"] == str(tmp_path / "old") and record["checkpoint"].endswith("best-100")
    assert (record["carried_items"], record["new_items"], record["dropped_items"]) == (3, 2, 1)
    assert record["source_items"] == 4 and record["items"] == 5


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    ("model.name=youtube_dnn", "trained model.name 'comirec_sa', this config has 'youtube_dnn'"),
    ("model.embedding_dim=16", "trained model.embedding_dim 8, this config has 16"),
    ("model.num_interests=4", "model.num_interests 2, this config has 4; a warm start needs the "
                              "same model, d and K"),
    ("data.max_length=7", r"do not fit this model \(.*\(5, 8\) there, \(7, 8\) here\); these "
                          "settings differ: data.max_length: 5 there, 7 here"),
])
def test_another_model_is_refused(tmp_path, change, message):
    fake_run(tmp_path / "old", [*TINY, "model.name=comirec_sa"], ["", "a", "b"])
    config = config_lib.load(None, [*TINY, "model.name=comirec_sa", change])
    model = build_model(config, 3, EMPTY)
    with pytest.raises(UserError, match=message):
        warm_start(model, config, ["", "a", "b"], str(tmp_path / "old"))


def test_start_checks(tmp_path):
    with pytest.raises(UserError, match="'item_knn' has no trained weights"):
        check_start(str(tmp_path), "somewhere", "item_knn")
    with pytest.raises(UserError, match="is not a run directory"):
        warm_start(None, config_lib.load(None, []), [""], str(tmp_path))
    check_start(str(tmp_path / "new"), str(tmp_path / "old"), "dmi")  # a new run: any start
    (tmp_path / WARM_START_FILE).write_text(json.dumps({"run": "/runs/a"}))
    check_start(str(tmp_path), "/runs/a", "dmi")  # resumed with its own start
    for other in (None, "/runs/b"):
        with pytest.raises(UserError, match="warm-started from /runs/a; resume it with "
                                            "--warm-start /runs/a"):
            check_start(str(tmp_path), other, "dmi")
    cold = tmp_path / "cold"  # a cold run that has trained: a backup checkpoint
    tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), str(cold / "backup"), 1,
                               checkpoint_name="ckpt").save(checkpoint_number=50)
    check_start(str(cold), None, "dmi")
    with pytest.raises(UserError, match="started cold; resume it without --warm-start"):
        check_start(str(cold), "/runs/a", "dmi")


def versions_of_a_log(tmp_path):
    """Two data versions, yesterday's and today's: today's log adds the clicks after
    yesterday's cut-off and the items yesterday's never saw (with their clicks)."""
    log, _ = generate_log(SyntheticConfig(num_users=500, num_items=240, num_topics=8, seed=3))
    hidden = {item for item in set(log.items) if int(item[1:]) >= 200}  # ids are "i<n>"
    cut = np.quantile(log.timestamps, 0.8)
    keep = [k for k, item in enumerate(log.items)
            if item not in hidden and log.timestamps[k] < cut]
    older = RawLog([log.users[k] for k in keep], [log.items[k] for k in keep],
                   log.timestamps[keep], "older")
    write_dataset(prepare(older), tmp_path / "v1")
    return log


# The dataclass defaults, not the CLI's default run (dmi_tf/default.yaml).
LIBRARY_DEFAULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "library_defaults.yaml")
SMALL_RUN = ["--config", LIBRARY_DEFAULTS, "model.name=dmi", "model.embedding_dim=16",
             "model.num_interests=2",
             "train.max_steps=100", "train.steps_per_eval=50", "loss.num_negatives=64"]


@pytest.mark.slow
def test_cli_warm_start_on_new_items_keeps_old_rows_then_trains_and_exports_next_version(
        tmp_path, monkeypatch, capsys):
    log = versions_of_a_log(tmp_path)
    old_run, new_run = str(tmp_path / "run1"), str(tmp_path / "run2")
    assert train.main(["--data", str(tmp_path / "v1"), "--out", old_run, *SMALL_RUN]) == 0
    write_dataset(prepare(log, vocabulary=load_vocabulary(old_run)), tmp_path / "v2")
    old_vocabulary, new_vocabulary = (load_vocabulary(p) for p in (old_run, tmp_path / "v2"))
    assert new_vocabulary[:len(old_vocabulary)] == old_vocabulary
    assert len(new_vocabulary) > len(old_vocabulary)  # new items
    reader = tf.train.load_checkpoint(os.path.join(old_run, "checkpoints"))
    old_table = reader.get_tensor("model/item_embedding/embeddings/.ATTRIBUTES/VARIABLE_VALUE")

    before_first_step = {}
    real_fit = train.fit

    def fit(model, *args, **kwargs):
        before_first_step["table"] = model.item_embedding.embeddings.numpy()
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(train, "fit", fit)
    assert train.main(["--data", str(tmp_path / "v2"), "--out", new_run, "--warm-start", old_run,
                       *SMALL_RUN]) == 0
    assert "warm start from" in capsys.readouterr().out
    table = before_first_step["table"]
    np.testing.assert_array_equal(table[:len(old_vocabulary)], old_table)  # bit for bit
    trained = tf.train.load_checkpoint(os.path.join(new_run, "checkpoints")).get_tensor(
        "model/item_embedding/embeddings/.ATTRIBUTES/VARIABLE_VALUE")
    assert not np.array_equal(trained[:len(old_vocabulary)], old_table)  # and it trained
    metrics = json.load(open(os.path.join(new_run, "metrics.json")))
    record = json.load(open(os.path.join(new_run, WARM_START_FILE)))
    assert metrics["warm_start"] == record and record["run"] == old_run
    assert record["new_items"] == len(new_vocabulary) - len(old_vocabulary)
    # It trained on what yesterday's run had not seen: the targets after its newest click.
    old_train = load_dataset(tmp_path / "v1").train
    assert record["targets_after"] == old_train.timestamps.max()
    assert json.load(open(os.path.join(old_run, "metrics.json")))["train_data_end"] == (
        record["targets_after"])  # recorded by the source: its data folder is not needed
    new_train = load_dataset(tmp_path / "v2").train
    assert 0 < record["new_targets"] < len(new_train.items) - len(old_train.items)
    assert metrics["steps"] > 0 and metrics["valid"]["recall@50"] > 0

    from export.exporter import export_run
    for run in (old_run, new_run):
        export_run(run, str(tmp_path / "models"), k=10)
    assert sorted(os.listdir(tmp_path / "models" / "dmi")) == ["1", "2"]  # the next version
    info = json.load(open(tmp_path / "models" / "dmi" / "2" / "assets.extra" / "export.json"))
    assert info["warm_start"]["run"] == old_run and info["num_items"] == len(new_vocabulary) - 1


def test_new_data_start_reads_the_source_record_and_refuses_what_it_cannot_tell(tmp_path):
    from dmi_tf.warm_start import new_data_start

    fake_run(tmp_path / "old", TINY, ["", "a", "b"])
    config = config_lib.load(None, TINY)
    times = [[1.0, 2, 3, 4, 5, 6, 7], [2.0, 3, 4, 5, 6, 8, 9]]
    train = SplitData.from_sequences([0, 1], [[1, 2, 1, 2, 1, 2, 1]] * 2, times)
    (tmp_path / "old" / "metrics.json").write_text(json.dumps({"train_data_end": 5.5}))
    # Newer than 5.5: positions 5 and 6 of user 0 (times 6, 7), 4 to 6 of user 1 (6, 8, 9).
    assert new_data_start(config, train, str(tmp_path / "old")) == {
        "targets_after": 5.5, "new_targets": 5}
    everything = config_lib.load(None, [*TINY, "train.warm_start_targets=all"])
    assert new_data_start(everything, train, str(tmp_path / "old")) is None
    (tmp_path / "old" / "metrics.json").write_text(json.dumps({"train_data_end": 9.0}))
    with pytest.raises(UserError, match=r"nothing new to train on.*warm_start_targets=all"):
        new_data_start(config, train, str(tmp_path / "old"))
    (tmp_path / "old" / "metrics.json").write_text(json.dumps({"train_data_end": None}))
    with pytest.raises(UserError, match=r"needs timestamps.*warm_start_targets=all"):
        new_data_start(config, train, str(tmp_path / "old"))
    (tmp_path / "old" / "metrics.json").unlink()  # an older run: its data folder is read
    (tmp_path / "old" / "config.yaml").write_text(config_lib.dump_yaml(config_lib.load(
        None, [*TINY, f"data.path={json.dumps(str(tmp_path / 'gone'))}"])))
    with pytest.raises(UserError, match=r"cannot be read.*restore it, or set "
                                         r"train.warm_start_targets=all"):
        new_data_start(config, train, str(tmp_path / "old"))
