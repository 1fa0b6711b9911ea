"""The deployment and command policy, table-driven: keys, versions, refused sections, commands."""

from __future__ import annotations

import json

import pytest

from gateway.deploy.policy import (
    Candidate,
    RemoteCommand,
    choose,
    decide_command,
    is_new,
    keys_for,
    parse_command,
    refused_sections,
)

KEYS = keys_for("hall-pi", ["ground-floor", "pis"])


def test_keys_are_own_then_groups() -> None:
    assert KEYS == ("hall-pi", "group/ground-floor", "group/pis")


def _c(key: str, version: int | None) -> Candidate:
    return Candidate(key, version, f"{key}:{version}".encode())


@pytest.mark.parametrize(
    ("candidates", "winner"),
    [
        ([], None),
        ([("hall-pi", 3)], ("hall-pi", 3)),
        ([("hall-pi", 3), ("group/pis", 5)], ("group/pis", 5)),
        ([("hall-pi", 5), ("group/pis", 5)], ("hall-pi", 5)),  # a tie: the own key wins
        ([("group/pis", 5), ("group/ground-floor", 5)], ("group/ground-floor", 5)),  # config order
        ([("other-pi", 9), ("group/attic", 9), ("hall-pi", 2)], ("hall-pi", 2)),  # not ours: never
        ([("hall-pi", None), ("group/pis", 4)], ("group/pis", 4)),
        ([("hall-pi", None)], ("hall-pi", None)),  # chosen, to be rejected with its reason
    ],
)
def test_choose_the_newest_of_own_and_group_keys(
    candidates: list[tuple[str, int | None]], winner: tuple[str, int | None] | None
) -> None:
    found = choose({k: _c(k, v) for k, v in candidates}, KEYS)
    assert (None if found is None else (found.key, found.version)) == winner


@pytest.mark.parametrize(
    ("version", "decided", "new"),
    [(1, 0, True), (2, 1, True), (2, 2, False), (1, 2, False), (None, 0, False)],
)
def test_only_a_version_above_the_decided_one_is_new(version: int | None, decided: int, new: bool) -> None:
    assert is_new(version, decided) is new


@pytest.mark.parametrize(
    ("sections", "refused"),
    [
        ({"version": 1, "rules": []}, []),
        ({"version": 1, "rules": [], "devices": [], "actuators": [], "location": {}}, []),
        ({"version": 1, "bridge": {}}, ["bridge"]),
        ({"version": 1, "gateway": {}, "http": {}, "mqtt": {}}, ["gateway", "http", "mqtt"]),
        ({"version": 1, "include": [], "cloud": {}, "log": {}}, ["include", "cloud", "log"]),
        ({"version": 1, "ruless": []}, ["ruless"]),
    ],
)
def test_sections_a_document_may_not_hold(sections: dict[str, object], refused: list[str]) -> None:
    found = refused_sections(sections)
    assert [k for k, _ in found] == refused
    assert all(reason for _, reason in found)


NOW = 1_780_000_000.0
DECLARED = {"living-room/ac", "garage/light"}


def _cmd(**over: object) -> bytes:
    data: dict[str, object] = {
        "command_id": "c-1",
        "actuator": "garage/light",
        "payload": {"state": "on"},
        "expires_at": NOW + 60,
    }
    data.update(over)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("raw", "seen", "action"),
    [
        (_cmd(), set(), "execute"),
        (_cmd(), {"c-1"}, "duplicate"),
        (_cmd(expires_at=NOW - 1), set(), "expired"),
        (_cmd(expires_at=NOW), set(), "expired"),
        (_cmd(actuator="attic/fan"), set(), "refused"),
    ],
)
def test_command_verdicts(raw: bytes, seen: set[str], action: str) -> None:
    command = parse_command(raw, 4096)
    assert isinstance(command, RemoteCommand)
    assert decide_command(command, seen=seen, declared=DECLARED, now=NOW).action == action


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[1]", "not a JSON object"),
        (b"{", "not a JSON object"),
        (_cmd(command_id=None), "command_id"),
        (_cmd(payload={}), "payload"),
        (_cmd(payload="on"), "payload"),
        (_cmd(expires_at=None), "expires_at"),
        (_cmd(expires_at="tomorrow"), "expires_at"),
        (_cmd(extra=1), "unknown fields: extra"),
        (b"{" + b" " * 5000 + b"}", "larger than max_command_bytes"),
    ],
)
def test_bad_commands_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    result = parse_command(raw, 4096)
    assert isinstance(result, tuple)
    assert reason in result[1]
