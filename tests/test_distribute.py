"""tf.distribute training: cluster roles, sharding, and real clusters of local processes.

The cluster tests start every task as its own ``python -m dmi_tf.train`` process
on free loopback ports with its ``TF_CONFIG``, exactly as on several machines,
and always stop them (timeouts, kill in ``finally``).
"""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf import distribute
from dmi_tf.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The dataclass defaults, not the CLI's default run (dmi_tf/default.yaml).
LIBRARY_DEFAULTS = os.path.join(REPO, "tests", "library_defaults.yaml")
# A few steps of a tiny DMI: every strategy must train the model with the
# tf.random.Generator (the refiner's noise) and the sampled-softmax input stage.
TINY = ["--config", LIBRARY_DEFAULTS, "--model", "dmi", "train.max_steps=8",
        "train.steps_per_eval=8",
        "train.steps_per_execution=8", "train.batch_size=32", "loss.num_negatives=64",
        "data.synthetic.num_users=200", "data.synthetic.num_items=150",
        "data.synthetic.num_topics=6", "model.embedding_dim=16", "model.num_interests=2",
        "train.eval_batch_size=64"]
TIMEOUT = 400  # generous: the 2 cores may be shared


def tf_config(cluster, task_type, index):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_cluster(cluster, tasks, run_dir, extra):
    """Starts one training process per task; returns ``[(task, Popen, log path)]``."""
    processes = []
    for task_type, index in tasks:
        log = f"{run_dir}.{task_type}-{index}.log"
        env = dict(os.environ, TF_CONFIG=tf_config(cluster, task_type, index),
                   CUDA_VISIBLE_DEVICES="")
        with open(log, "w") as out:
            processes.append(((task_type, index), subprocess.Popen(
                [sys.executable, "-m", "dmi_tf.train", "--out", run_dir, *TINY, *extra],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT), log))
    return processes


def stop(processes):
    for _, process, _ in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def read(log):
    with open(log) as f:
        return f.read()


def weights(checkpoint):
    """The model's variables in a checkpoint (optimizer state left out)."""
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(checkpoint)
            if name.startswith("model/") and "optimizer" not in name}


# --- roles -------------------------------------------------------------------------------

def test_role_from_tf_config():
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    multi = config_lib.DistributeConfig(strategy="multi_worker")
    first = distribute.cluster_role(multi, {"TF_CONFIG": tf_config(cluster, "worker", 0)})
    second = distribute.cluster_role(multi, {"TF_CONFIG": tf_config(cluster, "worker", 1)})
    assert first.is_chief and not second.is_chief and not first.serves_only
    assert distribute.output_dir("run", first) == "run"
    assert distribute.output_dir("run", second) == os.path.join("run", "workers", "worker-1")
    ps_cluster = {"chief": ["a:1"], "worker": ["a:2"], "ps": ["a:3", "a:4"]}
    ps = config_lib.DistributeConfig(strategy="parameter_server")
    chief = distribute.cluster_role(ps, {"TF_CONFIG": tf_config(ps_cluster, "chief", 0)})
    server = distribute.cluster_role(ps, {"TF_CONFIG": tf_config(ps_cluster, "ps", 1)})
    assert chief.is_chief and not chief.serves_only
    assert server.serves_only and server.address == "a:4"
    # One machine needs no TF_CONFIG.
    assert distribute.cluster_role(config_lib.DistributeConfig(), {}).is_chief


@pytest.mark.parametrize("strategy,environ,message", [
    ("multi_worker", {}, "needs TF_CONFIG"),
    ("multi_worker", {"TF_CONFIG": "{not json"}, "not a cluster description"),
    ("parameter_server", {"TF_CONFIG": tf_config({"worker": ["a:1"]}, "worker", 0)},
     "needs ['chief', 'ps', 'worker']"),
    ("multi_worker", {"TF_CONFIG": tf_config({"worker": ["a:1"]}, "worker", 3)},
     "is not in its cluster"),
])
def test_bad_tf_config_names_the_fix(strategy, environ, message):
    with pytest.raises(UserError, match=re.escape(message)):
        distribute.cluster_role(config_lib.DistributeConfig(strategy=strategy), environ)


def test_cli_reports_a_missing_tf_config_as_a_user_error(tmp_path, capsys, monkeypatch):
    from dmi_tf import train
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert train.main(["--out", str(tmp_path / "r"), "distribute.strategy=multi_worker"]) == 2
    assert "error: distribute.strategy=multi_worker needs TF_CONFIG" in capsys.readouterr().err


@pytest.mark.slow
def test_intra_op_threads_apply_in_a_fresh_process_and_say_so_when_too_late(capsys):
    # A fresh process: the setting reaches TensorFlow's pool, before and after the runtime starts.
    script = ("from dmi_tf import config, distribute; import tensorflow as tf\n"
              "c = config.load(None, ['distribute.intra_op_threads=1']).distribute\n"
              "assert distribute.configure_threads(c)\n"
              "tf.constant(1.0) + 1.0\n"
              "print(tf.config.threading.get_intra_op_parallelism_threads(),"
              " distribute.configure_threads(c))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "True"]
    # This process has run TensorFlow ops with other pools: a new value cannot apply, and says so.
    tf.constant(1.0).numpy()
    current = tf.config.threading.get_intra_op_parallelism_threads()
    other = config_lib.load(None, [f"distribute.intra_op_threads={current + 3}"]).distribute
    assert not distribute.configure_threads(other)
    assert "TF_NUM_INTRAOP_THREADS" in capsys.readouterr().out
    assert distribute.configure_threads(config_lib.load(None, []).distribute)  # null: TF's own


def test_intra_op_threads_already_set_by_the_environment_count_as_applied(monkeypatch, capsys):
    tf.constant(1.0).numpy()  # the runtime has started
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "7")
    assert distribute.configure_threads(
        config_lib.load(None, ["distribute.intra_op_threads=7"]).distribute)
    assert capsys.readouterr().out == ""


def test_partitioner_shards_only_the_item_tables():
    partition = distribute.item_table_partitioner(num_items=1000, shards=3)
    assert partition(tf.TensorShape([1000, 16]), tf.float32) == [3, 1]
    assert partition(tf.TensorShape([20, 16]), tf.float32) == [1, 1]  # positions
    assert partition(tf.TensorShape([3]), tf.int64) == [1]  # a tf.random.Generator state
    assert distribute.item_table_partitioner(2, 5)(tf.TensorShape([2, 4]), tf.float32) == [2, 1]


# --- one process ---------------------------------------------------------------------------

@pytest.mark.slow
def test_dmi_trains_under_mirrored_strategy(tmp_path):
    """The refiner's generator belongs to the strategy and advances; the run evaluates."""
    from dmi_tf import train
    from dmi_tf.data.loading import load_data
    from dmi_tf.data.pipeline import evaluation_dataset
    from dmi_tf.evaluate import evaluate
    from dmi_tf.models import build_model
    from dmi_tf.training import fit

    config = train.resolve_config(train.parse_args([*TINY, "distribute.strategy=mirrored"]))
    dataset = load_data(config)
    strategy = distribute.make_strategy(config.distribute, distribute.Role("mirrored"),
                                        dataset.num_items)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    with strategy.scope():
        model = build_model(config, dataset.num_items, dataset.train)
    state = model.refiner.rng.state
    assert isinstance(state, tf.distribute.DistributedValues)
    before = state.numpy().copy()
    valid = evaluation_dataset(dataset.valid, config.data.max_length, 64)
    results = fit(model, config, dataset, str(tmp_path),
                  lambda: evaluate(model, valid, (20, 50)), verbose=0, strategy=strategy)
    assert results["steps"] == 8 and [h["step"] for h in results["history"]] == [8]
    assert not np.array_equal(state.numpy(), before)  # the noise was drawn in training
    assert 0 <= evaluate(model, valid, (20, 50))["recall@50"] <= 1


class _LeaderStore:
    """The leader's key-value store as a worker sees it: the leader may exit as
    soon as the last ``left`` key lands, cutting off the reply to that insert."""

    def __init__(self, leader_exits_on_last_left):
        self.keys = {}
        self.leader_exits_on_last_left = leader_exits_on_last_left

    def set_config_key_value(self, key, value):
        self.keys[key] = value
        if self.leader_exits_on_last_left and "/left/" in key:
            raise tf.errors.UnavailableError(None, None, "Socket closed")

    def get_config_key_value(self, key):
        if key not in self.keys:  # a peer that never posts would block forever
            raise AssertionError(f"would block on {key}")
        return self.keys[key]


@pytest.mark.parametrize("cut_off", [False, True])
def test_leave_together_a_worker_exits_even_if_the_leader_left_first(monkeypatch, cut_off):
    from tensorflow.python.eager import context

    store = _LeaderStore(cut_off)
    store.keys["dmi_tf/exit-0/done/job:worker/replica:0/task:0"] = "1"  # the leader is done
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": ["a:1", "b:2"]}), task_type="worker", task_id=1)
    strategy = type("Strategy", (), {"cluster_resolver": resolver})()
    monkeypatch.setattr(distribute, "is_multi_worker", lambda s: True)
    monkeypatch.setattr(distribute, "_EXITS", iter([0]))
    monkeypatch.setattr(context, "context", lambda: store)
    distribute.leave_together(strategy)
    assert store.keys["dmi_tf/exit-0/left/job:worker/replica:0/task:1"] == "1"


# --- clusters of local processes -----------------------------------------------------------

@pytest.mark.slow
def test_multi_worker_mirrored_two_workers_agree(tmp_path):
    run_dir = str(tmp_path / "run")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    processes = start_cluster(cluster, [("worker", 0), ("worker", 1)], run_dir,
                              ["distribute.strategy=multi_worker",
                               "distribute.communication=ring"])
    try:
        for (task, index), process, log in processes:
            assert process.wait(timeout=TIMEOUT) == 0, f"{task} {index} failed:\n{read(log)}"
    finally:
        stop(processes)
    chief_dir, other_dir = run_dir, os.path.join(run_dir, "workers", "worker-1")
    chief = weights(tf.train.latest_checkpoint(os.path.join(chief_dir, "checkpoints")))
    other = weights(tf.train.latest_checkpoint(os.path.join(other_dir, "checkpoints")))
    assert chief.keys() == other.keys() and any("refiner" in name for name in chief)
    for name, value in chief.items():
        np.testing.assert_array_equal(value, other[name], err_msg=name)
    # Lockstep training: one history, and the chief's result evaluates.
    metrics = json.load(open(os.path.join(chief_dir, "metrics.json")))
    assert metrics["history"] == json.load(open(os.path.join(other_dir, "metrics.json")))[
        "history"]
    assert metrics["steps"] == 8 and 0 <= metrics["test"]["recall@50"] <= 1
    assert not os.path.exists(os.path.join(chief_dir, "backup"))  # removed once finished


@pytest.mark.slow
def test_parameter_server_cluster_shards_the_item_table(tmp_path):
    run_dir = str(tmp_path / "run")
    ports = [f"127.0.0.1:{p}" for p in free_ports(5)]
    cluster = {"chief": ports[:1], "worker": ports[1:3], "ps": ports[3:]}
    servers = start_cluster(cluster, [("ps", 0), ("ps", 1), ("worker", 0), ("worker", 1)],
                            run_dir, ["distribute.strategy=parameter_server"])
    try:
        chief = start_cluster(cluster, [("chief", 0)], run_dir,
                              ["distribute.strategy=parameter_server"])
        (_, process, log), = chief
        try:
            assert process.wait(timeout=TIMEOUT) == 0, read(log)
        finally:
            stop(chief)
        for task, server, server_log in servers:
            assert server.poll() is None, f"{task} stopped serving:\n{read(server_log)}"
    finally:
        stop(servers)
    out = read(log)
    placement = re.search(r"parameter_server: item table in (\d+) shard\(s\): (.*)", out)
    assert placement and placement.group(1) == "2", out
    assert "/job:ps/replica:0/task:0" in placement.group(2)
    assert "/job:ps/replica:0/task:1" in placement.group(2)
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["steps"] == 8 and 0 <= metrics["test"]["recall@50"] <= 1
    assert not os.path.exists(os.path.join(run_dir, "workers"))  # only the chief writes
    assert_run_loads(run_dir)


def assert_run_loads(run_dir):
    """The run's best checkpoint restores into a model on one device and evaluates."""
    from dmi_tf.data.pipeline import evaluation_dataset
    from dmi_tf.evaluate import evaluate
    from dmi_tf.runs import load_run

    run = load_run(run_dir)
    valid = evaluation_dataset(run.dataset.valid, run.config.data.max_length, 64)
    expected = json.load(open(os.path.join(run_dir, "metrics.json")))["valid"]["recall@50"]
    assert evaluate(run.model, valid, (20, 50))["recall@50"] == pytest.approx(expected, abs=1e-6)


# --- memory: the item table is never densified against the batch ---------------------------

def train_step_graph(optimizer):
    """The traced train step (forward, sampled softmax, gradients, update) of a tiny DMI."""
    from dmi_tf import train
    from dmi_tf.data.dataset import Dataset, SplitData
    from dmi_tf.models import build_model
    from dmi_tf.optimizers import compile_for_training
    from dmi_tf.training import training_stream

    num_items = 997  # a prime no other dimension shares
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 30, size=60)
    split = SplitData(np.arange(60), np.concatenate([[0], np.cumsum(lengths)]),
                      rng.integers(1, num_items, size=lengths.sum()))
    dataset = Dataset(split, split, split, ["", *map(str, range(1, num_items))])
    config = train.resolve_config(train.parse_args(
        [*TINY, f"train.optimizer={optimizer}"]))
    model = build_model(config, num_items, dataset.train)
    compile_for_training(model, config)
    stream = training_stream(model, config, dataset)
    graph = tf.function(model.train_step).get_concrete_function(stream.element_spec).graph
    return graph, num_items


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "lazy_adam"])
def test_train_step_makes_no_batch_by_items_tensor(optimizer):
    graph, num_items = train_step_graph(optimizer)
    shapes = [(op.type, tuple(t.shape.as_list())) for op in graph.get_operations()
              for t in op.outputs if t.shape.rank]
    # Scores against the catalogue would put the item count in a later dimension.
    assert not [s for s in shapes if num_items in s[1][1:]]
    whole_table = [s for s in shapes if s[1] and s[1][0] == num_items]
    if optimizer == "lazy_adam":
        # Only touched rows are read and written: the table is never materialised.
        assert not whole_table, whole_table[:5]
    else:
        assert whole_table  # Keras Adam decays every row's moments (why lazy_adam exists)


def test_lazy_adam_moves_only_the_rows_a_batch_touched():
    from dmi_tf.optimizers import LazyAdam

    def run(optimizer_cls):
        table = tf.Variable(tf.ones([4, 2]))
        optimizer = optimizer_cls(0.1)
        snapshots = []
        for rows in ([1, 2], [2, 3]):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(table, rows) ** 2)
            optimizer.apply_gradients([(tape.gradient(loss, table), table)])
            snapshots.append(table.numpy().copy())
        return snapshots

    lazy, dense = run(LazyAdam), run(tf.keras.optimizers.Adam)
    np.testing.assert_allclose(lazy[0], dense[0], rtol=1e-6)  # first step: identical
    np.testing.assert_array_equal(lazy[1][1], lazy[0][1])  # row 1 untouched in step 2 waits
    assert not np.allclose(dense[1][1], dense[0][1])  # Adam's momentum still moves it
    np.testing.assert_allclose(lazy[1][3], dense[1][3], rtol=1e-6)  # a fresh row: the same
    np.testing.assert_array_equal(lazy[1][0], np.ones(2))
