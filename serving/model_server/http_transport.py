"""The REST API's HTTP transport: Tornado (a maintained server: strict Content-Length, chunked bodies, no request
smuggling through both headers), with a body size cap, read timeouts and a connection cap; requests run in a pool of
`--rest_api_num_threads` threads so the event loop never waits on a model."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .rest import RestApi

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    """What one client may hold of the REST server (`--rest_api_*` extension flags)."""

    max_body_bytes: int = 256 * 1024 * 1024
    read_timeout_s: float = 30.0  # to send a request's headers (also how long an idle keep-alive lasts) and its body
    max_connections: int = 1000


class RestServer:
    """Tornado's HTTP server on its own event-loop thread; requests run in a thread pool."""

    def __init__(
        self, api: RestApi, addresses: list[str], port: int, *, num_threads: int, limits: HttpLimits = HttpLimits()
    ) -> None:
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
            sockets.extend(
                tornado_bind(port, address=None if address in ("0.0.0.0", "", "::") else address, reuse_port=False)
            )
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
                rest._pool, rest.api.handle, self.request.method, self.request.path, body, deadline
            )  # noqa: SLF001
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
                answer = _raw_response(
                    "503 Service Unavailable",
                    f"Too many open connections (limit {limits.max_connections}, --rest_api_max_connections)",
                )
                asyncio.ensure_future(_close_gracefully(stream, answer))
                return
            super().handle_stream(stream, address)

    app = web.Application([(r".*", Handler)], log_function=lambda handler: None)
    # The body limit is enforced by the handler above (413 with a JSON error, for declared and chunked bodies
    # alike); Tornado's own check would answer a bare 400 first, so it is set out of the way.
    return Server(
        app,
        xheaders=False,
        max_body_size=2**62,
        idle_connection_timeout=limits.read_timeout_s,
        body_timeout=limits.read_timeout_s,
        max_header_size=MAX_HEAD_BYTES,
    )


# The request line and headers together (Tornado's max_header_size); TF Serving's libevent front end has a limit too.
MAX_HEAD_BYTES = 64 * 1024


def _raw_response(status: str, error: str) -> bytes:
    """A complete HTTP answer carrying TF Serving's `{"error": ...}`, for connections Tornado's handlers do not own."""
    body = json.dumps({"error": error}).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode() + body


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
                stream.socket.send(
                    _raw_response(
                        "431 Request Header Fields Too Large", f"Request line and headers exceed {MAX_HEAD_BYTES} bytes"
                    )
                )
                stream.socket.shutdown(socket.SHUT_WR)
                while stream.socket.recv(65536):
                    pass
            except OSError:  # BlockingIOError once drained; or the client is gone
                pass
        close(exc_info)

    stream.close = close_with_status
