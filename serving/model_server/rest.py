"""HTTP/REST front end, TF Serving's /v1 API: status, metadata, :predict (row and columnar), :classify, :regress.

Errors are `{"error": "..."}` with the HTTP status TF Serving derives from the canonical code.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, input_pb2,
                                     model_pb2, regression_pb2)

from . import inference
from .errors import ServingError, from_exception, invalid_argument
from .manager import Manager
from .metrics import Metrics
from .servable import _NUMPY_FOR, TensorInfo

log = logging.getLogger(__name__)

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?$")
_STRING = 7


# ----- JSON <-> tensors ---------------------------------------------------------------------------------------
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
                raise invalid_argument(f"{where}: expected a rectangular (non-ragged) list, got inner shapes "
                                       f"{shapes} and {s}")
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
        raise invalid_argument(f"{where}: JSON Value: {json.dumps(value)} Type: {_jtype(value)} is not of expected "
                               f"type: string")
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return [], [value]
    raise invalid_argument(f"{where}: JSON Value: {json.dumps(value)} Type: {_jtype(value)} is not of expected type: "
                           f"number")


def _jtype(v: Any) -> str:
    return {dict: "Object", list: "Array", str: "String", bool: "Boolean", type(None): "Null"}.get(type(v), "Number")


def json_to_array(value: Any, info: TensorInfo, where: str) -> np.ndarray:
    is_string = info.dtype == _STRING
    shape, flat = _flatten(value, is_string, where)
    if is_string:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    np_dtype = _NUMPY_FOR.get(info.dtype)
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
        return np.vectorize(lambda v: float(repr(np.float32(v))) if np.isfinite(v) else float(v),
                            otypes=[object])(arr).tolist() if arr.size else arr.tolist()
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
                    raise invalid_argument(f"Failed to process element: {n} of 'instances' list. All instances must "
                                           f"have the same named inputs {sorted(keys)}, got {sorted(inst)}")
            unknown = sorted(keys - set(inputs))
            if unknown:
                raise invalid_argument(f"input tensor alias not found in signature: {unknown[0]}. Inputs expected "
                                       f"to be in the set {{{','.join(names)}}}.")
            return {k: json_to_array([inst[k] for inst in instances], inputs[k], f"instances[].{k}")
                    for k in sorted(keys)}, True
        if any(isinstance(i, dict) and set(i) != {"b64"} for i in instances):
            raise invalid_argument("Failed to process 'instances': mixing named-input objects and plain values")
        if len(inputs) != 1:
            raise invalid_argument(f"The signature has {len(inputs)} inputs ({', '.join(names)}): each instance must "
                                   f"be an object naming them")
        return {names[0]: json_to_array(instances, inputs[names[0]], "instances")}, True
    if "inputs" in body:
        value = body["inputs"]
        if isinstance(value, dict) and set(value) != {"b64"}:
            unknown = sorted(set(value) - set(inputs))
            if unknown:
                raise invalid_argument(f"input tensor alias not found in signature: {unknown[0]}. Inputs expected "
                                       f"to be in the set {{{','.join(names)}}}.")
            return {k: json_to_array(v, inputs[k], f"inputs.{k}") for k, v in value.items()}, False
        if len(inputs) != 1:
            raise invalid_argument(f"The signature has {len(inputs)} inputs ({', '.join(names)}): \"inputs\" must be "
                                   f"an object naming them")
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

    return {"model_version_status": [
        {"version": str(s.version),
         "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
         "status": {"error_code": CODE_NAMES.get(s.status.error_code, "UNKNOWN"),
                    "error_message": s.status.error_message}}
        for s in response.model_version_status]}


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict:
    sdm = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sdm)
    return {"model_spec": {"name": response.model_spec.name, "signature_name": "",
                           "version": str(response.model_spec.version.value)},
            "metadata": {"signature_def": json_format.MessageToDict(
                sdm, preserving_proto_field_name=True, including_default_value_fields=True)}}


# ----- HTTP plumbing ------------------------------------------------------------------------------------------
class RestApi:
    def __init__(self, manager: Manager, timeout_ms: int, metrics: Metrics,
                 prometheus_path: str | None = None) -> None:
        self.manager = manager
        self.timeout = timeout_ms / 1000.0
        self.metrics = metrics
        self.prometheus_path = prometheus_path

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        """-> (HTTP status, content type, body)."""
        path = path.split("?", 1)[0]
        if self.prometheus_path and path == self.prometheus_path and method == "GET":
            return 200, "text/plain; version=0.0.4", self.metrics.render().encode()
        m = _MODEL_PATH.match(path)
        tail = m.group("tail") if m else None
        try:
            if m is None or (method == "GET" and tail not in (None, "/metadata")) or \
                    (method == "POST" and tail not in (":predict", ":classify", ":regress")) or \
                    method not in ("GET", "POST"):
                raise ServingError(3 if path.startswith("/v1/") else 5, f"Malformed request: {method} {path}")
            spec = model_pb2.ModelSpec(name=m.group("name"))
            if m.group("version") is not None:
                spec.version.value = int(m.group("version"))
            elif m.group("label") is not None:
                spec.version_label = m.group("label")
            if method == "GET" and tail is None:
                req = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
                return self._json(200, status_json(self.manager.model_status(req)))
            if method == "GET":
                req = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
                with self.manager.acquire(spec) as servable:
                    return self._json(200, metadata_json(inference.metadata(servable, req)))
            try:
                doc = json.loads(body.decode("utf-8")) if body else None
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise invalid_argument(f"JSON Parse error: {e}") from e
            if not isinstance(doc, dict):
                raise invalid_argument("JSON Parse error: the request body must be a JSON object")
            return self._timed(tail[1:], spec, doc)
        except Exception as e:  # noqa: BLE001
            err = from_exception(e)
            return self._json(err.http_status, {"error": err.message})

    def _timed(self, api: str, spec: model_pb2.ModelSpec, doc: dict) -> tuple[int, str, bytes]:
        start = time.perf_counter()
        status = "OK"
        try:
            if isinstance(doc.get("signature_name", ""), str):
                spec.signature_name = doc.get("signature_name", "")
            result = _pool().submit(self._run, api, spec, doc).result(timeout=self.timeout)
            return self._json(200, result)
        except FutureTimeout:
            status = "DEADLINE_EXCEEDED"
            raise ServingError(4, f"Request timed out after {int(self.timeout * 1000)} ms") from None
        except Exception as e:  # noqa: BLE001
            status = from_exception(e).code_name
            raise
        finally:
            api_name = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}[api]
            self.metrics.request(spec.name, api_name, "REST", status, (time.perf_counter() - start) * 1e6)

    def _run(self, api: str, spec: model_pb2.ModelSpec, doc: dict) -> dict:
        with self.manager.acquire(spec) as servable:
            if api == "predict":
                sig = servable.model.signature(spec.signature_name or inference.DEFAULT_SIGNATURE)
                arrays, row = predict_request_arrays(doc, sig.inputs)
                outputs = inference.predict_arrays(servable, sig.key, arrays)
                return predict_response_json(outputs, row)
            inp = examples_input(doc)
            if api == "classify":
                _, res = inference.classify_result(servable, classification_pb2.ClassificationRequest(
                    model_spec=spec, input=inp))
                return {"results": [[[c.label, c.score] for c in cl.classes] for cl in res.classifications]}
            _, res = inference.regress_result(servable, regression_pb2.RegressionRequest(model_spec=spec, input=inp))
            return {"results": [r.value for r in res.regressions]}

    @staticmethod
    def _json(status: int, doc: dict) -> tuple[int, str, bytes]:
        return status, "application/json", json.dumps(doc, indent=None).encode("utf-8")


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="rest")
        return _POOL


def make_http_server(api: RestApi, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mtnlp-model-server"

        def _respond(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, ctype, payload = api.handle(method, self.path, body)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802
            self._respond("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._respond("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._respond("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self._respond("DELETE")

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("REST %s", fmt % args)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    return Server((host, port), Handler)
