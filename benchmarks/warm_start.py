"""Warm start against a cold start on the last time window: validation R@50 per step.

    python benchmarks/warm_start.py --raw ml-100k.inter --format recbole \\
        --config configs/amazon_dmi.yaml --seeds 0,1,2 --out runs/warm \\
        [--old-fractions 0.7,0.8] [--new-fractions 0.8,0.9] [--warm section.key=value] \\
        [--cold 'runs/quality-time/dmi-seed{seed}'] [--write BENCHMARKS.md]

Two time splits of one log (``prepare --split time``): "yesterday" trains on the
first 70% of the interactions, "today" on the first 80% (one more window), and
both validate on the window after their training period. For each seed:

* ``old``: a cold run on yesterday's split (the model in production);
* ``cold``: a cold run on today's split (``--cold`` reuses finished runs, e.g.
  the quality benchmark's on the same folder);
* ``warm``: today's split with ``--warm-start old``, the same config and seed
  (``--warm`` overrides apply to it alone, e.g. ``train.warm_start_targets=all``).
  By default it trains on the interactions newer than the old run's data, so its
  epoch, and with ``epochs_per_eval`` its validation interval, is a pass over those.

Today's folder is prepared without ``--vocabulary`` so that cold and warm train on
identical files (the warm start carries item rows by raw id). The table gives the
cold run's best validation R@50 and its step, the warm-started model's R@50
before its first step, the first validation step at which the warm run reaches
the cold run's best, the ratio of the two step counts, and how many of the warm
run's validations from then on stay at or above the cold best (a lucky peak
would not).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf.console import log_to_stdout
from dmi_tf.data.loading import load_data
from dmi_tf.data.pipeline import evaluation_dataset
from dmi_tf.data.prepare import main as prepare_main
from dmi_tf.evaluate import evaluate, evaluate_choosing_interests
from dmi_tf.models import build_model
from dmi_tf.train import prepare_run_dir, train_and_evaluate
from dmi_tf.warm_start import warm_start

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import markdown_table, mean_spread, run_header, write_section

METRIC = "recall@50"


def prepared(raw: str, fmt: str, fractions: str, out: str) -> str:
    if not os.path.isfile(os.path.join(out, "train.txt")):
        if prepare_main(["--input", raw, "--format", fmt, "--out", out, "--split", "time",
                         "--time-fractions", fractions]) != 0:
            raise SystemExit(f"prepare failed for {out}")
    return out


def trained(config_path: str, data: str, seed: int, run_dir: str, overrides,
            warm_from: str | None = None) -> dict:
    """The metrics of the run in ``run_dir``, training it first unless it has finished."""
    metrics_path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(metrics_path):
        config = config_lib.load(config_path, [*overrides, f"data.path={json.dumps(data)}",
                                               f"train.seed={seed}"])
        prepare_run_dir(run_dir, config)
        print(f"== {os.path.basename(run_dir)} -> {run_dir}", flush=True)
        train_and_evaluate(config, run_dir, verbose=0, warm_start_dir=warm_from)
    with open(metrics_path, encoding="utf-8") as f:
        return json.load(f)


def warm_step_zero(run_dir: str, source: str) -> float:
    """Validation R@50 of the warm-started model before any training step."""
    config = config_lib.load(os.path.join(run_dir, "config.yaml"))
    dataset = load_data(config)
    tf.keras.utils.set_random_seed(config.train.seed)
    model = build_model(config, dataset.num_items, dataset.train)
    warm_start(model, config, dataset.vocabulary, source)
    valid = evaluation_dataset(dataset.valid, config.data.max_length, config.train.eval_batch_size)
    # As the training run's validation does: a model with model.choose_interests is
    # judged at the interest count validation picks.
    return evaluate_choosing_interests(
        model, lambda: evaluate(model, valid, config.eval.cutoffs, config.eval.block_size),
        METRIC)[METRIC]


def reached(history: list[dict], target: float) -> int | None:
    """The first validation step whose metric is at least ``target``."""
    return next((h["step"] for h in history if h[METRIC] >= target), None)


def run(args) -> str:
    seeds = [int(s) for s in args.seeds.split(",")]
    old_data = prepared(args.raw, args.format, args.old_fractions, os.path.join(args.out, "old"))
    new_data = args.data or prepared(args.raw, args.format, args.new_fractions,
                                     os.path.join(args.out, "new"))
    rows, ratios, cold_best, warm_best, thirds = [], [], [], [], []
    for seed in seeds:
        old_dir = os.path.join(args.out, f"old-seed{seed}")
        trained(args.config, old_data, seed, old_dir, args.overrides)
        cold_dir = (args.cold.format(seed=seed) if args.cold
                    else os.path.join(args.out, f"cold-seed{seed}"))
        cold = trained(args.config, new_data, seed, cold_dir, args.overrides)
        warm_dir = os.path.join(args.out, f"warm-seed{seed}")
        warm = trained(args.config, new_data, seed, warm_dir, [*args.overrides, *args.warm],
                       warm_from=old_dir)
        best = max(h[METRIC] for h in cold["history"])
        step = reached(warm["history"], best)
        zero = warm_step_zero(warm_dir, old_dir)
        if zero >= best:
            step = 0
        ratio = step / cold["best_step"] if step is not None else float("nan")
        after = [h[METRIC] for h in warm["history"] if step is not None and h["step"] >= step]
        held = f"{sum(m >= best for m in after)} / {len(after)}" if after else ""
        # How far the warm run got in the budget the target allows: a third of the cold steps.
        by_third = max([zero, *(h[METRIC] for h in warm["history"]
                                if h["step"] <= cold["best_step"] / 3)])
        ratios.append(ratio)
        cold_best.append(best)
        warm_best.append(max(h[METRIC] for h in warm["history"]))
        thirds.append(by_third)
        rows.append([str(seed), f"{best:.4f} @ {cold['best_step']}", f"{zero:.4f}",
                     "not reached" if step is None else str(step), f"{ratio:.2f}", held,
                     f"{by_third:.4f}", f"{warm_best[-1]:.4f} @ {warm['best_step']}",
                     f"{cold['test'][METRIC]:.4f}", f"{warm['test'][METRIC]:.4f}",
                     f"{cold['steps']} / {warm['steps']}"])
    rows.append(["mean", mean_spread(cold_best), "", "", mean_spread(ratios), "",
                 mean_spread(thirds), mean_spread(warm_best), "", "", ""])
    header = ["seed", f"cold: best valid {METRIC} @ step", f"warm: valid {METRIC} at step 0",
              "warm: first step ≥ cold best", "steps warm / cold",
              "warm: validations ≥ cold best from that step",
              f"warm: best valid {METRIC} within ⅓ of the cold steps",
              f"warm: best valid {METRIC} @ step", f"cold test {METRIC}", f"warm test {METRIC}",
              "steps run cold / warm"]
    return markdown_table(header, rows)


def main(argv=None) -> int:
    log_to_stdout()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", required=True, help="the raw log (with timestamps)")
    parser.add_argument("--format", default="recbole")
    parser.add_argument("--config", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=os.path.join("runs", "warm"))
    parser.add_argument("--old-fractions", default="0.7,0.8")
    parser.add_argument("--new-fractions", default="0.8,0.9")
    parser.add_argument("--data", help="today's split folder (default: prepared from --raw)")
    parser.add_argument("--cold", help="finished cold runs on today's folder, '{seed}' in it")
    parser.add_argument("--warm", action="append", default=[], metavar="section.key=value",
                        help="an override for the warm runs only (repeatable), e.g. "
                        "train.learning_rate=0.0005: how a daily fine-tune differs from a cold run")
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("--title", default="Warm start: MovieLens-100k, time split")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    table = run(args)
    print(table)
    if args.write:
        body = (run_header("warm_start.py", argv)
                + f"Yesterday: train on the first {args.old_fractions.split(',')[0]} of the "
                f"interactions; today: the first {args.new_fractions.split(',')[0]}; both "
                "validate on the next window. Cold and warm runs read the same folder with the "
                "same config and seed"
                + (f", the warm runs with `{' '.join(args.warm)}`" if args.warm else "")
                + "; a warm run trains on what the old run had not seen unless "
                "`train.warm_start_targets=all`, and validates as the config sets it, once per "
                "pass over its targets with `epochs_per_eval: 1`.\n\n" + table)
        write_section(args.write, args.title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
