"""One loaded SavedModel version: its MetaGraph's signature defs (what clients see) and callables (what runs)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import ServingError, failed_precondition, from_exception, invalid_argument
from .tensors import dtype_name, shape_of

_NUMPY_FOR = {  # dtype enum -> numpy dtype for casting validated inputs
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 7: object, 9: np.int64,
    10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64,
}


@dataclass(frozen=True)
class TensorInfo:
    alias: str
    dtype: int
    shape: list[int] | None  # None: unknown rank; -1: unknown dimension


@dataclass(frozen=True)
class Signature:
    key: str
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


def read_meta_graph(path: str, tags: list[str]):
    """The MetaGraphDef whose tag set equals `tags`, read from saved_model.pb (or .pbtxt)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    pb, pbtxt = os.path.join(path, "saved_model.pb"), os.path.join(path, "saved_model.pbtxt")
    try:
        if os.path.exists(pb):
            with open(pb, "rb") as f:
                saved.ParseFromString(f.read())
        elif os.path.exists(pbtxt):
            with open(pbtxt) as f:
                text_format.Parse(f.read(), saved)
        else:
            raise ServingError(5, f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}")
    except ServingError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a data loss on that version
        raise ServingError(15, f"Can't parse {pb} as binary proto: {e}") from e
    wanted = set(tags)
    for mg in saved.meta_graphs:
        if set(mg.meta_info_def.tags) == wanted:
            return mg
    available = [sorted(mg.meta_info_def.tags) for mg in saved.meta_graphs]
    raise ServingError(5, f"Could not find meta graph def matching supplied tags: {{ {', '.join(tags)} }}. "
                          f"To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
                          f"`saved_model_cli` (available: {available})")


def _signatures(meta_graph) -> dict[str, Signature]:
    out = {}
    for key, sd in meta_graph.signature_def.items():
        def infos(m):
            return {a: TensorInfo(a, t.dtype, shape_of(t.tensor_shape)) for a, t in m.items()}
        out[key] = Signature(key, sd.method_name, infos(sd.inputs), infos(sd.outputs))
    return out


class LoadedModel:
    """A SavedModel loaded for serving. Thread-safe: TF functions may be called concurrently."""

    def __init__(self, path: str, tags: list[str]) -> None:
        import tensorflow as tf

        self.path = path
        self.meta_graph = read_meta_graph(path, tags)
        try:
            self._obj = tf.saved_model.load(path, tags=tags)
        except Exception as e:  # noqa: BLE001
            raise from_exception(e) from e
        available = dict(self._obj.signatures)
        self.signatures = {k: s for k, s in _signatures(self.meta_graph).items() if k in available}
        self._fns = available
        self._tf = tf
        self._tf_dtypes = {(k, a): tf.dtypes.as_dtype(i.dtype) for k, sig in self.signatures.items()
                           for a, i in sig.inputs.items()}

    def signature(self, key: str) -> Signature:
        try:
            return self.signatures[key]
        except KeyError:
            raise failed_precondition(f'Serving signature key "{key}" not found.') from None

    def validate_inputs(self, sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check names, dtypes and shapes against the signature; INVALID_ARGUMENT naming the culprit."""
        extra = sorted(set(inputs) - set(sig.inputs))
        missing = sorted(set(sig.inputs) - set(inputs))
        if extra or missing:
            if len(inputs) == len(sig.inputs) and extra:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {extra[0]}. Inputs expected to be in the set "
                    f"{{{','.join(sorted(sig.inputs))}}}.")
            raise invalid_argument(
                f"input size does not match signature: {len(inputs)}!={len(sig.inputs)} "
                f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(sig.inputs))}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.")
        checked = {}
        for i, (alias, info) in enumerate(sorted(sig.inputs.items())):
            arr = inputs[alias]
            want = _NUMPY_FOR.get(info.dtype)
            got = _dtype_enum(arr)
            if got != info.dtype:
                raise invalid_argument(
                    f"Expects arg[{i}] to be {dtype_name(info.dtype)} but {dtype_name(got)} is provided "
                    f"(input '{alias}')")
            if info.shape is not None:
                if len(info.shape) != arr.ndim or any(w not in (-1, g) for w, g in zip(info.shape, arr.shape)):
                    raise invalid_argument(
                        f"input '{alias}' has shape {list(arr.shape)}, incompatible with the signature's "
                        f"{['?' if d == -1 else d for d in info.shape]}")
            checked[alias] = arr if want is None or want is object else arr.astype(want, copy=False)
        return checked

    def run(self, sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        fn = self._fns[sig.key]
        feed = {alias: tf.constant(arr, dtype=self._tf_dtypes[(sig.key, alias)]) for alias, arr in inputs.items()}
        try:
            result = fn(**feed)
        except Exception as e:  # noqa: BLE001 - the model's own error, with TF's code
            raise from_exception(e) from e
        return {k: v.numpy() for k, v in result.items()}


def _dtype_enum(arr: np.ndarray) -> int:
    from .tensors import numpy_dtype_enum

    return numpy_dtype_enum(arr)
