"""``python -m dmi_tf.predict``: answers for every user of a histories file, in shards.

The input is streamed; every ``--shard-users`` users (in input order) make one
shard, computed in batches of ``--batch-size``. A shard is written whole or not
at all, so running the same command again after a kill computes only the
missing shards: each user appears exactly once over the shards, in input order.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from dmi_tf.console import Progress, list_devices_quietly, log_to_stdout
from dmi_tf.errors import UserError
from dmi_tf.predict.histories import FORMATS, HistoryReader, detect_format
from dmi_tf.predict.inference import OUTPUTS, Predictor
from dmi_tf.predict.shards import SHARD_FORMATS, ShardFolder
from dmi_tf.raw_ids import write_item_embeddings

USERS = "users"  # the shard column of the input's user ids


def predict(run_dir: str, histories: str, out_dir: str, k: int = 50, outputs=("topk",),
            fmt: str | None = None, batch_size: int = 256, shard_users: int = 16384,
            shard_format: str = "npz", progress: bool = True) -> dict:
    """Writes the answers of every user of ``histories`` into ``out_dir`` (module docstring).

    Returns:
      The finished manifest: the settings, ``users``, ``shards``, ``computed_users`` (this
      call's; fewer when resuming), ``seconds`` and ``users_per_second``.

    Raises:
      UserError: a bad run, input, output folder or argument.
    """
    for name, value in (("--batch-size", batch_size), ("--shard-users", shard_users)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} {value!r}: must be a positive integer")
    fmt = fmt or detect_format(histories)
    reader = HistoryReader(histories, fmt)
    predictor = Predictor(run_dir, k, outputs)
    stat = os.stat(histories)
    folder = ShardFolder(out_dir, {
        "run": os.path.abspath(run_dir), "checkpoint": predictor.checkpoint,
        "histories": os.path.abspath(histories), "format": fmt, "input_bytes": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns, "k": k, "outputs": list(predictor.outputs),
        "shard_users": shard_users}, shard_format)
    if folder.finished():
        print(f"{out_dir} is complete already ({folder.manifest()['users']:,} users)")
        return folder.manifest()
    if "items" in predictor.outputs:
        write_item_embeddings(out_dir, predictor.item_table(), predictor.vocabulary)
    meter = Progress(reader.size, USERS) if progress else None
    start, users, computed, pending = time.perf_counter(), 0, 0, []

    def flush():
        nonlocal computed
        shard = (users - 1) // shard_users
        parts = [predictor([h for _, h in pending[i:i + batch_size]])
                 for i in range(0, len(pending), batch_size)]
        columns = {USERS: np.asarray([u for u, _ in pending], dtype=str)}
        columns.update({key: np.concatenate([p[key] for p in parts]) for key in parts[0]})
        folder.write(shard, columns)
        computed += len(pending)
        pending.clear()

    for user, history in reader:
        users += 1
        if (users - 1) // shard_users not in folder.complete_shards:
            pending.append((user, history))
            if users % shard_users == 0:
                flush()
        if meter:
            meter.update(users, reader.position)
    if pending:
        flush()
    if meter:
        meter.update(users, reader.size, force=True)
        meter.close()
    seconds = time.perf_counter() - start
    folder.finish({"users": users, "shards": -(-users // shard_users),
                   "computed_users": computed, "seconds": round(seconds, 2),
                   "users_per_second": round(computed / max(seconds, 1e-9), 1)})
    return folder.manifest()


def main(argv=None) -> int:
    log_to_stdout()
    parser = argparse.ArgumentParser(
        prog="python -m dmi_tf.predict", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a python -m dmi_tf.train run directory")
    parser.add_argument("--histories", required=True,
                        help="CSV (user,item,item,...), JSON lines ({\"user\", \"history\"}) "
                             "or a prepared folder's split file; .gz too")
    parser.add_argument("--out", required=True, help="folder of the shards (new, or the same "
                                                     "command's to resume it)")
    parser.add_argument("--k", type=int, default=50, help="items per user of topk (default 50)")
    parser.add_argument("--outputs", default="topk",
                        help=f"comma-separated, from {', '.join(OUTPUTS)} (default topk)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="the histories' format (default: from the file name)")
    parser.add_argument("--batch-size", type=int, default=256, help="users per model call")
    parser.add_argument("--shard-users", type=int, default=16384, help="users per shard file")
    parser.add_argument("--shard-format", choices=SHARD_FORMATS, default="npz",
                        help="npz (NumPy, default) or parquet (needs pyarrow)")
    args = parser.parse_args(argv)
    list_devices_quietly()
    try:
        manifest = predict(args.run, args.histories, args.out, args.k,
                           tuple(o for o in args.outputs.split(",") if o), args.format,
                           args.batch_size, args.shard_users, args.shard_format)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {manifest['users']:,} users in {manifest['shards']} shard(s) to {args.out} "
          f"({manifest.get('users_per_second', 0):,.0f} users/s)")
    return 0
