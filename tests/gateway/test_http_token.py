"""The HTTP token (issue 14): off loopback, every path but /healthz asks for it.

- the config refuses a non-loopback bind without a token, at file:line:column;
- :class:`Access` (pure): bearer header, the browser's one-time login link and its cookie;
- a real ``edgegw run`` bound to 0.0.0.0: 401 on every path but /healthz without the
  token, 200 with it; the token is in no response and in no log line.
"""

from __future__ import annotations

import http.client
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from common.httpaccess import SESSION_COOKIE, Access, is_loopback
from gateway.cli import main
from gateway.config import load_config
from gateway.errors import ConfigError
from simulators.testbed import Mosquitto
from tests.gateway.conftest import Gateway, gateway_config, write_config

TOKEN = "s3cret-Token_for-the-page"
PATHS = ["/", "/api/status", "/metrics", "/rules", "/nothing-here"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("192.168.1.20", False), ("::", False), ("gateway.local", False)],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_config_refuses_a_network_bind_without_a_token(tmp_path: Path) -> None:
    path = tmp_path / "edgegw.yaml"
    path.write_text(
        textwrap.dedent("""\
        gateway: {id: hall-pi}
        http:
          host: 0.0.0.0
          port: 9108
        """)
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (issue,) = [str(i) for i in info.value.issues]
    assert issue.startswith(f"{path}:3:3: http: ")
    assert "not a loopback address" in issue
    assert "http.token" in issue
    path.write_text(path.read_text() + "  token: {env: EDGEGW_HTTP_TOKEN}\n")
    assert load_config(path).config.http.token is not None


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "the token is empty: the page would be open to the network"),
        ("   ", "the token is empty: the page would be open to the network"),
        ("hunter2", "the token has 7 characters; use at least 16 "
                    "(e.g. the output of `openssl rand -hex 16`)"),
    ],
)
def test_an_empty_or_short_token_is_an_error_where_edgegw_check_reads_it(
    token: str,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EDGEGW_TEST_HTTP_TOKEN", token)
    path = tmp_path / "edgegw.yaml"
    path.write_text(f"gateway: {{id: hall-pi, state_dir: {tmp_path / 'state'}}}\n"
                    "http: {host: 0.0.0.0, token: {env: EDGEGW_TEST_HTTP_TOKEN}}\n")  # fmt: skip
    assert main(["check", "--config", str(path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {path}:2:30: http.token: {problem}"]
    with pytest.raises(ValueError, match=r"http\.token: the token"):
        Access(token)  # and the page never runs with it


def test_access_without_a_token_lets_everything_through() -> None:
    assert Access(None).check("/metrics", "", {}) is None


@pytest.mark.parametrize(
    ("path", "query", "headers", "allowed"),
    [
        ("/healthz", "", {}, True),
        ("/metrics", "", {}, False),
        ("/metrics", "", {"authorization": f"Bearer {TOKEN}"}, True),
        ("/metrics", "", {"authorization": f"bearer {TOKEN}"}, True),
        ("/metrics", "", {"authorization": "Bearer wrong"}, False),
        ("/metrics", "", {"authorization": f"Basic {TOKEN}"}, False),
        ("/", "", {"cookie": f"{SESSION_COOKIE}={TOKEN}"}, False),  # the cookie is never the token
        ("/", "token=wrong", {}, False),
    ],
)
def test_access(path: str, query: str, headers: dict[str, str], allowed: bool) -> None:
    refusal = Access(TOKEN).check(path, query, headers)
    assert (refusal is None) is allowed
    if refusal is not None:
        assert refusal.status == 401
        assert TOKEN.encode() not in refusal.body
        assert refusal.headers["WWW-Authenticate"].startswith("Bearer")


def test_login_link_sets_a_cookie_that_is_not_the_token() -> None:
    access = Access(TOKEN)
    login = access.check("/", f"token={TOKEN}&x=1", {})
    assert login is not None
    assert login.status == 303
    assert login.headers["Location"] == "/"  # the token leaves the address bar
    cookie = login.headers["Set-Cookie"]
    assert TOKEN not in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    session = cookie.split(";", 1)[0]
    assert access.check("/api/status", "", {"cookie": f"theme=dark; {session}"}) is None
    assert Access("another token, long enough").check("/", "", {"cookie": session}) is not None


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.mark.mqtt
def test_gateway_on_all_addresses_asks_for_the_token(
    broker: Mosquitto, tmp_path: Path, http_port: int, gateways: Any
) -> None:
    (tmp_path / "http.token").write_text(TOKEN + "\n")
    config = gateway_config(tmp_path, (broker.host, broker.port), http_port=http_port)
    config["http"] = {"host": "0.0.0.0", "port": http_port, "token": {"file": str(tmp_path / "http.token")}}
    gateway: Gateway = gateways(write_config(tmp_path / "edgegw.yaml", config), http_port).start()

    status, _, body = _get(http_port, "/healthz")
    assert status == 200, body
    for path in PATHS:
        status, headers, body = _get(http_port, path)
        assert status == 401, path
        assert "www-authenticate" in headers
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for path in ["/", "/api/status", "/metrics", "/rules"]:
        status, _, body = _get(http_port, path, bearer)
        assert status == 200, path
        assert TOKEN.encode() not in body
    assert _get(http_port, "/nothing-here", bearer)[0] == 404
    # a browser: the login link once, then the cookie
    status, headers, _ = _get(http_port, f"/?token={TOKEN}")
    assert status == 303
    assert headers["location"] == "/"
    cookie = headers["set-cookie"].split(";", 1)[0]
    status, _, body = _get(http_port, "/api/status", {"Cookie": cookie})
    assert status == 200
    assert json.loads(body)["gateway"]["id"] == config["gateway"]["id"]
    gateway.terminate()
    assert TOKEN not in json.dumps(gateway.logs)


@pytest.mark.mqtt
def test_a_browser_logs_in_once_with_the_link(
    broker: Mosquitto, tmp_path: Path, http_port: int, gateways: Any, browser_page: Any
) -> None:
    (tmp_path / "http.token").write_text(TOKEN)
    config = gateway_config(tmp_path, (broker.host, broker.port), http_port=http_port)
    config["http"] = {"host": "0.0.0.0", "port": http_port, "token": {"file": str(tmp_path / "http.token")}}
    gateway: Gateway = gateways(write_config(tmp_path / "edgegw.yaml", config), http_port).start()
    page = browser_page
    denied = page.goto(f"http://127.0.0.1:{http_port}/")
    assert denied is not None
    assert denied.status == 401
    page.goto(f"http://127.0.0.1:{http_port}/?token={TOKEN}")
    assert page.url == f"http://127.0.0.1:{http_port}/"  # the token left the address bar
    gateway_id = page.locator("#gateway-id")
    deadline = time.monotonic() + 15
    while gateway_id.inner_text() != config["gateway"]["id"]:  # the page's own requests pass
        assert time.monotonic() < deadline, "the page did not load its data"
        time.sleep(0.1)
    assert TOKEN not in page.content()
    assert all(TOKEN not in c["value"] for c in page.context.cookies())
    gateway.terminate()
