"""The HTTP token: who may read a web page edgegw serves (the gateway's status page,
``/api/status``, ``/metrics`` and ``/rules``; the fleet view's page and API).

With a token set (required off loopback, :func:`is_loopback`), every request but
``/healthz`` needs one of:

- ``Authorization: Bearer <token>`` (scripts, ``curl``, Prometheus' ``authorization``);
- the session cookie a browser gets from the login link ``/?token=<token>``: the gateway
  answers it with a redirect to the same path without the query and a cookie
  (``HttpOnly``, ``SameSite=Strict``) that holds an HMAC of the token, never the token.
  The token leaves the address bar at once; edgegw logs no request lines or URLs.

Anything else gets 401. Pure: no I/O; comparisons in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

__all__ = [
    "FLEET_HINT", "MIN_TOKEN_LENGTH", "SESSION_COOKIE", "Access", "Refusal", "is_loopback", "token_problem",
]  # fmt: skip

SESSION_COOKIE = "edgegw_session"
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; anything else (0.0.0.0, a name) is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot guard the page (empty, or guessable by its length), or None."""
    if not token.strip():
        return "the token is empty: the page would be open to the network"
    if len(token) < MIN_TOKEN_LENGTH:
        return (f"the token has {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
                "(e.g. the output of `openssl rand -hex 16`)")  # fmt: skip
    return None
OPEN_PATHS = frozenset({"/healthz"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """The answer instead of the page: a 401, or the login redirect."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out[name] = value
    return out


_GATEWAY_HINT = (
    b"401: this gateway asks for its token: send 'Authorization: Bearer <token>', or open "
    b"/?token=<token> once in a browser (see docs/operations.md)\n"
)
FLEET_HINT = (
    b"401: the fleet view asks for its token: send 'Authorization: Bearer <token>', or open "
    b"/?token=<token> once in a browser (see docs/fleet-view.md)\n"
)


class Access:
    """``check(path, query, headers)``: None to serve the request, else a :class:`Refusal`."""

    __slots__ = ("_hint", "_session", "_token")

    def __init__(self, token: str | None, *, hint: bytes = _GATEWAY_HINT) -> None:
        if token is not None and token_problem(token) is not None:
            raise ValueError(f"http.token: {token_problem(token)}")
        self._hint = hint
        self._token = token.encode() if token else None
        self._session = (
            hmac.new(self._token, b"edgegw status page session", hashlib.sha256).hexdigest()
            if self._token
            else None
        )

    @property
    def required(self) -> bool:
        return self._token is not None

    def _is_token(self, given: str) -> bool:
        assert self._token is not None
        return hmac.compare_digest(given.encode(), self._token)

    def check(self, path: str, query: str, headers: Mapping[str, str]) -> Refusal | None:
        if self._token is None or self._session is None or path in OPEN_PATHS:
            return None
        auth = headers.get("authorization", "")
        scheme, _, credentials = auth.partition(" ")
        if scheme.lower() == "bearer" and self._is_token(credentials.strip()):
            return None
        session = _cookies(headers.get("cookie", "")).get(SESSION_COOKIE, "")
        if hmac.compare_digest(session.encode(), self._session.encode()):
            return None
        given = parse_qs(query).get("token")
        if given and self._is_token(given[0]):
            cookie = f"{SESSION_COOKIE}={self._session}; Path=/; HttpOnly; SameSite=Strict"
            return Refusal(303, b"logged in\n", {"Location": path, "Set-Cookie": cookie})
        return Refusal(401, self._hint, {"WWW-Authenticate": 'Bearer realm="edgegw"'})
