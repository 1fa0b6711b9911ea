"""A tiny HTTP/1.1 server on the supervisor's event loop for ``/metrics`` and ``/healthz``.

It serves GET only, one small response per connection, on a local port (127.0.0.1 by
default). A handler returns ``(status, content type, body)``, or is a coroutine function
returning it. Handlers run on the event loop: a plain function must be quick (it reads
counters, nothing more); one that touches the disk (a SQLite query, a file) is a
coroutine that does that part in a worker thread (see :class:`gateway.metrics.Observability`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Mapping

import structlog

__all__ = ["Handler", "HttpServer", "Response"]

Response = tuple[int, str, bytes]
Handler = Callable[[], Response | Awaitable[Response]]

_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}
_log = structlog.get_logger("edgegw.http")


class HttpServer:
    def __init__(self, host: str, port: int, routes: Mapping[str, Handler]) -> None:
        self.host = host
        self.port = port
        self.routes = dict(routes)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]  # the real port when 0 was asked for
        _log.info("http listening", url=f"http://{self.host}:{self.port}/", routes=sorted(self.routes))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            status, ctype, body = await self._respond(request)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\nCache-Control: no-store\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    async def _respond(self, request: bytes) -> Response:
        line = request.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3:
            return 400, "text/plain", b"bad request\n"
        method, target, _version = parts
        path = target.split("?", 1)[0]
        handler = self.routes.get(path)
        if handler is None:
            return 404, "text/plain", f"no such path: {path}; try {', '.join(sorted(self.routes))}\n".encode()
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        response = handler()
        if inspect.isawaitable(response):
            return await response
        return response
