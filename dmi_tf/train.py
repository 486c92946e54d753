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
* ``tensorboard/``: training loss and validation metrics;
* ``metrics.json``: validation and test metrics of the model and of the
  MostPopular baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import sys
import time

import tensorflow as tf

from dmi_tf import config as config_lib
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


def prepare_run_dir(path: str | None, model_name: str) -> str:
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = os.path.join("runs", f"{model_name}-{stamp}")
    if os.path.isfile(path):
        raise UserError(f"--out {path!r} is a file; give a directory for the run.")
    if os.path.isdir(path) and os.listdir(path):
        raise UserError(f"run directory {path!r} is not empty; choose a new --out or remove it.")
    os.makedirs(path, exist_ok=True)
    return path


class ValidationCallback(tf.keras.callbacks.Callback):
    """Evaluates on the validation split every Keras epoch; keeps the best; stops early."""

    def __init__(self, evaluate_fn, metric, patience, steps_per_eval, manager, writer,
                 batch_size):
        super().__init__()
        self.evaluate_fn = evaluate_fn
        self.metric = metric
        self.patience = patience
        self.steps_per_eval = steps_per_eval
        self.manager = manager
        self.writer = writer
        self.batch_size = batch_size
        self.best = -math.inf
        self.best_step = 0
        self.wait = 0
        self.history: list[dict] = []
        self._epoch_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_start
        step = (epoch + 1) * self.steps_per_eval
        metrics = self.evaluate_fn()
        value = metrics[self.metric]
        improved = value > self.best
        with self.writer.as_default(step=step):
            for name, v in metrics.items():
                tf.summary.scalar(f"valid/{name}", v)
        if improved:
            self.best, self.best_step, self.wait = value, step, 0
            self.manager.save(checkpoint_number=step)
        else:
            self.wait += 1
        loss = (logs or {}).get("loss", float("nan"))
        speed = self.steps_per_eval * self.batch_size / max(seconds, 1e-9)
        self.history.append({"step": step, "loss": float(loss), **metrics})
        print(f"step {step}: loss {loss:.4f}, valid {self.metric} {value:.4f}"
              f"{' (best)' if improved else f' (best {self.best:.4f} at {self.best_step})'}"
              f", {speed:,.0f} sequences/s", flush=True)
        if self.wait >= self.patience:
            print(f"early stop: no better valid {self.metric} in {self.patience} "
                  "evaluations", flush=True)
            self.model.stop_training = True


def train_and_evaluate(config: config_lib.Config, run_dir: str, verbose: int | None = None) -> dict:
    """Trains ``config.model.name`` (if trainable), evaluates it and MostPopular; writes RUN_DIR.

    Returns:
      The content written to ``metrics.json``.
    """
    tf.keras.utils.set_random_seed(config.train.seed)
    atomic_write_text(os.path.join(run_dir, "config.yaml"), config_lib.dump_yaml(config))

    t0 = time.perf_counter()
    dataset = load_data(config)
    print(dataset.summary(), f"(loaded in {time.perf_counter() - t0:.1f}s)", flush=True)
    atomic_write_text(os.path.join(run_dir, "vocabulary.txt"),
                      "".join(raw + "\n" for raw in dataset.vocabulary))

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
        model = build_model(config, dataset.num_items, dataset.train)
        if isinstance(model, tf.keras.Model):
            results.update(fit(model, config, dataset, run_dir,
                               lambda: evaluate_on(model, valid), verbose))
        # The test split is read once, with the selected weights.
        results["valid"] = evaluate_on(model, valid)
        results["test"] = evaluate_on(model, test)
    atomic_write_text(os.path.join(run_dir, "metrics.json"), json.dumps(results, indent=2) + "\n")
    return results


def training_stream(model: tf.keras.Model, config: config_lib.Config,
                    dataset) -> tf.data.Dataset:
    """The endless training stream of ``dataset.train``, with the loss's per-batch input work."""
    return model.training_stream(training_dataset(
        dataset.train, config.data.max_length, config.train.batch_size,
        config.data.min_target_position, seed=config.train.seed))


def compile_for_training(model: tf.keras.Model, config: config_lib.Config) -> None:
    """Adam with the configured learning rate, XLA choice and steps per execution."""
    tc = config.train
    model.compile(optimizer=tf.keras.optimizers.Adam(tc.learning_rate),
                  jit_compile=tc.jit_compile, steps_per_execution=tc.steps_per_execution)


def fit(model: tf.keras.Model, config: config_lib.Config, dataset, run_dir: str,
        validate, verbose: int | None = None) -> dict:
    """Trains until validation stops improving; leaves the best weights in ``model``.

    Args:
      validate: a callable returning the validation metrics of ``model``.

    Returns:
      ``best_step``, ``steps``, ``train_seconds`` and the validation ``history``.
    """
    tc = config.train
    train = training_stream(model, config, dataset)
    compile_for_training(model, config)
    checkpoint = tf.train.Checkpoint(model=model)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, "checkpoints"),
                                         max_to_keep=1, checkpoint_name="best")
    log_dir = os.path.join(run_dir, "tensorboard")
    callback = ValidationCallback(
        validate, config.eval.selection_metric, tc.patience, tc.steps_per_eval, manager,
        tf.summary.create_file_writer(os.path.join(log_dir, "validation")), tc.batch_size)
    epochs = math.ceil(tc.max_steps / tc.steps_per_eval)
    print(f"training {config.model.name}: up to {epochs * tc.steps_per_eval:,} steps of "
          f"{tc.batch_size}, validation every {tc.steps_per_eval:,} steps", flush=True)
    t0 = time.perf_counter()
    model.fit(train, epochs=epochs, steps_per_epoch=tc.steps_per_eval,
              callbacks=[callback, tf.keras.callbacks.TensorBoard(
                  log_dir, update_freq=max(1, tc.steps_per_eval // 10), profile_batch=0)],
              verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    train_seconds = time.perf_counter() - t0
    checkpoint.restore(manager.latest_checkpoint).expect_partial()
    return {"best_step": callback.best_step, "steps": len(callback.history) * tc.steps_per_eval,
            "train_seconds": round(train_seconds, 1), "history": callback.history}


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
        run_dir = prepare_run_dir(args.out, config.model.name)
        print(f"run directory: {run_dir}", flush=True)
        results = train_and_evaluate(config, run_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(format_table(results, config.eval.cutoffs))
    print(f"\nmetrics, config and checkpoint written to {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
