"""Load benchmark of the served export: gRPC client and server on this machine, over loopback.

    flock /tmp/bench.lock python benchmarks/serving.py \
        [--catalogues 100000:exact,1000000:scann] [--model comirec_sa] [--k 50] \
        [--seconds 10] [--max-batch-size 64] [--batch-timeout-micros 0] [--num-batch-threads 1]
        [--write BENCHMARKS.md] [model.num_interests=2 ...]

For each catalogue (items:index) it writes an export with the export's own
serving module (``export.serving_module.ServingModule`` and
``dmi_tf.index.build_index``, the code ``python -m export`` runs) around an
untrained model of that many items (latency depends on shapes, not weights),
starts ``python -m serving.server`` in its own process with server batching,
and drives it with ``serving.client.TopKClient`` from this process:

- concurrency 1: one user per request, requests back to back; p50 / p99 latency;
- concurrency 16: 16 client threads, one user per request; users/s and latency;
- the same 16 clients without server batching, for comparison;
- 16 clients sending 8 users per request (the client's own batching), with server batching.

Latency is the client's: request encoding, loopback gRPC, server queueing,
the model, and response decoding. Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import io
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

# Runs from a checkout: export/ and serving/ are top-level packages beside dmi_tf.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dmi_tf  # noqa: E402, F401, I001  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf  # noqa: E402

from dmi_tf import config as config_lib  # noqa: E402
from dmi_tf.data.dataset import SplitData  # noqa: E402
from dmi_tf.index import IndexConfig, build_index  # noqa: E402
from dmi_tf.models import build_model  # noqa: E402
from dmi_tf.raw_ids import write_vocabulary_file  # noqa: E402
from export.serving_module import ServingModule  # noqa: E402
from serving.client import TopKClient, encode_histories  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import write_section  # noqa: E402

TITLE = "Serving: gRPC load on loopback"


def write_export(model_dir: str, model_name: str, num_items: int, index_kind: str, k: int,
                 overrides: list[str]) -> tuple[list[str], dict]:
    """An export of an untrained model with ``num_items`` items as ``model_dir/1``."""
    config = config_lib.load(None, [f"model.name={model_name}", *overrides])
    rows = num_items + 1  # row 0 is padding
    rng = np.random.default_rng(0)
    train = SplitData.from_sequences([0], [rng.integers(1, rows, 30).tolist()])
    tf.keras.utils.set_random_seed(0)
    model = build_model(config, rows, train)
    length = config.data.max_length
    probe = model.interests(tf.zeros([1, length], tf.int32))
    vocabulary = [""] + [f"item{i}" for i in range(1, rows)]
    table = np.asarray(tf.convert_to_tensor(model.candidate_embeddings()), np.float32)
    start = time.perf_counter()
    index = build_index(table, IndexConfig(kind=index_kind), k)
    build_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as scratch:
        module = ServingModule(model, index, write_vocabulary_file(vocabulary, scratch), rows,
                               length, k)
        options = tf.saved_model.SaveOptions(namespace_whitelist=list(index.op_namespaces))
        tf.saved_model.save(module, os.path.join(model_dir, "1"),
                            signatures=module.signatures(), options=options)
    info = {"K": int(probe.shape[1]), "d": int(table.shape[1]), "L": length,
            "index_build_s": build_seconds}
    return vocabulary, info


class Server:
    """``python -m serving.server`` in a child process, stopped with SIGTERM.

    ``flags`` are added to (and, given again, override) the defaults; with
    ``--rest_api_port`` the REST port is read too. ``log`` keeps the last lines
    of its log.
    """

    def __init__(self, model_dir: str, flags: list[str]):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--port", "0", "--model_name", "dmi",
             "--model_base_path", model_dir, "--log_interval_seconds", "0",
             "--file_system_poll_wait_seconds", "0", *flags],
            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        self.log: collections.deque[str] = collections.deque(maxlen=2000)
        self.port = self.rest_port = None
        for line in self.process.stderr:
            self.log.append(line)
            if match := re.search(r"Running gRPC ModelServer at [\d.]+:(\d+)", line):
                self.port = int(match.group(1))
            if match := re.search(r"Exporting HTTP/REST API at:[\d.]+:(\d+)", line):
                self.rest_port = int(match.group(1))
            if self.port and (self.rest_port or "--rest_api_port" not in flags):
                break
        else:
            raise RuntimeError("server did not start:\n" + "".join(list(self.log)[-30:]))
        # Keep reading its log so the pipe never fills up.
        self._drain = threading.Thread(target=lambda: self.log.extend(self.process.stderr),
                                       daemon=True)
        self._drain.start()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def histories(vocabulary: list[str], count: int, length: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[vocabulary[i] for i in rng.integers(1, len(vocabulary), rng.integers(5, length + 1))]
            for _ in range(count)]


def model_only_ms(path: str, users: list[list[str]], runs: int = 50) -> dict:
    """Median time of the ``topk`` signature called in process (no server, no client)."""
    topk = tf.saved_model.load(path).signatures["topk"]
    out = {}
    for batch in (1, 16):
        history = tf.constant(encode_histories(users[:batch]))
        for _ in range(5):
            topk(history=history)["scores"].numpy()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            topk(history=history)["scores"].numpy()
            times.append(time.perf_counter() - t0)
        out[f"model_b{batch}"] = float(np.median(times) * 1e3)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(port: int, users: list[list[str]], concurrency: int, seconds: float, k: int,
          server_pid: int, users_per_request: int = 1) -> dict:
    """``concurrency`` client threads send requests back to back for ``seconds``.

    Besides latency and throughput it reports the CPU time the server and the
    client spent per user: on a shared machine that is steadier than wall time.
    """
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures = []
    stop = threading.Event()

    def worker(slot: int) -> None:
        rng = np.random.default_rng(slot)
        with TopKClient(f"127.0.0.1:{port}", "dmi", timeout=30,
                        users_per_request=users_per_request) as client:
            client.topk(users[:1], k)  # connect and read the metadata before timing
            ready.wait()
            while not stop.is_set():
                batch = [users[i] for i in rng.integers(0, len(users), users_per_request)]
                t0 = time.perf_counter()
                try:
                    client.topk(batch, k)
                except Exception as e:  # counted, not raised: a failure is a result
                    failures.append(repr(e))
                    continue
                latencies[slot].append(time.perf_counter() - t0)

    ready = threading.Event()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # every worker connected
    server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
    ready.set()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    server_cpu = cpu_seconds(server_pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    all_ms = np.concatenate([np.array(x) for x in latencies]) * 1e3
    served = len(all_ms) * users_per_request
    return {"requests": len(all_ms), "users_per_s": served / elapsed,
            "p50": float(np.percentile(all_ms, 50)), "p99": float(np.percentile(all_ms, 99)),
            "failures": len(failures), "server_cpu_ms": 1e3 * server_cpu / max(served, 1),
            "client_cpu_ms": 1e3 * client_cpu / max(served, 1)}


def bench_catalogue(args, num_items: int, index_kind: str) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as base:
        model_dir = os.path.join(base, "dmi")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            vocabulary, info = write_export(model_dir, args.model, num_items, index_kind, args.k,
                                            args.overrides)
        print(f"{num_items:,} items, {index_kind}: export written in "
              f"{time.perf_counter() - t0:.0f} s (K={info['K']}, d={info['d']}, L={info['L']})",
              flush=True)
        users = histories(vocabulary, 2000, 2 * info["L"])
        info.update(model_only_ms(os.path.join(model_dir, "1"), users))
        print(f"model alone, in process: {info['model_b1']:.2f} ms for 1 user, "
              f"{info['model_b16']:.2f} ms for 16", flush=True)
        batching = ["--enable_batching", "--max_batch_size", str(args.max_batch_size),
                    "--batch_timeout_micros", str(args.batch_timeout_micros),
                    "--num_batch_threads", str(args.num_batch_threads),
                    "--max_enqueued_batches", "1000", "--pad_variable_length_inputs"]
        # (server, flags, concurrency, users per request)
        plans = [("batching", batching, 1, 1), ("batching", batching, 16, 1),
                 ("no batching", [], 16, 1), ("batching", batching, 16, 8)]
        for label, flags, concurrency, per_request in plans:
            server = Server(model_dir, flags)
            try:
                # Warm-up: the first calls of each batch size trace and optimise graphs.
                drive(server.port, users, 2, 3.0, args.k, server.process.pid)
                row = drive(server.port, users, concurrency, args.seconds, args.k,
                            server.process.pid, users_per_request=per_request)
            finally:
                server.stop()
            row.update(items=num_items, index=index_kind, concurrency=concurrency,
                       server=label, per_request=per_request, **info)
            print(format_row(row), flush=True)
            results.append(row)
    return results


def format_row(row: dict) -> str:
    return (f"| {row['items']:,} | {row['index']} | {row['concurrency']} | "
            f"{row['per_request']} | {row['server']} | "
            f"{row['p50']:.2f} | {row['p99']:.2f} | {row['users_per_s']:,.0f} | "
            f"{row['requests']:,} | {row['failures']} | {row['server_cpu_ms']:.1f} | "
            f"{row['client_cpu_ms']:.1f} | {row['model_b1']:.2f} / {row['model_b16']:.2f} |")


def targets(rows: list[dict]) -> str:
    """The issue's targets for 100,000 items, exact index, against this run."""
    lines = []
    for row in rows:
        if (row["items"] != 100_000 or row["index"] != "exact" or row["server"] != "batching"
                or row["per_request"] != 1):
            continue
        if row["concurrency"] == 1:
            met = "met" if row["p99"] <= 15 else "**not met**"
            lines.append(f"p99 ≤ 15 ms at concurrency 1: {row['p99']:.1f} ms, {met}")
        if row["concurrency"] == 16:
            met = "met" if row["users_per_s"] >= 1000 else "**not met**"
            lines.append(f"≥ 1,000 users/s at concurrency 16: {row['users_per_s']:,.0f}, {met}")
    return ("Targets (100,000 items, exact, batching): " + "; ".join(lines) + ".") if lines else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalogues", default="100000:exact,1000000:scann",
                        help="comma-separated items:index pairs")
    parser.add_argument("--model", default="comirec_sa")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per row")
    parser.add_argument("--max-batch-size", type=int, default=64)
    # CPU settings (the export's batching_parameters.txt holds GPU ones): one batch at a
    # time, using every core, taken as soon as the previous one is done. Two threads
    # halved the batches (each took the requests of 1 ms); a timeout only delays a lone
    # request, since under load the queue fills while a batch runs.
    parser.add_argument("--batch-timeout-micros", type=int, default=0)
    parser.add_argument("--num-batch-threads", type=int, default=1)
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="model config overrides, e.g. model.num_interests=4")
    args = parser.parse_args(argv)
    rows = []
    load_before = f"{os.getloadavg()[0]:.1f}"
    for item in args.catalogues.split(","):
        items, _, kind = item.partition(":")
        rows += bench_catalogue(args, int(items), kind or "exact")
    header = ("| items | index | concurrency | users / request | server | p50 ms | p99 ms | "
              "users/s | requests | failed | server CPU ms/user | client CPU ms/user | "
              "model alone ms (1 / 16 users) |"
              "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    table = header + "\n" + "\n".join(format_row(r) for r in rows)
    print(table)
    if args.write:
        given = sys.argv[1:] if argv is None else argv
        first = rows[0]
        body = (f"Machine: {platform.machine()}, {os.cpu_count()} cores (client and server "
                f"share them), Python {platform.python_version()}, TensorFlow {tf.__version__} | "
                f"date: {datetime.date.today().isoformat()}\n\n"
                f"Command: `flock /tmp/bench.lock python benchmarks/serving.py "
                f"{shlex.join(given)}`\n\n"
                f"Untrained `{args.model}` (K={first['K']}, d={first['d']}, L={first['L']}) "
                f"exported by the export's serving module, top-{args.k}; one user per request "
                "unless the users / request column says otherwise, "
                f"histories of 5–{2 * first['L']} random ids; server batching "
                f"`max_batch_size {args.max_batch_size}`, `batch_timeout_micros "
                f"{args.batch_timeout_micros}`, `num_batch_threads {args.num_batch_threads}`. "
                "Latency is measured by the client, end to end; the last column is the "
                "`topk` signature called in process, without server or client. Load average "
                f"(1 min) before / after: {load_before} / {os.getloadavg()[0]:.1f}.\n\n"
                + table + "\n")
        body += "\n" + targets(rows) + "\n"
        write_section(args.write, TITLE, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
