"""``python -m serving.client``: ask a served dmi-tf export for top-k items.

    python -m serving.client --target localhost:8500 --model dmi --history "i1,i2,i3" --k 20

Exit status: 0 ok; 2 a bad argument or a request the server rejected as such
(an ``error:`` line); 1 any other failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from serving import contract
from serving.client.base import ClientError, ServingError
from serving.client.grpc_client import TopKClient
from serving.client.rest_client import RestTopKClient


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.client",
        description="Ask a TF-Serving (or `python -m serving.server`) model for top-k items.")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target", help="gRPC host:port, e.g. localhost:8500")
    target.add_argument("--rest", help="REST base URL, e.g. http://localhost:8501")
    p.add_argument("--model", required=True, help="model name on the server")
    p.add_argument("--version", type=int, help="pin a version (default: newest)")
    p.add_argument("--history", action="append", default=[],
                   help='comma-separated raw item ids of one user ("id1,id2,..."); repeat '
                        "for more users")
    p.add_argument("--k", type=int, help="items per user (default: the exported k)")
    p.add_argument("--call", default="topk",
                   choices=["topk", "interests", "explain", "metadata", "status", "health"])
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to this long for the model to be AVAILABLE (a server "
                        "that is starting or loading); default 0, no wait")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def _print(args, result) -> None:
    if args.json:
        print(json.dumps(result, indent=1))
        return
    if args.call == "topk":
        for user, rows in enumerate(result["users"]):
            print(f"user {user} (model version {result['version']}):")
            for rank, (item, score) in enumerate(rows, 1):
                print(f"  {rank:4d}  {item:<24s} {score:.6f}")
    else:
        print(json.dumps(result, indent=1))


def _check_known(client, histories: list[list[str]], known_ids) -> None:
    """Warns on stderr about ids the model ignored; a user with none known is an error.

    Raises:
      ClientError: naming each user none of whose ids the model knows.
    """
    partly = [u for u, (history, known) in enumerate(zip(histories, known_ids, strict=True))
              if 0 < known < len(history)]
    for user, ids in zip(partly, client.unknown_ids([histories[u] for u in partly]),
                         strict=True):
        print(f"warning: user {user}: {len(histories[user]) - known_ids[user]} of "
              f"{len(histories[user])} ids are not known to model {client.model!r} and were "
              f"ignored: {', '.join(ids)}", file=sys.stderr)
    if none := [u for u, known in enumerate(known_ids) if known == 0]:
        users = "; ".join(f"user {u}: {', '.join(dict.fromkeys(histories[u]))}" for u in none)
        raise ClientError(f"model {client.model!r} knows none of the ids of {users}; its top "
                          "items would be the same for anyone. Give raw item ids of the data "
                          "the model was trained on")


def run_cli(args) -> dict:
    cls, where = (TopKClient, args.target) if args.target else (RestTopKClient, args.rest)
    with cls(where, args.model, version=args.version, timeout=args.timeout) as client:
        if args.wait > 0:
            client.wait_until_available(args.wait)
        if args.call == "metadata":
            return client.metadata()
        if args.call in ("status", "health"):
            return {"versions": [dataclasses.asdict(s) for s in client.status()]}
        if not args.history:
            raise ClientError('--history is required for this call (e.g. --history "i1,i2")')
        histories = [[i.strip() for i in h.split(",") if i.strip()] for h in args.history]
        for user, history in enumerate(histories):
            if not history:
                raise ClientError(f"--history number {user + 1} ({args.history[user]!r}) has "
                                  'no item id; give the user\'s ids, e.g. --history "i1,i2"')
        if args.call == "topk":
            result = client.topk(histories, args.k)
            _check_known(client, histories, result.known_ids)
            return {"version": result.version, "users": result.rows(),
                    "known_ids": result.known_ids.tolist()}
        if args.call == "interests":
            result = client.interests(histories)
            return {"version": result.version, "interests": result.interests.tolist(),
                    "coarse_interests": result.coarse_interests.tolist()}
        result = client.explain(histories)
        return {"version": result.version, "items": result.items.tolist(),
                "weights": result.weights.tolist()}


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 ok; 2 a bad argument or a request the server rejected as such; 1 other."""
    args = build_parser().parse_args(argv)
    try:
        result = run_cli(args)
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ServingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if e.code.name in contract.REQUEST_ERRORS else 1
    if args.call == "health":
        available = any(v["state"] == "AVAILABLE" for v in result["versions"])
        print("AVAILABLE" if available else "NOT AVAILABLE: " + json.dumps(result))
        return 0 if available else 1
    _print(args, result)
    return 0
