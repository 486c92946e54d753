"""``python -m export``: a trained run -> a TF-Serving model version.

    python -m export --run RUN_DIR --out MODEL_BASE [--name NAME] [--index exact|scann]
                     [--version N] [--k 100] [--block-size N] [--index-layout columns|rows]
                     [--scann-leaves N] [--scann-leaves-to-search N] [--scann-reorder N]
                     [--scann-dims-per-block 2] [--max-batch-size 128]
                     [--batch-timeout-micros 1000] [--base-path-prefix /models]

Writes ``MODEL_BASE/NAME/VERSION/`` atomically, then ``MODEL_BASE/models.config``
and ``MODEL_BASE/batching_parameters.txt``. The exact index (default) loads in
any TF-Serving, GPU images included; ``--index scann`` needs a server with
ScaNN's custom ops (stock TF-Serving cannot load it).
"""

from __future__ import annotations

import argparse
import sys

import dmi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from dmi_tf.errors import UserError
from dmi_tf.index import INDEX_BLOCK_SIZE, INDEX_KINDS, LAYOUTS, IndexConfig, ScannConfig
from export.exporter import ServingOptions, export_run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory of python -m dmi_tf.train")
    parser.add_argument("--out", required=True, help="TF-Serving model base directory")
    parser.add_argument("--name", help="served model name (default: the run's model name)")
    parser.add_argument("--index", choices=INDEX_KINDS, default=IndexConfig.kind,
                        help="top-K index: exact (GPU, any TF-Serving) or scann (needs ScaNN ops)")
    parser.add_argument("--version", type=int, help="version number (default: newest + 1)")
    parser.add_argument("--k", type=int, default=100, help="items returned per user (default 100)")
    parser.add_argument("--block-size", type=int, default=INDEX_BLOCK_SIZE,
                        help="exact index: item rows scored at once "
                             f"(default {INDEX_BLOCK_SIZE})")
    parser.add_argument("--index-layout", choices=LAYOUTS, default=IndexConfig.layout,
                        help="exact index: columns (a transposed copy of the item table, faster "
                             "on CPUs, the table stored twice) or rows (the model's table, once)")
    parser.add_argument("--scann-leaves", type=int, help="ScaNN tree leaves (default ~sqrt(items))")
    parser.add_argument("--scann-leaves-to-search", type=int,
                        help="ScaNN leaves searched per query (default 20%% of the leaves)")
    parser.add_argument("--scann-reorder", type=int,
                        help="ScaNN candidates re-scored exactly (default max(10k, 200); 0 = off)")
    parser.add_argument("--scann-dims-per-block", type=int, default=2,
                        help="ScaNN quantization: dimensions per hashing block (default 2)")
    defaults = ServingOptions()
    parser.add_argument("--max-batch-size", type=int,
                        help="batching_parameters.txt max_batch_size (default "
                             f"{defaults.max_batch_size}); given, it replaces an existing file")
    parser.add_argument("--batch-timeout-micros", type=int,
                        help="batching_parameters.txt batch_timeout_micros (default "
                             f"{defaults.batch_timeout_micros}); given, it replaces an existing "
                             "file")
    parser.add_argument("--base-path-prefix", default="/models",
                        help="MODEL_BASE as the server sees it, for models.config "
                             "(default /models)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        scann = ScannConfig(
            num_leaves=args.scann_leaves, num_leaves_to_search=args.scann_leaves_to_search,
            num_reordering_candidates=args.scann_reorder,
            dimensions_per_block=args.scann_dims_per_block)
        index = IndexConfig(kind=args.index, block_size=args.block_size,
                            layout=args.index_layout, scann=scann)
        given = {key: value for key, value in (("max_batch_size", args.max_batch_size),
                                                ("batch_timeout_micros", args.batch_timeout_micros))
                 if value is not None}
        # A batching_parameters.txt already in --out may be hand-tuned: replaced only on request.
        serving = ServingOptions(base_path_prefix=args.base_path_prefix,
                                 replace_batching=bool(given), **given)
        export_run(args.run, args.out, name=args.name, index_config=index, version=args.version,
                   k=args.k, serving=serving)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was published (the hidden temporary version directory "
              "was removed)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
