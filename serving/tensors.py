"""NumPy <-> ``TensorProto`` conversion, as TF-Serving encodes tensors on the wire.

Requests may carry values in the typed repeated fields (``string_val``,
``float_val``, ...) or packed in ``tensor_content``; a single value with a
larger shape is broadcast (TensorFlow's ``Tensor::FromProto`` rule). Responses
are written in the typed fields, as TF-Serving's ``Predict`` does
(``Tensor::AsProtoField``), so a client reading this server reads TF-Serving.

Strings are bytes on the wire; ``to_numpy`` returns them as an object array of
``bytes`` and ``from_numpy`` accepts ``str`` (encoded as ``contract.encode_id``
does) or ``bytes``.

The broadcast makes a tiny proto declare a huge tensor (one value, shape
``[1, 10**9]``), so ``element_count`` and ``size_bytes`` read a proto's size
from its shape and fields without decoding it: a server checks them against
its limits before ``to_numpy`` allocates anything.
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving import contract

__all__ = ["DTYPE_NAMES", "dtype_enum_name", "element_count", "from_numpy", "shape_of",
           "size_bytes", "to_numpy"]

# DataType enum -> (NumPy dtype, TensorProto field holding the values).
_NUMERIC = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
}
_FROM_NUMPY = {np.dtype(numpy_type): dtype for dtype, (numpy_type, _) in _NUMERIC.items()}

#: DataType enum -> its name without the ``DT_`` prefix, for messages ("string", "float").
DTYPE_NAMES = {
    value: name[3:].lower() for name, value in types_pb2.DataType.items() if name != "DT_INVALID"
}


def dtype_enum_name(dtype: int) -> str:
    """``DT_FLOAT`` for a DataType number; protobuf enums are open, so any number can arrive."""
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return f"DataType {dtype} (not a TensorFlow dtype)"


class TensorError(ValueError):
    """A TensorProto that cannot be read (bad dtype, value count or content size)."""


def shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...] | None:
    """The shape of a TensorProto, or None when its rank is unknown."""
    if proto.tensor_shape.unknown_rank:
        return None
    return tuple(int(dim.size) for dim in proto.tensor_shape.dim)


#: TensorFlow's TensorShape refuses shapes with more elements than this.
MAX_ELEMENTS = 2**63 - 1


def element_count(proto: tensor_pb2.TensorProto) -> int:
    """The number of elements a TensorProto's shape declares (exact; nothing is decoded).

    Raises:
      TensorError: unknown rank, a negative dimension, or more than 2^63 - 1
        elements (TensorFlow's limit; a NumPy product would wrap around).
    """
    shape = shape_of(proto)
    if shape is None or any(size < 0 for size in shape):
        raise TensorError(f"tensor shape must be fully defined, got {proto.tensor_shape}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise TensorError(f"shape {list(shape)} has {count} elements, more than TensorFlow's "
                          f"limit of 2^63 - 1")
    return count


def size_bytes(proto: tensor_pb2.TensorProto) -> int:
    """A TensorProto's size: the larger of its wire size and its decoded values' bytes.

    Decoded bytes are string payloads or elements x item size; a value filling
    the whole shape counts once per element. Strings sent one by one never
    decode to more than their wire size, so nothing is decoded or summed.

    Raises:
      TensorError: as ``element_count``.
    """
    count = element_count(proto)
    if proto.dtype == types_pb2.DT_STRING:
        decoded = count * len(proto.string_val[0]) if len(proto.string_val) == 1 else 0
    else:
        decoded = count * np.dtype(_NUMERIC.get(proto.dtype, (np.uint8,))[0]).itemsize
    return max(proto.ByteSize(), decoded)


def to_numpy(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decodes a TensorProto (typed fields or ``tensor_content``) into an array.

    Raises:
      TensorError: unsupported dtype, unknown rank, negative dims or too many
        elements, or a value count that fits neither the shape nor the
        broadcast of one value.
    """
    count = element_count(proto)
    shape = shape_of(proto)
    if proto.dtype == types_pb2.DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
    elif proto.dtype in _NUMERIC:
        numpy_type, field = _NUMERIC[proto.dtype]
        if proto.tensor_content:
            itemsize = np.dtype(numpy_type).itemsize
            if len(proto.tensor_content) != count * itemsize:
                raise TensorError(
                    f"tensor_content has {len(proto.tensor_content)} bytes but shape "
                    f"{list(shape)} of {DTYPE_NAMES[proto.dtype]} needs {count * itemsize}"
                )
            return np.frombuffer(proto.tensor_content, dtype=numpy_type).reshape(shape).copy()
        values = np.asarray(getattr(proto, field), dtype=numpy_type)
    else:
        raise TensorError(f"unsupported dtype {dtype_enum_name(proto.dtype)}")
    if values.size == count:
        return values.reshape(shape)
    if values.size == 1 and count > 0:  # one value fills the whole shape
        return np.full(shape, values[0], dtype=values.dtype)
    if values.size == 0 and count == 0:
        return values.reshape(shape)
    raise TensorError(
        f"tensor has {values.size} values but its shape {list(shape)} needs {count}"
    )


def _dtype_of(array: np.ndarray) -> int:
    if array.dtype == object or array.dtype.kind in "US":
        return types_pb2.DT_STRING
    try:
        return _FROM_NUMPY[array.dtype]
    except KeyError:
        raise TensorError(f"unsupported NumPy dtype {array.dtype}") from None


def from_numpy(array, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """Encodes an array (or nested lists) in the typed fields of a TensorProto.

    Args:
      array: array-like; strings may be ``str`` (UTF-8 encoded) or ``bytes``.
      dtype: a DataType enum to force (e.g. ``types_pb2.DT_STRING``); by default
        it follows the array's dtype.
    """
    array = np.asarray(array) if not isinstance(array, np.ndarray) else array
    dtype = _dtype_of(array) if dtype is None else dtype
    proto = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(s)) for s in array.shape]
        ),
    )
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(
            [contract.encode_id(v if isinstance(v, bytes) else str(v)) for v in array.ravel()]
        )
    elif dtype in _NUMERIC:
        numpy_type, field = _NUMERIC[dtype]
        getattr(proto, field).extend(array.astype(numpy_type, copy=False).ravel().tolist())
    else:
        raise TensorError(f"unsupported dtype {dtype_enum_name(dtype)}")
    return proto
