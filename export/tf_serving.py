"""TF-Serving's files around a SavedModel: models.config, batching parameters, warm-up.

* ``MODEL_BASE/models.config``: a ``ModelServerConfig`` text proto
  (``--model_config_file``); an existing file keeps its other models.
* ``MODEL_BASE/batching_parameters.txt``: a ``BatchingParameters`` text proto
  (``--enable_batching --batching_parameters_file``). Its proto is not in the
  ``tensorflow-serving-api`` wheel, so it is written from the known field set
  (``BATCHING_FIELDS``, from TF-Serving's ``session_bundle_config.proto``).
* ``VERSION/assets.extra/tf_serving_warmup_requests``: a TFRecord file of
  ``PredictionLog`` records that the server replays before it marks the
  version available. Every record is replayed here first
  (:func:`replay_warmup`): a single failing record makes TF-Serving refuse
  the whole version, and it reads at most ``contract.MAX_WARMUP_RECORDS``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from dmi_tf.errors import UserError
from dmi_tf.io_utils import atomic_write_text
from export.serving_module import encode_ids
from serving import contract

#: BatchingParameters fields (session_bundle_config.proto): name -> wrapper or repeated/bool.
BATCHING_FIELDS = {
    "max_batch_size": "Int64Value",
    "batch_timeout_micros": "Int64Value",
    "max_enqueued_batches": "Int64Value",
    "num_batch_threads": "Int64Value",
    "thread_pool_name": "StringValue",
    "allowed_batch_sizes": "repeated int64",
    "pad_variable_length_inputs": "bool",
}


class ExportError(UserError):
    """The export cannot produce artifacts TF-Serving would accept; nothing was published."""


# --- models.config ------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(path: str):
    """Holds an advisory lock on ``path``.lock (other exports wait for it)."""
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_models_config(path: str, name: str, base_path: str) -> str:
    """Adds or replaces model ``name`` in the ModelServerConfig at ``path``; returns the text.

    The version policy is ``latest { num_versions: 1 }``: the server loads the
    newest version directory and unloads the previous one once it is ready.
    Read, update and write hold a lock, so exports of different models into
    one MODEL_BASE at the same time keep every model's entry.
    """
    with _exclusive(path):
        return _update_models_config(path, name, base_path)


def read_models_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """The ModelServerConfig at ``path`` (empty when there is none).

    The export calls it before it publishes anything: a file it could not
    update afterwards must stop the export while nothing is out yet.

    Raises:
      UserError: the file cannot be read, is not a ModelServerConfig text proto,
        or holds a ``custom_model_config`` (only ``model_config_list`` is updated).
    """
    config = model_server_config_pb2.ModelServerConfig()
    if not os.path.exists(path):
        return config
    try:
        with open(path, encoding="utf-8") as f:
            text_format.Parse(f.read(), config)
    except (OSError, UnicodeDecodeError, text_format.ParseError) as e:
        raise UserError(f"{path} is not a readable ModelServerConfig text proto ({e}); fix or "
                        "remove it and export again.") from None
    if config.WhichOneof("config") == "custom_model_config":
        raise UserError(f"{path} holds a custom_model_config; only model_config_list "
                        "configs can be updated. Remove it and export again.")
    return config


def _update_models_config(path: str, name: str, base_path: str) -> str:
    config = read_models_config(path)
    models = config.model_config_list.config
    kept = [m for m in models if m.name != name]
    del models[:]
    models.extend(kept)
    model = models.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    model.model_version_policy.latest.num_versions = 1
    text = text_format.MessageToString(config)
    atomic_write_text(path, text)
    return text


# --- batching_parameters.txt --------------------------------------------------------------

#: In MODEL_BASE, beside models.config (TF-Serving's --batching_parameters_file).
BATCHING_FILE = "batching_parameters.txt"


def allowed_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two from 1 up to ``max_batch_size``, which always ends the list (TF-Serving).

    TF-Serving pads every batch up to the next allowed size. Starting at 1 keeps
    a lone request (the common case at low load) at its own size: from 8, one
    user would cost the work of 8, which on a CPU server is 8x the latency.
    Every size is one more shape to warm up, and there are only log2 of them.
    """
    sizes = [2 ** i for i in range(max_batch_size.bit_length()) if 2 ** i < max_batch_size]
    return [*sizes, max_batch_size]


def batching_parameters_text(max_batch_size: int = 128, batch_timeout_micros: int = 1000,
                             num_batch_threads: int = 4, max_enqueued_batches: int = 100) -> str:
    """A BatchingParameters text proto for GPU serving of the exported signatures.

    ``pad_variable_length_inputs`` lets requests with histories of different
    lengths share a batch. TF-Serving pads each request's tensor with that
    tensor's *first element* (``batching_util.cc``), so clients start every
    request's ``history`` with "" (padding): then the server's padding is
    padding too. Batches are padded up to the next allowed size, so a GPU sees
    a few fixed shapes, each warmed up by the warm-up records.
    """
    for key, value in (("max_batch_size", max_batch_size),
                       ("batch_timeout_micros", batch_timeout_micros),
                       ("num_batch_threads", num_batch_threads),
                       ("max_enqueued_batches", max_enqueued_batches)):
        minimum = 0 if key == "batch_timeout_micros" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UserError(f"{key} must be an int >= {minimum}, got {value!r}.")
    lines = [f"max_batch_size {{ value: {max_batch_size} }}",
             f"batch_timeout_micros {{ value: {batch_timeout_micros} }}",
             f"max_enqueued_batches {{ value: {max_enqueued_batches} }}",
             f"num_batch_threads {{ value: {num_batch_threads} }}"]
    lines += [f"allowed_batch_sizes: {s}" for s in allowed_batch_sizes(max_batch_size)]
    lines.append("pad_variable_length_inputs: true")
    return "\n".join(lines) + "\n"


# --- warm-up ------------------------------------------------------------------------------


def warmup_records(model_name: str, histories: np.ndarray, batch_sizes: list[int],
                   signatures: tuple[str, ...]) -> list[prediction_log_pb2.PredictionLog]:
    """One Predict request per (signature, batch size), built from real histories.

    Args:
      model_name: the served name (TF-Serving ignores it during warm-up; kept
        so the records are valid requests as they are).
      histories: string ``[users, T]`` raw-id histories, "" padded. Each row
        is sent with a leading "" so TF-Serving's variable-length padding
        (which repeats the first element) pads with "".
      batch_sizes: batch sizes to warm up; rows are reused cyclically.
      signatures: signature names to warm up.

    Raises:
      ExportError: more than ``contract.MAX_WARMUP_RECORDS`` records would be written.
    """
    count = len(batch_sizes) * len(signatures)
    if count > contract.MAX_WARMUP_RECORDS:
        raise ExportError(f"{count} warm-up records requested; TF-Serving reads at most "
                          f"{contract.MAX_WARMUP_RECORDS}. Use fewer batch sizes.")
    histories = np.asarray(histories, dtype=object)
    padded = np.concatenate(
        [np.full((len(histories), 1), contract.PADDING, dtype=object), histories], axis=1)
    records = []
    for signature in signatures:
        for size in batch_sizes:
            rows = padded[np.arange(size) % len(padded)]
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            request.inputs[contract.HISTORY].CopyFrom(
                tf.make_tensor_proto(encode_ids(rows), dtype=tf.string))
            records.append(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)))
    return records


def write_warmup(path: str, records: list[prediction_log_pb2.PredictionLog]) -> None:
    """Writes ``records`` as a TFRecord file (uncompressed, as TF-Serving reads it)."""
    if len(records) > contract.MAX_WARMUP_RECORDS:
        raise ExportError(f"{len(records)} warm-up records; TF-Serving reads at most "
                          f"{contract.MAX_WARMUP_RECORDS}.")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record.SerializeToString())


def read_warmup(path: str) -> list[prediction_log_pb2.PredictionLog]:
    """Parses every record of a warm-up file (raises on a corrupt record, as the server does)."""
    return [prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            for raw in tf.data.TFRecordDataset(path)]


def replay_warmup(saved_model_dir: str, loaded=None) -> int:
    """Runs every warm-up record of ``saved_model_dir`` through its signature; returns the count.

    Each request must name an existing signature, feed exactly its inputs and
    return outputs whose leading dimension is the request's batch size, which
    is what TF-Serving checks when it replays them.

    Raises:
      ExportError: naming the first record that fails and why.
    """
    path = os.path.join(saved_model_dir, contract.WARMUP_FILE)
    records = read_warmup(path)
    if not records:
        raise ExportError(f"{path} holds no records.")
    if len(records) > contract.MAX_WARMUP_RECORDS:
        raise ExportError(f"{path} holds {len(records)} records; TF-Serving reads at most "
                          f"{contract.MAX_WARMUP_RECORDS}.")
    loaded = loaded if loaded is not None else tf.saved_model.load(saved_model_dir)
    for i, record in enumerate(records):
        try:
            if record.WhichOneof("log_type") != "predict_log":
                kind = record.WhichOneof("log_type")
                raise ValueError(f"log type {kind!r}, expected predict_log")
            request = record.predict_log.request
            name = request.model_spec.signature_name or contract.SERVING_DEFAULT
            if name not in loaded.signatures:
                raise ValueError(f"signature {name!r} does not exist "
                                 f"(the model has {sorted(loaded.signatures)})")
            function = loaded.signatures[name]
            expected = set(function.structured_input_signature[1])
            if set(request.inputs) != expected:
                raise ValueError(f"inputs {sorted(request.inputs)} != signature inputs "
                                 f"{sorted(expected)}")
            inputs = {key: tf.constant(tf.make_ndarray(value))
                      for key, value in request.inputs.items()}
            batch = next(iter(inputs.values())).shape[0]
            outputs = function(**inputs)
            for key, value in outputs.items():
                if value.shape[0] != batch:
                    raise ValueError(f"output {key!r} has leading dimension {value.shape[0]}, "
                                     f"the request's batch is {batch}")
        except Exception as e:
            raise ExportError(f"warm-up record {i} of {path} fails ({type(e).__name__}: {e}); "
                              "TF-Serving would refuse this version. Nothing was published."
                              ) from e
    return len(records)
