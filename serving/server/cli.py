"""``python -m serving.server``: TF-Serving's command line for the local stand-in.

    python -m serving.server --model_base_path MODEL_BASE/dmi --model_name dmi --port 8500 \\
        [--rest_api_port 8501] [--enable_batching --max_batch_size 64 --batch_timeout_micros 1000]

Flags keep TF-Serving's names and meaning; the few this server adds say so in
their help. It listens on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.server.batching import BatchingOptions
from serving.server.core import (
    DEFAULT_GRPC_THREADS,
    DEFAULT_MAX_REQUEST_ELEMENTS,
    INT32_MAX,
    ModelServer,
    RequestLimits,
)
from serving.server.monitoring import MonitoringConfig, read_monitoring_config
from serving.server.rest import RestOptions

log = logging.getLogger("serving.server")



def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _channel_args(text: str) -> list[tuple[str, object]]:
    """TF-Serving's ``--grpc_channel_arguments``: ``key=value,key=value``."""
    args = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        args.append((key.strip(), int(value) if value.strip().lstrip("-").isdigit()
                     else value.strip()))
    return args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Local stand-in for TensorFlow Serving (gRPC PredictionService and "
                    "ModelService, REST). Flags keep TF-Serving's names and meaning.")
    flag = p.add_argument
    flag("--port", type=int, default=8500, help="gRPC port (0 picks a free one)")
    flag("--rest_api_port", type=int, default=0, help="REST port (0: no REST API)")
    rest = RestOptions()
    flag("--rest_api_num_threads", type=int, default=rest.num_threads,
         help=f"REST requests handled at once (default {rest.num_threads}; each waiting for its "
              "batch holds one; TF-Serving's default is 4 per core)")
    flag("--rest_api_backlog", type=int, default=rest.backlog,
         help=f"REST connections queued before they are accepted (default {rest.backlog}; "
              "not a TF-Serving flag)")
    flag("--rest_api_max_connections", type=int, default=rest.max_connections,
         help=f"REST connections open at once; more wait in the backlog (default "
              f"{rest.max_connections}; not a TF-Serving flag)")
    flag("--rest_api_idle_timeout_seconds", type=int, default=rest.idle_timeout_seconds,
         help="a REST connection without a request in progress and without traffic for this "
              f"long is closed (default {rest.idle_timeout_seconds}; not a TF-Serving flag)")
    flag("--host", default="127.0.0.1", help="address to listen on (not a TF-Serving flag; "
         "TF-Serving listens on all interfaces, this server on loopback unless told)")
    flag("--model_name", default="default")
    flag("--model_base_path", help="directory holding numbered version dirs")
    flag("--model_config_file", help="ModelServerConfig text proto (replaces --model_name "
         "and --model_base_path), e.g. the export's MODEL_BASE/models.config")
    flag("--monitoring_config_file", help="MonitoringConfig text proto, e.g. "
         'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }: '
         "Prometheus metrics on the REST port")
    flag("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    flag("--batching_parameters_file", help="BatchingParameters text proto")
    for name in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                 "max_enqueued_batches"):
        flag(f"--{name}", type=int, help="overrides the batching parameters file (TF-Serving "
             "takes this only in the file)")
    flag("--pad_variable_length_inputs", type=_bool, nargs="?", const=True,
         help="overrides the batching parameters file")
    flag("--file_system_poll_wait_seconds", type=float, default=1.0)
    flag("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True)
    flag("--grpc_channel_arguments", type=_channel_args, default=[],
         help="key=value,... e.g. grpc.max_receive_message_length=67108864")
    flag("--grpc_max_threads", type=int, default=None,
         help=f"requests handled at once (default {DEFAULT_GRPC_THREADS}; threads start on "
              "demand). Unlike TF-Serving's flag of that name it bounds concurrent requests, "
              "and with them the batch sizes server-side batching can form")
    flag("--max_request_elements", type=int, default=DEFAULT_MAX_REQUEST_ELEMENTS,
         help="most elements (ids) a request's inputs may declare, checked before they are "
              f"decoded (default {DEFAULT_MAX_REQUEST_ELEMENTS:,}; also bounds a padded batch); "
              "above it: RESOURCE_EXHAUSTED (this server only: TF-Serving has no such limit)")
    flag("--max_request_bytes", type=int, default=INT32_MAX,
         help=f"most bytes a request's inputs may hold (default {INT32_MAX:,}, gRPC's message "
              "limit), counting a value that fills a shape once per element; also the most a "
              "REST body may hold. Above it: RESOURCE_EXHAUSTED (this server only)")
    flag("--tensorflow_intra_op_parallelism", type=int, default=0,
         help="threads of one op (0: TensorFlow's default, one per core)")
    flag("--tensorflow_inter_op_parallelism", type=int, default=0,
         help="ops run at once (0: TensorFlow's default)")
    flag("--log_interval_seconds", type=float, default=10.0,
         help="request counts and latencies are logged this often (0: never)")
    flag("--shutdown_grace_seconds", type=float, default=30.0,
         help="on SIGTERM, in-flight requests get this long to finish")
    return p


def models_from_args(args) -> dict[str, str]:
    if args.model_config_file:
        config = model_server_config_pb2.ModelServerConfig()
        try:
            with open(args.model_config_file, encoding="utf-8") as f:
                text_format.Parse(f.read(), config)
        except (OSError, text_format.ParseError) as e:
            raise ValueError(
                f"cannot read --model_config_file {args.model_config_file}: {e}") from None
        # As TF-Serving: a relative base_path is relative to the working directory.
        models = {m.name: m.base_path for m in config.model_config_list.config}
        if not models:
            raise ValueError(f"{args.model_config_file} lists no model (model_config_list)")
        return models
    if not args.model_base_path:
        raise ValueError("--model_base_path (or --model_config_file) is required")
    return {args.model_name: args.model_base_path}


def batching_from_args(args) -> BatchingOptions | None:
    if not args.enable_batching:
        return None
    options = BatchingOptions()
    if args.batching_parameters_file:
        try:
            with open(args.batching_parameters_file, encoding="utf-8") as f:
                options = BatchingOptions.from_text(f.read(), args.batching_parameters_file)
        except OSError as e:
            raise ValueError(f"cannot read --batching_parameters_file: {e}") from None
    for name in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                 "max_enqueued_batches", "pad_variable_length_inputs"):
        if getattr(args, name) is not None:
            setattr(options, name, getattr(args, name))
    if options.max_batch_size < 1 or options.batch_timeout_micros < 0:
        raise ValueError("max_batch_size must be >= 1 and batch_timeout_micros >= 0")
    return options


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        for name in ("max_request_elements", "max_request_bytes", "rest_api_num_threads",
                     "rest_api_backlog", "rest_api_max_connections",
                     "rest_api_idle_timeout_seconds"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
        models = models_from_args(args)
        batching = batching_from_args(args)
        monitoring = (read_monitoring_config(args.monitoring_config_file)
                      if args.monitoring_config_file else MonitoringConfig())
        if monitoring.enable and not args.rest_api_port:
            raise ValueError(f"{args.monitoring_config_file} enables Prometheus metrics, which "
                             "are served on the REST port: pass --rest_api_port too")
        for name, path in models.items():
            if not os.path.isdir(path):
                raise ValueError(
                    f"model {name!r}: base path {path} does not exist; pass the directory "
                    "holding the version dirs (MODEL_BASE/<name>)" + (
                        ", or export with --base-path-prefix set to MODEL_BASE's absolute path "
                        "so that models.config names it" if args.model_config_file else ""))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if batching is not None:
        log.info("Batching: %s", batching)
    # Before anything runs: TensorFlow fixes its thread pools on first use.
    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    server = ModelServer(models, batching, args.file_system_poll_wait_seconds,
                         args.enable_model_warmup,
                         RequestLimits(args.max_request_elements, args.max_request_bytes),
                         monitoring)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        server.start(args.port, args.host, args.rest_api_port, args.grpc_max_threads,
                     args.grpc_channel_arguments, args.log_interval_seconds,
                     RestOptions(args.rest_api_num_threads, args.rest_api_backlog,
                                 args.rest_api_max_connections,
                                 args.rest_api_idle_timeout_seconds))
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done.wait()
    server.stop(args.shutdown_grace_seconds)
    return 0
