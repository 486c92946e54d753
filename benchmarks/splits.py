"""Models compared across several user splits of one dataset (finished runs only).

    python benchmarks/splits.py --roots runs/sweep-ml100k,runs/split1,runs/split2,runs/split3 \\
        [--variants backbone,default,no_ffn] [--seeds 0] [--write BENCHMARKS.md]

One user split puts ~95 users in each of valid and test on MovieLens-100k, too
few to rank settings whose difference is a few thousandths (validation and
test ranked them in opposite orders). Each root holds the runs of one split
(``python -m dmi_tf.data.prepare --seed N`` makes the split,
``benchmarks/dmi_sweep.py --out ROOT data.path=...`` or ``python -m
dmi_tf.train --out ROOT/<variant>-seed<S>`` trains): ``ROOT/<variant>-seed<S>/
metrics.json``. A variant's score on a split is its mean over ``--seeds``;
the table gives it per split, the mean over splits, and the per-split
difference to ``backbone`` (mean ± std over splits, and on how many splits the
variant was ahead); a ``<name>_k<N>`` variant is paired with ``backbone_k<N>``
when that ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import markdown_table, mean_spread, paired_backbone, run_header, write_section


def split_scores(root: str, variant: str, seeds: list[int]) -> dict | None:
    """Mean valid/test R@50 and test HR@50 over the finished seeds, or None."""
    runs = []
    for seed in seeds:
        path = os.path.join(root, f"{variant}-seed{seed}", "metrics.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                runs.append(json.load(f))
    if not runs:
        return None
    return {"valid": np.mean([r["valid"]["recall@50"] for r in runs]),
            "test": np.mean([r["test"]["recall@50"] for r in runs]),
            "test_hr": np.mean([r["test"]["hit_rate@50"] for r in runs])}


def table(roots: list[str], variants: list[str], seeds: list[int]) -> str:
    scores = {v: {root: split_scores(root, v, seeds) for root in roots} for v in variants}
    header = ["variant", *(f"{os.path.basename(r.rstrip('/'))}: valid / test R@50" for r in roots),
              "splits", "valid R@50", "test R@50", "test HR@50", "Δ valid vs backbone",
              "Δ test vs backbone"]
    rows = []
    for variant, per_root in scores.items():
        done = {root: s for root, s in per_root.items() if s is not None}
        if not done:
            continue
        base_name = paired_backbone(variant, scores)
        base = scores.get(base_name, {})
        cells = [f"{s['valid']:.4f} / {s['test']:.4f}" if s else "–" for s in per_root.values()]
        row = [variant, *cells, str(len(done)),
               *(mean_spread([s[key] for s in done.values()])
                 for key in ("valid", "test", "test_hr"))]
        for key in ("valid", "test"):
            paired = [s[key] - base[root][key] for root, s in done.items()
                      if base.get(root) is not None]
            ahead = sum(d > 0 for d in paired)
            against = "" if base_name == "backbone" else f" vs {base_name}"
            row.append(f"{mean_spread(paired)} (ahead {ahead}/{len(paired)}{against})"
                       if paired and variant != base_name else "")
        rows.append(row)
    return markdown_table(header, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roots", required=True,
                        help="comma-separated run folders, one per user split")
    parser.add_argument("--variants", default="backbone,default,no_ffn,rho_0.25")
    parser.add_argument("--seeds", default="0", help="training seeds averaged within a split")
    parser.add_argument("--title", default="Across user splits: MovieLens-100k")
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    args = parser.parse_args(argv)
    roots = args.roots.split(",")
    missing = [r for r in roots if not os.path.isdir(r)]
    if missing:
        raise SystemExit(f"no such run folder(s): {', '.join(missing)}")
    text = table(roots, args.variants.split(","), [int(s) for s in args.seeds.split(",")])
    print(text)
    if args.write:
        body = (run_header("splits.py", argv)
                + "Valid / test Recall@50 per user split (mean over the training seeds "
                f"{args.seeds}); then mean ± std over splits, and the per-split difference to "
                "`backbone` (ComiRec-SA with the same config and seed; `backbone_k<N>` for "
                "a `_k<N>` variant).\n\n" + text)
        write_section(args.write, args.title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
