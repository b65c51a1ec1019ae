"""gRPC front end: PredictionService and ModelService over the official generated stubs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc

from . import inference
from .errors import ServingError, from_exception
from .manager import Manager
from .servable import Servable

log = logging.getLogger(__name__)


class _Base:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def _serve(
        self,
        api: str,
        request: Any,
        context: grpc.ServicerContext,
        fn: Callable[[Servable, Any, float | None], Any],
        spec: Any = None,
    ) -> Any:
        spec = request.model_spec if spec is None else spec
        # As TF Serving: the client's deadline becomes the Session::Run timeout, so abandoned work stops.
        remaining = context.time_remaining()
        deadline = None if remaining is None or remaining > 1e9 else time.monotonic() + remaining
        try:
            with self.manager.metrics.timed_request(spec.name, api, "GRPC"), self.manager.acquire(spec) as servable:
                return fn(servable, request, deadline)
        except Exception as e:  # noqa: BLE001 - every failure becomes a status, the server keeps serving
            err = from_exception(e)
            if not isinstance(e, ServingError):
                log.debug("%s failed", api, exc_info=True)
            context.abort(err.grpc_code, err.message)


class PredictionServicer(_Base, prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):  # noqa: N802 - gRPC method names
        return self._serve("Predict", request, context, inference.predict)

    def Classify(self, request, context):  # noqa: N802
        return self._serve("Classify", request, context, inference.classify)

    def Regress(self, request, context):  # noqa: N802
        return self._serve("Regress", request, context, inference.regress)

    def MultiInference(self, request, context):  # noqa: N802
        if not request.tasks:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "MultiInferenceRequest must have at least one task.")
        return self._serve(
            "MultiInference", request, context, inference.multi_inference, spec=request.tasks[0].model_spec
        )

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._serve("GetModelMetadata", request, context, inference.metadata)


# Reload RPCs in progress at once; more are refused (RESOURCE_EXHAUSTED) rather than queued, so admin calls can
# never occupy the gRPC worker threads that inference needs (they are --grpc_max_threads, 8 on two cores).
MAX_CONCURRENT_RELOADS = 2


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self, manager: Manager, on_reload: Callable[[Any], None] | None = None, reload_enabled: bool = True
    ) -> None:
        self.manager = manager
        self.on_reload = on_reload
        self.reload_enabled = reload_enabled
        self._reload_slots = threading.BoundedSemaphore(MAX_CONCURRENT_RELOADS)

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            return self.manager.model_status(request)
        except Exception as e:  # noqa: BLE001
            err = from_exception(e)
            context.abort(err.grpc_code, err.message)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        response = model_management_pb2.ReloadConfigResponse()
        if not self.reload_enabled:
            log.warning("Refused a ReloadConfig request from %s: --disable_reload_config_rpc", context.peer())
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "HandleReloadConfigRequest is disabled on this server (--disable_reload_config_rpc)",
            )
        if not self._reload_slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_CONCURRENT_RELOADS} HandleReloadConfigRequest calls are already in progress; retry later",
            )
        try:
            # The client's deadline bounds the wait for the new config's loads (they go on after it).
            remaining = context.time_remaining()
            self.manager.apply_config(
                request.config, timeout=None if remaining is None or remaining > 1e9 else remaining
            )
            if self.on_reload is not None:
                self.on_reload(request.config)
        except Exception as e:  # noqa: BLE001
            err = from_exception(e)
            log.error("ReloadConfig failed: %s", err.message)
            response.status.error_code = err.code
            response.status.error_message = err.message
            # TF Serving fills the response and also fails the RPC with the same status.
            context.abort(err.grpc_code, err.message)
        finally:
            self._reload_slots.release()
        return response


def build_server(
    manager: Manager,
    *,
    max_workers: int,
    options: list[tuple[str, Any]],
    on_reload: Callable[[Any], None] | None = None,
    reload_enabled: bool = True,
    enable_profiler: bool = False,
) -> grpc.Server:
    from concurrent.futures import ThreadPoolExecutor

    # TF Serving accepts messages up to INT32_MAX both ways; request-size policing is the model's business.
    base = [
        ("grpc.max_receive_message_length", 2**31 - 1),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=base + options,
        maximum_concurrent_rpcs=None,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager, on_reload, reload_enabled), server)
    if enable_profiler:  # TF Serving's --enable_profiler: TensorFlow's profiler service on the same port
        from .profiler import profiler_handler

        server.add_generic_rpc_handlers((profiler_handler(),))
    return server
