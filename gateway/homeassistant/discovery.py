"""What edgegw announces to Home Assistant, and what HA's commands mean. Pure.

Device-based discovery: one retained JSON on ``<discovery_topic>/device/<node>/config``
per HA device, its entities under ``components``:

- the gateway (node ``edgegw_<gateway>``): a ``binary_sensor`` (``problem``) per rule
  with an ``emit`` action, on while the rule is fired;
- each edgegw device (node ``edgegw_<gateway>_<device>``): a ``sensor`` per metric
  (unit and device class where the config or the profile knows them; a ``binary_sensor``
  for true/false metrics), state from ``<base>/devices/<device>/state``;
- each declared actuator, in the HA device of its id's first part (``hall/light`` goes
  to ``hall``): a ``switch``, ``light`` (JSON schema) or ``climate`` whose command topics
  are edgegw's own (``<base>/actuators/<id>/set``...), never the device's: edgegw checks
  the command and sends it through the actuator, logs it and ships it like a rule's.

Devices and actuators of profile ``zigbee2mqtt`` are left out unless
``include_zigbee2mqtt``: Zigbee2MQTT announces them itself. Availability: the gateway's
topic (retained, with a last will) and, per device, the device's own (from edgegw's
online tracking), both required (``availability_mode: all``).

Ids are ``[a-zA-Z0-9_-]`` (anything else becomes ``_``) and depend on nothing but the
gateway id and the config ids, so they stay the same across restarts and reloads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devices.profiles import TASMOTA_UNITS, Z2M_UNITS
from gateway.homeassistant.config import HaActuator

if TYPE_CHECKING:
    from devices.config import ActuatorConfig, DeviceConfig
    from gateway.config import GatewayConfig

__all__ = ["CommandTarget", "Plan", "ResolvedActuator", "RuleInfo", "Topics", "plan",
           "safe_id"]  # fmt: skip

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
SUPPORT_URL = "https://example.invalid/edgegw/docs/home-assistant.md"
SENSOR_CLASSES: dict[str, tuple[str, frozenset[str]]] = {
    "temperature": ("temperature", frozenset({"°C", "°F", "K"})),
    "humidity": ("humidity", frozenset({"%"})),
    "pressure": ("pressure", frozenset({"Pa", "hPa", "kPa", "bar", "mbar", "psi", "inHg", "mmHg"})),
    "co2": ("carbon_dioxide", frozenset({"ppm"})),
    "illuminance": ("illuminance", frozenset({"lx"})),
    "lux": ("illuminance", frozenset({"lx"})),
    "power": ("power", frozenset({"W", "kW"})),
    "energy": ("energy", frozenset({"Wh", "kWh", "MWh"})),
    "total": ("energy", frozenset({"Wh", "kWh", "MWh"})),
    "voltage": ("voltage", frozenset({"V", "mV"})),
    "current": ("current", frozenset({"A", "mA"})),
    "battery": ("battery", frozenset({"%"})),
    "pm25": ("pm25", frozenset({"µg/m³"})),
}
BINARY_CLASSES: dict[str, tuple[str, bool]] = {
    "occupancy": ("occupancy", False), "motion": ("motion", False), "presence": ("presence", False),
    "contact": ("door", True), "door": ("door", False), "window": ("window", False),
    "water_leak": ("moisture", False), "leak": ("moisture", False), "smoke": ("smoke", False),
    "tamper": ("tamper", False), "vibration": ("vibration", False),
}  # fmt: skip
"""metric -> (device class, inverted): a Zigbee ``contact`` is true when the door is closed."""


def safe_id(text: str) -> str:
    return _UNSAFE.sub("_", text)


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    discovery: str
    status: str

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    def device_availability(self, device: str) -> str:
        return f"{self.base}/devices/{device}/availability"

    def device_state(self, device: str) -> str:
        return f"{self.base}/devices/{device}/state"

    def actuator_state(self, actuator: str) -> str:
        return f"{self.base}/actuators/{actuator}/state"

    def command(self, actuator: str, part: str = "") -> str:
        return f"{self.base}/actuators/{actuator}/set" + (f"/{part}" if part else "")

    def rule_state(self, rule: str) -> str:
        return f"{self.base}/rules/{rule}/state"

    def config(self, node: str) -> str:
        return f"{self.discovery}/device/{node}/config"


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What discovery needs of a rule: its id, whether it emits, what it sets."""

    id: str
    description: str = ""
    emits: bool = False
    sensors: tuple[str, ...] = ()
    on_sets: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    """(actuator, payload) of its ``then``."""
    off_sets: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    """(actuator, payload) of its ``else`` and of the ``revert`` of its timed sets."""


@dataclass(frozen=True, slots=True)
class ResolvedActuator:
    id: str
    platform: str
    name: str
    state_key: str
    on_value: Any
    off_value: Any
    brightness: bool
    target_key: str
    min_temp: float
    max_temp: float


@dataclass(frozen=True, slots=True)
class CommandTarget:
    actuator: ResolvedActuator
    part: str
    """``""`` (switch, light), ``mode`` or ``target`` (climate)."""


@dataclass(slots=True)
class Plan:
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Discovery topic -> payload."""
    commands: dict[str, CommandTarget] = field(default_factory=dict)
    devices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Announced edgegw device -> its metrics (the keys of its state document)."""
    actuators: dict[str, ResolvedActuator] = field(default_factory=dict)
    rules: tuple[str, ...] = ()


def _unit(device: DeviceConfig, metric: str) -> str | None:
    for spec in device.fields.values():
        if spec.metric == metric and spec.unit:
            return spec.unit
    if device.profile == "plain" and device.unit and device.metric in (None, metric):
        return device.unit
    if device.profile == "zigbee2mqtt":
        return Z2M_UNITS.get(metric)
    if device.profile == "tasmota":
        last = metric.rsplit("_", 1)[-1]
        if last in ("temperature", "dewpoint"):
            return "°C"
        return next((u or None for k, u in TASMOTA_UNITS.items() if k.lower() == last), None)
    return None


def _kind(device: DeviceConfig, metric: str, seen: Any) -> str:
    for spec in device.fields.values():
        if spec.metric == metric and spec.type != "any":
            return {"number": "number", "bool": "bool", "string": "string"}[spec.type]
    if device.profile == "plain" and device.value_type != "auto" and device.metric in (None, metric):
        return {"number": "number", "bool": "bool", "string": "string"}[device.value_type]
    if isinstance(seen, bool):
        return "bool"
    if isinstance(seen, str):
        return "string"
    if seen is None and metric in BINARY_CLASSES:
        return "bool"
    return "number"


def _title(text: str) -> str:
    words = text.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def _sensor(node: str, device: DeviceConfig, metric: str, seen: Any) -> dict[str, Any]:
    key = json.dumps(metric, ensure_ascii=False)
    entity: dict[str, Any] = {"unique_id": f"{node}_{safe_id(metric)}", "name": _title(metric)}
    kind = _kind(device, metric, seen)
    if kind == "bool":
        device_class, inverted = BINARY_CLASSES.get(metric, (None, False))
        on, off = ("'OFF'", "'ON'") if inverted else ("'ON'", "'OFF'")
        template = f"{{{{ {on} if value_json[{key}] else {off} }}}}"
        entity.update(platform="binary_sensor", value_template=template)
        if device_class:
            entity["device_class"] = device_class
        return entity
    entity.update(platform="sensor", value_template=f"{{{{ value_json[{key}] }}}}")
    if kind == "string":
        return entity
    unit = _unit(device, metric)
    entity["state_class"] = "measurement"
    if unit:
        entity["unit_of_measurement"] = unit
        known = SENSOR_CLASSES.get(metric) or SENSOR_CLASSES.get(metric.rsplit("_", 1)[-1])
        if known is not None and unit in known[1]:
            entity["device_class"] = known[0]
            if known[0] == "energy":
                entity["state_class"] = "total_increasing"
    return entity


def _resolve(cfg: ActuatorConfig, settings: HaActuator, rules: Sequence[RuleInfo]) -> ResolvedActuator:
    ons = [p for r in rules for a, p in r.on_sets if a == cfg.id]
    offs = [p for r in rules for a, p in r.off_sets if a == cfg.id]
    keys = {k for p in ons + offs for k in p}
    platform = settings.platform or (
        "light" if "brightness" in keys else "climate" if keys & {"target", "temperature"} else "switch"
    )
    key = settings.state_key
    on = settings.on_value or next((p[key] for p in ons if key in p), "ON")
    off = settings.off_value or next((p[key] for p in offs if key in p), "OFF")
    target_key = settings.target_key if "target_key" in settings.model_fields_set or "target" in keys else (
        "temperature" if "temperature" in keys else settings.target_key)  # fmt: skip
    name = settings.name or _title(cfg.id.split("/", 1)[-1])
    return ResolvedActuator(cfg.id, platform, name, key, on, off, "brightness" in keys, target_key,
                            settings.min_temp, settings.max_temp)  # fmt: skip


def _actuator_entity(act: ResolvedActuator, node: str, topics: Topics, plan_: Plan) -> dict[str, Any]:
    state = topics.actuator_state(act.id)
    entity: dict[str, Any] = {"platform": act.platform, "unique_id": f"{node}_{safe_id(act.id)}",
                              "name": act.name}  # fmt: skip
    if act.platform == "climate":
        for part in ("mode", "target"):
            plan_.commands[topics.command(act.id, part)] = CommandTarget(act, part)
        entity.update(
            modes=["off", "auto"], mode_command_topic=topics.command(act.id, "mode"),
            mode_state_topic=state, mode_state_template="{{ value_json.mode }}",
            temperature_command_topic=topics.command(act.id, "target"), temperature_state_topic=state,
            temperature_state_template="{{ value_json.target }}", min_temp=act.min_temp,
            max_temp=act.max_temp, temp_step=0.5,
        )
        return entity
    plan_.commands[topics.command(act.id)] = CommandTarget(act, "")
    entity.update(command_topic=topics.command(act.id), state_topic=state)
    if act.platform == "light":
        modes = ["brightness"] if act.brightness else ["onoff"]
        entity.update(schema="json", supported_color_modes=modes)
        if act.brightness:
            entity["brightness"] = True
    else:
        entity.update(value_template="{{ value_json.state }}", payload_on="ON", payload_off="OFF",
                      state_on="ON", state_off="OFF")  # fmt: skip
    return entity


def plan(config: GatewayConfig, *, gateway_id: str, version: str, topics: Topics, rules: Sequence[RuleInfo],
         seen: Mapping[str, Mapping[str, Any]]) -> Plan:  # fmt: skip
    """Every discovery payload for ``config``; ``seen``: device -> metric -> last value."""
    settings = config.homeassistant
    out = Plan()
    gw_node = safe_id(f"edgegw_{gateway_id}")
    origin = {"name": "edgegw", "sw_version": version, "support_url": SUPPORT_URL}
    gateway_device = {"identifiers": [gw_node], "name": f"edgegw {gateway_id}", "manufacturer": "edgegw",
                      "model": "edgegw gateway", "sw_version": version}  # fmt: skip

    def device_payload(name: str, node: str, components: dict[str, Any], *, own: bool,
                       model: str) -> dict[str, Any]:  # fmt: skip
        availability = [{"topic": topics.availability}]
        if own:
            availability.append({"topic": topics.device_availability(name)})
        device = {"identifiers": [node], "name": name, "manufacturer": "edgegw", "model": model,
                  "via_device": gw_node}  # fmt: skip
        payload = {"device": device, "origin": origin, "availability": availability,
                   "availability_mode": "all", "qos": 1, "components": components}  # fmt: skip
        if own:
            payload["state_topic"] = topics.device_state(name)
        return payload

    skip = not settings.include_zigbee2mqtt
    sensors_of: dict[str, set[str]] = {}
    for rule in rules:
        for sensor in rule.sensors:
            owner, _, metric = sensor.partition("/")
            sensors_of.setdefault(owner, set()).add(metric)
    groups: dict[str, dict[str, Any]] = {}
    for device in config.devices:
        if skip and device.profile == "zigbee2mqtt":
            continue
        metrics = {spec.metric for spec in device.fields.values()} | sensors_of.get(device.id, set())
        if device.profile == "plain" and device.metric:
            metrics.add(device.metric)
        values = seen.get(device.id, {})
        metrics |= set(values)
        node = safe_id(f"edgegw_{gateway_id}_{device.id}")
        groups[device.id] = {safe_id(m): _sensor(node, device, m, values.get(m)) for m in sorted(metrics)}
        out.devices[device.id] = tuple(sorted(metrics))
    by_id = {d.id: d for d in config.devices}
    for actuator in config.actuators:
        owner = actuator.id.split("/", 1)[0]
        owner_device = by_id.get(owner)
        z2m = actuator.profile == "zigbee2mqtt" or (
            owner_device is not None and owner_device.profile == "zigbee2mqtt")  # fmt: skip
        if skip and z2m:
            continue
        act = _resolve(actuator, settings.actuators.get(actuator.id, HaActuator()), rules)
        out.actuators[act.id] = act
        node = safe_id(f"edgegw_{gateway_id}_{owner}")
        groups.setdefault(owner, {})[safe_id(act.id)] = _actuator_entity(act, node, topics, out)
    for name, components in groups.items():
        node = safe_id(f"edgegw_{gateway_id}_{name}")
        own = name in out.devices
        model = f"{by_id[name].profile} device via edgegw" if own else "actuators via edgegw"
        out.configs[topics.config(node)] = device_payload(name, node, components, own=own, model=model)
    alarms = {}
    for rule in rules:
        if rule.emits:
            alarms[safe_id(f"rule_{rule.id}")] = {
                "platform": "binary_sensor", "unique_id": f"{gw_node}_rule_{safe_id(rule.id)}",
                "name": f"Rule {rule.id}", "device_class": "problem",
                "state_topic": topics.rule_state(rule.id), "payload_on": "ON", "payload_off": "OFF",
            }
    out.rules = tuple(r.id for r in rules if r.emits)
    if alarms:
        out.configs[topics.config(gw_node)] = {
            "device": gateway_device, "origin": origin, "availability": [{"topic": topics.availability}],
            "qos": 1, "components": alarms,
        }
    return out
