"""Batch inference: a run's top-K, interests and explanations for a file of histories.

    python -m dmi_tf.predict --run RUN_DIR --histories FILE --out DIR [--k 50]
        [--outputs topk,interests,explain,items] [--format csv|jsonl|split]
        [--batch-size 256] [--shard-users 16384] [--shard-format npz|parquet]

``histories`` reads the input a line at a time (CSV, JSON lines, or a prepared
folder's split file); ``inference`` computes a batch's answers exactly as the
exported signatures do; ``shards`` writes them as numbered, atomically written
shards with raw ids, which makes a killed run resumable; ``cli`` is the command.
"""

from dmi_tf.predict.cli import predict

__all__ = ["predict"]
