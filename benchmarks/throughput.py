"""Training throughput: sequences per second, end to end and for the model step alone.

    python benchmarks/throughput.py [--config configs/ml100k_comirec_sa.yaml] [--steps 2000]
        [--write BENCHMARKS.md] [section.key=value ...]

End to end is ``model.fit`` on the real ``tf.data`` training stream (sampling,
batching and prefetching included), after a warm-up that absorbs tracing. The
model step alone replays one cached batch, so the difference is what the input
pipeline costs. Each measurement is the median of ``--repeats`` timed runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf import distribute
from dmi_tf.console import log_to_stdout
from dmi_tf.data.loading import load_data
from dmi_tf.models import build_model
from dmi_tf.optimizers import compile_for_training
from dmi_tf.training import training_stream

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import run_header, write_section


def measure(config, steps: int, repeats: int) -> dict[str, float]:
    distribute.configure_threads(config.distribute)
    tf.keras.utils.set_random_seed(config.train.seed)
    dataset = load_data(config)
    model = build_model(config, dataset.num_items, dataset.train)
    compile_for_training(model, config)
    stream = training_stream(model, config, dataset)
    cached = stream.take(1).cache().repeat()

    def timed(data) -> float:
        model.fit(data, steps_per_epoch=50, epochs=1, verbose=0)  # warm-up and tracing
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            runs.append(steps * config.train.batch_size / (time.perf_counter() - start))
        return statistics.median(runs)

    return {"end_to_end": timed(stream), "model_step": timed(cached)}


def main(argv=None) -> int:
    log_to_stdout()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/ml100k_comirec_sa.yaml")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    config = config_lib.load(args.config, args.overrides)
    result = measure(config, args.steps, args.repeats)
    line = (f"| {os.path.basename(args.config)} {' '.join(args.overrides)} | "
            f"{config.train.batch_size} | {config.loss.num_negatives} | "
            f"{config.distribute.intra_op_threads or 'one per core'} | "
            f"{result['end_to_end']:,.0f} | {result['model_step']:,.0f} |")
    print(line)
    if args.write:
        body = (run_header("throughput.py", argv)
                + f"Median of {args.repeats} runs of {args.steps} steps, training sequences per "
                "second.\n\n| config | batch | negatives | intra-op threads | end to end | "
                "model step alone |\n|---|---|---|---|---|---|\n" + line)
        write_section(args.write, f"Training throughput: {config.model.name}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
