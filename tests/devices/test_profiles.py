"""Payload profiles: table-driven cases, and properties over arbitrary bytes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.config import DeviceConfig
from devices.profiles import build_decoder, parse_timestamp
from gateway.errors import PayloadError

NOW = 1_700_000_000.0


def dev(**kw: Any) -> DeviceConfig:
    kw.setdefault("id", "d1")
    if kw.get("transport") == "serial":
        kw.setdefault("serial", {"port": "/dev/null"})
    else:
        kw.setdefault("topic", "t/d1")
    return DeviceConfig.model_validate(kw)


def values(cfg: DeviceConfig, payload: bytes, topic: str = "t/d1") -> dict[str, object]:
    return {r.metric: r.value for r in build_decoder(cfg).decode(topic, payload, NOW)}


@pytest.mark.parametrize(
    ("cfg", "payload", "expected"),
    [
        (dev(profile="json", fields={"t": "temperature"}), b'{"t": 21.5}', {"temperature": 21.5}),
        (dev(profile="json", fields={"a.b": "x"}), b'{"a": {"b": 3}}', {"x": 3.0}),
        (
            dev(profile="json"),
            b'{"a": 1, "b": true, "c": "on", "d": {"e": 1}}',
            {"a": 1.0, "b": True, "c": "on"},
        ),
        (dev(profile="plain"), b"21.5", {"d1": 21.5}),
        (dev(profile="plain", metric="temp"), b" 7 \n", {"temp": 7.0}),
        (dev(profile="plain", metric="m"), b"true", {"m": True}),
        (dev(profile="plain", metric="m"), b"open", {"m": "open"}),
        (dev(profile="plain", metric="m", value_type="string"), b"42", {"m": "42"}),
        (
            dev(profile="zigbee2mqtt"),
            b'{"temperature": 21, "humidity": 40.5, "battery": 99, "linkquality": 120,'
            b' "update": {"state": "idle"}, "power_on_behavior": null}',
            {"temperature": 21.0, "humidity": 40.5, "battery": 99.0, "linkquality": 120.0},
        ),
        (
            dev(profile="zigbee2mqtt", fields={"occupancy": "motion"}),
            b'{"occupancy": true, "battery": 50}',
            {"motion": True},
        ),
        (
            dev(profile="tasmota", topic="tele/plug/SENSOR"),
            b'{"Time":"2024-01-01T12:00:00","ENERGY":{"TotalStartTime":"2023-01-01T00:00:00","Total":1.5,"Power":45,"Voltage":230},"TempUnit":"C"}',
            {"energy_total": 1.5, "energy_power": 45.0, "energy_voltage": 230.0},
        ),
        (
            dev(profile="tasmota", topic="tele/th/SENSOR", fields={"AM2301.Temperature": "temperature"}),
            b'{"AM2301":{"Temperature":21.3,"Humidity":45.1},"TempUnit":"C"}',
            {"temperature": 21.3},
        ),
        (
            dev(profile="kv", transport="serial"),
            b"temp=21.5,hum=40,door=open,ok=true",
            {"temp": 21.5, "hum": 40.0, "door": "open", "ok": True},
        ),
    ],
)
def test_profiles_decode(cfg: DeviceConfig, payload: bytes, expected: dict[str, object]) -> None:
    topic = cfg.topic or "x"
    assert values(cfg, payload, topic if "+" not in topic else "t/d1") == expected


def test_tasmota_state_and_lwt() -> None:
    cfg = dev(profile="tasmota", topic="tele/plug/+")
    assert values(cfg, b'{"POWER":"ON","Wifi":{"RSSI":60}}', "tele/plug/STATE") == {"power": "ON"}
    assert build_decoder(cfg).decode("tele/plug/LWT", b"Online", NOW) == []


def test_units_and_source_time() -> None:
    cfg = dev(profile="zigbee2mqtt", timestamp_field="last_seen")
    readings = build_decoder(cfg).decode(
        "t/d1", b'{"temperature": 20, "last_seen": "2024-01-01T00:00:00Z"}', NOW
    )
    assert [(r.metric, r.unit, r.ts, r.received_at) for r in readings] == [
        ("temperature", "°C", 1704067200.0, NOW)
    ]
    cfg = dev(profile="json", fields={"v": {"metric": "power", "unit": "W"}}, timestamp_field="ts")
    (reading,) = build_decoder(cfg).decode("t/d1", b'{"v": 3, "ts": 1704067200000}', NOW)
    assert (reading.unit, reading.ts) == ("W", 1704067200.0)


@pytest.mark.parametrize(
    ("cfg", "payload", "reason"),
    [
        (dev(profile="json", fields={"t": "t"}), b"{not json", "invalid_json"),
        (dev(profile="json", fields={"t": "t"}), b'{"t": NaN}', "not_finite"),
        (dev(profile="json", fields={"t": "t"}), b'{"t": Infinity}', "not_finite"),
        (dev(profile="json", fields={"t": "t"}), b'{"t": 1e400}', "not_finite"),
        (dev(profile="json", fields={"t": "t"}), b'{"t": [1]}', "wrong_type"),
        (dev(profile="json", fields={"t": {"metric": "t", "type": "number"}}), b'{"t": "x"}', "wrong_type"),
        (dev(profile="json", fields={"t": "t"}), b'{"u": 1}', "no_values"),
        (dev(profile="json", fields={"t": "t"}), b"[1, 2]", "wrong_type"),
        (dev(profile="json", fields={"t": "t"}), b"\xff\xfe\x00", "not_utf8"),
        (dev(profile="json", fields={"t": "t"}), b"[" * 100_000, "too_large"),
        (dev(profile="json", fields={"t": "t"}, max_payload="1MiB"), b"[" * 100_000, "invalid_json"),
        (
            dev(profile="json", fields={"t": "t"}, timestamp_field="ts"),
            b'{"t": 1, "ts": "yesterday"}',
            "bad_timestamp",
        ),
        (dev(profile="plain"), b"nan", "not_finite"),
        (dev(profile="plain"), b"-inf", "not_finite"),
        (dev(profile="plain"), b"", "wrong_type"),
        (dev(profile="plain"), b"\x01\x02", "wrong_type"),
        (dev(profile="plain", value_type="number"), b"warm", "wrong_type"),
        (dev(profile="plain", max_payload=4), b"12345", "too_large"),
        (dev(profile="zigbee2mqtt"), b'"ON"', "wrong_type"),
        (dev(profile="zigbee2mqtt"), b'{"update": {}}', "no_values"),
        (dev(profile="tasmota", topic="tele/x/SENSOR"), b"{}", "no_values"),
        (dev(profile="kv", transport="serial"), b"temp:21", "bad_format"),
        (dev(profile="kv", transport="serial"), b"t=nan", "not_finite"),
    ],
)
def test_bad_input_is_a_payload_error(cfg: DeviceConfig, payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        build_decoder(cfg).decode(cfg.topic or "", payload, NOW)
    assert info.value.reason == reason


ALL_PROFILES = [
    dev(profile="json", fields={"a": "a", "b.c": "bc"}, timestamp_field="ts"),
    dev(profile="json"),
    dev(profile="plain"),
    dev(profile="plain", value_type="bool"),
    dev(profile="zigbee2mqtt"),
    dev(profile="tasmota", topic="tele/x/+"),
    dev(profile="kv", transport="serial", fields={"a": {"metric": "a", "type": "number"}}),
    dev(profile="kv", transport="serial"),
]
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
    topic=st.sampled_from(["tele/x/SENSOR", "tele/x/STATE", "tele/x/LWT", "t/d1", ""]),
)
def test_no_exception_but_payload_error_escapes(payload: bytes, topic: str) -> None:
    for cfg in ALL_PROFILES:
        try:
            readings = build_decoder(cfg).decode(topic, payload, NOW)
        except PayloadError:
            continue
        for r in readings:
            assert isinstance(r.value, bool | str) or math.isfinite(r.value)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
keys = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
scalars = (
    finite
    | st.booleans()
    | st.from_regex(r"[a-zA-Z][a-zA-Z ]{0,20}", fullmatch=True).filter(
        lambda s: s.strip() == s and s.lower() not in ("true", "false", "nan", "inf", "infinity")
    )
)


@settings(max_examples=200, deadline=None)
@given(state=st.dictionaries(keys, scalars, min_size=1, max_size=8))
def test_zigbee2mqtt_and_json_round_trip(state: dict[str, object]) -> None:
    for cfg in (dev(profile="zigbee2mqtt"), dev(profile="json")):
        assert values(cfg, json.dumps(state).encode()) == state


@settings(max_examples=200, deadline=None)
@given(state=st.dictionaries(keys, scalars, min_size=1, max_size=8))
def test_kv_round_trip(state: dict[str, object]) -> None:
    line = ",".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, float) else v}"
        for k, v in state.items()
    )
    assert values(dev(profile="kv", transport="serial"), line.encode(), "") == state


@settings(max_examples=200, deadline=None)
@given(value=finite | st.booleans())
def test_plain_round_trip(value: float | bool) -> None:
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    assert values(dev(profile="plain", metric="m"), text.encode()) == {"m": value}


def _not_meta(name: str) -> bool:
    return name not in ("Time", "TempUnit", "PressureUnit", "SpeedUnit", "TotalStartTime")


@settings(max_examples=100, deadline=None)
@given(
    sensors=st.dictionaries(
        st.from_regex(r"[A-Z][A-Za-z0-9]{0,8}", fullmatch=True).filter(_not_meta),
        st.dictionaries(
            st.from_regex(r"[A-Z][a-z]{0,8}", fullmatch=True).filter(_not_meta),
            finite,
            min_size=1,
            max_size=3,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_tasmota_round_trip(sensors: dict[str, dict[str, float]]) -> None:
    body = {"Time": "2024-01-01T00:00:00", **sensors, "TempUnit": "C"}
    expected = {f"{s}_{f}".lower(): v for s, fields in sensors.items() for f, v in fields.items()}
    if len(expected) < sum(len(f) for f in sensors.values()):
        return  # two names that only differ in case collapse into one metric
    got = [
        (r.metric, r.value)
        for r in build_decoder(dev(profile="tasmota", topic="tele/x/SENSOR")).decode(
            "tele/x/SENSOR", json.dumps(body).encode(), NOW
        )
    ]
    assert dict(got) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1700000000, 1700000000.0),
        (1700000000123, 1700000000.123),
        ("2024-01-01T00:00:00+01:00", 1704063600.0),
        ("2024-01-01T00:00:00", 1704067200.0),
    ],
)
def test_parse_timestamp(raw: object, expected: float) -> None:
    assert parse_timestamp(raw) == pytest.approx(expected)


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_fast_json_path_decodes_what_the_stdlib_decodes(value: Any) -> None:
    # orjson first, the stdlib for what orjson refuses: together they accept and decode
    # exactly what json.loads does (escaped lone surrogates, ...); integers beyond 64 bits
    # may come back as floats, which is what a reading makes of every number anyway
    from devices.profiles import _json  # noqa: PLC0415 - the private helper under test

    text = json.dumps(value)
    assert _json(text.encode(), 1 << 20) == json.loads(text)
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:  # a lone surrogate written raw: not UTF-8
        with pytest.raises(PayloadError, match="not_utf8"):
            _json(raw, 1 << 20)
    else:
        assert _json(raw, 1 << 20) == expected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b'{"t": NaN}', "not_finite"), (b'{"t": Infinity}', "not_finite"), (b'{"t": 1', "invalid_json"),
     (b'{"t": "\xff"}', "not_utf8")],
)
def test_fast_json_path_keeps_the_reasons(payload: bytes, reason: str) -> None:
    from devices.profiles import _json  # noqa: PLC0415

    with pytest.raises(PayloadError) as err:
        _json(payload, 1 << 20)
    assert err.value.reason == reason
