"""Schema governance: ``schemas/events/`` may only change in ways old consumers can read.

The first test is the guard: it fails when a schema changed incompatibly against the
released snapshot (``schemas/events-released.json``). The others show what it catches.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fleet.compat import RELEASED, check_folder, incompatibilities, record

EVENTS = RELEASED.parent / "events"
RELEASED_SCHEMAS: dict[str, Any] = json.loads(RELEASED.read_text())


def test_no_schema_in_schemas_events_breaks_old_consumers() -> None:
    broken = check_folder(EVENTS, RELEASED_SCHEMAS)
    assert broken == {}, (
        "an event schema changed in a way old consumers could not read; give the new version a "
        f"new type name (.v2) instead: {broken}"
    )


def test_every_schema_is_recorded_as_released() -> None:
    missing = {p.stem for p in EVENTS.glob("edgegw.*.json")} - set(RELEASED_SCHEMAS)
    assert not missing, f"record the new types: python -m fleet.compat --record ({sorted(missing)})"


READING = RELEASED_SCHEMAS["edgegw.reading.v1"]


def _changed(change: Any) -> dict[str, Any]:
    schema: dict[str, Any] = copy.deepcopy(READING)
    change(schema)
    return schema


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s["properties"].pop("unit"), "unit: field removed"),
        (lambda s: s["properties"]["ts"].update(type="string"), "ts: retyped"),
        (lambda s: s["properties"]["unit"].update(type="string"), "unit: retyped"),
        (lambda s: s["properties"]["value"]["oneOf"].pop(), "value: retyped"),
        (lambda s: s["required"].append("room"), "room: new required field"),
        (lambda s: (s["properties"].update(room={"type": "string"}), s["required"].append("room")),
         "room: new required field"),
        (lambda s: s["required"].remove("unit"), "unit: required field made optional"),
        (lambda s: s["properties"]["device_id"].update(pattern="^[a-z]+$"), "device_id: constraint changed"),
        (lambda s: s["properties"]["device_id"].pop("pattern"), "device_id: constraint changed"),
        (lambda s: s["properties"]["metric"].update(minLength=3), "metric: constraint changed"),
        (lambda s: s["properties"]["ts"].update(minimum=0), "ts: constraint changed"),
    ],
)  # fmt: skip
def test_incompatible_changes_are_named(change: Any, problem: str) -> None:
    found = incompatibilities(READING, _changed(change))
    assert any(p.startswith(problem) for p in found), found


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["properties"].update(room={"type": "string"}),  # a new optional field
        lambda s: s["properties"]["metric"].update(description="what is measured"),
        lambda s: s.update(description="changed wording"),
    ],
)
def test_compatible_changes_pass(change: Any) -> None:
    assert incompatibilities(READING, _changed(change)) == []


def test_a_new_optional_field_is_read_by_the_view_built_for_the_old_schema() -> None:
    """Why a new optional field is compatible: the view reads tolerantly (unknown fields are
    ignored), although the schema says ``additionalProperties: false`` for producers."""
    from fleet.schemas import Validators  # noqa: PLC0415 - the fleet extra

    old_view = Validators({"edgegw.reading.v1": READING})
    event = {"device_id": "t1", "metric": "temperature", "value": 21.5, "unit": "°C", "ts": 1.0,
             "received_at": 1.0, "clock_synced": True}  # fmt: skip
    assert old_view.check("edgegw.reading.v1", {**event, "room": "hall"}) is None
    assert old_view.check("edgegw.reading.v1", {**event, "device_id": "t 1"}) is not None  # still checked


def test_nested_fields_are_checked_too() -> None:
    beat = RELEASED_SCHEMAS["edgegw.heartbeat.v1"]
    changed = copy.deepcopy(beat)
    changed["properties"]["spool"]["properties"].pop("dropped")
    assert incompatibilities(beat, changed) == ["spool.dropped: field removed"]


def test_the_guard_fails_on_an_edited_folder_and_record_adds_only_new_types(tmp_path: Path) -> None:
    folder = tmp_path / "events"
    shutil.copytree(EVENTS, folder)
    schema = json.loads((folder / "edgegw.command.v1.json").read_text())
    schema["properties"].pop("rule_id")
    (folder / "edgegw.command.v1.json").write_text(json.dumps(schema))
    (folder / "edgegw.reading.v1.json").unlink()
    assert check_folder(folder, RELEASED_SCHEMAS) == {
        "edgegw.command.v1": ["rule_id: field removed"],
        "edgegw.reading.v1": ["type removed: its events in the log could no longer be validated"],
    }
    released = tmp_path / "released.json"
    released.write_text(RELEASED.read_text())
    (folder / "edgegw.reading.v2.json").write_text(json.dumps(READING))
    assert record(folder, released) == ["edgegw.reading.v2"]
    assert json.loads(released.read_text())["edgegw.command.v1"] == RELEASED_SCHEMAS["edgegw.command.v1"]
