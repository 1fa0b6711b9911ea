"""A tiny HTTP/1.1 server on the supervisor's event loop for ``/metrics`` and ``/healthz``.

It serves GET only, one small response per connection, on a local port (127.0.0.1 by
default). A handler returns ``(status, content type, body)``, or is a coroutine function
returning it. Handlers run on the event loop: a plain function must be quick (it reads
counters, nothing more); one that touches the disk (a SQLite query, a file) is a
coroutine that does that part in a worker thread (see :class:`gateway.metrics.Observability`).

``access``, when given (:class:`common.httpaccess.Access`), checks each request's
path, query and headers first and answers 401 (or its login redirect) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from common.httpaccess import Access

__all__ = ["Handler", "HttpServer", "Response"]

Response = tuple[int, str, bytes]
Handler = Callable[[], Response | Awaitable[Response]]

_REASONS = {
    200: "OK",
    303: "See Other",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}
_log = structlog.get_logger("edgegw.http")


class HttpServer:
    def __init__(self, host: str, port: int, routes: Mapping[str, Handler], *, access: Access | None = None,
                 headers: Mapping[str, Mapping[str, str]] | None = None) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self.routes = dict(routes)
        self.access = access
        self.headers = dict(headers or {})
        """Extra response headers per path (the page's Content-Security-Policy)."""
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
        extra: Mapping[str, str] = {}
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            status, ctype, body, extra = await self._respond(request)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        more = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{more}"
            "Connection: close\r\nCache-Control: no-store\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    async def _respond(self, request: bytes) -> tuple[int, str, bytes, Mapping[str, str]]:
        lines = request.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3:
            return 400, "text/plain", b"bad request\n", {}
        method, target, _version = parts
        path, _, query = target.partition("?")
        if self.access is not None:
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            refusal = self.access.check(path, query, headers)
            if refusal is not None:
                return refusal.status, "text/plain", refusal.body, refusal.headers
        handler = self.routes.get(path)
        if handler is None:
            known = ", ".join(sorted(self.routes))
            return 404, "text/plain", f"no such path: {path}; try {known}\n".encode(), {}
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n", {}
        response = handler()
        if inspect.isawaitable(response):
            response = await response
        return (*response, self.headers.get(path, {}))
