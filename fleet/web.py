"""The fleet view's web server: the page at ``/``, the JSON API, ``/metrics``.

Standard library only (``ThreadingHTTPServer``): a handful of operators polling a page
every few seconds is no load for it, and the view's process stays one dependency lighter.
Read queries go through a small pool of read-only store connections.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import structlog

from common.httpaccess import FLEET_HINT, Access, token_problem
from fleet.api import Api, NotFoundError
from fleet.config import FleetConfig
from fleet.consumer import Stats
from fleet.errors import FleetError, FleetStoreError
from fleet.store import Reader

__all__ = ["FleetWeb", "metrics_text", "web_access"]

_log = structlog.get_logger("edgegw.fleet.web")


def metrics_text(stats: Stats) -> str:
    """Prometheus text format: the consumer's counters and its lag per partition."""
    lines = [
        "# HELP edgegw_fleet_consumer_lag Records in a partition not yet in the view.",
        "# TYPE edgegw_fleet_consumer_lag gauge",
    ]
    lines += [f'edgegw_fleet_consumer_lag{{topic="{t}",partition="{p}"}} {lag}'
              for (t, p), lag in sorted(stats.lag().items())]  # fmt: skip
    for name, value, text in (
        ("events_total", stats.events, "Events projected into the view."),
        ("dead_letters_total", stats.dead_letters, "Events dead-lettered (malformed, unknown or invalid)."),
        ("duplicates_total", stats.duplicates, "Events dropped as already projected (same ce_id)."),
        ("batches_total", stats.batches, "Store transactions committed."),
        ("fenced_batches_total", stats.stale_batches, "Batches rolled back: another instance moved offsets."),
        ("gateway_transitions_total", stats.transitions, "Gateways going offline or online."),
    ):
        lines += [f"# HELP edgegw_fleet_{name} {text}", f"# TYPE edgegw_fleet_{name} counter",
                  f"edgegw_fleet_{name} {value}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def web_access(config: FleetConfig) -> Access:
    """Who may read the page and the API: anyone (on loopback), or the holders of ``token``."""
    if config.token is None:
        return Access(None)
    from gateway.secrets import resolve_secret  # noqa: PLC0415

    token = resolve_secret(config.token, what="fleet token").get_secret_value()
    if (problem := token_problem(token)) is not None:
        raise FleetError(f"token: {problem}")
    return Access(token, hint=FLEET_HINT)


class FleetWeb:
    """Serves on ``host:port`` in a thread; ``port=0`` picks a free one (see :attr:`port`)."""

    def __init__(
        self,
        host: str,
        port: int,
        readers: Callable[[], Reader],
        stats: Stats,
        *,
        pool: int = 4,
        access: Access | None = None,
    ) -> None:
        self.access = access or Access(None)
        self._readers: queue.Queue[Reader] = queue.Queue()
        self._make_reader = readers
        self._made = 0
        self._pool = pool
        self._lock = threading.Lock()
        self.stats = stats
        self.page = resources.files("fleet").joinpath("page.html").read_bytes()
        web = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edgegw-fleet"

            def do_GET(self) -> None:
                web.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = str(self.server.server_address[0]), int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="fleet-web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> FleetWeb:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        while not self._readers.empty():
            self._readers.get_nowait().close()

    @contextmanager
    def _reader(self) -> Iterator[Reader]:
        try:
            reader = self._readers.get_nowait()
        except queue.Empty:
            with self._lock:
                grow = self._made < self._pool
                self._made += grow
            reader = self._make_reader() if grow else self._readers.get(timeout=30)
        try:
            yield reader
        finally:
            self._readers.put(reader)

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        query = dict(parse_qsl(url.query))
        path = url.path.rstrip("/") or "/"
        refusal = self.access.check(path, url.query, {k.lower(): v for k, v in req.headers.items()})
        if refusal is not None:
            req.send_response(refusal.status)
            for name, value in refusal.headers.items():
                req.send_header(name, value)
            req.send_header("Content-Length", str(len(refusal.body)))
            req.end_headers()
            req.wfile.write(refusal.body)
            return
        try:
            if path == "/":
                self._send(req, 200, self.page, "text/html; charset=utf-8")
                return
            if path == "/metrics":
                self._send(req, 200, metrics_text(self.stats).encode(), "text/plain; version=0.0.4")
                return
            with self._reader() as reader:
                body = self._api(Api(reader), path, query)
        except NotFoundError as exc:
            self._send(req, 404, orjson.dumps({"error": f"no gateway {exc}"}), "application/json")
        except ValueError as exc:
            self._send(req, 400, orjson.dumps({"error": str(exc)}), "application/json")
        except FleetStoreError as exc:
            _log.warning("query failed", path=path, error=str(exc))
            self._send(req, 503, orjson.dumps({"error": "the view's store failed"}), "application/json")
        else:
            if body is None:
                self._send(req, 404, orjson.dumps({"error": "not found"}), "application/json")
            else:
                self._send(req, 200, orjson.dumps(body), "application/json")

    @staticmethod
    def _api(api: Api, path: str, query: dict[str, str]) -> Any:  # noqa: PLR0911 - one return a route
        if path == "/api/gateways":
            return api.gateways()
        if path.startswith("/api/gateways/"):
            return api.gateway(unquote(path.removeprefix("/api/gateways/")))
        if path == "/api/devices":
            return api.devices(query.get("gateway") or None)
        if path == "/api/alarms":
            return api.alarms()
        if path == "/api/rollups":
            return api.rollups(query)
        if path == "/api/dead-letters":
            return api.dead_letters()
        return None

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        req.send_response(status)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        req.wfile.write(body)
