"""TensorFlow's profiler service on the model port, as TF Serving registers it (`--enable_profiler`, on by default).

TensorBoard's profile plugin ("Capture profile", or `tf.profiler.experimental.client.trace("grpc://host:8500", ...)`)
asks `/tensorflow.ProfilerService/Profile` on the server's gRPC port for a trace. TensorFlow's own profiler server
(`tensorflow.python.profiler.profiler_v2.start_server`, C++) does the tracing; it can only listen on a port of its
own, so it is started on a free port and the model port forwards the service's calls to it byte for byte (no proto
is decoded here).
"""

from __future__ import annotations

import socket
from typing import Any

import grpc

SERVICE = "tensorflow.ProfilerService"
METHODS = ("Profile", "Terminate", "Monitor")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def profiler_handler() -> grpc.GenericRpcHandler:
    """Start TensorFlow's profiler server and return the handler that serves its methods on the model port."""
    from tensorflow.python.profiler import profiler_v2

    port = _free_port()
    profiler_v2.start_server(port)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)])

    def forward(method: str):
        call = channel.unary_unary(f"/{SERVICE}/{method}")  # bytes in, bytes out

        def handle(request: bytes, context: grpc.ServicerContext) -> Any:
            remaining = context.time_remaining()
            try:
                return call(request, timeout=None if remaining is None or remaining > 1e9 else remaining)
            except grpc.RpcError as e:
                context.abort(e.code(), e.details() or "")

        return grpc.unary_unary_rpc_method_handler(handle)

    return grpc.method_handlers_generic_handler(SERVICE, {m: forward(m) for m in METHODS})
