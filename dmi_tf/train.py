"""``python -m dmi_tf.train``: train, select on validation Recall@50, evaluate, report.

    python -m dmi_tf.train [--config configs/FILE.yaml] [--data DIR] [--model NAME]
                           [--out RUN_DIR] [section.key=value ...]

Without arguments it trains the default model on the built-in synthetic data.
RUN_DIR receives:

* ``config.yaml``: the resolved config (re-run or export from it alone);
* ``vocabulary.txt``: the raw item id of every item index, one per line;
* ``checkpoints/``: the best model by validation Recall@50 (written atomically
  by ``tf.train.CheckpointManager``: the index file only ever names complete
  checkpoints);
* ``backup/``: the fault-tolerance checkpoint of an unfinished run (weights,
  optimizer state, step, so the data position, and the validation history),
  every ``train.checkpoint_steps``; a run started again on the same RUN_DIR
  resumes from it (``--no-resume`` refuses instead), and it is removed when the
  run has finished;
* ``tensorboard/``: training loss and validation metrics;
* ``metrics.json``: validation and test metrics of the model and of the
  MostPopular baseline.

Under ``distribute.strategy: multi_worker`` every worker runs this same command;
the chief writes RUN_DIR and the others ``RUN_DIR/workers/<type>-<index>/``
(``dmi_tf/distribute.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import shutil
import sys
import time

import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf import distribute
from dmi_tf.data.pipeline import evaluation_dataset, training_dataset
from dmi_tf.errors import UserError
from dmi_tf.evaluate import evaluate
from dmi_tf.io_utils import atomic_write_text
from dmi_tf.models import build_model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dmi_tf.train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: built-in defaults, synthetic data)")
    parser.add_argument("--data", help="folder of split files; overrides data.path")
    parser.add_argument("--model", help="model name; overrides model.name")
    parser.add_argument("--out", help="run directory (default: runs/<model>-<time>)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue the unfinished run in --out from its last checkpoint "
                             "(default); --no-resume requires a new or empty --out")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, e.g. model.num_interests=8 train.max_steps=2000")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> config_lib.Config:
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.path={json.dumps(args.data)}")
    if args.model is not None:
        overrides.append(f"model.name={args.model}")
    return config_lib.load(args.config, overrides)


def load_data(config: config_lib.Config):
    """The configured dataset: a split folder, or the built-in synthetic data."""
    if config.data.path is None:
        from dmi_tf.data.synthetic import synthetic_dataset

        dataset, _ = synthetic_dataset(config.data.synthetic)
        return dataset
    from dmi_tf.data.splits import load_dataset

    return load_dataset(config.data.path)


def prepare_run_dir(path: str | None, config: config_lib.Config, resume: bool = True,
                    role: distribute.Role | None = None) -> str:
    """Checks (and creates) RUN_DIR; returns it.

    A new or empty directory starts a run. With ``resume``, a directory holding an
    unfinished run of the same config (``config.yaml`` equal but for the
    ``distribute`` section, no ``metrics.json``) is taken too: training continues
    from its ``backup/`` checkpoint, or from the start if it died before the first.
    """
    role = role or distribute.Role(config.distribute.strategy)
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = os.path.join("runs", f"{config.model.name}-{stamp}")
    if os.path.isfile(path):
        raise UserError(f"--out {path!r} is a file; give a directory for the run.")
    out = distribute.output_dir(path, role)
    # The chief may find the other workers' folder already there.
    entries = set(os.listdir(out)) - {"workers"} if os.path.isdir(out) else set()
    if entries:
        if not resume:
            raise UserError(f"run directory {out!r} is not empty; choose a new --out or "
                            "remove it (or drop --no-resume to continue an unfinished run).")
        if "metrics.json" in entries:
            raise UserError(f"run directory {out!r} is not empty: it holds a finished run "
                            "(metrics.json); choose a new --out or remove it.")
        if "config.yaml" not in entries:
            raise UserError(f"run directory {out!r} is not empty and holds no run; choose a "
                            "new --out or remove it.")
        differences = config_lib.differences(
            config_lib.load(os.path.join(out, "config.yaml")), config)
        if differences:
            raise UserError(
                f"run directory {out!r} holds an unfinished run with another config "
                f"({'; '.join(differences[:3])}); give the same config to resume it, or "
                "choose a new --out.")
    os.makedirs(out, exist_ok=True)
    return path


class ValidationCallback(tf.keras.callbacks.Callback):
    """Evaluates on the validation split every ``steps_per_eval`` steps; keeps the best.

    A Keras epoch is ``train.checkpoint_steps`` long (``steps_per_eval`` by
    default), so validation runs at the end of every ``steps_per_eval /
    checkpoint_steps``-th epoch, and stops after ``patience`` evaluations without a
    better metric. Its state (:meth:`state`) goes into every
    fault-tolerance checkpoint, so a resumed run keeps its history and patience.
    """

    def __init__(self, evaluate_fn, metric, patience, steps_per_eval, manager, writer,
                 batch_size, checkpoint_steps=None, strategy=None):
        super().__init__()
        self.evaluate_fn = evaluate_fn
        self.metric = metric
        self.patience = patience
        self.steps_per_eval = steps_per_eval
        self.checkpoint_steps = checkpoint_steps or steps_per_eval
        self.manager = manager
        self.writer = writer
        self.batch_size = batch_size
        self.strategy = strategy or tf.distribute.get_strategy()
        self.best = -math.inf
        self.best_step = 0
        self.wait = 0
        self.history: list[dict] = []
        self._since = time.perf_counter()
        self._since_step = 0

    def state(self) -> dict:
        """What a resumed run needs to continue model selection exactly."""
        return {"best": self.best, "best_step": self.best_step, "wait": self.wait,
                "history": self.history}

    def load_state(self, state: dict) -> None:
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.wait, self.history = int(state["wait"]), list(state["history"])

    @property
    def stopped_early(self) -> bool:
        return self.wait >= self.patience

    def on_train_begin(self, logs=None):
        self._since = time.perf_counter()
        self._since_step = -1  # set by the first epoch

    def on_epoch_begin(self, epoch, logs=None):
        if self._since_step < 0:
            self._since, self._since_step = time.perf_counter(), epoch * self.checkpoint_steps

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.checkpoint_steps
        if step % self.steps_per_eval:
            return
        seconds = time.perf_counter() - self._since
        speed = (step - self._since_step) * self.batch_size / max(seconds, 1e-9)
        # With train.ema_momentum, the average is what is validated and kept.
        with averaged_weights(self.model):
            metrics = self.evaluate_fn()
            # Multi-worker: every worker must take the same decision (saving is a collective).
            value = distribute.agree_on_mean(self.strategy, metrics[self.metric])
            improved = value > self.best
            if improved:
                self.best, self.best_step, self.wait = value, step, 0
                self.manager.save(checkpoint_number=step)
            else:
                self.wait += 1
        with self.writer.as_default(step=step):
            for name, v in metrics.items():
                tf.summary.scalar(f"valid/{name}", v)
        loss = (logs or {}).get("loss", float("nan"))
        self.history.append({"step": step, "loss": float(loss), **metrics})
        print(f"step {step}: loss {loss:.4f}, valid {self.metric} {value:.4f}"
              f"{' (best)' if improved else f' (best {self.best:.4f} at {self.best_step})'}"
              f", {speed:,.0f} sequences/s", flush=True)
        if self.stopped_early:
            print(f"early stop: no better valid {self.metric} in {self.patience} "
                  "evaluations", flush=True)
            self.model.stop_training = True
        self._since, self._since_step = time.perf_counter(), step


class BackupCallback(tf.keras.callbacks.Callback):
    """Fault tolerance: the whole training state, saved atomically every Keras epoch.

    Keras' ``BackupAndRestore`` restores weights and the epoch but restarts the
    input from its beginning; this one also keeps the data position (the step:
    the stream is seeded per batch, so :func:`fit` skips to it) and the
    validation history. Files, in ``RUN_DIR/backup/``: ``ckpt-<step>`` (model,
    optimizer with its step counter, the DMI refiner's ``tf.random.Generator``)
    and ``progress-<step>.json``, written before the checkpoint index names the
    step, so the index only ever names a complete pair. The last two are kept (a
    worker killed while saving leaves its previous one for the others to agree on).
    """

    KEEP = 2

    def __init__(self, directory: str, checkpoint: tf.train.Checkpoint, checkpoint_steps: int,
                 progress_fn):
        super().__init__()
        self.directory = directory
        self.checkpoint_steps = checkpoint_steps
        self.progress_fn = progress_fn
        self.manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=self.KEEP,
                                                  checkpoint_name="ckpt")

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.checkpoint_steps
        atomic_write_text(os.path.join(self.directory, f"progress-{step}.json"),
                          json.dumps({"step": step, **self.progress_fn()}) + "\n")
        self.manager.save(checkpoint_number=step)
        kept = {f"progress-{_checkpoint_step(path)}.json" for path in self.manager.checkpoints}
        for name in os.listdir(self.directory):
            if name.startswith("progress-") and name.endswith(".json") and name not in kept:
                os.remove(os.path.join(self.directory, name))


def _checkpoint_step(path: str) -> int:
    return int(path.rsplit("-", 1)[1])


def restore_backup(directory: str, checkpoint: tf.train.Checkpoint,
                   strategy: tf.distribute.Strategy) -> tuple[int, dict | None, str | None]:
    """Restores the last fault-tolerance checkpoint in ``directory``, if any.

    Every worker of a multi-worker run restores the same step: the smallest of
    their latest ones (one killed while saving is one checkpoint behind).

    Returns:
      ``(step, progress, path)``; ``(0, None, None)`` when there is none.
    """
    latest = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    step = distribute.agree_on_min(strategy, _checkpoint_step(latest) if latest else 0)
    if step == 0:
        return 0, None, None
    path = os.path.join(directory, f"ckpt-{step}")
    if not tf.io.gfile.exists(path + ".index"):
        raise UserError(f"{directory} has no checkpoint of step {step}, the step the other "
                        "workers resume from; restart every worker from the same checkpoints "
                        "(or remove the backup/ folders to start again).")
    # Slot variables the optimizer creates on its first step are restored then.
    checkpoint.restore(path).assert_existing_objects_matched()
    with open(os.path.join(directory, f"progress-{step}.json"), encoding="utf-8") as f:
        return step, json.load(f), path


def train_and_evaluate(config: config_lib.Config, run_dir: str, verbose: int | None = None,
                       resume: bool = True, role: distribute.Role | None = None) -> dict:
    """Trains ``config.model.name`` (if trainable), evaluates it and MostPopular; writes RUN_DIR.

    Under a cluster strategy every training process calls this (``role`` from
    ``TF_CONFIG`` by default); the chief writes RUN_DIR, the others
    ``RUN_DIR/workers/<name>/``.

    Args:
      resume: continue from the fault-tolerance checkpoint in the output folder, if any.

    Returns:
      The content written to ``metrics.json``.
    """
    distribute.configure_threads(config.distribute)
    role = role or distribute.cluster_role(config.distribute)
    out_dir = distribute.output_dir(run_dir, role)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "config.yaml"), config_lib.dump_yaml(config))

    t0 = time.perf_counter()
    dataset = load_data(config)
    print(dataset.summary(), f"(loaded in {time.perf_counter() - t0:.1f}s)", flush=True)
    atomic_write_text(os.path.join(out_dir, "vocabulary.txt"),
                      "".join(raw + "\n" for raw in dataset.vocabulary))
    # Before any TensorFlow work: a multi-worker strategy sets up collectives at startup.
    strategy = distribute.make_strategy(config.distribute, role, dataset.num_items)
    tf.keras.utils.set_random_seed(config.train.seed)

    L, ebs = config.data.max_length, config.train.eval_batch_size
    valid = evaluation_dataset(dataset.valid, L, ebs)
    test = evaluation_dataset(dataset.test, L, ebs)
    cutoffs, block = config.eval.cutoffs, config.eval.block_size

    def evaluate_on(model, split):
        return evaluate(model, split, cutoffs, block, dataset.item_categories,
                        config.eval.diversity_weight)

    baseline = build_model(dataclasses.replace(
        config, model=dataclasses.replace(config.model, name="most_popular")),
        dataset.num_items, dataset.train)
    popular = {"valid": evaluate_on(baseline, valid), "test": evaluate_on(baseline, test)}
    results = {"model": config.model.name, "dataset": dataset.summary(),
               "baselines": {"most_popular": popular}}
    if config.model.name == "most_popular":
        results.update(popular)
    else:
        # Variables (the DMI refiner's tf.random.Generator too) belong to the strategy.
        with strategy.scope():
            model = build_model(config, dataset.num_items, dataset.train)
        if isinstance(model, tf.keras.Model):
            results.update(fit(model, config, dataset, out_dir,
                               lambda: evaluate_on(model, valid), verbose,
                               strategy=strategy, role=role, resume=resume))
        # The test split is read once, with the selected weights.
        results["valid"] = evaluate_on(model, valid)
        results["test"] = evaluate_on(model, test)
    atomic_write_text(os.path.join(out_dir, "metrics.json"), json.dumps(results, indent=2) + "\n")
    # Finished: the fault-tolerance state is no longer needed (metrics.json marks the end).
    shutil.rmtree(os.path.join(out_dir, "backup"), ignore_errors=True)
    # No worker leaves while another may still need it (it serves collectives or the
    # coordination service).
    distribute.leave_together(strategy)
    return results


def training_stream(model: tf.keras.Model, config: config_lib.Config, dataset,
                    batch_size: int | None = None, num_shards: int = 1, shard_index: int = 0,
                    skip: int = 0) -> tf.data.Dataset:
    """The endless training stream of ``dataset.train``, with the loss's per-batch input work.

    Args:
      batch_size: rows per batch (default ``train.batch_size``; a replica's share
        under a strategy).
      num_shards, shard_index: keep every ``num_shards``-th batch, from ``shard_index``
        (one input pipeline of several).
      skip: batches of this shard to skip, the position of a resumed run. They are
        drawn (target positions, then sampled negatives) and dropped, so the stream
        continues exactly where it was; that costs the input work alone, 2.6 ms per
        batch with 1,280 negatives from 1,349 items (measured on 2 cores).
    """
    batches = training_dataset(
        dataset.train, config.data.max_length, batch_size or config.train.batch_size,
        config.data.min_target_position, seed=config.train.seed,
        targets=config.data.training_targets)
    if num_shards > 1:
        batches = batches.shard(num_shards, shard_index)
    stream = model.training_stream(batches)
    return stream.skip(skip) if skip else stream


class LazyAdam(tf.keras.optimizers.Adam):
    """Adam that updates only the rows a sparse gradient touches (TF Addons' LazyAdam).

    Keras' Adam decays both moments of every row of the item table at every step,
    even with a sparse gradient: O(items x d) work and memory traffic per step
    (2.0 s per step for a 1.7M x 64 table on 2 cores, measured). Here the moments
    and weights of the rows in the batch (history, targets, negatives) are updated
    and the others wait: the standard choice for large embedding tables. Dense
    gradients get Keras' Adam unchanged.
    """

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        # Keras has already summed duplicate indices (_deduplicate_sparse_grad).
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step))
                 / (1 - tf.pow(beta_1, step)))
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        rows, grad = gradient.indices, gradient.values
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(grad)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(
            alpha * m_rows / (tf.sqrt(v_rows) + tf.cast(self.epsilon, dtype)), rows))


@contextlib.contextmanager
def averaged_weights(model: tf.keras.Model):
    """Inside, ``model`` holds the optimizer's moving average of its weights (if it keeps one).

    The weights and their averages swap places on entry and back on exit, so
    training resumes from its own weights and the average keeps its history.
    """
    optimizer = model.optimizer
    if optimizer is None or not getattr(optimizer, "use_ema", False):
        yield
        return
    # Keras' optimizer keeps one average per variable it was built on (private but
    # pinned with tf-keras 2.20; finalize_variable_values reads them the same way).
    pairs = [(v, optimizer._model_variables_moving_average[
        optimizer._index_dict[optimizer._var_key(v)]]) for v in model.trainable_variables]

    def swap():
        for variable, average in pairs:
            value = tf.identity(variable)
            variable.assign(average)
            average.assign(value)

    swap()
    try:
        yield
    finally:
        swap()


def compile_for_training(model: tf.keras.Model, config: config_lib.Config) -> None:
    """The configured Adam and learning rate, XLA choice and steps per execution.

    Under a strategy, call it in ``strategy.scope()`` (the optimizer's variables
    belong to the strategy).
    """
    tc = config.train
    optimizer = (LazyAdam if tc.optimizer == "lazy_adam" else tf.keras.optimizers.Adam)
    ema = {"use_ema": True, "ema_momentum": tc.ema_momentum} if tc.ema_momentum else {}
    model.compile(optimizer=optimizer(tc.learning_rate, **ema),
                  jit_compile=tc.jit_compile, steps_per_execution=tc.steps_per_execution)


def fit(model: tf.keras.Model, config: config_lib.Config, dataset, run_dir: str,
        validate, verbose: int | None = None, strategy: tf.distribute.Strategy | None = None,
        role: distribute.Role | None = None, resume: bool = True, callbacks=()) -> dict:
    """Trains until validation stops improving; leaves the best weights in ``model``.

    Args:
      model: built in ``strategy.scope()``.
      run_dir: where this process writes (``checkpoints/``, ``backup/``, ``tensorboard/``).
      validate: a callable returning the validation metrics of ``model``.
      strategy, role: the distribution (default: one device).
      resume: continue from ``run_dir/backup`` if it holds a checkpoint.
      callbacks: more Keras callbacks, run before the validation and the checkpoints.

    Returns:
      ``best_step``, ``steps``, ``train_seconds`` and the validation ``history``.
    """
    tc = config.train
    strategy = strategy or tf.distribute.get_strategy()
    role = role or distribute.Role(config.distribute.strategy)
    checkpoint_steps = tc.checkpoint_steps or tc.steps_per_eval
    with strategy.scope():
        compile_for_training(model, config)
        # Every variable the forward pass owns exists before a restore.
        model.interests(tf.zeros([1, config.data.max_length], tf.int32))
    checkpoint = tf.train.Checkpoint(model=model)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, "checkpoints"),
                                         max_to_keep=1, checkpoint_name="best")
    log_dir = os.path.join(run_dir, "tensorboard")
    callback = ValidationCallback(
        validate, config.eval.selection_metric, tc.patience, tc.steps_per_eval, manager,
        tf.summary.create_file_writer(os.path.join(log_dir, "validation")), tc.batch_size,
        checkpoint_steps, strategy)
    backup_dir = os.path.join(run_dir, "backup")
    state = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                train_counter=model._train_counter)
    step, progress, restored = (restore_backup(backup_dir, state, strategy) if resume
                                else (0, None, None))
    spent = 0.0
    if progress is not None:
        callback.load_state(progress["validation"])
        spent = float(progress["train_seconds"])
    epochs = math.ceil(tc.max_steps / tc.steps_per_eval) * tc.steps_per_eval // checkpoint_steps
    print(f"training {config.model.name}: up to {epochs * checkpoint_steps:,} steps of "
          f"{tc.batch_size}, validation every {tc.steps_per_eval:,} steps", flush=True)
    if restored:
        print(f"resuming from step {step:,} ({restored})", flush=True)
    if distribute.is_parameter_server(strategy):
        print("parameter_server: item table in "
              f"{distribute.describe_placement(model.candidate_embeddings())}", flush=True)
    t0 = time.perf_counter()
    if step < epochs * checkpoint_steps and not callback.stopped_early:
        train = distribute.training_input(
            strategy, role, tc.batch_size,
            lambda batch, shards, index, skip: training_stream(
                model, config, dataset, batch, shards, index, skip), step)
        backup = BackupCallback(backup_dir, state, checkpoint_steps, lambda: {
            "validation": callback.state(),
            "train_seconds": round(spent + time.perf_counter() - t0, 1)})
        model.fit(train, epochs=epochs, initial_epoch=step // checkpoint_steps,
                  steps_per_epoch=checkpoint_steps,
                  callbacks=[*callbacks, callback, backup, tf.keras.callbacks.TensorBoard(
                      log_dir, update_freq=_tensorboard_frequency(strategy, tc.steps_per_eval),
                      profile_batch=0)],
                  verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    train_seconds = spent + time.perf_counter() - t0
    callback.writer.flush()
    checkpoint.restore(manager.latest_checkpoint).expect_partial()
    return {"best_step": callback.best_step, "steps": len(callback.history) * tc.steps_per_eval,
            "train_seconds": round(train_seconds, 1), "history": callback.history}


def _tensorboard_frequency(strategy, steps_per_eval: int):
    # The parameter-server coordinator only sees whole epochs.
    if distribute.is_parameter_server(strategy):
        return "epoch"
    return max(1, steps_per_eval // 10)


def format_table(results: dict, cutoffs) -> str:
    """The metrics table printed at the end of a run (MostPopular first, for scale)."""
    columns = [f"{m}@{c}" for c in sorted(cutoffs) for m in ("recall", "hit_rate", "ndcg")]
    rows = []
    for split in ("valid", "test"):
        for name, metrics in (("most_popular", results["baselines"]["most_popular"][split]),
                              (results["model"], results[split])):
            if name == "most_popular" and results["model"] == "most_popular":
                continue
            rows.append([name, split, *(f"{metrics[c]:.4f}" for c in columns),
                         str(int(metrics["users"]))])
    header = ["model", "split", *columns, "users"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = resolve_config(args)
        role = distribute.cluster_role(config.distribute)
        if role.serves_only:
            distribute.serve(role)
            return 0
        run_dir = prepare_run_dir(args.out, config, args.resume, role)
        print(f"run directory: {run_dir}", flush=True)
        results = train_and_evaluate(config, run_dir, resume=args.resume, role=role)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(format_table(results, config.eval.cutoffs))
    print(f"\nmetrics, config and checkpoint written to {run_dir}")
    if role.task_type is not None:
        # Everything is written. Interpreter teardown can block in TensorFlow's gRPC
        # server and coordination service once a peer has gone, so a cluster
        # process leaves at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
