"""Schema governance: which changes to an event schema old consumers could not read.

A type name (``edgegw.reading.v1``) is a promise: once events of it are in the log, a
consumer written for it must read every later event of it, and a consumer written for a
later version must still read the old events a rebuild replays. So a schema may gain
optional fields and nothing else; a change that breaks either side gets a new type name
(``.v2``). :func:`incompatibilities` lists what breaks:

- a field removed (old consumers that need it find it gone);
- a field retyped (its ``type``, ``oneOf`` types, ``const`` or ``enum`` changed);
- a constraint of a field changed (``pattern``, ``format``, ``minimum``, ``maximum``,
  ``minLength``, ``maxLength``, ``minItems``, ``maxItems``...): tighter, old events in the
  log fail it; looser, new events fail the old consumers' copy;
- a new required field (old events in the log do not have it);
- a required field made optional (old consumers that need it may not find it);
- a type removed altogether (its events in the log could no longer be validated).

A new optional field is safe because consumers read tolerantly: the fleet view ignores
fields it does not know (it compiles the schemas without ``additionalProperties: false``,
:func:`fleet.schemas._tolerant`); only edgegw's own tests hold producers to the strict
schemas.

The released schemas are kept in ``schemas/events-released.json`` (written by
``python -m fleet.compat --record``, which adds new types and never changes a recorded
one), so the check needs no git history and works in any fresh clone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["RELEASED", "check_folder", "incompatibilities", "record"]

RELEASED = Path(__file__).resolve().parents[1] / "schemas" / "events-released.json"


def _types(schema: Mapping[str, Any]) -> tuple[Any, ...]:
    """What values a schema admits, as a comparable summary of its typing keywords."""
    t = schema.get("type")
    types = tuple(sorted([t] if isinstance(t, str) else t or []))
    branches = tuple(sorted(json.dumps(_types(b), sort_keys=True) for b in schema.get("oneOf", [])))
    enum = tuple(sorted(map(json.dumps, schema.get("enum", []))))
    const = json.dumps(schema["const"]) if "const" in schema else None
    return types, branches, enum, const


def incompatibilities(old: Mapping[str, Any], new: Mapping[str, Any], path: str = "") -> list[str]:
    """What in ``new`` old consumers (or new consumers of old events) could not read."""
    where = path or "data"
    problems: list[str] = []
    if _types(old) != _types(new):
        problems.append(f"{where}: retyped ({_describe(old)} -> {_describe(new)})")
        return problems
    if _constraints(old) != _constraints(new):
        problems.append(f"{where}: constraint changed ({json.dumps(_constraints(old), sort_keys=True)} -> "
                        f"{json.dumps(_constraints(new), sort_keys=True)})")  # fmt: skip
    old_props: Mapping[str, Any] = old.get("properties", {})
    new_props: Mapping[str, Any] = new.get("properties", {})
    for name, sub in old_props.items():
        child = f"{path}.{name}" if path else name
        if name not in new_props:
            problems.append(f"{child}: field removed")
        else:
            problems += incompatibilities(sub, new_props[name], child)
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        problems.append(f"{f'{path}.{name}' if path else name}: new required field")
    for name in sorted(set(old.get("required", [])) - set(new.get("required", []))):
        if name in new_props:  # a removed field is reported above
            problems.append(f"{f'{path}.{name}' if path else name}: required field made optional")
    for key in ("additionalProperties", "items"):
        o, n = old.get(key), new.get(key)
        if isinstance(o, Mapping) and isinstance(n, Mapping):
            problems += incompatibilities(o, n, f"{where}[{key}]")
    return problems


CONSTRAINTS = (
    "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
)  # fmt: skip


def _constraints(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {k: schema[k] for k in CONSTRAINTS if k in schema}


def _describe(schema: Mapping[str, Any]) -> str:
    keys = ("type", "oneOf", "enum", "const")
    return json.dumps({k: schema[k] for k in keys if k in schema}, sort_keys=True)


def _load_folder(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("edgegw.*.json"))}


def check_folder(folder: Path, released: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{ce_type: problems}`` of every released type that the folder breaks."""
    current = _load_folder(folder)
    out: dict[str, list[str]] = {}
    for ce_type, old in released.items():
        if ce_type not in current:
            out[ce_type] = ["type removed: its events in the log could no longer be validated"]
            continue
        problems = incompatibilities(old, current[ce_type])
        if problems:
            out[ce_type] = problems
    return out


def record(folder: Path, released_file: Path) -> list[str]:
    """Add the folder's types that are not recorded yet; the types added."""
    released = json.loads(released_file.read_text()) if released_file.exists() else {}
    added = [t for t in _load_folder(folder) if t not in released]
    current = _load_folder(folder)
    for ce_type in added:
        released[ce_type] = current[ce_type]
    released_file.write_text(json.dumps(dict(sorted(released.items())), indent=2) + "\n")
    return added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.compat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="add new types to the released schemas")
    args = parser.parse_args(argv)
    folder = RELEASED.parent / "events"
    if args.record:
        print("recorded:", ", ".join(record(folder, RELEASED)) or "nothing new")
        return 0
    broken = check_folder(folder, json.loads(RELEASED.read_text()))
    for ce_type, problems in broken.items():
        for problem in problems:
            print(f"{ce_type}: {problem}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
