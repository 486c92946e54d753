"""``python -m dmi_tf.train``: train, select on validation Recall@50, evaluate, report.

    python -m dmi_tf.train [--config configs/FILE.yaml] [--data DIR] [--model NAME]
                           [--out RUN_DIR] [--warm-start RUN_DIR] [section.key=value ...]

Without ``--config`` it reads ``dmi_tf/default.yaml``: DMI on the built-in
synthetic data, about two minutes on 2 cores.
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
  MostPopular baseline, and the newest training timestamp (``train_data_end``:
  what a run warm-started from this one counts as new);
* ``warm_start.json``: with ``--warm-start``, the run it started from
  (``dmi_tf/warm_start.py``; also under ``warm_start`` in ``metrics.json``).

Under ``distribute.strategy: multi_worker`` every worker runs this same command;
the chief writes RUN_DIR and the others ``RUN_DIR/workers/<type>-<index>/``
(``dmi_tf/distribute.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import errno
import json
import logging
import os
import shutil
import sys
import time

import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf import distribute
from dmi_tf.console import list_devices_quietly, log_to_stdout
from dmi_tf.data.loading import load_data
from dmi_tf.data.pipeline import evaluation_dataset
from dmi_tf.errors import UserError
from dmi_tf.evaluate import evaluate, evaluate_choosing_interests
from dmi_tf.io_utils import atomic_write_text
from dmi_tf.models import build_model
from dmi_tf.training import fit
from dmi_tf.warm_start import check_start, new_data_start, train_data_end, warm_start
from dmi_tf.warm_start import describe as describe_warm_start
from dmi_tf.warm_start import write_record as write_warm_start

# Not __name__: run as `python -m dmi_tf.train`, this module is __main__.
log = logging.getLogger("dmi_tf.train")

# The default run's config, shipped inside the package so it works from any directory.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.yaml")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dmi_tf.train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="YAML config (default: dmi_tf/default.yaml, DMI on the built-in "
                             "synthetic data)")
    parser.add_argument("--data", help="folder of split files; overrides data.path")
    parser.add_argument("--model", help="model name; overrides model.name")
    parser.add_argument("--out", help="run directory (default: runs/<model>-<time>)")
    parser.add_argument("--warm-start", metavar="RUN_DIR", default=None,
                        help="start from this run's weights: item rows carried by raw id, new "
                             "items initialised as in a fresh run (same model, d and K)")
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
    try:
        return _prepare_run_dir(path, config, resume, role)
    except OSError as e:  # unwritable, below a file, unreadable: the user's path, not a bug
        raise UserError(f"cannot use --out {path!r}: {e.strerror or e}"
                        f"{f' ({e.filename})' if e.filename else ''}; choose a directory you "
                        "can write.") from None


def _prepare_run_dir(path: str, config: config_lib.Config, resume: bool,
                     role: distribute.Role) -> str:
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
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), out)
    return path


def train_and_evaluate(config: config_lib.Config, run_dir: str, verbose: int | None = None,
                       resume: bool = True, role: distribute.Role | None = None,
                       warm_start_dir: str | None = None) -> dict:
    """Trains ``config.model.name`` (if trainable), evaluates it and MostPopular; writes RUN_DIR.

    Under a cluster strategy every training process calls this (``role`` from
    ``TF_CONFIG`` by default); the chief writes RUN_DIR, the others
    ``RUN_DIR/workers/<name>/``.

    Args:
      resume: continue from the fault-tolerance checkpoint in the output folder, if any.
      warm_start_dir: a previous run to start from (``dmi_tf.warm_start``); an
        unfinished run resumes only with the start it had.

    Returns:
      The content written to ``metrics.json``.
    """
    distribute.configure_threads(config.distribute)
    role = role or distribute.cluster_role(config.distribute)
    out_dir = distribute.output_dir(run_dir, role)
    check_start(out_dir, warm_start_dir, config.model.name)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "config.yaml"), config_lib.dump_yaml(config))

    t0 = time.perf_counter()
    dataset = load_data(config)
    log.info(f"{dataset.summary()} (loaded in {time.perf_counter() - t0:.1f}s)")
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
    # What a later run warm-started from this one counts as new (dmi_tf/warm_start.py).
    results = {"model": config.model.name, "dataset": dataset.summary(),
               "train_data_end": train_data_end(dataset.train),
               "baselines": {"most_popular": popular}}
    if config.model.name == "most_popular":
        results.update(popular)
    else:
        # Variables (the DMI refiner's tf.random.Generator too) belong to the strategy.
        with strategy.scope():
            model = build_model(config, dataset.num_items, dataset.train)
            if warm_start_dir is not None:  # the weights, in the scope; the source's outside it
                model.interests(tf.zeros([1, L], tf.int32))
        targets_after = None
        if warm_start_dir is not None:
            targets = (new_data_start(config, dataset.train, warm_start_dir)
                       or {"targets_after": None})
            results["warm_start"] = started = {
                **warm_start(model, config, dataset.vocabulary, warm_start_dir), **targets}
            targets_after = started["targets_after"]
            write_warm_start(out_dir, started)
            log.info(describe_warm_start(started))
        if isinstance(model, tf.keras.Model):
            results.update(fit(model, config, dataset, out_dir,
                               lambda: evaluate_choosing_interests(
                                   model, lambda: evaluate_on(model, valid),
                                   config.eval.selection_metric),
                               verbose, strategy=strategy, role=role, resume=resume,
                               targets_after=targets_after))
        # The test split is read once, with the selected weights (and interest choice).
        results["valid"] = evaluate_on(model, valid)
        results["test"] = evaluate_on(model, test)
        if getattr(model, "served_interests", None) is not None:
            results["served_interests"] = int(model.served_interests.numpy())
    atomic_write_text(os.path.join(out_dir, "metrics.json"), json.dumps(results, indent=2) + "\n")
    # Finished: the fault-tolerance state is no longer needed (metrics.json marks the end).
    shutil.rmtree(os.path.join(out_dir, "backup"), ignore_errors=True)
    # No worker leaves while another may still need it (it serves collectives or the
    # coordination service).
    distribute.leave_together(strategy)
    return results


def format_table(results: dict, cutoffs) -> str:
    """The metrics table printed at the end of a run (MostPopular first, for scale)."""
    columns = [f"{m}@{c}" for c in sorted(cutoffs) for m in ("recall", "hit_rate", "ndcg")]
    rows = []
    for split in ("valid", "test"):
        # Keyed by name: a most_popular run is its own floor and gets one row.
        models = {"most_popular": results["baselines"]["most_popular"][split],
                  results["model"]: results[split]}
        for name, metrics in models.items():
            rows.append([name, split, *(f"{metrics[c]:.4f}" for c in columns),
                         str(int(metrics["users"]))])
    header = ["model", "split", *columns, "users"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv=None) -> int:
    log_to_stdout()
    args = parse_args(argv)
    list_devices_quietly()
    run_dir = None
    try:
        config = resolve_config(args)
        role = distribute.cluster_role(config.distribute)
        if role.serves_only:
            distribute.serve(role)
            return 0
        run_dir = prepare_run_dir(args.out, config, args.resume, role)
        print(f"run directory: {run_dir}", flush=True)
        results = train_and_evaluate(config, run_dir, resume=args.resume, role=role,
                                     warm_start_dir=args.warm_start)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C is how a run is paused: one line saying how it continues, not a traceback.
        print("\ninterrupted: " + (
            f"the same command (--out {run_dir}) resumes the run from its last checkpoint"
            if run_dir else "no run was started"), file=sys.stderr)
        return 130
    print()
    print(format_table(results, config.eval.cutoffs))
    # Only a trained model has a checkpoint (fit reports the step it selected).
    written = "metrics, config and checkpoint" if "best_step" in results else "metrics and config"
    print(f"\n{written} written to {run_dir}")
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
