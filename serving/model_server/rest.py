"""HTTP/REST front end, TF Serving's /v1 API: status, metadata, :predict (row and columnar), :classify, :regress.

Errors are `{"error": "..."}` with the HTTP status TF Serving derives from the canonical code. HTTP itself is Tornado's
(a maintained server: strict Content-Length, chunked bodies, no request smuggling through both headers), with a body
size cap, read timeouts and a connection cap; requests run in a pool of `--rest_api_num_threads` threads so the
event loop never waits on a model.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, input_pb2,
                                     model_pb2, regression_pb2)

from . import inference
from .errors import from_exception, invalid_argument, not_found
from .manager import Manager
from .metrics import Metrics
from .servable import TensorInfo
from .tensors import numpy_dtype

log = logging.getLogger(__name__)

# As TF Serving's path regex: case-insensitive, ASCII version digits.
_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?$", re.IGNORECASE)
_INT64_MAX = 2**63 - 1
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


# ----- the API, independent of the HTTP transport ----------------------------------------------------------
class RestApi:
    """The /v1 API on (method, path, body): what the HTTP server calls from its worker threads."""

    def __init__(self, manager: Manager, timeout_ms: int, metrics: Metrics,
                 prometheus_path: str | None = None) -> None:
        self.manager = manager
        self.timeout = timeout_ms / 1000.0
        self.metrics = metrics
        self.prometheus_path = prometheus_path
        # (HTTP method, the path's tail after /v1/models/{name}[/versions/{v}|/labels/{l}]) -> handler
        self._routes: dict[tuple[str, str], Callable[[model_pb2.ModelSpec, bytes, float | None], dict]] = {
            ("GET", ""): self._status, ("GET", "/metadata"): self._metadata,
            **{("POST", f":{api}"): functools.partial(self._timed, api) for api in ("predict", "classify", "regress")}}

    def handle(self, method: str, path: str, body: bytes, deadline: float | None = None) -> tuple[int, str, bytes]:
        """-> (HTTP status, content type, body). `deadline` (time.monotonic()) bounds the model run."""
        path = path.split("?", 1)[0]
        if self.prometheus_path and path == self.prometheus_path and method == "GET":
            return 200, "text/plain; version=0.0.4", self.metrics.render().encode()
        try:
            route, spec = self._route(method, path)
            return self._json(200, route(spec, body, deadline))
        except Exception as e:  # noqa: BLE001
            err = from_exception(e)
            return self._json(err.http_status, {"error": err.message})

    def _route(self, method: str, path: str) -> tuple[Callable[[model_pb2.ModelSpec, bytes, float | None], dict],
                                                     model_pb2.ModelSpec]:
        """The handler of (method, the path's tail after the model) from the route table, and the path's ModelSpec."""
        m = _MODEL_PATH.match(path)
        route = self._routes.get((method, (m.group("tail") or "").lower())) if m else None
        if route is None:
            problem = invalid_argument if path.startswith("/v1/") else not_found
            raise problem(f"Malformed request: {method} {path}")
        spec = model_pb2.ModelSpec(name=m.group("name"))
        if m.group("version") is not None:
            version = int(m.group("version"))
            if version > _INT64_MAX:
                raise invalid_argument(f"Failed to convert version: {m.group('version')} to numeric.")
            spec.version.value = version
        elif m.group("label") is not None:
            spec.version_label = m.group("label")
        return route, spec

    def _status(self, spec: model_pb2.ModelSpec, body: bytes, deadline: float | None) -> dict:  # noqa: ARG002
        return status_json(self.manager.model_status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec)))

    def _metadata(self, spec: model_pb2.ModelSpec, body: bytes, deadline: float | None) -> dict:  # noqa: ARG002
        req = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
        with self.manager.acquire(spec) as servable:
            return metadata_json(inference.metadata(servable, req))

    def _timed(self, api: str, spec: model_pb2.ModelSpec, body: bytes, deadline: float | None) -> dict:
        api_name = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}[api]
        doc = parse_body(body)
        with self.metrics.timed_request(spec.name, api_name, "REST"):
            if "signature_name" in doc:
                if not isinstance(doc["signature_name"], str):
                    raise invalid_argument(f"JSON Value: {_short_json(doc)} not formatted correctly. 'signature_name' "
                                           f"key must be a string value.")
                spec.signature_name = doc["signature_name"]
            return self._run(api, spec, doc, deadline)

    def _run(self, api: str, spec: model_pb2.ModelSpec, doc: dict, deadline: float | None) -> dict:
        with self.manager.acquire(spec) as servable:
            if api == "predict":
                sig = servable.model.signature(spec.signature_name or inference.DEFAULT_SIGNATURE)
                arrays, row = predict_request_arrays(doc, sig.inputs)
                outputs = inference.predict_arrays(servable, sig.key, arrays, deadline=deadline)
                return predict_response_json(outputs, row)
            inp = examples_input(doc)
            if api == "classify":
                _, res = inference.classify_result(servable, classification_pb2.ClassificationRequest(
                    model_spec=spec, input=inp), deadline)
                return {"results": [[[c.label, c.score] for c in cl.classes] for cl in res.classifications]}
            _, res = inference.regress_result(servable, regression_pb2.RegressionRequest(model_spec=spec, input=inp),
                                              deadline)
            return {"results": [r.value for r in res.regressions]}

    @staticmethod
    def _json(status: int, doc: dict) -> tuple[int, str, bytes]:
        return status, "application/json", json.dumps(doc, indent=None).encode("utf-8")


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
        raise invalid_argument(f"JSON Value: {_short_json(doc)} Is not object")
    return doc


def _short_json(value: Any, limit: int = 200) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ----- HTTP transport (Tornado) -------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpLimits:
    """What one client may hold of the REST server (`--rest_api_*` extension flags)."""

    max_body_bytes: int = 256 * 1024 * 1024
    read_timeout_s: float = 30.0  # to send a request's headers (also how long an idle keep-alive lasts) and its body
    max_connections: int = 1000


class RestServer:
    """Tornado's HTTP server on its own event-loop thread; requests run in a thread pool."""

    def __init__(self, api: RestApi, addresses: list[str], port: int, *, num_threads: int,
                 limits: HttpLimits = HttpLimits()) -> None:
        self.api = api
        self.limits = limits
        self._pool = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="rest")
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self.bound: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._serve, args=(addresses, port), name="rest", daemon=True)

    def start(self) -> None:
        """Bind and serve; raises OSError when no address could be bound."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _serve(self, addresses: list[str], port: int) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            sockets = bind_sockets(addresses, port)
            self._server = _make_tornado_server(self)
            self._server.add_sockets(sockets)
            self.bound = [s.getsockname()[:2] for s in sockets]
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()


def bind_sockets(addresses: list[str], port: int) -> list[socket.socket]:
    """Listening sockets for `addresses` ("0.0.0.0" meaning every interface, IPv4 and IPv6 as TF Serving's "::"
    listener). An IPv6 address the host cannot bind is skipped with a warning while another address is bound (TF
    Serving likewise falls back to IPv4 when IPv6 is unavailable); any other failure is an error."""
    from tornado.netutil import bind_sockets as tornado_bind

    sockets: list[socket.socket] = []
    for address in addresses:
        try:
            sockets.extend(tornado_bind(port, address=None if address in ("0.0.0.0", "", "::") else address,
                                        reuse_port=False))
        except OSError as e:
            if ":" in address and e.errno in (99, 97) and address != addresses[0]:  # EADDRNOTAVAIL, EAFNOSUPPORT
                log.warning("Not listening on [%s]:%d (IPv6 unavailable here: %s)", address, port, e.strerror)
                continue
            for s in sockets:
                s.close()
            raise OSError(e.errno, f"Failed to bind REST to {address}:{port}: {e.strerror}") from e
    return sockets


async def _close_gracefully(stream, answer: bytes = b"") -> None:
    """Send `answer`, end our side, then discard (briefly) what the client is still sending before closing: closing
    with unread input makes the kernel reset the connection, and the client could lose the answer."""
    try:
        if answer:
            await stream.write(answer)
        stream.socket.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            await asyncio.wait_for(stream.read_bytes(65536, partial=True), deadline - time.monotonic())
    except Exception:  # noqa: BLE001 - closed by the client, timed out: either way we are done
        pass
    finally:
        stream.close()


def _make_tornado_server(rest: RestServer):
    from tornado import httpserver, iostream, web

    limits = rest.limits

    @web.stream_request_body
    class Handler(web.RequestHandler):
        def initialize(self) -> None:
            self._chunks: list[bytes] = []
            self._size = 0
            self._rejected = False

        async def prepare(self) -> None:
            declared = self.request.headers.get("Content-Length", "")
            # A malformed Content-Length is Tornado's to refuse (400) when it reads the body.
            if re.fullmatch(r"[0-9]+", declared) and int(declared) > limits.max_body_bytes:
                await self._reject_body()

        async def data_received(self, chunk: bytes) -> None:
            if self._rejected:
                return
            self._size += len(chunk)
            if self._size > limits.max_body_bytes:  # a chunked body has no Content-Length to check up front
                # Tornado is in the middle of reading this body: answer now, go on discarding what the client sends
                # for a moment (closing with unread input resets the connection before the client reads the answer),
                # then close.
                self._rejected = True
                stream = self.request.connection.stream
                stream.write(_raw_response("413 Payload Too Large", self._body_limit_error()))
                asyncio.get_running_loop().call_later(1.0, stream.close)
                return
            self._chunks.append(chunk)

        def _body_limit_error(self) -> str:
            return f"Request body exceeds the limit of {limits.max_body_bytes} bytes (--rest_api_max_body_bytes)"

        async def _reject_body(self) -> None:
            self._rejected = True
            self.set_status(413)
            self.set_header("Content-Type", "application/json")
            self.set_header("Connection", "close")
            await self.finish(json.dumps({"error": self._body_limit_error()}))
            # The unread body must not be parsed as a next request: drop the connection.
            await _close_gracefully(self.request.connection.stream)

        async def _dispatch(self) -> None:
            if self._rejected:  # answered already; the whole body is read, so closing now resets nothing
                self.request.connection.stream.close()
                return
            body, self._chunks = b"".join(self._chunks), []
            deadline = time.monotonic() + rest.api.timeout
            future = asyncio.get_running_loop().run_in_executor(
                rest._pool, rest.api.handle, self.request.method, self.request.path, body, deadline)  # noqa: SLF001
            try:
                status, ctype, payload = await asyncio.wait_for(asyncio.shield(future), rest.api.timeout)
            except asyncio.TimeoutError:
                # The run itself stops at the same deadline (Session::Run timeout), freeing its thread.
                status, ctype = 504, "application/json"
                payload = json.dumps({"error": f"Request timed out after {int(rest.api.timeout * 1000)} ms"}).encode()
            self.set_status(status)
            self.set_header("Content-Type", ctype)
            try:
                await self.finish(payload)
            except iostream.StreamClosedError:
                pass  # the client left

        get = post = put = delete = patch = head = options = _dispatch

        def check_xsrf_cookie(self) -> None:  # an API, not a browser form
            pass

        def set_default_headers(self) -> None:
            self.clear_header("Server")

        def log_exception(self, typ, value, tb) -> None:  # noqa: ANN001
            log.debug("REST handler error", exc_info=(typ, value, tb))

    class Server(httpserver.HTTPServer):
        def handle_stream(self, stream: iostream.IOStream, address: tuple) -> None:
            _answer_oversized_head(stream)
            if len(self._connections) >= limits.max_connections:
                answer = _raw_response("503 Service Unavailable", f"Too many open connections (limit "
                                                                   f"{limits.max_connections}, --rest_api_max_connections)")
                asyncio.ensure_future(_close_gracefully(stream, answer))
                return
            super().handle_stream(stream, address)

    app = web.Application([(r".*", Handler)], log_function=lambda handler: None)
    # The body limit is enforced by the handler above (413 with a JSON error, for declared and chunked bodies
    # alike); Tornado's own check would answer a bare 400 first, so it is set out of the way.
    return Server(app, xheaders=False, max_body_size=2**62,
                  idle_connection_timeout=limits.read_timeout_s, body_timeout=limits.read_timeout_s,
                  max_header_size=MAX_HEAD_BYTES)


# The request line and headers together (Tornado's max_header_size); TF Serving's libevent front end has a limit too.
MAX_HEAD_BYTES = 64 * 1024


def _raw_response(status: str, error: str) -> bytes:
    """A complete HTTP answer carrying TF Serving's `{"error": ...}`, for connections Tornado's handlers do not own."""
    body = json.dumps({"error": error}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


def _answer_oversized_head(stream) -> None:
    """Make a connection whose request line and headers exceed MAX_HEAD_BYTES get an answer (431) before it closes.
    Tornado closes the stream at once when the header read cannot be satisfied, without a response; this wraps that
    one close to write the status first (a few bytes on a fresh connection: the socket takes them at once) and to
    discard the request bytes already received, so that the close does not reset the connection before the client
    reads the answer."""
    from tornado import iostream

    close = stream.close

    def close_with_status(exc_info=False):  # noqa: ANN001 - IOStream.close's signature
        if isinstance(exc_info, iostream.UnsatisfiableReadError) and stream.socket is not None:
            try:  # never block the event loop: what the socket takes and holds right now
                stream.socket.send(_raw_response("431 Request Header Fields Too Large",
                                                 f"Request line and headers exceed {MAX_HEAD_BYTES} bytes"))
                stream.socket.shutdown(socket.SHUT_WR)
                while stream.socket.recv(65536):
                    pass
            except OSError:  # BlockingIOError once drained; or the client is gone
                pass
        close(exc_info)

    stream.close = close_with_status
