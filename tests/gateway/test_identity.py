"""gateway.identity: the configured id wins; a derived one is stored once and read back."""

from __future__ import annotations

import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.errors import ConfigError, PlatformError
from gateway.identity import (
    GATEWAY_ID_FILE,
    derive_gateway_id,
    is_valid_gateway_id,
    resolve_gateway_id,
)


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("hall-pi", "hall-pi-3f9c04d2"),
        ("RaspberryPi", "raspberrypi-3f9c04d2"),
        ("pi.home.example.org", "pi-3f9c04d2"),  # the short name only
        ("Gäste Zimmer", "g-ste-zimmer-3f9c04d2"),
        ("-_.", "edgegw-3f9c04d2"),
        ("", "edgegw-3f9c04d2"),
        ("x" * 80, "x" * 54 + "-3f9c04d2"),
    ],
)
def test_derive(hostname: str, expected: str) -> None:
    derived = derive_gateway_id(hostname, "3f9c04d2")
    assert derived == expected
    assert is_valid_gateway_id(derived)
    assert len(derived) <= 63


@pytest.mark.parametrize(
    ("value", "valid"),
    [("hall-pi", True), ("a", True), ("gw_1.2", True), ("-lead", False), ("with space", False),
     ("x" * 63, True), ("x" * 64, False), ("", False), ("ümlaut", False)],
)
def test_valid(value: str, valid: bool) -> None:
    assert is_valid_gateway_id(value) is valid


def test_configured_id_wins_and_is_not_stored(tmp_path: Path) -> None:
    assert resolve_gateway_id("hall-pi", tmp_path) == "hall-pi"
    assert not (tmp_path / GATEWAY_ID_FILE).exists()


def test_a_configured_id_that_replaces_a_derived_one_is_logged(tmp_path: Path) -> None:
    derived = resolve_gateway_id(None, tmp_path, hostname=lambda: "pi", suffix=lambda: "0000beef")
    with capture_logs() as logs:
        assert resolve_gateway_id("hall-pi", tmp_path) == "hall-pi"
        assert resolve_gateway_id(derived, tmp_path) == derived  # the same one: nothing to say
    assert [(e["log_level"], e["gateway_id"], e["derived"]) for e in logs] == [
        ("warning", "hall-pi", "pi-0000beef")
    ]


def test_invalid_configured_id_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gateway id 'hall pi'"):
        resolve_gateway_id("hall pi", tmp_path)


def test_derived_once_and_stable_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state"  # created on first use
    suffixes = iter(["aaaa0001", "bbbb0002"])
    with capture_logs() as logs:
        first = resolve_gateway_id(None, state, hostname=lambda: "kitchen", suffix=lambda: next(suffixes))
        again = resolve_gateway_id(None, state, hostname=lambda: "renamed", suffix=lambda: next(suffixes))
    assert first == again == "kitchen-aaaa0001"
    assert (state / GATEWAY_ID_FILE).read_text() == "kitchen-aaaa0001\n"
    assert [e["event"] for e in logs] == ["gateway id derived"]
    assert os.listdir(state) == [GATEWAY_ID_FILE]  # no temporary file left behind


def test_default_derivation_uses_the_hostname_and_random_bits(tmp_path: Path) -> None:
    a = resolve_gateway_id(None, tmp_path / "a")
    b = resolve_gateway_id(None, tmp_path / "b")
    assert is_valid_gateway_id(a)
    assert a != b  # two clones of one SD card still differ


def test_concurrent_first_starts_agree(tmp_path: Path) -> None:
    def start(n: int) -> str:
        return resolve_gateway_id(None, tmp_path, hostname=lambda: "pi", suffix=lambda: f"{n:08x}")

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(start, range(32)))
    assert len(ids) == 1
    assert (tmp_path / GATEWAY_ID_FILE).read_text().strip() in ids


def test_an_edited_file_is_read_back(tmp_path: Path) -> None:
    (tmp_path / GATEWAY_ID_FILE).write_text("  moved-gateway \n")
    assert resolve_gateway_id(None, tmp_path) == "moved-gateway"


@pytest.mark.parametrize("content", ["", "not valid!\n", "\xff"])
def test_a_corrupt_file_is_a_platform_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / GATEWAY_ID_FILE
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(PlatformError, match=re.escape(str(path))):
        resolve_gateway_id(None, tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories anyway")
def test_an_unwritable_state_dir_is_a_platform_error(tmp_path: Path) -> None:
    tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(PlatformError, match="cannot store the gateway id"):
            resolve_gateway_id(None, tmp_path)
    finally:
        tmp_path.chmod(stat.S_IRWXU)


def test_a_state_dir_that_is_a_file_is_a_platform_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("")
    with pytest.raises(PlatformError, match=r"cannot read the gateway id .*Not a directory"):
        resolve_gateway_id(None, blocker)
