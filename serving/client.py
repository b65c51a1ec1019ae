"""Client for TF Serving's APIs (works against real TF Serving and against `mtnlp-model-server`).

gRPC over the official stubs, with channel options, per-call timeouts, retries on UNAVAILABLE (with backoff) and TLS
when asked; and the same calls over REST with urllib. Neither imports TensorFlow: the gRPC messages are TF Serving's
generated protos and TensorFlow's framework protos (TensorProto), imported without TensorFlow's package __init__
(see `import_serving_protos`), so a client process starts in well under a second.

    with ServingClient("localhost:8500", model_name="mtnlp") as c:
        out = c.predict({"text": ["Apple sued Samsung."]})          # {"tokens": ndarray, ...}
        c.status(); c.metadata()
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import socket
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_GRPC = "localhost:8500"
DEFAULT_REST = "localhost:8501"
ENV_GRPC = "MTNLP_SERVING_GRPC"
ENV_REST = "MTNLP_SERVING_REST"


class ServingClientError(Exception):
    """A failed call: `code` is the canonical status name (e.g. "NOT_FOUND"), `message` the server's text.
    `nothing_listening` is True when no server accepted a connection at the target (UNAVAILABLE)."""

    def __init__(
        self, code: str, message: str, http_status: int | None = None, nothing_listening: bool = False
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.nothing_listening = nothing_listening


# What the gRPC client uses: TF Serving's API protos and stubs, and the TensorFlow protos it builds requests from.
SERVING_PROTO_MODULES = (
    "tensorflow.core.framework.tensor_pb2",
    "tensorflow.core.framework.tensor_shape_pb2",
    "tensorflow.core.framework.types_pb2",
    "tensorflow.core.example.example_pb2",
    "tensorflow_serving.apis.model_pb2",
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "tensorflow_serving.apis.model_service_pb2_grpc",
    "tensorflow_serving.config.model_server_config_pb2",
)


_PROTO_IMPORT_LOCK = threading.Lock()


def import_serving_protos() -> None:
    """Import `SERVING_PROTO_MODULES` without importing TensorFlow.

    TensorFlow's generated protos (tensorflow/core/framework/tensor_pb2.py, ...) need nothing but protobuf, but
    importing them normally runs tensorflow/__init__.py first, which loads the whole TensorFlow runtime (seconds):
    Python imports a module's parent packages, and each `from tensorflow.core.framework import x` also imports the
    top-level package. So while these modules are imported, `sys.modules["tensorflow"]` is a bare placeholder
    package pointing at TensorFlow's folder; it is removed afterwards. The proto modules stay, already bound to their
    packages, so later `from tensorflow.core.framework import tensor_pb2` statements find them without any import.
    Nothing happens when TensorFlow is already imported; a later `import tensorflow` runs its __init__ as usual and
    reuses these modules (one class per message)."""
    # Clients in several threads (one per connection) get here at once: one imports, the others wait for it.
    with _PROTO_IMPORT_LOCK:
        if "tensorflow" in sys.modules or all(name in sys.modules for name in SERVING_PROTO_MODULES):
            return  # TensorFlow itself (its protos come with it), or imported already
        spec = importlib.util.find_spec("tensorflow")  # locates the folder; runs nothing
        if spec is None or not spec.submodule_search_locations:
            return  # no TensorFlow installed: the imports below fail with their own message
        placeholder = types.ModuleType("tensorflow", "placeholder while the client imports TensorFlow's protos")
        placeholder.__path__ = list(spec.submodule_search_locations)
        placeholder.__spec__ = spec  # what importlib.util.find_spec("tensorflow") in another thread meanwhile returns
        sys.modules["tensorflow"] = placeholder
        try:
            for name in SERVING_PROTO_MODULES:
                importlib.import_module(name)
        finally:
            if sys.modules.get("tensorflow") is placeholder:
                del sys.modules["tensorflow"]


def nothing_listening(target: str) -> bool:
    """True when `target` ("host:port", "[v6]:port", optionally "http://...") refuses TCP connections or cannot be
    resolved: no server runs there. False when something accepts, or the target is not a host:port."""
    address = target.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return False
    try:
        with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=2.0):
            return False
    except OSError:
        return True


def _model_spec(name: str, signature_name: str = "", version: int | None = None, version_label: str | None = None):
    import_serving_protos()
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    if version is not None:
        spec.version.value = int(version)
    elif version_label:
        spec.version_label = version_label
    return spec


class ServingClient:
    """gRPC client over the official PredictionService / ModelService stubs."""

    def __init__(
        self,
        target: str | None = None,
        *,
        model_name: str = "mtnlp",
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_key: bytes | None = None,
        client_cert: bytes | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        import grpc

        import_serving_protos()
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.target = target or os.environ.get(ENV_GRPC) or DEFAULT_GRPC
        self.model_name = model_name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        opts = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1), *options]
        if tls:
            creds = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
            self._channel = grpc.secure_channel(self.target, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(self.target, options=opts)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._grpc = grpc

    # -- plumbing --------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        """Invoke a stub method, retrying UNAVAILABLE (server starting, connection reset) with backoff."""
        grpc = self._grpc
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout or self.timeout)
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    time.sleep(self.backoff * (2**attempt))
                    attempt += 1
                    continue
                if code == grpc.StatusCode.UNAVAILABLE and nothing_listening(self.target):
                    raise ServingClientError(
                        code.name, f"nothing is listening on {self.target}", nothing_listening=True
                    ) from None
                raise ServingClientError(code.name, e.details() or "") from None

    def spec(
        self,
        signature_name: str = "",
        version: int | None = None,
        version_label: str | None = None,
        model_name: str | None = None,
    ):
        return _model_spec(model_name or self.model_name, signature_name, version, version_label)

    # -- PredictionService ------------------------------------------------------------------------------------
    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = "serving_default",
        *,
        output_filter: Iterable[str] = (),
        version: int | None = None,
        version_label: str | None = None,
        model_name: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        from tensorflow_serving.apis import predict_pb2

        req = predict_pb2.PredictRequest(
            model_spec=self.spec(signature_name, version, version_label, model_name), output_filter=list(output_filter)
        )
        for k, v in inputs.items():
            req.inputs[k].CopyFrom(to_tensor_proto(v))
        resp = self.call(self._predict.Predict, req, timeout)
        return {k: from_tensor_proto(t) for k, t in resp.outputs.items()}

    def predict_request(self, request: Any, timeout: float | None = None) -> Any:
        return self.call(self._predict.Predict, request, timeout)

    def classify(self, examples: Sequence[Any], signature_name: str = "serving_default", **kw: Any) -> Any:
        from tensorflow_serving.apis import classification_pb2

        req = classification_pb2.ClassificationRequest(model_spec=self._spec_kw(signature_name, kw))
        req.input.example_list.examples.extend(examples)
        return self.call(self._predict.Classify, req, kw.get("timeout"))

    def regress(self, examples: Sequence[Any], signature_name: str = "serving_default", **kw: Any) -> Any:
        from tensorflow_serving.apis import regression_pb2

        req = regression_pb2.RegressionRequest(model_spec=self._spec_kw(signature_name, kw))
        req.input.example_list.examples.extend(examples)
        return self.call(self._predict.Regress, req, kw.get("timeout"))

    def multi_inference(self, request: Any, timeout: float | None = None) -> Any:
        return self.call(self._predict.MultiInference, request, timeout)

    def metadata(
        self, *, version: int | None = None, model_name: str | None = None, timeout: float | None = None
    ) -> Any:
        """GetModelMetadataResponse plus `.signature_defs` (the unpacked SignatureDefMap's map)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        req = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self.spec("", version, None, model_name), metadata_field=["signature_def"]
        )
        resp = self.call(self._predict.GetModelMetadata, req, timeout)
        sdm = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sdm)
        return sdm.signature_def

    def _spec_kw(self, signature_name: str, kw: dict) -> Any:
        return self.spec(signature_name, kw.get("version"), kw.get("version_label"), kw.get("model_name"))

    # -- ModelService -----------------------------------------------------------------------------------------
    def status(self, *, version: int | None = None, model_name: str | None = None, timeout: float | None = None) -> Any:
        from tensorflow_serving.apis import get_model_status_pb2

        req = get_model_status_pb2.GetModelStatusRequest(model_spec=self.spec("", version, None, model_name))
        return self.call(self._model.GetModelStatus, req, timeout)

    def reload_config(self, config: Any, timeout: float | None = None) -> Any:
        from tensorflow_serving.apis import model_management_pb2

        return self.call(
            self._model.HandleReloadConfigRequest,
            model_management_pb2.ReloadConfigRequest(config=config),
            timeout or max(self.timeout, 60),
        )

    def wait_until_available(self, timeout: float = 60.0, model_name: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = self.status(model_name=model_name, timeout=2.0)
                if any(s.state == 30 for s in st.model_version_status):  # AVAILABLE
                    return
            except ServingClientError:
                pass
            if time.monotonic() > deadline:
                raise ServingClientError(
                    "DEADLINE_EXCEEDED",
                    f"{model_name or self.model_name} not available at {self.target} after {timeout:.0f}s",
                )
            time.sleep(0.2)


class RestClient:
    """The same calls over TF Serving's REST API (`/v1/models/...`)."""

    def __init__(
        self,
        target: str | None = None,
        *,
        model_name: str = "mtnlp",
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        scheme: str = "http",
    ) -> None:
        self.target = target or os.environ.get(ENV_REST) or DEFAULT_REST
        self.model_name = model_name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.base = f"{scheme}://{self.target}"

    def _url(self, model_name: str | None, version: int | None, label: str | None, tail: str = "") -> str:
        url = f"{self.base}/v1/models/{model_name or self.model_name}"
        if version is not None:
            url += f"/versions/{version}"
        elif label:
            url += f"/labels/{label}"
        return url + tail

    def request(self, method: str, url: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        attempt = 0
        while True:
            req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return json.loads(r.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                payload = e.read().decode("utf-8", "replace")
                try:
                    message = json.loads(payload).get("error", payload)
                except ValueError:
                    message = payload
                if e.code == 503 and attempt < self.retries:
                    time.sleep(self.backoff * (2**attempt))
                    attempt += 1
                    continue
                raise ServingClientError(_HTTP_TO_CODE.get(e.code, "UNKNOWN"), message, e.code) from None
            except (urllib.error.URLError, ConnectionError) as e:
                if attempt < self.retries:
                    time.sleep(self.backoff * (2**attempt))
                    attempt += 1
                    continue
                if nothing_listening(self.target):
                    raise ServingClientError(
                        "UNAVAILABLE", f"nothing is listening on {self.target}", nothing_listening=True
                    ) from None
                raise ServingClientError("UNAVAILABLE", f"{url}: {e}") from None

    def predict(
        self,
        inputs: Mapping[str, Any] | Any = None,
        signature_name: str = "",
        *,
        instances: list | None = None,
        version: int | None = None,
        version_label: str | None = None,
        model_name: str | None = None,
    ) -> Any:
        """Columnar when `inputs` is given (returns "outputs"), row format with `instances` ("predictions")."""
        body: dict[str, Any] = {}
        if signature_name:
            body["signature_name"] = signature_name
        if instances is not None:
            body["instances"] = instances
            return self.request("POST", self._url(model_name, version, version_label, ":predict"), body)["predictions"]
        body["inputs"] = to_json_value(inputs)
        return self.request("POST", self._url(model_name, version, version_label, ":predict"), body)["outputs"]

    def classify(self, examples: list[dict], signature_name: str = "", context: dict | None = None, **kw: Any) -> Any:
        return self._examples(":classify", examples, signature_name, context, kw)

    def regress(self, examples: list[dict], signature_name: str = "", context: dict | None = None, **kw: Any) -> Any:
        return self._examples(":regress", examples, signature_name, context, kw)

    def _examples(self, verb: str, examples: list[dict], signature_name: str, context: dict | None, kw: dict) -> Any:
        body: dict[str, Any] = {"examples": examples}
        if signature_name:
            body["signature_name"] = signature_name
        if context is not None:
            body["context"] = context
        url = self._url(kw.get("model_name"), kw.get("version"), kw.get("version_label"), verb)
        return self.request("POST", url, body)["results"]

    def status(
        self, *, version: int | None = None, version_label: str | None = None, model_name: str | None = None
    ) -> Any:
        return self.request("GET", self._url(model_name, version, version_label))

    def metadata(self, *, version: int | None = None, model_name: str | None = None) -> Any:
        return self.request("GET", self._url(model_name, version, None, "/metadata"))


_HTTP_TO_CODE = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def to_tensor_proto(value: Any) -> Any:
    """Python/numpy value -> TensorProto (strings as UTF-8 bytes, numbers keep their numpy dtype)."""
    import_serving_protos()
    from .model_server.tensors import as_strings, to_proto

    if hasattr(value, "SerializeToString") and hasattr(value, "dtype"):
        return value  # already a TensorProto
    plain = not isinstance(value, np.ndarray)
    arr = np.asarray(value)
    if arr.dtype.kind in ("U", "S", "O"):
        arr = as_strings(arr)
    elif plain and arr.dtype == np.float64:
        arr = arr.astype(np.float32)  # Python floats mean float32, as with tf.make_tensor_proto
    return to_proto(arr)


def from_tensor_proto(proto: Any) -> np.ndarray:
    import_serving_protos()
    from .model_server.tensors import to_numpy

    return to_numpy(proto)


def to_json_value(inputs: Any) -> Any:
    """numpy / bytes -> JSON-able values for REST; non-UTF-8 bytes become {"b64": ...}."""

    def conv(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return conv(v.tolist())
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, bytes):
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(v).decode("ascii")}
        if isinstance(v, np.generic):
            return v.item()
        return v

    if isinstance(inputs, Mapping):
        return {k: conv(v) for k, v in inputs.items()}
    return conv(inputs)
