"""TensorProto <-> numpy without going through TF ops: cheap, strict, and bounded against hostile shapes.

Decoding follows TF's `Tensor::FromProto` (the last value repeats to fill the shape, no values means all zeros), but
first charges what the tensor will cost once expanded against the request's `RequestLimits`, so a 32-byte proto that
claims 2^30 elements is refused before anything is allocated. Encoding writes the typed value fields that TF
Serving's `AsProtoField` writes, building the packed wire bytes with numpy instead of going through Python lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from .errors import invalid_argument, resource_exhausted, unimplemented

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
_BY_NUMPY = {np.dtype(v[0]): k for k, v in _DTYPES.items() if v[0] is not object}

# TensorProto field numbers of the typed value fields (tensorflow/core/framework/tensor.proto).
_FIELD_NUMBER = {
    "float_val": 5,
    "double_val": 6,
    "int_val": 7,
    "string_val": 8,
    "int64_val": 10,
    "bool_val": 11,
    "half_val": 13,
    "uint32_val": 16,
    "uint64_val": 17,
}

# What TF holds per string element besides its bytes (sizeof(tstring)).
STRING_ELEMENT_OVERHEAD = 24
# Varint encoding works on blocks of this many values to bound its temporaries (10 bytes of scratch per value).
_VARINT_BLOCK = 1 << 20

# TF Serving accepts gRPC messages up to INT32_MAX bytes; by default a request may expand to what such a message
# could have carried explicitly, so nothing TF Serving would take in one message is refused.
DEFAULT_MAX_REQUEST_BYTES = 2**31 - 1
DEFAULT_MAX_REQUEST_ELEMENTS = 2**31 - 1


@dataclass(frozen=True)
class RequestLimits:
    """What the inputs of one request may amount to once decoded (`--max_request_*` flags)."""

    max_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS
    max_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_batch_size: int = DEFAULT_MAX_REQUEST_ELEMENTS  # rows (axis 0) of any input: sentences per request
    max_string_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # bytes of any one string element: characters per sentence


class RequestBudget:
    """The running cost of one request's inputs; raises RESOURCE_EXHAUSTED once it passes the limits."""

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.elements = 0
        self.bytes = 0

    def charge(self, alias: str, elements: int, nbytes: int) -> None:
        self.elements += elements
        self.bytes += nbytes
        if self.elements > self.limits.max_elements:
            raise resource_exhausted(
                f"Request inputs hold {self.elements} elements (input '{alias}' brings it over the "
                f"limit); this server accepts at most {self.limits.max_elements} per request "
                f"(--max_request_tensor_elements)"
            )
        if self.bytes > self.limits.max_bytes:
            raise resource_exhausted(
                f"Request inputs would take {self.bytes} bytes once decoded (input '{alias}' "
                f"brings it over the limit); this server accepts at most {self.limits.max_bytes} "
                f"per request (--max_request_tensor_bytes)"
            )

    def check_shape(self, alias: str, shape: list[int] | tuple[int, ...]) -> None:
        """Rows of one input (its first dimension), before anything is decoded: the model's work grows with them
        however little the request carries (one repeated value fills any shape)."""
        if shape and shape[0] > self.limits.max_batch_size:
            raise resource_exhausted(
                f"Input '{alias}' has {shape[0]} rows; this server accepts at most "
                f"{self.limits.max_batch_size} per request (--max_request_batch_size)"
            )

    def check_string(self, alias: str, longest: int) -> None:
        if longest > self.limits.max_string_bytes:
            raise resource_exhausted(
                f"Input '{alias}' holds a string of {longest} bytes; this server accepts at most "
                f"{self.limits.max_string_bytes} per string (--max_request_string_bytes)"
            )

    def charge_array(self, alias: str, arr: np.ndarray) -> None:
        """An already decoded input (the REST path): the same limits as a TensorProto's."""
        self.check_shape(alias, arr.shape)
        if arr.dtype == object:
            lengths = [len(v) for v in arr.reshape(-1)]
            self.check_string(alias, max(lengths, default=0))
            self.charge(alias, int(arr.size), string_bytes(int(arr.size), sum(lengths)))
        else:
            self.charge(alias, int(arr.size), int(arr.nbytes))


def numpy_dtype(dtype: int) -> Any | None:
    """The numpy dtype of a TensorFlow dtype enum (`object` for strings); None when it cannot be served."""
    entry = _DTYPES.get(dtype)
    return None if entry is None else entry[0]


def dtype_name(dtype: int) -> str:
    """TF's spelling of a dtype ("float", "int64", "string"), as its error messages use."""
    name = types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else str(dtype)
    return name[3:].lower() if name.startswith("DT_") else name


def shape_of(proto: tensor_shape_pb2.TensorShapeProto) -> list[int] | None:
    if proto.unknown_rank:
        return None
    return [d.size for d in proto.dim]


def element_count(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def string_bytes(elements: int, total_length: int) -> int:
    """What a string tensor of `elements` strings with `total_length` bytes in all costs TF."""
    return elements * STRING_ELEMENT_OVERHEAD + total_length


def to_numpy(proto: tensor_pb2.TensorProto, alias: str = "", budget: RequestBudget | None = None) -> np.ndarray:
    """Decode one TensorProto; INVALID_ARGUMENT for what `Tensor::FromProto` refuses, RESOURCE_EXHAUSTED past the
    budget (checked before anything is allocated)."""
    if proto.dtype not in _DTYPES:
        raise invalid_argument(f"tensor parsing error: {alias} (unsupported dtype {dtype_name(proto.dtype)})")
    np_dtype, field = _DTYPES[proto.dtype]
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"tensor parsing error: {alias} (a tensor needs a known shape)")
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(s < 0 for s in shape):
        raise invalid_argument(f"tensor parsing error: {alias} (negative dimension in shape {shape})")
    count = element_count(shape)
    if np_dtype is object:
        return _decode_strings(proto, alias, shape, count, budget)
    itemsize = np.dtype(np_dtype).itemsize
    if budget is not None:
        budget.charge(alias, count, count * itemsize)
        budget.check_shape(alias, shape)
    if proto.tensor_content:
        if len(proto.tensor_content) != count * itemsize:
            raise invalid_argument(
                f"tensor parsing error: {alias} (tensor_content holds {len(proto.tensor_content)} bytes, "
                f"shape {shape} needs {count * itemsize})"
            )
        # A copy: TF may reuse a fed buffer in place, and this one belongs to the (immutable) proto.
        return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).copy()
    flat = _typed_values(proto, field, np_dtype)
    n = flat.size
    if n > count:
        raise invalid_argument(f"tensor parsing error: {alias} ({n} values do not fit shape {shape})")
    if n == count:
        return flat.reshape(shape)
    out = np.empty(count, dtype=np_dtype)
    out[:n] = flat
    out[n:] = flat[-1] if n else 0  # TensorProto: the last value repeats; no values at all means zeros
    return out.reshape(shape)


def _typed_values(proto: tensor_pb2.TensorProto, field: str, np_dtype: Any) -> np.ndarray:
    """The values of a numeric typed field, read from the packed wire bytes (no Python object per value)."""
    payload = _packed_payload(proto.SerializeToString(), _FIELD_NUMBER[field])
    if payload is None:  # not packed (never produced by protobuf's own serializer): the slow, general way
        values = getattr(proto, field)
        if proto.dtype == types_pb2.DT_HALF:
            return np.fromiter(values, dtype=np.uint16, count=len(values)).view(np.float16)
        return np.fromiter(values, dtype=np_dtype, count=len(values))
    if field == "float_val":
        return np.frombuffer(payload, dtype="<f4").astype(np.float32)
    if field == "double_val":
        return np.frombuffer(payload, dtype="<f8").astype(np.float64)
    raw = _decode_varints(np.frombuffer(payload, dtype=np.uint8))
    if field == "half_val":  # the IEEE bits, stored as int32s
        return raw.astype(np.uint16).view(np.float16)
    if field == "bool_val":
        return raw != 0
    # Two's complement: int32-family values were sign-extended to 64 bits on the wire.
    return raw.view(np.int64).astype(np_dtype) if np.dtype(np_dtype).kind == "i" else raw.astype(np_dtype)


def _packed_payload(data: bytes, field_number: int) -> bytes | None:
    """The concatenated payloads of packed field `field_number` in a serialized message; None if the field occurs
    unpacked. Walks only the top-level fields (a TensorProto has a handful, each one length-delimited run)."""
    chunks = []
    view = memoryview(data)
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 2:
            length, pos = _read_varint(data, pos)
            if number == field_number:
                chunks.append(view[pos : pos + length])
            pos += length
        elif number == field_number:
            return None
        elif wire_type == 0:
            _, pos = _read_varint(data, pos)
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            raise invalid_argument(f"tensor parsing error: unexpected wire type {wire_type}")
    return b"".join(chunks)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _decode_strings(
    proto: tensor_pb2.TensorProto, alias: str, shape: list[int], count: int, budget: RequestBudget | None
) -> np.ndarray:
    if proto.tensor_content:
        raise invalid_argument(f"tensor parsing error: {alias} (tensor_content is not valid for strings)")
    values = proto.string_val
    n = len(values)
    if n > count:
        raise invalid_argument(f"tensor parsing error: {alias} ({n} values do not fit shape {shape})")
    if budget is not None:
        # Charge the elements first: the lengths below are only read once the count is known to be acceptable.
        budget.charge(alias, count, string_bytes(count, 0))
        budget.check_shape(alias, shape)
        lengths = [len(v) for v in values]
        budget.check_string(alias, max(lengths, default=0))
        explicit = sum(lengths)
        repeated = (count - n) * (len(values[-1]) if n else 0)
        budget.charge(alias, 0, explicit + repeated)
    out = np.empty(count, dtype=object)
    out[:n] = list(values)
    if n < count:
        out[n:] = values[-1] if n else b""
    return out.reshape(shape)


def numpy_dtype_enum(arr: np.ndarray) -> int:
    if arr.dtype == object or arr.dtype.kind in ("S", "U"):
        return types_pb2.DT_STRING
    try:
        return _BY_NUMPY[arr.dtype]
    except KeyError:
        raise invalid_argument(f"unsupported numpy dtype {arr.dtype}") from None


def to_proto(value: Any, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """Encode into the typed value fields (TF Serving's AsProtoField), not tensor_content."""
    proto = tensor_pb2.TensorProto()
    fill_proto(proto, value, dtype)
    return proto


def fill_proto(proto: tensor_pb2.TensorProto, value: Any, dtype: int | None = None) -> None:
    """Write `value` into `proto` (e.g. a response's map entry) as typed value fields, without Python lists for
    numbers: the packed field is built as wire bytes and parsed by protobuf's C implementation."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if dtype is None:
        dtype = numpy_dtype_enum(arr)
    if dtype not in _DTYPES:
        raise unimplemented(f"Output dtype {dtype_name(dtype)} cannot be returned")
    header = tensor_pb2.TensorProto(dtype=dtype)
    for s in arr.shape:
        header.tensor_shape.dim.add(size=int(s))
    np_dtype, field = _DTYPES[dtype]
    flat = arr.reshape(-1)
    if np_dtype is object:
        proto.CopyFrom(header)
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat.tolist())
        return
    proto.Clear()
    proto.MergeFromString(header.SerializeToString() + _packed_field(field, dtype, flat))


def _packed_field(field: str, dtype: int, flat: np.ndarray) -> bytes:
    if flat.size == 0:
        return b""
    if dtype == types_pb2.DT_FLOAT:
        payload = flat.astype("<f4", copy=False).tobytes()
    elif dtype == types_pb2.DT_DOUBLE:
        payload = flat.astype("<f8", copy=False).tobytes()
    elif dtype == types_pb2.DT_HALF:
        payload = _varints(flat.astype(np.float16, copy=False).view(np.uint16).astype(np.uint64))
    else:
        # int32-family values are sign-extended to 64 bits on the wire, as protobuf encodes negative int32s.
        payload = _varints(
            flat.astype(np.int64, copy=False).view(np.uint64)
            if flat.dtype.kind in "ib"
            else flat.astype(np.uint64, copy=False)
        )
    tag = (_FIELD_NUMBER[field] << 3) | 2  # length-delimited (packed)
    return _varint(tag) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _varints(values: np.ndarray) -> bytes:
    """Protobuf varints of a uint64 array, concatenated, computed with whole-array operations."""
    if not values.size:
        return b""
    if int(values.max()) < 0x80:  # the common case of small values: one byte each
        return values.astype(np.uint8).tobytes()
    nbytes = np.ones(values.shape, dtype=np.int64)
    for k in range(1, 10):
        nbytes += values >= np.uint64(1 << (7 * k))
    starts = np.cumsum(nbytes) - nbytes
    out = np.empty(int(nbytes.sum()), dtype=np.uint8)
    for k in range(10):
        has = nbytes > k
        if not has.any():
            break
        group = (values[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (nbytes[has] > k + 1).astype(np.uint64) << np.uint64(7)
        out[starts[has] + k] = (group | more).astype(np.uint8)
    return out.tobytes()


def _decode_varints(data: np.ndarray) -> np.ndarray:
    """The uint64 values of concatenated protobuf varints (a uint8 array); INVALID_ARGUMENT if truncated."""
    if not data.size:
        return np.zeros(0, dtype=np.uint64)
    last = data < 0x80
    if not last[-1]:
        raise invalid_argument("tensor parsing error: truncated varint")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    if int((ends - starts).max()) >= 10:
        raise invalid_argument("tensor parsing error: varint longer than 10 bytes")
    offsets = np.arange(data.size) - np.repeat(starts, ends - starts + 1)
    parts = (data & 0x7F).astype(np.uint64) << (offsets.astype(np.uint64) * np.uint64(7))
    return np.add.reduceat(parts, starts)


def as_strings(arr: np.ndarray) -> np.ndarray:
    """Make an object array of bytes (what TF string tensors hold) from str/bytes arrays."""
    if arr.dtype == object:
        return (
            np.vectorize(lambda v: v if isinstance(v, bytes) else str(v).encode("utf-8"), otypes=[object])(arr)
            if arr.size
            else arr
        )
    if arr.dtype.kind == "U":
        return np.char.encode(arr, "utf-8").astype(object)
    return arr.astype(object)
