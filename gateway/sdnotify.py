"""A tiny sd_notify client: tells systemd that the gateway is ready, alive, reloading or stopping.

The protocol (``sd_notify(3)``): one datagram of newline-separated ``KEY=VALUE`` lines sent
to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``; a name starting with ``@`` lives in
the abstract namespace. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, so
the same code runs on a terminal, in tests and under ``Type=notify``.

The watchdog: with ``WatchdogSec=`` systemd sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``);
the service must send ``WATCHDOG=1`` more often than that, and pings at half the interval.
:func:`watchdog_loop` does so from the asyncio event loop itself, so a hung loop stops the
pings and systemd restarts the service.

A notify that cannot be sent (systemd restarted, the socket vanished, its queue is full)
is never fatal: the gateway's work does not depend on it. Each failure is counted in
:attr:`Notifier.errors` (``edgegw_sdnotify_errors_total`` in ``/metrics``) and logged,
at most once per ``LOG_EVERY`` seconds with the number of failures left unlogged.

Standard library only: the ``sdnotify`` package on PyPI does the same in about as many
lines and has not been maintained since 2017.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from types import TracebackType

import structlog

from gateway.errors import PlatformError

__all__ = ["Notifier", "watchdog_loop"]

_log = structlog.get_logger("edgegw.sdnotify")

SEND_TIMEOUT = 2.0
"""Seconds a send may block when systemd's receive queue is full."""

LOG_EVERY = 60.0
"""Seconds between two warnings about failed notifies (the watchdog pings every few seconds)."""


class Notifier:
    """Sends state changes to systemd. Create it once at start (it reads the environment).

    ``Notifier()`` reads ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` from
    the process environment; pass ``environ`` to read them from a mapping instead.
    Raises :class:`PlatformError` for a malformed value, which systemd never sets.
    ``clock`` (monotonic seconds) paces the warnings about failed sends.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if environ is None else environ
        self.errors = 0
        """Notifies that could not be sent, since start."""
        self._clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0
        self._address = _parse_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _parse_watchdog(env, os.getpid() if pid is None else pid)
        self._sock: socket.socket | None = None
        if self._address is not None:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            except OSError as exc:
                raise PlatformError(f"cannot create a socket for sd_notify: {exc}") from exc
            self._sock.settimeout(SEND_TIMEOUT)

    # ------------------------------------------------------------------ state
    @property
    def enabled(self) -> bool:
        """True under systemd ``Type=notify`` (``$NOTIFY_SOCKET`` is set)."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """``WatchdogSec=`` in seconds, or None when systemd expects no pings from us."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1e6

    @property
    def ping_interval(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half of ``WatchdogSec=`` (see ``sd_watchdog_enabled(3)``)."""
        interval = self.watchdog_interval
        return None if interval is None else interval / 2

    # ------------------------------------------------------------------ messages
    def send(self, message: str) -> bool:
        """Send raw ``KEY=VALUE`` lines. True when sent; False outside systemd (a no-op) and
        when the socket refused the message (counted in :attr:`errors`, logged, never raised).

        Raises :class:`PlatformError` when called after :meth:`close` (a bug of ours).
        """
        if self._address is None:
            return False
        if self._sock is None:
            raise PlatformError(f"sd_notify: {_first_key(message)} sent after close()")
        try:
            self._sock.sendto(message.encode("utf-8"), self._address)
        except OSError as exc:
            self._failed(message, exc)
            return False
        return True

    def _failed(self, message: str, exc: OSError) -> None:
        self.errors += 1
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < LOG_EVERY:
            self._unlogged += 1
            return
        extra = {"suppressed": self._unlogged} if self._unlogged else {}
        _log.warning(
            "sd_notify failed",
            socket=_display(self._address or ""),
            message=_first_key(message),
            error=str(exc),
            errors=self.errors,
            **extra,
        )
        self._logged_at = now
        self._unlogged = 0

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` fields, e.g. ``notify(READY=1, STATUS="running")``."""
        return self.send("\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items()))

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: systemd starts the units ordered after us."""
        return self.notify(READY=1, **_status(status))

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status edgegw``."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """Tell the watchdog we are alive."""
        return self.notify(WATCHDOG=1)

    def reloading(self, status: str | None = None) -> bool:
        """A reload (SIGHUP) has started; send :meth:`ready` when the new config is live."""
        return self.notify(RELOADING=1, MONOTONIC_USEC=_monotonic_usec(), **_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """A graceful stop has started (SIGTERM)."""
        return self.notify(STOPPING=1, **_status(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop (e.g. a long spool migration)."""
        return self.notify(EXTEND_TIMEOUT_USEC=max(0, round(seconds * 1e6)))

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def watchdog_loop(notifier: Notifier, interval: float | None = None) -> None:
    """Ping the watchdog from the running event loop until cancelled.

    Run it as a task of the supervisor's TaskGroup: when the loop hangs, the pings stop and
    systemd kills and restarts the service. Returns at once when no watchdog is configured.
    """
    every = notifier.ping_interval if interval is None else interval
    if every is None:
        return
    _log.debug("watchdog pings", every_s=every)
    while True:
        notifier.watchdog()
        await asyncio.sleep(every)


# ---------------------------------------------------------------------- helpers
def _parse_address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # the abstract namespace
    raise PlatformError(f"NOTIFY_SOCKET={value!r}: expected an absolute path or an @abstract name")


def _parse_watchdog(env: Mapping[str, str], pid: int) -> int | None:
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        if not owner.isdigit():
            raise PlatformError(f"WATCHDOG_PID={owner!r} is not a process id")
        if int(owner) != pid:
            return None  # the variables were inherited: the watchdog is our parent's business
    if not usec.isdigit() or int(usec) == 0:
        raise PlatformError(f"WATCHDOG_USEC={usec!r} is not a positive number of microseconds")
    return int(usec)


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _status(status: str | None) -> dict[str, str]:
    return {} if status is None else {"STATUS": status}


def _one_line(value: str) -> str:
    return " ".join(value.splitlines())


def _first_key(message: str) -> str:
    return message.split("=", 1)[0] or "a message"


def _display(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address
