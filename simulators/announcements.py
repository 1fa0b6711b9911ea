"""Retained announcements of a simulated Zigbee2MQTT bridge, Tasmota devices and HA configs.

In the shape the real ones publish them (Zigbee2MQTT 1.3x ``bridge/devices``; Tasmota 12
``tasmota/discovery/<mac>/config`` and ``.../sensors``), trimmed to the keys that matter,
for ``edgegw discover``'s tests and demos::

    for topic, payload in zigbee2mqtt_announcements("zigbee2mqtt"): publish(topic, payload, retain=True)
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "HOMEASSISTANT_CONFIGS",
    "TASMOTA_DEVICES",
    "ZIGBEE_DEVICES",
    "homeassistant_announcements",
    "tasmota_announcements",
    "zigbee2mqtt_announcements",
]

R, RW, RWG, WO = 1, 7, 7, 2  # access bits: 1 published, 2 settable, 4 gettable


def _num(prop: str, unit: str | None = None, access: int = R, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "numeric", "name": prop, "property": prop, "label": prop.title(),
                           "access": access, **extra}  # fmt: skip
    if unit:
        out["unit"] = unit
    return out


def _bin(prop: str, on: Any = True, off: Any = False, access: int = R, **extra: Any) -> dict[str, Any]:
    return {"type": "binary", "name": prop, "property": prop, "label": prop.title(), "access": access,
            "value_on": on, "value_off": off, **extra}  # fmt: skip


def _enum(prop: str, values: list[str], access: int = R, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": prop, "property": prop, "label": prop.title(), "access": access,
            "values": values, **extra}  # fmt: skip


_LQI = _num("linkquality", "lqi", category="diagnostic", value_min=0, value_max=255)
_BATTERY = _num("battery", "%", category="diagnostic", value_min=0, value_max=100)
_STATE = {"type": "binary", "name": "state", "property": "state", "label": "State", "access": RWG,
          "value_on": "ON", "value_off": "OFF", "value_toggle": "TOGGLE"}  # fmt: skip

ZIGBEE_DEVICES: dict[str, dict[str, Any]] = {
    # friendly name: (definition), one per kind the issue lists
    "Living Room Climate": {"vendor": "Aqara", "model": "WSDCGQ11LM", "exposes": [
        _BATTERY, _num("temperature", "°C"), _num("humidity", "%"), _num("pressure", "hPa"), _LQI]},
    "Front Door": {"vendor": "Aqara", "model": "MCCGQ11LM", "exposes": [
        _BATTERY, _bin("contact", on=False, off=True), _num("device_temperature", "°C"), _LQI]},
    "Hall Motion": {"vendor": "Philips", "model": "9290012607", "exposes": [
        _bin("occupancy"), _num("illuminance_lux", "lx"), _num("temperature", "°C"), _BATTERY,
        _num("occupancy_timeout", "s", access=RW, category="config"), _LQI]},
    "Kitchen/Coffee Plug": {"vendor": "Innr", "model": "SP 234", "exposes": [
        {"type": "switch", "features": [_STATE]}, _num("power", "W"), _num("energy", "kWh"),
        _num("voltage", "V"), _num("current", "A"),
        _enum("power_on_behavior", ["off", "on", "toggle", "previous"], access=RW, category="config"), _LQI]},
    "Desk Bulb": {"vendor": "IKEA", "model": "LED1545G12", "exposes": [
        {"type": "light", "features": [_STATE,
            _num("brightness", access=RWG, value_min=0, value_max=254),
            _num("color_temp", "mired", access=RWG, value_min=250, value_max=454),
            {"type": "composite", "name": "color_xy", "property": "color", "access": RWG, "features": [
                _num("x", access=RWG), _num("y", access=RWG)]}]},
        _enum("effect", ["blink", "breathe", "okay"], access=WO), _LQI]},
    "Bedroom Thermostat": {"vendor": "Danfoss", "model": "014G2461", "exposes": [
        {"type": "climate", "features": [
            _num("occupied_heating_setpoint", "°C", access=RWG, value_min=5, value_max=35, value_step=0.5),
            _num("local_temperature", "°C", access=5),
            _enum("system_mode", ["heat"], access=RWG),
            _enum("running_state", ["idle", "heat"], access=5)]},
        _BATTERY, _LQI]},
    "Living Room Blind": {"vendor": "IKEA", "model": "E1757", "exposes": [
        {"type": "cover", "features": [
            _enum("state", ["OPEN", "CLOSE", "STOP"], access=3),
            _num("position", "%", access=RWG, value_min=0, value_max=100)]},
        _BATTERY, _LQI]},
    "Bedside Button": {"vendor": "IKEA", "model": "E1743", "exposes": [
        _BATTERY, _enum("action", ["on", "off", "brightness_move_up", "brightness_stop"]), _LQI]},
}


def zigbee2mqtt_announcements(base: str = "zigbee2mqtt") -> list[tuple[str, bytes]]:
    """``<base>/bridge/devices``: the coordinator and the devices of :data:`ZIGBEE_DEVICES`."""
    listed: list[dict[str, Any]] = [{
        "ieee_address": "0x00124b0018ed1c2f", "type": "Coordinator", "network_address": 0,
        "friendly_name": "Coordinator", "definition": None, "supported": True, "disabled": False,
        "interview_completed": True, "endpoints": {}}]  # fmt: skip
    for n, (name, definition) in enumerate(ZIGBEE_DEVICES.items(), start=1):
        listed.append({
            "ieee_address": f"0x00158d00{n:08x}", "type": "EndDevice" if "battery" in json.dumps(definition)
            else "Router", "network_address": 1000 + n, "friendly_name": name, "supported": True,
            "disabled": False, "interview_completed": True, "model_id": definition["model"],
            "definition": {"description": name, "model": definition["model"], "vendor": definition["vendor"],
                           "supports_ota": False, "exposes": definition["exposes"], "options": []},
        })  # fmt: skip
    return [(f"{base}/bridge/devices", json.dumps(listed).encode())]


TASMOTA_DEVICES: dict[str, dict[str, Any]] = {
    # mac: (config overrides, SENSOR sample)
    "A4CF12B0C1D2": {"dn": "Washing Machine", "md": "Sonoff S31", "rl": [1, 0, 0, 0, 0, 0, 0, 0],
                     "sn": {"ENERGY": {"TotalStartTime": "2024-01-01T00:00:00", "Total": 12.5,
                                       "Yesterday": 0.4, "Today": 0.1, "Power": 0, "ApparentPower": 0,
                                       "ReactivePower": 0, "Factor": 0.0, "Voltage": 231, "Current": 0.0}}},
    "A4CF12B0C1D3": {"dn": "Garage Sensor", "md": "Generic", "rl": [0, 0, 0, 0, 0, 0, 0, 0],
                     "sn": {"AM2301": {"Temperature": 14.2, "Humidity": 71.0, "DewPoint": 9.1},
                            "TempUnit": "C"}},
}  # fmt: skip


def tasmota_announcements(
    prefix: str = "tasmota/discovery", topics: dict[str, str] | None = None
) -> list[tuple[str, bytes]]:
    """``<prefix>/<mac>/config`` and ``.../sensors`` of :data:`TASMOTA_DEVICES`; ``topics``
    gives each mac's device topic (default ``tasmota_<last 6 of the mac>``)."""
    out: list[tuple[str, bytes]] = []
    for mac, spec in TASMOTA_DEVICES.items():
        topic = (topics or {}).get(mac, f"tasmota_{mac[-6:]}")
        config = {
            "ip": "192.168.1.50", "dn": spec["dn"], "fn": [spec["dn"]] + [None] * 7,
            "hn": f"{topic}-{mac[-4:]}", "mac": mac, "md": spec["md"], "ty": 0, "if": 0, "ofln": "Offline",
            "onln": "Online", "state": ["OFF", "ON", "TOGGLE", "HOLD"], "sw": "12.5.0", "t": topic,
            "ft": "%prefix%/%topic%/", "tp": ["cmnd", "stat", "tele"], "rl": spec["rl"],
            "swc": [-1] * 8, "swn": [None] * 8, "btn": [0] * 8, "so": {"4": 0, "11": 0, "13": 0, "17": 0},
            "lk": 0, "lt_st": 0, "sho": [0, 0, 0, 0], "sht": [[0, 0, 0]] * 4, "ver": 1,
        }  # fmt: skip
        sensors = {"sn": {"Time": "2024-05-01T12:00:00", **spec["sn"]}, "ver": 1}
        out.append((f"{prefix}/{mac}/config", json.dumps(config).encode()))
        out.append((f"{prefix}/{mac}/sensors", json.dumps(sensors).encode()))
    return out


HOMEASSISTANT_CONFIGS: dict[str, dict[str, Any]] = {
    # <component>/[<node_id>/]<object_id>: config, of a device that is neither Zigbee2MQTT
    # nor Tasmota (an ESPHome-style weather station and a relay board; abbreviated keys, as
    # ESPHome writes them)
    "sensor/weather_station/temperature": {
        "name": "Temperature", "uniq_id": "ws1-temperature", "stat_t": "home/weather/state",
        "val_tpl": "{{ value_json.temperature }}", "unit_of_meas": "°C", "dev_cla": "temperature",
        "stat_cla": "measurement",
        "dev": {"ids": ["ws1"], "name": "Weather Station", "mf": "ACME", "mdl": "WS-1"}},
    "switch/pump_relay/relay": {
        "name": "Relay", "uniq_id": "pr1-relay", "~": "home/pump", "cmd_t": "~/set", "stat_t": "~/state",
        "pl_on": "ON", "pl_off": "OFF",
        "dev": {"ids": ["pr1"], "name": "Pump Relay", "mf": "ACME", "mdl": "PR-1"}},
}  # fmt: skip


def homeassistant_announcements(prefix: str = "homeassistant") -> list[tuple[str, bytes]]:
    """``<prefix>/<component>/[<node_id>/]<object_id>/config`` of :data:`HOMEASSISTANT_CONFIGS`."""
    return [(f"{prefix}/{key}/config", json.dumps(c).encode()) for key, c in HOMEASSISTANT_CONFIGS.items()]
