"""Training on several devices and machines, on TensorFlow's own engine (``tf.distribute``).

``distribute.strategy`` picks the strategy; the same ``python -m dmi_tf.train``
command runs under each, every process with its own ``TF_CONFIG`` when there is
a cluster:

* ``default``: one device (TensorFlow's default strategy, no distribution).
* ``mirrored``: ``MirroredStrategy`` over every local GPU (the CPU without one).
* ``multi_worker``: ``MultiWorkerMirroredStrategy``. Workers train in lockstep
  (gradients all-reduced every step); the chief (the ``chief`` task, else worker
  0) writes RUN_DIR, every other worker writes the same files into
  ``RUN_DIR/workers/<type>-<index>/`` (it must save too: reading synchronised
  variables is a collective every worker joins).
* ``parameter_server``: ``ParameterServerStrategy``. The ``chief`` task is the
  coordinator: it runs the training loop, validation and checkpoints and writes
  RUN_DIR; ``worker`` tasks run steps asynchronously; ``ps`` tasks hold the
  variables, the item table and its optimizer slots sharded by rows across them
  (a catalogue need not fit one machine). ``worker`` and ``ps`` processes only
  serve, until they are stopped.

Input: ``distribute_datasets_from_function`` builds one pipeline per worker.
Pipeline ``i`` of ``n`` takes every ``n``-th per-replica batch of the one seeded
training stream, so at step ``s`` the cluster trains on exactly the users that
one machine would (batches ``s·R .. s·R + R - 1`` of the per-replica stream,
``R`` replicas) and a resumed run skips to its step. Parameter-server workers run
at their own pace, so there the stream runs once, on the chief, and the tf.data
service hands each batch to exactly one worker.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os

import numpy as np
import tensorflow as tf

from dmi_tf.config import DistributeConfig
from dmi_tf.errors import UserError

log = logging.getLogger(__name__)

TF_CONFIG = "TF_CONFIG"
_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
            '"task": {"type": "worker", "index": 0}}\'')
# Task types each cluster strategy accepts, and the ones it needs.
_TASKS = {"multi_worker": ({"chief", "worker"}, {"worker"}),
          "parameter_server": ({"chief", "worker", "ps"}, {"chief", "worker", "ps"})}


@dataclasses.dataclass(frozen=True)
class Role:
    """What this process is in the training job.

    Attributes:
      strategy: ``distribute.strategy``.
      task_type: ``chief``, ``worker`` or ``ps`` (None without a cluster).
      task_id: the task's index in its job.
      cluster: the cluster spec from ``TF_CONFIG`` (job name -> addresses).
    """

    strategy: str = "default"
    task_type: str | None = None
    task_id: int = 0
    cluster: dict = dataclasses.field(default_factory=dict)

    @property
    def is_chief(self) -> bool:
        """Whether this process writes RUN_DIR itself (others write under ``workers/``)."""
        if self.task_type in (None, "chief"):
            return True
        return self.task_type == "worker" and self.task_id == 0 and "chief" not in self.cluster

    @property
    def serves_only(self) -> bool:
        """A parameter-server cluster's worker or ps: it serves until stopped."""
        return self.strategy == "parameter_server" and self.task_type in ("worker", "ps")

    @property
    def name(self) -> str:
        return "chief" if self.task_type is None else f"{self.task_type}-{self.task_id}"

    @property
    def address(self) -> str | None:
        if self.task_type is None:
            return None
        return self.cluster[self.task_type][self.task_id]


def cluster_role(config: DistributeConfig, environ=None) -> Role:
    """This process's role, from ``distribute.strategy`` and ``TF_CONFIG``.

    Raises:
      UserError: a cluster strategy without ``TF_CONFIG``, or a ``TF_CONFIG`` that
        is not JSON, lacks a job the strategy needs, or names a task not in it.
    """
    environ = os.environ if environ is None else environ
    if config.strategy not in _TASKS:
        return Role(config.strategy)
    raw = environ.get(TF_CONFIG, "")
    if not raw.strip():
        raise UserError(
            f"distribute.strategy={config.strategy} needs TF_CONFIG, the cluster and this "
            f"process's task as JSON, e.g. {_EXAMPLE}; see the README, 'Training on several "
            "machines'.")
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, task_id = str(task["type"]), int(task.get("index", 0))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"TF_CONFIG is not a cluster description ({e!r}); it must be JSON with "
                        f"'cluster' and 'task' keys, e.g. {_EXAMPLE}.") from None
    allowed, needed = _TASKS[config.strategy]
    if not isinstance(cluster, dict) or not needed <= set(cluster) or not set(cluster) <= allowed:
        raise UserError(
            f"TF_CONFIG's cluster has jobs {sorted(cluster)}; distribute.strategy="
            f"{config.strategy} needs {sorted(needed)} and accepts only {sorted(allowed)}.")
    if config.strategy == "parameter_server" and len(cluster["chief"]) != 1:
        raise UserError("TF_CONFIG's cluster must have exactly one chief (the coordinator) "
                        "for distribute.strategy=parameter_server.")
    if task_type not in cluster or not 0 <= task_id < len(cluster[task_type]):
        raise UserError(f"TF_CONFIG's task {task_type!r} {task_id} is not in its cluster "
                        f"({ {k: len(v) for k, v in cluster.items()} }); fix task.type / "
                        "task.index.")
    return Role(config.strategy, task_type, task_id, {k: list(v) for k, v in cluster.items()})


def output_dir(run_dir: str, role: Role) -> str:
    """Where this process writes: RUN_DIR for the chief, ``RUN_DIR/workers/<name>`` otherwise."""
    return run_dir if role.is_chief else os.path.join(run_dir, "workers", role.name)


def serve(role: Role) -> None:
    """Runs a parameter-server cluster's worker or ps task; returns only when it is stopped."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    # Keras' coordinator handles unavailable workers itself; gRPC must not retry forever.
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=role.task_type,
                                  task_index=role.task_id, protocol=resolver.rpc_layer or "grpc",
                                  start=True)
    log.info(f"{role.name} of the parameter_server cluster serving at {role.address}; it runs "
             "until stopped (stop it once the chief has finished)")
    server.join()


def item_table_partitioner(num_items: int, shards: int):
    """A ``variable_partitioner`` that shards the ``[num_items, d]`` tables by rows, nothing else.

    The item embedding and its optimizer slots are the only variables of that
    shape; everything else (towers, ``tf.random.Generator`` states, which must
    not be sharded) stays whole on one ps.
    """
    def partition(shape, dtype):
        del dtype
        parts = [1] * shape.rank
        if shape.rank == 2 and shape[0] == num_items:
            parts[0] = max(1, min(shards, num_items))
        return parts

    return partition


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def configure_threads(config: DistributeConfig) -> bool:
    """Applies ``distribute.intra_op_threads``; True when the process now uses it.

    TensorFlow fixes its thread pools when its runtime starts, so this must run
    before the process's first TensorFlow op. Later (a second run in the same
    process, a notebook) a different value cannot take effect: that is a logged
    warning, not an error, since the setting changes speed only.
    """
    wanted = config.intra_op_threads
    if wanted is None:
        return True
    if wanted in (tf.config.threading.get_intra_op_parallelism_threads(),
                  _int_or_none(os.environ.get("TF_NUM_INTRAOP_THREADS"))):
        return True  # already so (TensorFlow reads that variable when it starts)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(wanted)
    except RuntimeError:
        log.warning(f"distribute.intra_op_threads={wanted} not applied: TensorFlow already runs "
                    "in this process with its thread pools set. Start a new process, or set "
                    f"TF_NUM_INTRAOP_THREADS={wanted} before it starts.")
        return False
    return True


def make_strategy(config: DistributeConfig, role: Role, num_items: int) -> tf.distribute.Strategy:
    """The configured strategy.

    Create it before any other TensorFlow work in the process:
    ``MultiWorkerMirroredStrategy`` configures the collective runtime at startup.
    """
    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if config.strategy == "multi_worker":
        implementation = {"auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
                          "ring": tf.distribute.experimental.CommunicationImplementation.RING,
                          "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL}
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver,
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=implementation[config.communication]))
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    shards = config.embedding_shards or len(role.cluster["ps"])
    return tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=item_table_partitioner(num_items, shards))


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def describe_placement(table) -> str:
    """Where a (possibly sharded) ``[rows, d]`` table lives: ``N shard(s): rows on device, ...``."""
    shards = getattr(table, "variables", None) or [table]
    return f"{len(shards)} shard(s): " + ", ".join(
        f"{int(v.shape[0]):,} rows on {v.device}" for v in shards)


class _DataService:
    """A tf.data service (dispatcher + one worker) in the chief, serving the training stream."""

    def __init__(self, host: str):
        service = tf.data.experimental.service
        self.dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
        port = int(self.dispatcher.target.rsplit(":", 1)[1])
        self.worker = service.WorkerServer(service.WorkerConfig(
            dispatcher_address=f"localhost:{port}", worker_address=f"{host}:%port%"))
        self.target = f"grpc://{host}:{port}"


def training_input(strategy: tf.distribute.Strategy, role: Role, global_batch_size: int,
                   make_stream, steps_done: int):
    """The training input of ``model.fit`` under ``strategy``, starting at step ``steps_done``.

    Args:
      make_stream: ``(batch_size, num_shards, shard_index, skip) -> tf.data.Dataset``,
        the endless stream of per-replica batches, keeping every ``num_shards``-th
        batch from ``shard_index`` and skipping its first ``skip`` batches after that.
      steps_done: global steps already trained (a resumed run continues the stream).

    Returns:
      A ``tf.keras.utils.experimental.DatasetCreator``; Keras hands it to
      ``strategy.distribute_datasets_from_function`` (or, under parameter_server,
      to the coordinator's per-worker datasets).

    Raises:
      UserError: the batch size does not split evenly over the replicas.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise UserError(f"train.batch_size={global_batch_size} does not split over the "
                        f"{replicas} replicas of distribute.strategy; use a multiple of "
                        f"{replicas}.")
    if is_parameter_server(strategy):
        host = role.address.rsplit(":", 1)[0]
        service = _DataService(host)
        stream = make_stream(global_batch_size // replicas, 1, 0, steps_done * replicas)
        dataset_id = tf.data.experimental.service.register_dataset(service.target, stream)
        element_spec = stream.element_spec

        def dataset_fn(context: tf.distribute.InputContext):
            del context  # one stream for all workers: each batch goes to one of them
            return tf.data.experimental.service.from_dataset_id(
                "parallel_epochs", service.target, dataset_id, element_spec, job_name="train")

        creator = tf.keras.utils.experimental.DatasetCreator(dataset_fn)
        creator.data_service = service  # alive as long as the input is
        return creator

    def dataset_fn(context: tf.distribute.InputContext):
        batch = context.get_per_replica_batch_size(global_batch_size)
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return make_stream(batch, context.num_input_pipelines, context.input_pipeline_id,
                           steps_done * local_replicas)

    return tf.keras.utils.experimental.DatasetCreator(dataset_fn)


_GATHER_FUNCTIONS: dict[int, tf.types.experimental.GenericFunction] = {}


def _gather(strategy: tf.distribute.Strategy, value: float) -> np.ndarray:
    """Every replica's ``value``, on every worker (a collective: every worker must call it)."""
    # One traced function per strategy: collectives run eagerly are slow and warn.
    gather = _GATHER_FUNCTIONS.get(id(strategy))
    if gather is None:
        @tf.function
        def gather(x):
            return strategy.gather(strategy.run(tf.identity, args=(x,)), axis=0)

        _GATHER_FUNCTIONS[id(strategy)] = gather
    return gather(tf.constant([value], tf.float64)).numpy()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(tasks) for tasks in spec.values()) > 1


def agree_on_min(strategy: tf.distribute.Strategy, value: int) -> int:
    """The smallest ``value`` over every worker (a collective: every worker must call it)."""
    if not is_multi_worker(strategy):
        return value
    return int(_gather(strategy, float(value)).min())


# Every worker runs the same sequence of trainings, so the n-th exit has the same number everywhere.
_EXITS = itertools.count()


def leave_together(strategy: tf.distribute.Strategy) -> None:
    """Returns when this worker of a multi-worker cluster may exit.

    A collective cannot be the last thing workers do: a worker's all-gather
    returns once it has pulled its peers' values, maybe before a peer has
    pulled its own, and a worker that then exits closes the socket that peer is
    reading ("Socket closed" on the other worker). So the exit goes through the
    coordination service's key-value store, hosted by the leader (the chief):
    every task posts ``done`` after its last collective and waits for everyone's
    (then no collective is in flight anywhere); every other task then posts
    ``left`` and exits; the leader exits last, after every ``left``. Only the
    reply to a ``left`` can be cut off, and it carries nothing.
    """
    if not is_multi_worker(strategy):
        return
    # Private but stable: tf.distribute uses the same store for its own preemption protocol.
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    tasks = [f"/job:{job}/replica:0/task:{index}"
             for job in ("chief", "worker") if job in spec.jobs
             for index in range(spec.num_tasks(job))]
    me = f"/job:{resolver.task_type}/replica:0/task:{resolver.task_id}"
    leader = multi_worker_util.coordination_leader(spec)
    # Keys are written once: a second run in the same cluster uses new ones.
    prefix = f"dmi_tf/exit-{next(_EXITS)}"
    store = context.context()
    store.set_config_key_value(f"{prefix}/done{me}", "1")
    for task in tasks:
        store.get_config_key_value(f"{prefix}/done{task}")  # blocks until posted
    if me != leader:
        try:
            store.set_config_key_value(f"{prefix}/left{me}", "1")
        except tf.errors.UnavailableError:
            # The leader may exit the moment its store holds this key, before
            # the reply reaches us; every collective is over, so nothing is lost.
            pass
        return
    for task in tasks:
        if task != leader:
            store.get_config_key_value(f"{prefix}/left{task}")


def agree_on_mean(strategy: tf.distribute.Strategy, value: float) -> float:
    """The mean of ``value`` over every worker, so that every worker takes the same decision."""
    if not is_multi_worker(strategy):
        return value
    return float(_gather(strategy, value).mean())
