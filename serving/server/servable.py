"""One loaded SavedModel version: its SignatureDefs, callable signatures and custom ops."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving import tensors
from serving.server.errors import ServingError, invalid


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    dtype: int
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown size

    @classmethod
    def from_proto(cls, info: meta_graph_pb2.TensorInfo) -> TensorInfo:
        if info.tensor_shape.unknown_rank:
            return cls(info.dtype, None)
        return cls(info.dtype, tuple(int(d.size) for d in info.tensor_shape.dim))

    def row_elements(self) -> int:
        """Elements of one batch row (unknown sizes count 1)."""
        if self.shape is None:
            return 1
        return math.prod(max(size, 1) for size in self.shape[1:])

    def describe(self) -> str:
        shape = "unknown rank" if self.shape is None else (
            "[" + ", ".join("None" if s < 0 else str(s) for s in self.shape) + "]")
        return f"{tensors.DTYPE_NAMES.get(self.dtype, self.dtype)} {shape}"


def _read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    saved_model = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    if os.path.isfile(pb):
        with open(pb, "rb") as f:
            saved_model.ParseFromString(f.read())
    elif os.path.isfile(pb + "txt"):
        with open(pb + "txt", encoding="utf-8") as f:
            text_format.Parse(f.read(), saved_model)
    else:
        raise FileNotFoundError(f"{path} has no saved_model.pb: not a SavedModel directory")
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path} has no MetaGraph tagged 'serve'")


def _needs_scann(path: str) -> bool:
    # ScaNN's ops live in the "Scann>" namespace; they must be registered
    # (by importing scann) before such a SavedModel loads.
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        return b"Scann>" in f.read()


class Servable:
    """One loaded model version: its SignatureDefs and callable signatures."""

    def __init__(self, name: str, version: int, path: str):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = _read_signature_defs(path)
        if _needs_scann(path):
            try:
                from scann import scann_ops  # noqa: F401  (registers the Scann> ops)
            except ImportError as e:
                raise RuntimeError(
                    f"{path} uses ScaNN ops; install scann (pip install 'scann[tf]') "
                    f"to serve it: {e}") from e
        self._loaded = tf.saved_model.load(path, tags=["serve"])
        self._functions = dict(self._loaded.signatures)
        self.inputs = {
            key: {alias: TensorInfo.from_proto(info) for alias, info in sig.inputs.items()}
            for key, sig in self.signature_defs.items() if key in self._functions
        }
        self.outputs = {
            key: {alias: TensorInfo.from_proto(info) for alias, info in sig.outputs.items()}
            for key, sig in self.signature_defs.items() if key in self._functions
        }

    def run(self, signature: str, inputs: dict[str, np.ndarray],
            output_aliases: Iterable[str]) -> dict[str, np.ndarray]:
        """Calls a signature on decoded, validated inputs; errors carry a gRPC status."""
        feeds = {
            alias: tf.constant(value, dtype=tf.as_dtype(self.inputs[signature][alias].dtype))
            for alias, value in inputs.items()
        }
        try:
            outputs = self._functions[signature](**feeds)
        except tf.errors.OpError as e:
            code = grpc.StatusCode.INTERNAL
            for status in grpc.StatusCode:
                if status.value[0] == e.error_code:
                    code = status
            raise ServingError(code, f"{e.message} (signature {signature!r})") from None
        except (TypeError, ValueError) as e:
            raise invalid(f"signature {signature!r} rejected the inputs: {e}") from None
        return {alias: outputs[alias].numpy() for alias in output_aliases}
