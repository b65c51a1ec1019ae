"""TF Serving's REST JSON <-> tensors and protos: row (`instances`) and columnar (`inputs`) predict bodies, `{"b64": ...}`
strings, tf.Example lists for :classify and :regress, and the status and metadata answers."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, input_pb2

from .errors import invalid_argument
from .servable import TensorInfo
from .tensors import numpy_dtype

_STRING = 7


def _flatten(value: Any, is_string: bool, where: str) -> tuple[list[int], list[Any]]:
    """Nested JSON lists -> (shape, flat values), rejecting ragged lists and wrong value types."""
    if isinstance(value, list):
        if not value:
            return [0], []
        shapes, flat = None, []
        for item in value:
            s, f = _flatten(item, is_string, where)
            if shapes is None:
                shapes = s
            elif s != shapes:
                raise invalid_argument(
                    f"{where}: expected a rectangular (non-ragged) list, got inner shapes {shapes} and {s}"
                )
            flat.extend(f)
        return [len(value)] + (shapes or []), flat
    if is_string:
        if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return [], [base64.b64decode(value["b64"], validate=True)]
            except ValueError as e:
                raise invalid_argument(f"{where}: Unable to base64 decode: {e}") from e
        if isinstance(value, str):
            return [], [value.encode("utf-8", "surrogatepass")]
        raise invalid_argument(
            f"{where}: JSON Value: {json.dumps(value)} Type: {_jtype(value)} is not of expected type: string"
        )
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return [], [value]
    raise invalid_argument(
        f"{where}: JSON Value: {json.dumps(value)} Type: {_jtype(value)} is not of expected type: number"
    )


def _jtype(v: Any) -> str:
    return {dict: "Object", list: "Array", str: "String", bool: "Boolean", type(None): "Null"}.get(type(v), "Number")


def json_to_array(value: Any, info: TensorInfo, where: str) -> np.ndarray:
    is_string = info.dtype == _STRING
    shape, flat = _flatten(value, is_string, where)
    if is_string:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    np_dtype = numpy_dtype(info.dtype)
    if np_dtype is None:
        raise invalid_argument(f"{where}: unsupported dtype for JSON input")
    if np.dtype(np_dtype).kind in "iu" and any(isinstance(v, float) and not float(v).is_integer() for v in flat):
        raise invalid_argument(f"{where}: JSON Value is a float, expected an integer")
    try:
        return np.asarray(flat, dtype=np_dtype).reshape(shape)
    except (OverflowError, ValueError) as e:
        raise invalid_argument(f"{where}: {e}") from e


def _value_to_json(arr: np.ndarray, alias: str) -> Any:
    if arr.dtype == object:
        as_b64 = alias.endswith("_bytes")

        def conv(v: Any) -> Any:
            if isinstance(v, bytes):
                if not as_b64:
                    try:
                        return v.decode("utf-8")
                    except UnicodeDecodeError:
                        pass
                return {"b64": base64.b64encode(v).decode("ascii")}
            return v

        return np.vectorize(conv, otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    if arr.dtype == np.float32:  # shortest repr that round-trips the float32, as TF Serving prints it
        return (
            np.vectorize(lambda v: float(repr(np.float32(v))) if np.isfinite(v) else float(v), otypes=[object])(
                arr
            ).tolist()
            if arr.size
            else arr.tolist()
        )
    return arr.tolist()


def predict_request_arrays(body: dict, inputs: dict[str, TensorInfo]) -> tuple[dict[str, np.ndarray], bool]:
    """Parse a :predict body; returns (inputs, row_format)."""
    if "instances" in body and "inputs" in body:
        raise invalid_argument('Only one of "instances" or "inputs" may be present in the JSON request')
    names = sorted(inputs)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid_argument('Expecting "instances" to be a list/array')
        if not instances:
            raise invalid_argument('No values in "instances" list')
        named = all(isinstance(i, dict) and set(i) != {"b64"} for i in instances)
        if named:
            keys = set(instances[0])
            for n, inst in enumerate(instances):
                if set(inst) != keys:
                    raise invalid_argument(
                        f"Failed to process element: {n} of 'instances' list. All instances must "
                        f"have the same named inputs {sorted(keys)}, got {sorted(inst)}"
                    )
            unknown = sorted(keys - set(inputs))
            if unknown:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {unknown[0]}. Inputs expected "
                    f"to be in the set {{{','.join(names)}}}."
                )
            return {
                k: json_to_array([inst[k] for inst in instances], inputs[k], f"instances[].{k}") for k in sorted(keys)
            }, True
        if any(isinstance(i, dict) and set(i) != {"b64"} for i in instances):
            raise invalid_argument("Failed to process 'instances': mixing named-input objects and plain values")
        if len(inputs) != 1:
            raise invalid_argument(
                f"The signature has {len(inputs)} inputs ({', '.join(names)}): each instance must "
                f"be an object naming them"
            )
        return {names[0]: json_to_array(instances, inputs[names[0]], "instances")}, True
    if "inputs" in body:
        value = body["inputs"]
        if isinstance(value, dict) and set(value) != {"b64"}:
            unknown = sorted(set(value) - set(inputs))
            if unknown:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {unknown[0]}. Inputs expected "
                    f"to be in the set {{{','.join(names)}}}."
                )
            return {k: json_to_array(v, inputs[k], f"inputs.{k}") for k, v in value.items()}, False
        if len(inputs) != 1:
            raise invalid_argument(
                f'The signature has {len(inputs)} inputs ({", ".join(names)}): "inputs" must be an object naming them'
            )
        return {names[0]: json_to_array(value, inputs[names[0]], "inputs")}, False
    raise invalid_argument('Missing "instances" or "inputs" key in the JSON request')


def predict_response_json(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    names = sorted(outputs)
    if not row_format:
        if len(names) == 1:
            return {"outputs": _value_to_json(outputs[names[0]], names[0])}
        return {"outputs": {n: _value_to_json(outputs[n], n) for n in names}}
    batch = None
    for n in names:
        a = outputs[n]
        size = a.shape[0] if a.ndim else None
        if batch is None:
            batch = size
        if size is None or size != batch:
            raise invalid_argument(f"Tensor name: {n} has inconsistent batch size: {size} expecting: {batch}")
    converted = {n: _value_to_json(outputs[n], n) for n in names}
    if len(names) == 1:
        return {"predictions": converted[names[0]]}
    return {"predictions": [{n: converted[n][i] for n in names} for i in range(batch or 0)]}


def _feature(value: Any, where: str) -> feature_pb2.Feature:
    values = value if isinstance(value, list) else [value]
    f = feature_pb2.Feature()
    if all(isinstance(v, bool) or isinstance(v, int) for v in values) and values:
        f.int64_list.value.extend(int(v) for v in values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and values:
        f.float_list.value.extend(float(v) for v in values)
    elif all(isinstance(v, str) or (isinstance(v, dict) and set(v) == {"b64"}) for v in values):
        for v in values:
            f.bytes_list.value.append(base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode("utf-8"))
    else:
        raise invalid_argument(f"{where}: feature values must be all numbers or all strings")
    return f


def _example(obj: Any, where: str) -> example_pb2.Example:
    if not isinstance(obj, dict):
        raise invalid_argument(f"{where}: expected an object of feature name -> value(s)")
    ex = example_pb2.Example()
    for k, v in obj.items():
        ex.features.feature[k].CopyFrom(_feature(v, f"{where}.{k}"))
    return ex


def examples_input(body: dict) -> input_pb2.Input:
    examples = body.get("examples")
    if not isinstance(examples, list):
        raise invalid_argument('Missing "examples" list in the JSON request')
    inp = input_pb2.Input()
    if "context" in body:
        target = inp.example_list_with_context
        target.context.CopyFrom(_example(body["context"], "context"))
    else:
        target = inp.example_list
    for i, e in enumerate(examples):
        target.examples.append(_example(e, f"examples[{i}]"))
    return inp


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> dict:
    from .errors import CODE_NAMES

    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                "status": {
                    "error_code": CODE_NAMES.get(s.status.error_code, "UNKNOWN"),
                    "error_message": s.status.error_message,
                },
            }
            for s in response.model_version_status
        ]
    }


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict:
    sdm = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sdm)
    return {
        "model_spec": {
            "name": response.model_spec.name,
            "signature_name": "",
            "version": str(response.model_spec.version.value),
        },
        "metadata": {
            "signature_def": json_format.MessageToDict(
                sdm, preserving_proto_field_name=True, including_default_value_fields=True
            )
        },
    }


def parse_body(body: bytes) -> dict:
    """The request's JSON object; INVALID_ARGUMENT for anything else, including nesting too deep to parse."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise invalid_argument(f"JSON Parse error: {e}") from e
    except RecursionError:
        raise invalid_argument("JSON Parse error: the document is nested too deeply") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {short_json(doc)} Is not object")
    return doc


def short_json(value: Any, limit: int = 200) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."
