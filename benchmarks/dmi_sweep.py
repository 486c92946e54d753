"""DMI's ablations and sweeps by config alone: each variant over seeds, against the backbone.

    python benchmarks/dmi_sweep.py --config configs/ml100k_dmi.yaml --seeds 0,1,2,3,4 \\
        [--variants backbone,default,no_noise,...] [--out runs/sweep-ml100k] \\
        [--write BENCHMARKS.md] [--plot benchmarks/dmi_sweep_ml100k.png] [--no-train]
        [section.key=value ...]

Training variants are full ``python -m dmi_tf.train`` runs (one run directory
per variant and seed; a finished run is reused, so an interrupted sweep
resumes). Inference-only variants (S, T') re-evaluate the trained ``default``
runs with other reverse-pass settings, as a deployed model would be changed.
The table reports mean ± sample std over seeds, and the paired difference to
the backbone (same seeds), which is what a claim of improvement rests on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf.console import log_to_stdout
from dmi_tf.data.pipeline import evaluation_arrays, evaluation_dataset
from dmi_tf.evaluate import evaluate
from dmi_tf.metrics import interest_purity
from dmi_tf.retrieval import exact_topk
from dmi_tf.runs import load_run
from dmi_tf.train import prepare_run_dir, train_and_evaluate

sys.path.insert(0, os.path.dirname(__file__))
from quality import markdown_table, mean_spread, paired_backbone, run_header, write_section

# name -> (description, training overrides, inference-only overrides of the default runs)
VARIANTS: dict[str, tuple[str, list[str], list[str] | None]] = {
    "backbone": ("ComiRec-SA alone (the backbone, same budget)", ["model.name=comirec_sa"], None),
    "default": ("DMI, defaults of docs/method.md", [], None),
    "no_diffusion": ("ρ = 0: refiner off (the backbone inside DMI)",
                     ["diffusion.noise_dims_ratio=0"], None),
    "no_noise": ("s = 0: refiner kept, no noise", ["diffusion.noise_scale=0"], None),
    "rho_0.25": ("ρ = 0.25", ["diffusion.noise_dims_ratio=0.25"], None),
    "rho_1": ("ρ = 1 (plain DDPM noise on every dimension)", ["diffusion.noise_dims_ratio=1"],
              None),
    "keep_5": ("r = 5 history items per interest", ["diffusion.keep_items=5"], None),
    "keep_10": ("r = L/2 = 10", ["diffusion.keep_items=10"], None),
    "no_ffn": ("denoiser blocks without the feed-forward layer (leaner)",
               ["diffusion.ffn_factor=0"], None),
    "lean": ("s = 0 and no feed-forward layer",
             ["diffusion.noise_scale=0", "diffusion.ffn_factor=0"], None),
    "fast": ("no FFN and the backbone's W1 at d -> d (not 4d): the cheapest query tower",
             ["diffusion.ffn_factor=0", "model.attention_hidden_factor=1"], None),
    "backbone_h1": ("ComiRec-SA alone with its W1 at d -> d (not 4d)",
                    ["model.name=comirec_sa", "model.attention_hidden_factor=1"], None),
    "default_h1": ("DMI with the backbone's W1 at d -> d (not 4d), FFN kept",
                   ["model.attention_hidden_factor=1"], None),
    "mlp": ("MLP denoiser (no cross-attention)", ["diffusion.denoiser=mlp"], None),
    "sum": ("sum combiner, u = v0 + v̂0", ["diffusion.combine=sum"], None),
    "backbone_k1": ("ComiRec-SA alone with K = 1 (attention pooling: a single interest)",
                    ["model.name=comirec_sa", "model.num_interests=1"], None),
    "default_k1": ("DMI with K = 1 interest", ["model.num_interests=1"], None),
    "backbone_k2": ("ComiRec-SA alone with K = 2 interests",
                    ["model.name=comirec_sa", "model.num_interests=2"], None),
    "default_k2": ("DMI with K = 2 interests", ["model.num_interests=2"], None),
    "backbone_k8": ("ComiRec-SA alone with K = 8 interests",
                    ["model.name=comirec_sa", "model.num_interests=8"], None),
    "backbone_k16": ("ComiRec-SA alone with K = 16 interests",
                     ["model.name=comirec_sa", "model.num_interests=16"], None),
    "default_k8": ("DMI with K = 8 interests", ["model.num_interests=8"], None),
    "mu_0": ("μ = 0 (no reconstruction loss)", ["diffusion.recon_weight=0"], None),
    "backbone_loss": ("a second retrieval loss on the coarse interest (weight 1)",
                      ["diffusion.backbone_loss_weight=1"], None),
    "backbone_loss_k1": ("K = 1 and a second retrieval loss on the coarse interest (weight 1)",
                         ["model.num_interests=1", "diffusion.backbone_loss_weight=1"], None),
    "train_all": ("training refines all K interests; the readout picks among the refined",
                  ["diffusion.train_interests=all"], None),
    "steps_50": ("T = 50", ["diffusion.steps=50"], None),
    "layers_2": ("L = 2 denoiser blocks", ["diffusion.layers=2"], None),
    "heads_4": ("4 attention heads per block", ["diffusion.heads=4"], None),
    "S_0": ("S = 0 at inference (coarse interests of the trained DMI)", [],
            ["diffusion.infer_steps=0"]),
    "S_2": ("S = 2 at inference", [], ["diffusion.infer_steps=2"]),
    "S_4": ("S = 4 at inference", [], ["diffusion.infer_steps=4"]),
    "S_8": ("S = 8 at inference", [], ["diffusion.infer_steps=8"]),
    "T'_0": ("T' = 0 at inference (no noise level assumed)", [], ["diffusion.infer_start=0"]),
}
METRICS = ("recall@50", "hit_rate@50")


def purity(model, run) -> dict:
    """Mean interest purity@50 on the test split (data with item categories only)."""
    categories = run.dataset.item_categories
    if categories is None:
        return {}
    history, _, _ = evaluation_arrays(run.dataset.test, run.config.data.max_length)
    out = {}
    for kind, fn in (("coarse", model.coarse_interests), ("refined", model.interests)):
        interests = fn(history)
        k, d = interests.shape[1], interests.shape[2]
        _, ids = exact_topk(tf.reshape(interests, [-1, d]), model.candidate_embeddings(), 50)
        ids = tf.reshape(ids, [-1, k, 50])
        out[f"purity@50 {kind}"] = float(tf.reduce_mean(interest_purity(ids, categories)))
    return out


def with_purity(results: dict, run_dir: str) -> dict:
    """``results`` plus the run's purity, computed once and kept in ``run_dir/purity.json``."""
    path = os.path.join(run_dir, "purity.json")
    if not os.path.isfile(path):
        run = load_run(run_dir)
        value = purity(run.model, run) if hasattr(run.model, "coarse_interests") else {}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(value, f)
    with open(path, encoding="utf-8") as f:
        return {**results, "purity": json.load(f)}


def train_variant(args, name: str, seed: int) -> dict:
    run_dir = os.path.join(args.out, f"{name}-seed{seed}")
    metrics_path = os.path.join(run_dir, "metrics.json")
    _, overrides, _ = VARIANTS[name]
    config = config_lib.load(args.config, [*args.overrides, *overrides, f"train.seed={seed}"])
    if os.path.isfile(metrics_path):
        # A finished run is reused only if it is the run this sweep would train: a
        # config file changed since (K, say) must not mix old runs into new rows.
        saved = config_lib.load(os.path.join(run_dir, "config.yaml"))
        differences = config_lib.differences(saved, config)
        if differences:
            raise SystemExit(
                f"{run_dir} holds a finished run of another config "
                f"({'; '.join(differences[:3])}): give --out a new folder, or the overrides "
                "that config was trained with.")
        return with_purity(json.load(open(metrics_path, encoding="utf-8")), run_dir)
    prepare_run_dir(run_dir, config)  # an interrupted run resumes from its backup
    print(f"== {name}, seed {seed} -> {run_dir}", flush=True)
    return with_purity(train_and_evaluate(config, run_dir, verbose=0), run_dir)


def evaluate_variant(args, name: str, seed: int) -> dict:
    """Re-evaluates the trained default run of ``seed`` with inference-only overrides."""
    train_variant(args, "default", seed)
    run_dir = os.path.join(args.out, f"default-seed{seed}")
    cache = os.path.join(args.out, f"{name}-seed{seed}.json")
    if os.path.isfile(cache):
        return json.load(open(cache, encoding="utf-8"))
    run = load_run(run_dir, VARIANTS[name][2])
    c = run.config
    results = {}
    for split in ("valid", "test"):
        data = evaluation_dataset(getattr(run.dataset, split), c.data.max_length,
                                  c.train.eval_batch_size)
        results[split] = evaluate(run.model, data, c.eval.cutoffs, c.eval.block_size)
    results["purity"] = purity(run.model, run)
    with open(cache, "w", encoding="utf-8") as f:
        json.dump(results, f)
    return results


def sweep(args) -> tuple[str, dict]:
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; available: {', '.join(VARIANTS)}")
    results = {}
    for name in names:
        fn = evaluate_variant if VARIANTS[name][2] is not None else train_variant
        trained = "default" if VARIANTS[name][2] is not None else name
        runs = {seed: fn(args, name, seed) for seed in seeds
                if not args.no_train or os.path.isfile(
                    os.path.join(args.out, f"{trained}-seed{seed}", "metrics.json"))}
        if runs:
            results[name] = runs
    return table(results), results


def table(results: dict) -> str:
    header = ["variant", "what", "seeds", "valid R@50", "test R@50", "test HR@50",
              "Δ valid R@50 vs backbone", "Δ test R@50 vs backbone"]
    # A variant is paired with the backbone of its own K (quality.paired_backbone).
    with_purity_column = any(r.get("purity") for runs in results.values()
                             for r in runs.values())
    if with_purity_column:
        header += ["purity@50 (coarse → served)"]
    rows = []
    for name, per_seed in results.items():
        base_name = paired_backbone(name, results)
        base = results.get(base_name, {})
        runs = list(per_seed.values())
        row = [name, VARIANTS[name][0], str(len(runs)),
               mean_spread([r["valid"]["recall@50"] for r in runs]),
               mean_spread([r["test"]["recall@50"] for r in runs]),
               mean_spread([r["test"]["hit_rate@50"] for r in runs])]
        for split in ("valid", "test"):
            paired = [r[split]["recall@50"] - base[s][split]["recall@50"]
                      for s, r in per_seed.items() if s in base]
            against = "" if base_name == "backbone" else f" vs {base_name}"
            row.append(f"{mean_spread(paired)} ({len(paired)} paired{against})"
                       if paired and name != base_name else "")
        if with_purity_column:
            p = [r.get("purity", {}) for r in runs]
            row.append(f"{np.mean([x['purity@50 coarse'] for x in p]):.3f} → "
                       f"{np.mean([x['purity@50 refined'] for x in p]):.3f}"
                       if all(p) else "")
        rows.append(row)
    return markdown_table(header, rows)


def plot(results: dict, path: str, title: str) -> bool:
    """Recall@50 against S and against ρ (variants present in ``results``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    axes_spec = [
        ("S (reverse steps at inference)", {"S_0": 0, "default": 1, "S_2": 2, "S_4": 4, "S_8": 8}),
        ("ρ (share of noised dimensions)", {"no_diffusion": 0.0, "rho_0.25": 0.25,
                                            "default": 0.5, "rho_1": 1.0}),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (label, points) in zip(axes, axes_spec, strict=True):
        present = [(x, results[n]) for n, x in points.items() if n in results]
        if label.startswith("ρ") and "no_diffusion" not in results and "backbone" in results:
            # ρ = 0 is the backbone exactly (tests/test_dmi.py).
            present.insert(0, (0.0, results["backbone"]))
        for split, style in (("valid", "o-"), ("test", "s--")):
            xs = [x for x, _ in present]
            ys = [np.mean([r[split]["recall@50"] for r in runs.values()]) for _, runs in present]
            es = [np.std([r[split]["recall@50"] for r in runs.values()], ddof=1)
                  if len(runs) > 1 else 0.0 for _, runs in present]
            ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=split)
        if "backbone" in results:
            for split, color in (("valid", "C0"), ("test", "C1")):
                ax.axhline(np.mean([r[split]["recall@50"] for r in results["backbone"].values()]),
                           color=color, alpha=0.4, lw=1, label=f"backbone {split}")
        ax.set_xlabel(label)
        ax.set_ylabel("Recall@50")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv=None) -> int:
    log_to_stdout()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True,
                        help="the DMI config, e.g. configs/ml100k_dmi.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="backbone,default,no_diffusion,no_noise,rho_0.25,"
                        "rho_1,keep_5,mlp,sum,S_0,S_2,S_4,S_8")
    parser.add_argument("--out", default=os.path.join("runs", "sweep"))
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("--title", help="section title (default: 'DMI sweep: <config name>')")
    parser.add_argument("--plot", help="PNG path for Recall@50 against S and ρ")
    parser.add_argument("--no-train", action="store_true",
                        help="report only the finished runs (train nothing new)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    text, results = sweep(args)
    print(text)
    title = args.title or f"DMI sweep: {os.path.splitext(os.path.basename(args.config))[0]}"
    if args.plot and plot(results, args.plot, title):
        print(f"wrote {args.plot}")
    if args.write:
        body = (run_header("dmi_sweep.py", argv)
                + "Mean ± sample std over seeds; Δ is the per-seed difference to the backbone "
                "trained with the same seed (mean ± std of the differences).\n\n" + text)
        if args.plot:
            body += f"\n\n![Recall@50 against S and ρ]({os.path.relpath(args.plot)})"
        write_section(args.write, title, body)
        print(f"wrote the '{title}' section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
