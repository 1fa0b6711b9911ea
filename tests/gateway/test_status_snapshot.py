"""The status document, built from hand-made runtime views (pure: no runtime, no clock)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.status.snapshot import (
    ActuatorView,
    DeviceView,
    LinkView,
    RuleView,
    StatusInputs,
    build_status,
    rule_state,
)

NOW = 1_800_000_000.0


def rule(**changes: Any) -> RuleView:
    base: dict[str, Any] = {
        "id": "r",
        "description": "",
        "fired": False,
        "met": False,
        "blocked": False,
        "waiting_until": None,
        "cooldown_until": None,
        "last_fired": None,
        "failsafe_active": False,
        "devices": ("temp",),
        "fires": 0,
        "trace": {},
    }
    base.update(changes)
    return RuleView(**base)


@pytest.mark.parametrize(
    ("changes", "offline", "state"),
    [
        ({}, set(), "idle"),
        ({"met": True, "waiting_until": NOW + 60}, set(), "waiting on for"),
        ({"met": True, "fired": True, "last_fired": NOW - 5}, set(), "fired"),
        ({"last_fired": NOW - 5, "cooldown_until": NOW + 55}, set(), "cooling down"),
        ({"last_fired": NOW - 70, "cooldown_until": NOW - 10}, set(), "idle"),
        ({"blocked": True}, set(), "held by guard"),
        ({"fired": True}, {"temp"}, "stale"),
        ({"failsafe_active": True}, set(), "stale"),
        ({"fired": True}, {"other"}, "fired"),
    ],
)
def test_rule_states(changes: dict[str, Any], offline: set[str], state: str) -> None:
    assert rule_state(rule(**changes), NOW, offline) == state


def inputs(**changes: Any) -> StatusInputs:
    base: dict[str, Any] = {
        "gateway_id": "hall-pi",
        "version": "1.2.3",
        "now": NOW,
        "started": NOW - 3600,
        "config": {"path": "/etc/edgegw/edgegw.yaml", "fingerprint": "abc", "deployment": None},
        "links": {
            "mqtt": LinkView(True, "up", NOW - 100),
            "kafka": LinkView(False, "backoff", NOW - 7, "down"),
        },
        "spool": {"depth": 12, "oldest_age_s": 7.5},
        "clock_synced": True,
        "healthy": True,
        "devices": [
            DeviceView(
                "temp",
                "json",
                "mqtt",
                "offline",
                NOW - 900,
                41,
                {"temperature": (21.5, NOW - 900)},
                {"invalid_json": 3},
            ),
            DeviceView("door", "plain", "mqtt", "online", NOW - 2, 5, {"contact": (True, NOW - 2)}),
            DeviceView("new", "json", "mqtt", "unknown", None, 0, {}),
        ],
        "rules": [
            rule(id="hot", fired=True, met=True, last_fired=NOW - 30, trace={"outcomes": {"fired": []}})
        ],
        "actuators": [
            ActuatorView(
                "hall/light",
                "json",
                "mqtt",
                {"state": "on"},
                NOW - 30,
                "hot",
                "confirmed",
                sent=1,
                confirmed=1,
            )
        ],
        "events": [{"at": NOW - 30, "kind": "fired", "rule": "hot", "values": {"temp/temperature": 21.5}}],
        "bad_input": [
            {"at": NOW - 60, "device": "temp", "reason": "invalid_json", "detail": "x", "suppressed": 2}
        ],
    }
    base.update(changes)
    return StatusInputs(**base)


def test_status_document() -> None:
    doc = build_status(inputs())
    json.dumps(doc)  # JSON-able as it is
    gw = doc["gateway"]
    assert (gw["id"], gw["version"], gw["uptime_s"]) == ("hall-pi", "1.2.3", 3600)
    assert gw["links"]["kafka"] == {"up": False, "state": "backoff", "since": NOW - 7, "detail": "down"}
    assert gw["spool"] == {"depth": 12, "oldest_age_s": 7.5}
    assert gw["uplink"] is None  # no Kafka
    uplink = {"state": "up", "pid": 4242, "restarts": 1, "last_exit": "signal SIGKILL", "rss_bytes": 56 << 20}
    assert build_status(inputs(uplink=uplink))["gateway"]["uplink"] == uplink
    assert doc["summary"]["devices"] == {"offline": 1, "online": 1, "unknown": 1}
    temp = doc["devices"][0]
    assert temp["values"] == [{"metric": "temperature", "value": 21.5, "at": NOW - 900}]
    assert (temp["bad_input"], temp["bad_input_total"]) == ({"invalid_json": 3}, 3)
    # the rule reads an offline device: its state is stale, whatever it did last
    assert doc["rules"][0]["state"] == "stale"
    assert doc["summary"]["rules"] == {"stale": 1}
    light = doc["actuators"][0]
    assert (light["last_command"], light["rule"], light["confirmed"]) == ({"state": "on"}, "hot", True)
    assert doc["events"][0]["rule"] == "hot"
    assert doc["bad_input"][0]["suppressed"] == 2


def test_unconfirmed_and_unknown_read_back() -> None:
    acts = [ActuatorView("a", "json", "mqtt", {"x": 1}, NOW, None, "unconfirmed"),
            ActuatorView("b", "json", "mqtt", None, None, None, None)]  # fmt: skip
    doc = build_status(inputs(actuators=acts))
    assert [a["confirmed"] for a in doc["actuators"]] == [False, None]
