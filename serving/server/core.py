"""The server core: request semantics, the gRPC servicers, and the server's lifecycle.

This is **not** TensorFlow Serving. It is a small Python stand-in for local
development, tests, and ScaNN exports that the stock server cannot load: it
serves ``tensorflow.serving.PredictionService`` (``Predict``,
``GetModelMetadata``) and ``ModelService`` (``GetModelStatus``) from the
``tensorflow-serving-api`` protos, with TF-Serving's flag names, directory
layout, version policy (newest version, swapped in after it loaded and warmed
up) and error statuses, so a client written against it works against
TF-Serving unchanged. Anything TF-Serving would reject, it rejects with the
same gRPC status; the messages add what to fix.

Every request, whether it came over gRPC, REST or from a warm-up record, is
checked by ``ModelServer.validate``: the request semantics live there only.

What it does not do: Classify / Regress / MultiInference (UNIMPLEMENTED),
version policies other than "latest 1", model-config reloads over RPC, TLS.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import contract, tensors
from serving.server.batching import BatchingOptions, Task
from serving.server.errors import ServingError, invalid
from serving.server.monitoring import Metrics, MonitoringConfig
from serving.server.rest import RestOptions, RestServer
from serving.server.servable import Servable, TensorInfo
from serving.server.versions import LOG_WINDOW, Model

log = logging.getLogger("serving.server")

INT32_MAX = 2**31 - 1  # TF-Serving's gRPC message size limit
DEFAULT_GRPC_THREADS = 256
#: 16,777,216 ids: 16 x the 100 MB request of the tests (10 users x 100,000 ids), or the
#: clients' 256 users per request with 65,536 ids each. A decoded id costs about 100 bytes
#: on its way through a request (measured), so one request stays under about 1.7 GB.
DEFAULT_MAX_REQUEST_ELEMENTS = 2**24


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """How large a request's inputs may be, checked before any of them is decoded.

    A TensorProto with one value and a shape fills the shape with it, so a
    43-byte request can declare 10^9 ids; the wire size alone bounds nothing.
    ``max_elements`` bounds the elements the inputs' shapes declare, summed;
    ``max_bytes`` the inputs' size, summed (``tensors.size_bytes``: wire size, or
    decoded size where a value fills a shape; for REST, also the body). The
    defaults refuse no request gRPC's 2 GiB message limit lets through with
    its values sent one by one, up to 16.7M ids. Over a limit is
    RESOURCE_EXHAUSTED, as gRPC answers a message over its size limit; a shape
    no tensor can have (over 2^63 - 1 elements) is INVALID_ARGUMENT.
    """

    max_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS
    max_bytes: int = INT32_MAX

    def check(self, inputs, output_elements_per_row: int = 0) -> None:
        """Raises the request error if the TensorProtos ``inputs`` (alias -> proto) are too big.

        The answer counts too: ``output_elements_per_row`` elements for each row
        (batch element) the inputs declare. A history of shape ``[10**9, 0]``
        holds no element but asks for 10^9 rows of top-k answers.
        """
        elements = size = rows = 0
        for alias, proto in inputs.items():
            try:
                elements += tensors.element_count(proto)
                size += tensors.size_bytes(proto)
            except tensors.TensorError as e:
                raise invalid(f"tensor parsing error: {alias}: {e}") from None
            if shape := tensors.shape_of(proto):
                rows = max(rows, shape[0])
        answer = rows * output_elements_per_row
        if elements + answer > self.max_elements:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request's inputs declare {elements:,} elements and its answer would have "
                f"{answer:,} ({rows:,} rows), more than this server's limit of "
                f"{self.max_elements:,} (--max_request_elements); send fewer users or shorter "
                "histories per request (the model reads only the last L ids of each)")
        if size > self.max_bytes:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request's inputs hold {size:,} bytes, more than this server's limit of "
                f"{self.max_bytes:,} (--max_request_bytes); send fewer users or shorter histories "
                "per request")


class _Stats:
    """Request counts and latencies, logged every interval and summed for the lifetime."""

    def __init__(self):
        self._lock = threading.Lock()
        self._window: collections.deque = collections.deque(maxlen=LOG_WINDOW)
        self.total = collections.Counter()

    def record(self, method: str, code: grpc.StatusCode, seconds: float, rows: int) -> None:
        with self._lock:
            self._window.append((method, code.name, seconds, rows))
            self.total[code.name] += 1

    def summary(self, runs: list[tuple[int, float]]) -> str | None:
        with self._lock:
            window, self._window = self._window, collections.deque(maxlen=LOG_WINDOW)
        if not window:
            return None
        codes = collections.Counter(code for _, code, _, _ in window)
        latencies = np.array([s for _, _, s, _ in window]) * 1e3
        rows = sum(r for _, _, _, r in window)
        methods = collections.Counter(m for m, _, _, _ in window)
        text = (f"requests={len(window)} ({', '.join(f'{m}={n}' for m, n in methods.items())}) "
                f"status={dict(codes)} users={rows} "
                f"latency_ms p50={np.percentile(latencies, 50):.2f}"
                f" p99={np.percentile(latencies, 99):.2f} max={latencies.max():.2f}")
        if runs:
            rows, seconds = np.array(runs).T
            text += (f" model_calls={len(runs)} mean_batch={rows.mean():.1f} "
                     f"model_ms mean={1e3 * seconds.mean():.2f} max={1e3 * seconds.max():.2f}")
        return text


class ModelServer:
    """The servables, the request semantics, and the gRPC / REST front ends.

    Args:
      models: model name -> base path (the directory holding version dirs).
      batching: batching options, or None to run every request on its own.
      poll_seconds: file-system poll interval for new versions (0: load once).
      warmup: replay each version's ``assets.extra/tf_serving_warmup_requests``
        before serving it.
      limits: the largest request accepted (also the largest padded batch).
      monitoring: Prometheus metrics on the REST port (``serving.server.monitoring``);
        needs a REST port when enabled.
    """

    def __init__(self, models: dict[str, str], batching: BatchingOptions | None = None,
                 poll_seconds: float = 1.0, warmup: bool = True,
                 limits: RequestLimits | None = None,
                 monitoring: MonitoringConfig | None = None):
        self.limits = limits or RequestLimits()
        self.monitoring = monitoring or MonitoringConfig()
        self.metrics = Metrics()
        self.models = {name: Model(name, path, batching, warmup, self.limits.max_elements)
                       for name, path in models.items()}
        self.poll_seconds = poll_seconds
        self.stats = _Stats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._grpc: grpc.Server | None = None
        self._http: RestServer | None = None
        self.port: int | None = None
        self.rest_port: int | None = None

    # ---- request semantics (shared by gRPC, REST and warm-up)

    def _model(self, spec, has_spec: bool = True) -> Model:
        if not has_spec:
            raise invalid("Missing ModelSpec")
        model = self.models.get(spec.name)
        if model is None:
            what = (f"Specific({spec.name}, {spec.version.value})" if spec.HasField("version")
                    else f"Latest({spec.name})")
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: {what} (models served: "
                               f"{', '.join(sorted(self.models))})")
        return model

    def signature_inputs(self, spec) -> dict[str, TensorInfo]:
        """The inputs of the signature a ModelSpec names, or the error ``predict`` would give.

        For the REST front end: JSON numbers carry no dtype and unnamed JSON
        inputs no alias, so it reads them from the signature, as TF-Serving's
        JSON parser does; the request it builds is then checked by ``validate``.
        """
        servable = self._model(spec).servable_for(spec)
        return servable.inputs[self._signature(servable, spec.signature_name)]

    def predict(self, request: predict_pb2.PredictRequest,
                on_tasks: Callable[[list[Task]], None] | None = None
                ) -> predict_pb2.PredictResponse:
        model = self._model(request.model_spec, request.HasField("model_spec"))
        servable = model.servable_for(request.model_spec)
        signature, inputs, outputs, rows = self.validate(servable, request)
        if model.batcher is None or rows is None or rows == 0:
            result = model.run(servable, signature, inputs, outputs, rows)
        else:
            tasks = model.batcher.submit((servable, signature, tuple(outputs)), inputs, rows)
            if on_tasks is not None:
                on_tasks(tasks)
            parts = [task.future.result() for task in tasks]
            result = {a: np.concatenate([p[a] for p in parts]) for a in outputs}
        return self._response(request, servable, signature, result)

    def _predict_unbatched(self, servable: Servable, request: predict_pb2.PredictRequest):
        signature, inputs, outputs, _ = self.validate(servable, request)
        return self._response(request, servable, signature,
                              servable.run(signature, inputs, outputs))

    @staticmethod
    def _response(request, servable, signature, result) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for alias, value in result.items():
            response.outputs[alias].CopyFrom(tensors.from_numpy(
                value, dtype=servable.outputs[signature][alias].dtype))
        return response

    @staticmethod
    def _signature(servable: Servable, name: str) -> str:
        signature = name or contract.SERVING_DEFAULT
        if signature not in servable.inputs:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature}" not found. Signatures of {servable.name} '
                f"version {servable.version}: {', '.join(sorted(servable.inputs))}")
        return signature

    def validate(self, servable: Servable, request: predict_pb2.PredictRequest):
        """Checks a request against the signature, in TF-Serving's order and with its statuses.

        The request's size is checked against ``self.limits`` before any input
        is decoded.

        Returns:
          ``(signature, inputs, output_aliases, rows)``: decoded inputs and the
          common batch size (None when an input is a scalar).
        """
        signature = self._signature(servable, request.model_spec.signature_name)
        expected = servable.inputs[signature]
        sent = set(request.inputs)
        if sent != set(expected):
            extra, missing = sorted(sent - set(expected)), sorted(set(expected) - sent)
            if len(sent) != len(expected):
                raise invalid(
                    f"input size does not match signature: {len(sent)}!={len(expected)} "
                    f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}})."
                    f" Sent extra: {{{','.join(extra)}}}. Missing but required: "
                    f"{{{','.join(missing)}}}.")
            raise invalid(f"input tensor alias not found in signature: {extra[0]}. Inputs "
                          f"expected to be in the set {{{','.join(sorted(expected))}}}.")
        for alias, proto in request.inputs.items():
            info = expected[alias]
            if proto.dtype != info.dtype:
                raise invalid(
                    f"input {alias!r} of signature {signature!r} must be "
                    f"{tensors.DTYPE_NAMES.get(info.dtype)}, got "
                    f"{tensors.DTYPE_NAMES.get(proto.dtype, proto.dtype)}: expects arg "
                    f"{alias!r} to be {tensors.dtype_enum_name(info.dtype)} but "
                    f"{tensors.dtype_enum_name(proto.dtype)} is provided")
        answers = servable.outputs[signature]
        self.limits.check(request.inputs, sum(
            answers[alias].row_elements()
            for alias in request.output_filter or answers if alias in answers))
        inputs, rows = {}, set()
        for alias, proto in request.inputs.items():
            info = expected[alias]
            try:
                value = tensors.to_numpy(proto)
            except tensors.TensorError as e:
                raise invalid(f"tensor parsing error: {alias}: {e}") from None
            if info.shape is not None and (
                    value.ndim != len(info.shape)
                    or any(want >= 0 and want != got for want, got in zip(info.shape, value.shape,
                                                                           strict=True))):
                raise invalid(
                    f"input {alias!r} of signature {signature!r} has shape {list(value.shape)} "
                    f"but the signature expects {info.describe()}"
                    + (" (one row per user: a batch of histories)"
                       if info.shape and value.ndim == len(info.shape) - 1 else ""))
            inputs[alias] = value
            rows.add(value.shape[0] if value.ndim else None)
        if len(rows) > 1:
            raise invalid(f"inputs of signature {signature!r} have different batch sizes "
                          f"{sorted(rows, key=str)}; every input needs the same 0th dimension")
        outputs = list(request.output_filter) or list(servable.outputs[signature])
        for alias in outputs:
            if alias not in servable.outputs[signature]:
                raise invalid(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(servable.outputs[signature]))}}}.")
        if len(set(outputs)) != len(outputs):
            raise invalid(f"duplicate output tensor alias in output_filter {outputs}")
        return signature, inputs, outputs, rows.pop() if rows else None

    def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                 ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        model = self._model(request.model_spec, request.HasField("model_spec"))
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field "
                          f"(use {contract.SIGNATURE_DEF_FIELD!r})")
        for field in request.metadata_field:
            if field != contract.SIGNATURE_DEF_FIELD:
                raise invalid(f"Metadata field {field} is not supported "
                              f"(only {contract.SIGNATURE_DEF_FIELD!r} is)")
        servable = model.servable_for(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(value)
        response.metadata[contract.SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    def status(self, request: get_model_status_pb2.GetModelStatusRequest
               ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        model = self.models.get(request.model_spec.name)
        states = {} if model is None else dict(model.states)
        if request.model_spec.HasField("version"):
            version = request.model_spec.version.value
            if version not in states:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version "
                                   f"{version} of model {request.model_spec.name}")
            states = {version: states[version]}
        elif not states:
            raise ServingError(grpc.StatusCode.NOT_FOUND, "Could not find any versions of "
                               f"model {request.model_spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state in sorted(states.items()):
            entry = response.model_version_status.add(version=version, state=state.state)
            entry.status.error_code = state.code.value[0]
            entry.status.error_message = state.error
        return response

    # ---- lifecycle

    def load(self) -> None:
        """Loads each model's newest version (the initial load, before listening)."""
        for model in self.models.values():
            model.poll(self._predict_unbatched)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            for model in self.models.values():
                model.poll(self._predict_unbatched)

    def _stats_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            runs = []
            for model in self.models.values():
                done, model.runs = model.runs, collections.deque(maxlen=LOG_WINDOW)
                runs += done
            if (text := self.stats.summary(runs)) is not None:
                log.info("%s", text)

    def start(self, port: int = 8500, host: str = "127.0.0.1", rest_port: int = 0,
              max_threads: int | None = None, channel_args: Iterable[tuple[str, object]] = (),
              log_interval: float = 10.0, rest_options: RestOptions | None = None) -> None:
        """Loads the models, then listens (port 0 picks a free port: see ``self.port``).

        Raises:
          OSError: a port cannot be bound.
          ValueError: monitoring is enabled without a REST port (TF-Serving serves the
            metrics on its REST port only).
        """
        if self.monitoring.enable and not rest_port:
            raise ValueError("monitoring (prometheus_config enable: true) is served on the REST "
                             "port: pass --rest_api_port too")
        self.load()
        # The user's arguments replace the defaults (a dict keeps the last value of a key).
        options = dict([("grpc.max_receive_message_length", INT32_MAX),
                        ("grpc.max_send_message_length", INT32_MAX),
                        # gRPC binds with SO_REUSEPORT by default: a second server on a port
                        # in use then starts without error and takes half of the new
                        # connections. One owner per port, as TF-Serving's users expect.
                        ("grpc.so_reuseport", 0), *channel_args])
        # Each request holds a thread while it waits for its batch, so the pool
        # bounds how many requests can share a batch. TF-Serving's C++ server has
        # no such bound (its flag sizes the pollers); 4 x cores here capped 16
        # concurrent clients at batches of 4 (docs/experiments.md, "Serving").
        threads = max_threads or DEFAULT_GRPC_THREADS
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="grpc"),
            options=list(options.items()), maximum_concurrent_rpcs=None)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), self._grpc)
        try:
            self.port = self._grpc.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # gRPC's "Failed to bind to address"; older versions return 0
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {host}:{port}: the port is in use (or "
                          "the address is not this machine's); stop the process holding it or "
                          "pass another --port")
        self._grpc.start()
        log.info("Running gRPC ModelServer at %s:%d ... (local stand-in, not TF-Serving)",
                 host, self.port)
        if rest_port:  # 0: no REST API (TF-Serving); -1: a free port
            try:
                self._http = RestServer((host, max(rest_port, 0)), self, rest_options)
            except OSError as e:
                self._grpc.stop(None).wait()  # nothing half-started stays listening
                raise OSError(f"cannot listen for REST on {host}:{rest_port}: {e.strerror or e}; "
                              "stop the process holding it or pass another --rest_api_port"
                              ) from None
            self.rest_port = self._http.port
            self._http.start()
            log.info("Exporting HTTP/REST API at:%s:%d ...", host, self.rest_port)
        if self.poll_seconds > 0:
            self._threads.append(threading.Thread(target=self._poll_loop, daemon=True,
                                                  name="poll"))
        if log_interval > 0:
            self._threads.append(threading.Thread(target=self._stats_loop, args=(log_interval,),
                                                  daemon=True, name="stats"))
        for thread in self._threads:
            thread.start()

    def stop(self, grace: float = 30.0) -> None:
        """Graceful stop: no new requests; in-flight ones finish (up to ``grace`` s)."""
        log.info("Shutting down: refusing new requests, finishing in-flight ones")
        self._stop.set()
        for model in self.models.values():
            if model.batcher is not None:
                model.batcher.drain()  # in-flight requests must not wait for batch timeouts
        # Both front ends stop listening at once and drain side by side, each within grace.
        grpc_stopped = self._grpc.stop(grace) if self._grpc is not None else None
        if self._http is not None:
            self._http.stop(grace)
        if grpc_stopped is not None:
            grpc_stopped.wait()
        for model in self.models.values():
            if model.batcher is not None:
                model.batcher.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        log.info("Stopped; requests served by status: %s", dict(self.stats.total))

    # ---- the gRPC entry point shared by the servicers

    def handle(self, method: str, call: Callable[[], object], context, rows: int = 0,
               model_name: str | None = None):
        """Runs a gRPC call; ``model_name`` (Predict's) counts it in the monitoring metrics."""
        start = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            return call()
        except ServingError as e:
            code = e.code
            context.abort(e.code, e.message)
        except concurrent.futures.CancelledError:
            code = grpc.StatusCode.CANCELLED
            context.abort(code, "the client cancelled the request")
        except Exception as e:  # a bug must cost one request, not the server
            code = grpc.StatusCode.INTERNAL
            log.exception("internal error in %s", method)
            context.abort(code, f"{type(e).__name__}: {e}")
        finally:
            seconds = time.monotonic() - start
            self.stats.record(method, code, seconds, rows)
            if model_name is not None:
                self.metrics.record(model_name, "predict", "GRPC", code.name, seconds)


def _rows_of(request: predict_pb2.PredictRequest) -> int:
    for proto in request.inputs.values():
        if proto.tensor_shape.dim:
            return int(proto.tensor_shape.dim[0].size)
    return 0


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def Predict(self, request, context):
        def on_tasks(tasks):
            # A client that hangs up frees its batch slot instead of being computed.
            def cancel():
                for task in tasks:
                    task.cancelled = True
            context.add_callback(cancel)

        return self._server.handle(
            "Predict", lambda: self._server.predict(request, on_tasks), context,
            _rows_of(request), request.model_spec.name)

    def GetModelMetadata(self, request, context):
        return self._server.handle("GetModelMetadata", lambda: self._server.metadata(request),
                                   context)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def GetModelStatus(self, request, context):
        return self._server.handle("GetModelStatus", lambda: self._server.status(request),
                                   context)
