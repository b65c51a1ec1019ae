"""HTTP/REST front end, TF Serving's /v1 API: status, metadata, :predict (row and columnar), :classify, :regress.

Errors are `{"error": "..."}` with the HTTP status TF Serving derives from the canonical code. A route table maps
(method, path) to the handlers here; the JSON codec is `rest_codec.py`, the HTTP transport `http_transport.py`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable

from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    regression_pb2,
)

from . import inference
from .errors import from_exception, invalid_argument, not_found
from .manager import Manager
from .metrics import Metrics
from .rest_codec import (
    examples_input,
    metadata_json,
    parse_body,
    predict_request_arrays,
    predict_response_json,
    short_json,
    status_json,
)

# As TF Serving's path regex: case-insensitive, ASCII version digits.
_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?$",
    re.IGNORECASE,
)
_INT64_MAX = 2**63 - 1


# ----- the API, independent of the HTTP transport ----------------------------------------------------------
class RestApi:
    """The /v1 API on (method, path, body): what the HTTP server calls from its worker threads."""

    def __init__(self, manager: Manager, timeout_ms: int, metrics: Metrics, prometheus_path: str | None = None) -> None:
        self.manager = manager
        self.timeout = timeout_ms / 1000.0
        self.metrics = metrics
        self.prometheus_path = prometheus_path
        # (HTTP method, the path's tail after /v1/models/{name}[/versions/{v}|/labels/{l}]) -> handler
        self._routes: dict[tuple[str, str], Callable[[model_pb2.ModelSpec, bytes, float | None], dict]] = {
            ("GET", ""): self._status,
            ("GET", "/metadata"): self._metadata,
            **{("POST", f":{api}"): functools.partial(self._timed, api) for api in ("predict", "classify", "regress")},
        }

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

    def _route(
        self, method: str, path: str
    ) -> tuple[Callable[[model_pb2.ModelSpec, bytes, float | None], dict], model_pb2.ModelSpec]:
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
                    raise invalid_argument(
                        f"JSON Value: {short_json(doc)} not formatted correctly. 'signature_name' "
                        f"key must be a string value."
                    )
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
                _, res = inference.classify_result(
                    servable, classification_pb2.ClassificationRequest(model_spec=spec, input=inp), deadline
                )
                return {"results": [[[c.label, c.score] for c in cl.classes] for cl in res.classifications]}
            _, res = inference.regress_result(
                servable, regression_pb2.RegressionRequest(model_spec=spec, input=inp), deadline
            )
            return {"results": [r.value for r in res.regressions]}

    @staticmethod
    def _json(status: int, doc: dict) -> tuple[int, str, bytes]:
        return status, "application/json", json.dumps(doc, indent=None).encode("utf-8")
