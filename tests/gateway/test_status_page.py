"""The status page in a real headless chromium, against a real ``edgegw run`` with the
demo fleet publishing to a real Mosquitto (issue 14).

What a user opening ``http://<gateway>:<port>/`` would notice: every device with the last
values the fleet sent, every rule with its state; a rule that fires shows up as fired,
with its explain trace, its command and its event, without reloading the page. The
screenshot is kept in ``test-artifacts/`` (docs/images/status-page.png is one of them).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators.fleet import FleetSpec
from simulators.generator import FleetGenerator
from simulators.testbed import Mosquitto
from tests.gateway.conftest import (
    DEMO_FLEET,
    DEMO_RULES,
    Gateway,
    gateway_config,
    publish,
    simulate,
    write_config,
)

pytestmark = [pytest.mark.mqtt]

COUNT, RATE = 300, 400.0
PROBE_DEVICE = {"id": "probe", "topic": "test/probe/temperature", "profile": "plain", "unit": "°C"}
PROBE_ACTUATOR = {"id": "probe/siren", "profile": "json", "topic": "test/probe/siren/set"}
PROBE_RULE = {
    "id": "probe-hot",
    "description": "the probe is above 30 °C",
    "when": {"sensor": "probe/temperature", "above": 30},
    "then": [
        {"set": "probe/siren", "to": {"state": "on"}},
        {"emit": {"severity": "warning", "message": "probe hot"}},
    ],
}


def until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def js_text(value: Any) -> str:
    """What the page's ``fmt`` shows: numbers rounded to 2 decimals, as JavaScript prints them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        rounded = math.floor(value * 100 + 0.5) / 100
        return str(int(rounded)) if float(rounded).is_integer() else repr(rounded)
    return str(value)


def fleet_last_values(count: int, rate: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for message in FleetGenerator(FleetSpec.load(DEMO_FLEET), rate=rate).take(count):
        for metric, value in message.readings:
            out.setdefault(message.device_id, {})[metric] = value
    return out


def first_above(count: int, rate: float, device: str, metric: str, threshold: float) -> float:
    """The fleet's first value of ``device/metric`` above ``threshold``: what fires a demo rule."""
    for message in FleetGenerator(FleetSpec.load(DEMO_FLEET), rate=rate).take(count):
        for name, value in message.readings:
            if message.device_id == device and name == metric and float(value) > threshold:
                return float(value)
    raise AssertionError(f"the fleet never sends {device}/{metric} above {threshold}")


def test_page_shows_the_fleet_and_a_rule_firing_live(
    broker: Mosquitto, tmp_path: Path, http_port: int, gateways: Any, browser_page: Any, artifacts_dir: Path
) -> None:
    config = gateway_config(tmp_path, (broker.host, broker.port), http_port=http_port, include=[DEMO_RULES],
                            rules=[PROBE_RULE])  # fmt: skip
    config["devices"] = [*config["devices"], PROBE_DEVICE]
    config["actuators"] = [*config["actuators"], PROBE_ACTUATOR]  # not the shared DEMO_ACTUATORS list
    gateway: Gateway = gateways(write_config(tmp_path / "edgegw.yaml", config), http_port).start()
    simulate(broker, count=COUNT, rate=RATE)
    expected = fleet_last_values(COUNT, RATE)
    page = browser_page

    def api() -> dict[str, Any]:
        status, body = gateway.get("/api/status")
        assert status == 200
        return dict(json.loads(body))

    def taken_all() -> bool:
        seen = {d["id"]: {v["metric"]: v["value"] for v in d["values"]} for d in api()["devices"]}
        return all(seen.get(dev, {}).get(m) == v for dev, ms in expected.items() for m, v in ms.items())

    until(taken_all, "the gateway has the fleet's last values")
    page.goto(f"http://127.0.0.1:{http_port}/")
    page.wait_for_selector("#devices tr[data-device]")
    page.evaluate("() => { window.__loaded_once = true; }")

    # every device of the fleet, with the last value of each metric the fleet sent
    for device, metrics in expected.items():
        row = page.locator(f'tr[data-device="{device}"]')
        for metric, value in metrics.items():
            cell = row.locator(f'[data-metric="{metric}"] b')
            cell.wait_for()
            assert cell.inner_text() == js_text(value), (device, metric)
        assert row.locator(".badge").first.inner_text() == "online"
    assert page.locator("#gateway-id").inner_text() == config["gateway"]["id"]
    rule_ids = {r["id"] for r in api()["rules"]}
    assert {"bedroom-fan", "hall-motion-light", "probe-hot"} <= rule_ids
    for rule_id in rule_ids:
        assert page.locator(f'#rules tr[data-rule="{rule_id}"]').count() == 1
    probe_state = page.locator('#rules tr[data-rule="probe-hot"] .state')
    assert probe_state.inner_text() == "idle"
    assert page.locator('tr[data-device="probe"] .badge').first.inner_text() == "unknown"

    # the probe crosses 30 °C: the rule fires and the page shows it without a reload;
    # co2-01 sends something that is not its JSON object: a bad-input line
    publish(broker, [("sensors/co2-01/state", "not an object"), ("test/probe/temperature", 35.5)])
    until(lambda: probe_state.inner_text() == "fired", "the page shows probe-hot fired", timeout=15)
    assert page.evaluate("() => window.__loaded_once") is True  # the same document: no reload
    page.locator('#rules tr[data-rule="probe-hot"] summary').click()
    assert "probe/temperature=35.5" in page.locator('#rules tr[data-rule="probe-hot"] pre').inner_text()
    siren = page.locator('#actuators tr[data-actuator="probe/siren"]')
    until(lambda: "rule probe-hot" in siren.inner_text(), "the page shows the siren's command", timeout=15)
    assert '{"state":"on"}' in siren.inner_text()
    assert "rule probe-hot" in siren.inner_text()
    fired = page.locator('#events li[data-rule="probe-hot"][data-kind="fired"]')
    assert fired.count() == 1
    assert "probe/temperature=35.5" in fired.inner_text()
    assert page.locator('tr[data-device="probe"] [data-metric="temperature"] b').inner_text() == "35.5"
    # a demo rule the fleet fired, with the value of the fleet's reading that fired it
    big_load = first_above(COUNT, RATE, "plug-03", "power", 700)
    fleet_fired = page.locator('#events li[data-rule="big-load-on-plug"][data-kind="fired"]')
    assert f"plug-03/power={js_text(big_load)}" in fleet_fired.inner_text()
    assert page.locator('#rules tr[data-rule="big-load-on-plug"] .state').inner_text() == "fired"
    bad = page.locator("#bad-input li")
    until(lambda: bad.count() > 0 and "co2-01" in bad.first.inner_text(), "the bad input on the page")
    assert page.locator('tr[data-device="co2-01"] td[data-label="Bad input"]').inner_text() == "wrong_type 1"
    page.screenshot(path=str(artifacts_dir / "status-page.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts_dir / "status-page-phone.png"))
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390 + 1, (
        "the page scrolls sideways on a phone"
    )
    gateway.terminate()
