"""YAML 1.2 loading with positions, and pydantic validation mapped to ``file:line:column``.

Used for rules files, rule scenarios and (later) the gateway config::

    doc = load_yaml(path)                     # ConfigError on bad YAML or duplicate keys
    model = validate(doc, RulesFile)          # ConfigError with one issue per problem

Values are read as YAML 1.2 (``on``/``off``/``yes``/``no`` stay strings). The loaded
data is plain Python (dict, list, str, int, float, bool, None, datetime); positions
are kept aside, keyed by the key path, so any error that names a path can be located.
Lines and columns are 1-based, as compilers print them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from common.configtypes import SecretRef
from gateway.errors import ConfigError, ConfigIssue
from gateway.messages import SECRET_FORMS, did_you_mean, plain_message, union_message

if TYPE_CHECKING:  # ruamel.yaml loads when a YAML text is parsed: `edgegw run` parses in a child
    from ruamel.yaml import YAML

__all__ = [
    "KeyPath",
    "YamlDocument",
    "format_path",
    "issues_from_validation_error",
    "load_model",
    "load_yaml",
    "parse_yaml",
    "sorted_issues",
    "validate",
]

KeyPath = tuple[str | int, ...]
M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class _Pos:
    key_line: int
    key_column: int
    line: int  # of the value
    column: int


@dataclass(slots=True)
class YamlDocument:
    """Plain data of one YAML document plus where each key and value sits."""

    data: Any
    file: str
    positions: dict[KeyPath, _Pos] = field(default_factory=dict)

    def locate(self, path: Sequence[str | int], *, at_key: bool = False) -> tuple[int, int]:
        """1-based line and column of ``path``, or of its deepest existing parent."""
        probe: KeyPath = tuple(path)
        while probe and probe not in self.positions:
            probe = probe[:-1]
        pos = self.positions.get(probe)
        if pos is None:
            return 1, 1
        if at_key and probe == tuple(path):
            return pos.key_line, pos.key_column
        return pos.line, pos.column

    def sub(self, path: KeyPath) -> Any:
        """The data at ``path`` (``KeyError``/``IndexError`` if it is not there)."""
        node = self.data
        for part in path:
            node = node[part]
        return node

    def issue(self, path: Sequence[str | int], message: str, *, at_key: bool = False) -> ConfigIssue:
        line, column = self.locate(path, at_key=at_key)
        return ConfigIssue(message, file=self.file, line=line, column=column, path=format_path(path))

    def place(self, issues: Iterable[ConfigIssue], prefix: KeyPath = ()) -> list[ConfigIssue]:
        """Give path-only issues (from semantic checks) this file and their position.

        An issue's path is parsed back (``rules[3].when.for``) and looked up under ``prefix``.
        """
        placed = []
        for issue in issues:
            path = (*prefix, *_parse_path(issue.path))
            line, column = self.locate(path)
            placed.append(
                replace(issue, file=self.file, line=line, column=column, path=format_path(path))
            )
        return placed


def sorted_issues(issues: Iterable[ConfigIssue]) -> list[ConfigIssue]:
    """By file (in the order first met), then line and column, as compilers list them."""
    issues = list(issues)
    order: dict[str | None, int] = {}
    for issue in issues:
        order.setdefault(issue.file, len(order))
    return sorted(issues, key=lambda i: (order[i.file], i.line or 0, i.column or 0))


def format_path(path: Sequence[str | int]) -> str:
    """``("rules", 3, "when", "for")`` -> ``rules[3].when.for``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _parse_path(text: str) -> KeyPath:
    parts: list[str | int] = []
    for chunk in text.replace("[", ".[").split("."):
        if not chunk:
            continue
        if chunk.startswith("[") and chunk.endswith("]") and chunk[1:-1].isdigit():
            parts.append(int(chunk[1:-1]))
        else:
            parts.append(chunk)
    return tuple(parts)


def _yaml() -> YAML:
    from ruamel.yaml import YAML  # noqa: PLC0415 - see the TYPE_CHECKING import

    yaml = YAML(typ="rt")
    yaml.version = (1, 2)
    yaml.allow_duplicate_keys = False
    return yaml


def parse_yaml(text: str, file: str = "<string>") -> YamlDocument:
    """Parse one YAML 1.2 document; ``ConfigError`` (with its position) if it is bad."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError  # noqa: PLC0415

    try:
        raw = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = (exc.problem or exc.context or "invalid YAML").split("\n")[0]
        if "duplicate key" in problem:
            problem = problem.split(" with value")[0].replace("found", "duplicate key:", 1)
            problem = problem.replace("duplicate key: duplicate key", "duplicate key")
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise ConfigError(ConfigIssue(f"invalid YAML: {problem}", file, line, column)) from exc
    except YAMLError as exc:
        raise ConfigError(ConfigIssue(f"invalid YAML: {exc}", file)) from exc
    except RecursionError as exc:  # [[[[...]]]]: the parser recurses per level
        raise ConfigError(ConfigIssue(f"invalid YAML: nested deeper than {MAX_DEPTH} levels", file)) from exc
    doc = YamlDocument(data=None, file=file)
    doc.positions[()] = _Pos(1, 1, 1, 1)
    try:
        doc.data = _plain(raw, (), doc.positions, _round_trip_types())
    except _TooDeepError as exc:
        message = f"invalid YAML: nested deeper than {MAX_DEPTH} levels"
        raise ConfigError(ConfigIssue(message, file, exc.where.line, exc.where.column)) from None
    return doc


def load_yaml(path: str | Path) -> YamlDocument:
    """Read and parse ``path``; a missing or unreadable file is a ``ConfigError`` too."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(ConfigIssue(f"cannot read file: {reason}", name)) from exc
    return parse_yaml(text, name)


class _TooDeepError(Exception):
    def __init__(self, where: _Pos) -> None:
        super().__init__(where)
        self.where = where


MAX_DEPTH = 64
"""Nesting a config (or a deployed document) may have; no edgegw setting is near it, and
every later step (validation, JSON) recurses per level too."""


def _round_trip_types() -> tuple[Any, Any]:
    """ruamel's CommentedMap and CommentedSeq."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq  # noqa: PLC0415

    return CommentedMap, CommentedSeq


def _plain(node: Any, path: KeyPath, positions: dict[KeyPath, _Pos], types: tuple[Any, Any]) -> Any:
    """Copy ruamel's round-trip nodes into plain Python, recording positions."""
    CommentedMap, CommentedSeq = types
    if len(path) > MAX_DEPTH and isinstance(node, CommentedMap | CommentedSeq):
        raise _TooDeepError(positions.get(path, _Pos(1, 1, 1, 1)))
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            key_line, key_col = node.lc.key(key)
            val_line, val_col = node.lc.value(key)
            plain_key = _scalar(key)
            child = (*path, plain_key)
            positions[child] = _Pos(key_line + 1, key_col + 1, val_line + 1, val_col + 1)
            out[plain_key] = _plain(value, child, positions, types)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            line, col = node.lc.item(index)
            child = (*path, index)
            positions[child] = _Pos(line + 1, col + 1, line + 1, col + 1)
            items.append(_plain(value, child, positions, types))
        return items
    return _scalar(node)


def _scalar(value: Any) -> Any:  # noqa: PLR0911 - one return per YAML scalar type
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dt.datetime):
        return dt.datetime.fromisoformat(value.isoformat()) if value.tzinfo else _utc(value)
    if isinstance(value, dt.date):
        return value
    if isinstance(value, dict | list):  # pragma: no cover - round-trip mode always gives Commented*
        return value
    return str(value)  # pragma: no cover - other YAML scalars (binary, set...) as text


def _utc(value: dt.datetime) -> dt.datetime:
    # ruamel keeps a trailing "Z" as a naive UTC datetime with the offset on the side.
    delta = getattr(value, "_yaml", {}).get("delta")
    naive = dt.datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond,
    )
    if delta is not None or getattr(value, "_yaml", {}).get("tz"):
        shifted = naive - (delta or dt.timedelta(0))
        return shifted.replace(tzinfo=dt.UTC)
    return naive


def validate(
    doc: YamlDocument,
    model: type[M] | TypeAdapter[M],
    *,
    path: KeyPath = (),
) -> M:
    """Validate the data at ``path`` against a pydantic model or ``TypeAdapter``."""
    adapter: TypeAdapter[Any] = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    try:
        result: M = adapter.validate_python(doc.sub(path))
    except ValidationError as exc:
        raise ConfigError(issues_from_validation_error(exc, doc, path, model)) from exc
    return result


def load_model(path: str | Path, model: type[M] | TypeAdapter[M]) -> M:
    """Read a YAML file and validate it: ``ConfigError`` with located issues if it is bad."""
    return validate(load_yaml(path), model)


def _fields_of(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


@dataclass(frozen=True, slots=True)
class _Located:
    """One pydantic error with its path in the document (union members' tags dropped)."""

    error: Any  # pydantic_core.ErrorDetails
    path: KeyPath
    at_key: bool = False  # a mapping key itself is wrong (pydantic's ``[key]``)
    union_at: int | None = None  # len(path) where a union member's tag was dropped


def _located(error: Any, doc: YamlDocument, prefix: KeyPath) -> _Located:
    """Walk the error's ``loc`` through the data: parts that are neither keys nor items
    there are pydantic's names of union members (``str``, ``list[any]``, a model)."""
    node: Any = doc.sub(prefix)
    out: list[str | int] = list(prefix)
    at_key = False
    union_at: int | None = None
    loc = error["loc"]
    for index, part in enumerate(loc):
        if part == "[key]":
            at_key = True
        elif _has(node, part):
            node = node[part]
            out.append(part)
        elif isinstance(part, int) or (index == len(loc) - 1 and error["type"] == "missing"):
            node = None  # a missing key or list item
            out.append(part)
        elif union_at is None:
            union_at = len(out)
    return _Located(error, tuple(out), at_key, union_at)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def issues_from_validation_error(
    exc: ValidationError, doc: YamlDocument, prefix: KeyPath = (), model: Any = None
) -> list[ConfigIssue]:
    """One located issue per pydantic error, with the plain messages of :mod:`gateway.messages`.

    The errors of the members of a union (``str | list``) become one "expected text or a
    list" issue, unless a member went deeper (the value had its shape): then those."""
    located = [_located(error, doc, prefix) for error in exc.errors(include_url=False)]
    issues: list[ConfigIssue] = []
    sites: set[KeyPath] = set()
    for item in located:
        if item.union_at is None:
            issues.append(_issue(item, doc, prefix, model))
            continue
        site = item.path[: item.union_at]
        if site in sites:
            continue
        sites.add(site)
        members = [x for x in located if x.union_at is not None and x.path[: x.union_at] == site]
        deep = [x for x in members if len(x.path) > len(site)]
        if deep:
            issues += [_issue(x, doc, prefix, model) for x in deep]
        else:
            issues.append(doc.issue(site, union_message([x.error for x in members])))
    return issues


def _issue(item: _Located, doc: YamlDocument, prefix: KeyPath, model: Any) -> ConfigIssue:
    path = item.path
    if item.error["type"] != "extra_forbidden":
        key = path[-1] if path else None
        return doc.issue(path, plain_message(item.error, key=key), at_key=item.at_key)
    parent = _model_at(model, path[len(prefix) : -1])
    message = f"unknown key {path[-1]!r}"
    hint = did_you_mean(str(path[-1]), _fields_of(parent))
    if hint:
        message += f" (did you mean {hint!r}?)"
    if parent is SecretRef:
        message += f": a secret is read from one of {SECRET_FORMS}"
    return doc.issue(path, message, at_key=True)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _model_at(model: Any, path: Sequence[str | int]) -> Any:
    """The pydantic model that validates the mapping at ``path`` under ``model``, if any."""
    current = model if isinstance(model, type) and issubclass(model, BaseModel) else None
    for part in path:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        fields = {f.alias or name: f for name, f in current.model_fields.items()}
        field_info = fields.get(part)
        found = _models_in(field_info.annotation) if field_info is not None else []
        current = found[0] if found else None
    return current
