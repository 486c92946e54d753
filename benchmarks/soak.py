"""Soak benchmark of the local server: mixed good and bad requests for minutes, a version swap.

    nice python benchmarks/soak.py [--seconds 600] [--items 20000] [--model comirec_sa]
        [--swap-at 0.5] [--write FILE]

Starts ``python -m serving.server`` (gRPC and REST, server batching, polling
for versions) on an untrained export (``benchmarks/serving.py``'s
``write_export``: the export's own serving module), then, for ``--seconds``:

- good requests, whose every failure counts (they must all succeed): gRPC
  ``topk`` / ``user_interests`` / ``explain`` and REST ``:predict`` from
  ``serving.client``'s clients, histories of 1 to 2 L random ids;
- bad requests, each of which must get its documented status: an unknown
  signature (FAILED_PRECONDITION) or model (NOT_FOUND), an int history
  (INVALID_ARGUMENT), a 50-byte request declaring 10^9 ids (RESOURCE_EXHAUSTED),
  a call given up after 1 ms, over REST a body that is not JSON, nested
  deeper than any tensor or with ``Content-Length: abc`` (400), and slow
  connections that send half a request and hang there;
- at ``--swap-at`` of the run, version 2 (another export) is renamed into the
  base path, as the export publishes; the server must swap to it with no
  good request failing.

It reports the requests of each kind, the failed good requests, bad requests
answered with another status than documented, the versions answered, and the
server's resident memory (``/proc/PID/status`` VmRSS) after a minute of load
(the start: thread pools, arenas and traced graphs have grown by then), at
the end, and its growth. Bounded: it stops by itself after ``--seconds``; it
talks to 127.0.0.1 only. Not run by CI (ten minutes).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _load_benchmark(name: str):
    """A sibling benchmark script as a module (``benchmarks/serving.py`` would shadow the
    ``serving`` package if benchmarks/ were put on sys.path)."""
    saved = list(sys.path)  # the scripts put benchmarks/ first to import their helpers
    try:
        spec = importlib.util.spec_from_file_location(
            f"benchmarks_{name}", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


bench = _load_benchmark("serving")  # imports dmi_tf first (TF_USE_LEGACY_KERAS)

import grpc  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from serving import client as client_lib  # noqa: E402
from serving import tensors  # noqa: E402

TITLE = "Serving: soak (mixed good and bad requests, a version swap)"
RSS_START_SECONDS = 60.0


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def raw_http(port: int, data: bytes, timeout: float = 30.0) -> int:
    """Sends raw bytes to the REST port; returns the answer's HTTP status."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        head = b""
        while b"\r\n" not in head and (chunk := connection.recv(4096)):
            head += chunk
    return int(head.split(b" ", 2)[1])


def post(body: bytes, content_length: bytes | None = None) -> bytes:
    length = str(len(body)).encode() if content_length is None else content_length
    return (b"POST /v1/models/dmi:predict HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
            b"Content-Length: " + length + b"\r\n\r\n" + body)


class Tally:
    """Counts by (kind, outcome), thread-safe; keeps the first messages of failures."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.failures: list[str] = []
        self.versions: collections.Counter = collections.Counter()

    def add(self, kind: str, ok: bool, message: str = "", version: int | None = None) -> None:
        with self._lock:
            self.counts[(kind, ok)] += 1
            if version is not None:
                self.versions[version] += 1
            if not ok and len(self.failures) < 20:
                self.failures.append(f"{kind}: {message[:300]}")


def good_grpc(port, users, k, tally, stop, seed):
    rng = np.random.default_rng(seed)
    with client_lib.TopKClient(f"127.0.0.1:{port}", "dmi", timeout=30) as client:
        while not stop.is_set():
            batch = [users[i] for i in rng.integers(0, len(users), rng.integers(1, 9))]
            call = rng.choice(["topk", "topk", "topk", "interests", "explain"])
            try:
                if call == "topk":
                    result = client.topk(batch, k)
                    assert result.item_ids.shape == (len(batch), k)
                    assert result.known_ids.tolist() == [len(u) for u in batch]
                else:
                    result = getattr(client, call)(batch)
                tally.add(f"good gRPC {call}", True, version=result.version)
            except Exception as e:  # a failed good request is the result, not a crash
                tally.add(f"good gRPC {call}", False, repr(e))


def good_rest(port, users, k, tally, stop, seed):
    rng = np.random.default_rng(seed)
    client = client_lib.RestTopKClient(f"127.0.0.1:{port}", "dmi", timeout=30)
    while not stop.is_set():
        batch = [users[i] for i in rng.integers(0, len(users), rng.integers(1, 9))]
        try:
            result = client.topk(batch, k)
            assert result.item_ids.shape == (len(batch), k)
            tally.add("good REST topk", True)
        except Exception as e:
            tally.add("good REST topk", False, repr(e))


def bad_requests(port, rest_port, tally, stop, seed):
    """Each bad request and the status it must get."""
    rng = np.random.default_rng(seed)
    channel = client_lib.make_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def request(history, signature="topk", model="dmi", dtype=None):
        message = predict_pb2.PredictRequest()
        message.model_spec.name = model
        message.model_spec.signature_name = signature
        message.inputs["history"].CopyFrom(tensors.from_numpy(history, dtype))
        return message

    bomb = request(np.array([["item1"]], dtype=object))
    bomb.inputs["history"].tensor_shape.dim[1].size = 10**9  # one value fills [1, 10^9]
    grpc_cases = [
        ("unknown signature", request(np.array([["item1"]], dtype=object), "nope"),
         grpc.StatusCode.FAILED_PRECONDITION),
        ("unknown model", request(np.array([["item1"]], dtype=object), model="nope"),
         grpc.StatusCode.NOT_FOUND),
        ("int history", request(np.array([[1, 2]], np.int64), dtype=types_pb2.DT_INT64),
         grpc.StatusCode.INVALID_ARGUMENT),
        ("10^9 ids in 50 bytes", bomb, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ]
    long_history = request(np.array([[f"x{i}" for i in range(50_000)]], dtype=object))
    rest_cases = [
        ("REST not JSON", post(b"{\"instances\": [[\"item1\""), 400),
        ("REST deep JSON", post(b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"), 400),
        ("REST Content-Length: abc", post(b"{}", b"abc"), 400),
        ("REST [null]", post(b'{"instances": [null]}'), 400),
    ]
    try:
        while not stop.is_set():
            choice = rng.integers(0, len(grpc_cases) + len(rest_cases) + 1)
            try:
                if choice < len(grpc_cases):
                    kind, message, code = grpc_cases[choice]
                    try:
                        stub.Predict(message, timeout=30)
                        tally.add(f"bad {kind}", False, "answered OK")
                    except grpc.RpcError as e:
                        tally.add(f"bad {kind}", e.code() == code, f"{e.code()} {e.details()}")
                elif choice < len(grpc_cases) + len(rest_cases):
                    kind, data, status = rest_cases[choice - len(grpc_cases)]
                    got = raw_http(rest_port, data)
                    tally.add(f"bad {kind}", got == status, f"HTTP {got}")
                else:  # a client that gives up after 1 ms
                    try:
                        stub.Predict(long_history, timeout=0.001)
                        tally.add("bad given up after 1 ms", True)
                    except grpc.RpcError as e:
                        tally.add("bad given up after 1 ms",
                                  e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, str(e.code()))
            except Exception as e:
                tally.add("bad (client side)", False, repr(e))
            time.sleep(0.01)
    finally:
        channel.close()


def _closed(connection: socket.socket) -> bool:
    try:
        return connection.recv(1) == b""  # non-blocking: see slow_clients
    except BlockingIOError:  # open, nothing to read
        return False
    except OSError:
        return True


def slow_clients(rest_port, tally, stop, count=20):
    """Connections that send half a request and hang there, renewed as the server drops them."""
    connections: list[socket.socket] = []
    try:
        while not stop.is_set():
            for connection in [c for c in connections if _closed(c)]:
                connection.close()
                connections.remove(connection)
                tally.add("slow connection closed by the server", True)
            while len(connections) < count:
                connection = socket.create_connection(("127.0.0.1", rest_port), timeout=10)
                connection.sendall(b"POST /v1/models/dmi:predict HTTP/1.1\r\nHost: soak\r\n"
                                   b"Content-Length: 100\r\n\r\n{\"instances\": ")
                connection.setblocking(False)
                connections.append(connection)
                tally.add("slow connection opened", True)
            stop.wait(5.0)
    finally:
        for connection in connections:
            connection.close()


def soak(args) -> dict:
    with tempfile.TemporaryDirectory() as base:
        model_dir, staging = os.path.join(base, "dmi"), os.path.join(base, "staging")
        with contextlib.redirect_stdout(io.StringIO()):
            vocabulary, info = bench.write_export(model_dir, args.model, args.items, "exact",
                                                  args.k, [])
            bench.write_export(staging, args.model, args.items, "exact", args.k,
                               ["model.embedding_dim=32"])  # version 2: another model
        users = bench.histories(vocabulary, 5000, 2 * info["L"])
        server = bench.Server(model_dir, [
            "--rest_api_port", "-1", "--enable_batching", "--max_batch_size", "64",
            "--batch_timeout_micros", "1000", "--num_batch_threads", "2",
            "--max_enqueued_batches", "1000", "--pad_variable_length_inputs",
            "--file_system_poll_wait_seconds", "1", "--log_interval_seconds", "60"])
        pid, tally, stop = server.process.pid, Tally(), threading.Event()
        rss = {"idle": rss_mb(pid)}
        workers = [
            *(threading.Thread(target=good_grpc, args=(server.port, users, args.k, tally, stop,
                                                       i)) for i in range(4)),
            *(threading.Thread(target=good_rest, args=(server.rest_port, users, args.k, tally,
                                                       stop, 10 + i)) for i in range(2)),
            threading.Thread(target=bad_requests,
                             args=(server.port, server.rest_port, tally, stop, 20)),
            threading.Thread(target=slow_clients, args=(server.rest_port, tally, stop)),
        ]
        start = time.monotonic()
        for worker in workers:
            worker.start()
        swap_at, swapped, samples = start + args.swap_at * args.seconds, None, []
        try:
            while (now := time.monotonic()) < start + args.seconds:
                if swapped is None and now >= swap_at:
                    os.rename(os.path.join(staging, "1"), os.path.join(model_dir, "2"))
                    swapped = now - start
                    print(f"{swapped:.0f} s: version 2 published", flush=True)
                if "start" not in rss and now - start >= min(RSS_START_SECONDS, args.seconds / 4):
                    rss["start"] = rss_mb(pid)
                samples.append(rss_mb(pid))
                time.sleep(min(5.0, start + args.seconds - now))
            rss["end"] = rss_mb(pid)
        finally:
            elapsed = time.monotonic() - start
            stop.set()
            for worker in workers:
                worker.join(timeout=60)
            joined = time.monotonic()
            server.stop()
            print(f"clients stopped in {joined - start - elapsed:.1f} s, the server in "
                  f"{time.monotonic() - joined:.1f} s", flush=True)
            print("".join(line for line in server.log if "Shutting down" in line
                          or "Stopped" in line or "still busy" in line), flush=True)
        rss["max"] = max(samples)
        shutil.rmtree(staging, ignore_errors=True)
    good = {k: n for (k, ok), n in tally.counts.items() if k.startswith("good") and ok}
    failed_good = sum(n for (k, ok), n in tally.counts.items() if k.startswith("good") and not ok)
    bad = {k: n for (k, ok), n in tally.counts.items() if k.startswith("bad") and ok}
    wrong_bad = sum(n for (k, ok), n in tally.counts.items() if k.startswith("bad") and not ok)
    log = "".join(server.log)
    return {
        "seconds": elapsed, "items": args.items, "model": args.model, "k": args.k, **info,
        "good": good, "failed_good": failed_good, "bad": bad, "wrong_bad": wrong_bad,
        "slow_connections": tally.counts[("slow connection opened", True)],
        "versions": dict(tally.versions), "swap_at": swapped,
        "swapped": "Successfully loaded servable version {name: dmi version: 2}" in log,
        "rss_mb": rss, "rss_growth": rss["end"] / rss["start"] - 1,
        "failures": tally.failures,
    }


def report(result: dict) -> str:
    good, bad, rss = result["good"], result["bad"], result["rss_mb"]
    lines = [
        f"{result['seconds']:.0f} s; untrained `{result['model']}`, {result['items']:,} items, "
        f"top-{result['k']}, K={result['K']}, d={result['d']}, L={result['L']}; server "
        "batching (max 64, 1 ms, 2 threads); 4 gRPC and 2 REST clients sending good requests "
        "back to back, 1 client sending bad ones, 20 slow connections.",
        "",
        "| what | count |",
        "|---|---|",
        *(f"| {kind} | {n:,} |" for kind, n in sorted(good.items())),
        f"| **good requests failed** | **{result['failed_good']}** |",
        *(f"| {kind} (documented status) | {n:,} |" for kind, n in sorted(bad.items())),
        f"| **bad requests with another status** | **{result['wrong_bad']}** |",
        f"| slow connections opened (the server closes one idle for 60 s) | "
        f"{result['slow_connections']:,} |",
        f"| gRPC answers by version | {', '.join(f'v{v}: {n:,}' for v, n in sorted(result['versions'].items()))} |",  # noqa: E501
        "",
        f"Version 2 published at {result['swap_at']:.0f} s; swapped in: "
        f"{'yes' if result['swapped'] else '**no**'}. Server RSS: {rss['idle']:.0f} MB idle "
        f"after the warm-up, {rss['start']:.0f} MB after "
        f"{min(RSS_START_SECONDS, result['seconds'] / 4):.0f} s of load (the start), "
        f"{rss['end']:.0f} MB at the end (max {rss['max']:.0f}): growth "
        f"{100 * result['rss_growth']:+.1f}%.",
    ]
    if result["failures"]:
        lines += ["", "First failures:", *(f"- `{f}`" for f in result["failures"])]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="how long the load runs (default 600)")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--model", default="comirec_sa")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--swap-at", type=float, default=0.5,
                        help="when version 2 is published, as a share of --seconds")
    parser.add_argument("--json", help="also write the result as JSON to this file")
    parser.add_argument("--write", help="Markdown file to update, e.g. BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or not 0 < args.swap_at < 1:
        parser.error("--seconds must be > 0 and --swap-at between 0 and 1")
    result = soak(args)
    text = report(result)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    if args.write:
        _load_benchmark("quality").write_section(args.write, TITLE, text)
    ok = result["failed_good"] == 0 and result["wrong_bad"] == 0 and result["swapped"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
