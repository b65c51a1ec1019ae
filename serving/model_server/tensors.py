"""TensorProto <-> numpy without going through TF ops: cheap, strict, and safe against hostile shapes."""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from .errors import invalid_argument

# dtype enum -> (numpy dtype, TensorProto field holding the values)
_DTYPES: dict[int, tuple[Any, str]] = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
    types_pb2.DT_HALF: (np.float16, "half_val"),
    types_pb2.DT_STRING: (object, "string_val"),
}
_BY_NUMPY = {np.dtype(v[0]): k for k, v in _DTYPES.items() if v[0] is not object and k not in (types_pb2.DT_INT16,)}
_BY_NUMPY[np.dtype(np.int16)] = types_pb2.DT_INT16

# Refuse tensors whose declared size alone would exhaust memory before any work is done.
MAX_TENSOR_BYTES = 1 << 31


def dtype_name(dtype: int) -> str:
    """TF's spelling of a dtype ("float", "int64", "string"), as its error messages use."""
    name = types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else str(dtype)
    return name[3:].lower() if name.startswith("DT_") else name


def shape_of(proto: tensor_shape_pb2.TensorShapeProto) -> list[int] | None:
    if proto.unknown_rank:
        return None
    return [d.size for d in proto.dim]


def to_numpy(proto: tensor_pb2.TensorProto, alias: str = "") -> np.ndarray:
    """Decode one TensorProto; raise INVALID_ARGUMENT for anything TF's Tensor::FromProto would refuse."""
    if proto.dtype not in _DTYPES:
        raise invalid_argument(f"tensor parsing error: {alias} (unsupported dtype {dtype_name(proto.dtype)})")
    np_dtype, field = _DTYPES[proto.dtype]
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(s < 0 for s in shape):
        raise invalid_argument(f"tensor parsing error: {alias} (negative dimension in shape {shape})")
    count = int(np.prod(shape, dtype=np.float64)) if shape else 1
    itemsize = 8 if np_dtype is object else np.dtype(np_dtype).itemsize
    if count * itemsize > MAX_TENSOR_BYTES:
        raise invalid_argument(f"tensor parsing error: {alias} (shape {shape} is too large)")
    if proto.tensor_content:
        if np_dtype is object:
            raise invalid_argument(f"tensor parsing error: {alias} (tensor_content is not valid for strings)")
        if len(proto.tensor_content) != count * itemsize:
            raise invalid_argument(
                f"tensor parsing error: {alias} (tensor_content holds {len(proto.tensor_content)} bytes, "
                f"shape {shape} needs {count * itemsize})")
        return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).copy()
    values = getattr(proto, field)
    n = len(values)
    if np_dtype is object:
        flat = np.empty(n, dtype=object)
        flat[:] = list(values)
    elif proto.dtype == types_pb2.DT_HALF:
        flat = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        flat = np.asarray(values, dtype=np_dtype)
    if n == count:
        return flat.reshape(shape)
    if n == 0 and count == 0:
        return flat.reshape(shape)
    if 0 < n < count:  # TensorProto: the last value repeats to fill the shape
        out = np.empty(count, dtype=flat.dtype)
        out[:n] = flat
        out[n:] = flat[-1]
        return out.reshape(shape)
    if n == 0:  # an all-default tensor
        fill = b"" if np_dtype is object else 0
        return np.full(shape, fill, dtype=flat.dtype if np_dtype is not object else object)
    raise invalid_argument(f"tensor parsing error: {alias} ({n} values do not fit shape {shape})")


def numpy_dtype_enum(arr: np.ndarray) -> int:
    if arr.dtype == object or arr.dtype.kind in ("S", "U"):
        return types_pb2.DT_STRING
    try:
        return _BY_NUMPY[arr.dtype]
    except KeyError:
        raise invalid_argument(f"unsupported numpy dtype {arr.dtype}") from None


def to_proto(value: Any, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """Encode into the typed value fields (TF Serving's AsProtoField), not tensor_content."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if dtype is None:
        dtype = numpy_dtype_enum(arr)
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for s in arr.shape:
        proto.tensor_shape.dim.add(size=int(s))
    np_dtype, field = _DTYPES[dtype]
    flat = arr.reshape(-1)
    if np_dtype is object:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat.tolist())
    elif dtype == types_pb2.DT_HALF:
        proto.half_val.extend(flat.astype(np.float16).view(np.uint16).tolist())
    else:
        getattr(proto, field).extend(flat.astype(np_dtype, copy=False).tolist())
    return proto


def as_strings(arr: np.ndarray) -> np.ndarray:
    """Make an object array of bytes (what TF string tensors hold) from str/bytes arrays."""
    if arr.dtype == object:
        return np.vectorize(lambda v: v if isinstance(v, bytes) else str(v).encode("utf-8"), otypes=[object])(arr) \
            if arr.size else arr
    if arr.dtype.kind == "U":
        return np.char.encode(arr, "utf-8").astype(object)
    return arr.astype(object)
