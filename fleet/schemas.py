"""The event contract: one JSON Schema per ``ce_type`` in ``schemas/events/``.

Validation runs on every event, so the schemas are compiled to Python functions once
(fastjsonschema: ~1-3 µs an event where the reference ``jsonschema`` takes ~30 µs, the
difference between keeping up with 50,000 events/s and not). The schemas use only
keywords that draft-07 shares with 2020-12 (``type``, ``properties``, ``required``,
``additionalProperties``, ``oneOf``, ``const``, ``enum``, ``pattern``, ``minimum``,
``minLength``), so they compile as draft-07.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import fastjsonschema

from fleet.errors import FleetError

__all__ = ["SCHEMA_DIR", "Validators", "load_schemas"]

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas" / "events"
"""The repository's ``schemas/events`` (an editable or source install)."""

_DRAFT7 = "http://json-schema.org/draft-07/schema#"

Validate = Callable[[Any], Any]


def load_schemas(folder: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    """``{ce_type: schema}`` of every ``<ce_type>.json`` in ``folder``."""
    if not folder.is_dir():
        raise FleetError(f"no event schemas in {folder} (set schemas: in the fleet config)")
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FleetError(f"cannot read the event schema {path}: {exc}") from exc
    return out


def _tolerant(schema: Any) -> Any:
    """The same schema without ``additionalProperties: false``: the view reads tolerantly, so
    an event from a newer gateway with a new optional field (which the contract allows, see
    :mod:`fleet.compat`) validates instead of being dead-lettered. The repository's tests
    still check what edgegw produces against the strict schemas."""
    if isinstance(schema, list):
        return [_tolerant(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return {k: _tolerant(v) for k, v in schema.items() if not (k == "additionalProperties" and v is False)}


def _plain_types(schema: Any) -> Any:
    """The same schema with each ``oneOf`` of bare, disjoint types (``number``, ``boolean``,
    ``string``) written as a ``type`` list: they admit exactly the same values, and the
    compiled ``oneOf`` raises and catches an exception for every branch that does not
    match (3 µs of a reading's 4)."""
    if isinstance(schema, list):
        return [_plain_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _plain_types(v) for k, v in schema.items()}
    branches = out.get("oneOf")
    if isinstance(branches, list) and "type" not in out and all(
        isinstance(b, dict) and set(b) == {"type"} and isinstance(b["type"], str) for b in branches
    ):
        types = [b["type"] for b in branches]
        if len(set(types)) == len(types) and not {"number", "integer"} <= set(types):
            del out["oneOf"]
            out["type"] = types
    return out


class Validators:
    """``check(ce_type, data) -> None | reason``: None when ``data`` is valid."""

    def __init__(self, schemas: Mapping[str, Mapping[str, Any]]) -> None:
        self._compiled: dict[str, Validate] = {}
        for ce_type, schema in schemas.items():
            definition = {**_plain_types(_tolerant(schema)), "$schema": _DRAFT7}
            definition.pop("$id", None)
            self._compiled[ce_type] = fastjsonschema.compile(definition)

    @classmethod
    def from_folder(cls, folder: Path = SCHEMA_DIR) -> Validators:
        return cls(load_schemas(folder))

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._compiled)

    def check(self, ce_type: str, data: Any) -> str | None:
        validate = self._compiled.get(ce_type)
        if validate is None:
            return f"unknown ce_type {ce_type!r}"
        try:
            validate(data)
        except fastjsonschema.JsonSchemaException as exc:
            return f"schema {ce_type}: {exc}"
        return None
