"""Plain messages for pydantic's validation errors, in the words of the YAML a person wrote.

pydantic says "Input should be a valid dictionary or instance of SecretRef"; a person
who wrote ``password: hunter2`` needs to read where a password goes instead. Each error
type that reaches users has an entry in :data:`MESSAGES` (tests/gateway/test_messages.py
lists one broken config per entry); any other type keeps pydantic's text.

Values are described as YAML shows them ("the text 'abc'", "a list", "an empty value"),
except where the value may be a secret: those are never repeated.
"""

from __future__ import annotations

import ast
import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "MESSAGES",
    "SECRET_FORMS",
    "describe",
    "did_you_mean",
    "plain_message",
    "union_message",
]

SECRET_FORMS = (
    "{credential: NAME} (systemd LoadCredential=), {file: PATH} (its first line) or {env: VARIABLE}"  # noqa: S105 - the forms of a reference, no secret
)
"""The three ways to name where a secret is read from (common.configtypes.SecretRef)."""

_SECRET_MODELS = {"SecretRef"}
_MAX_SHOWN = 40


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to a misspelt ``word``, for "did you mean" (None if none is close).

    The one implementation behind every suggestion: unknown keys, unknown values."""
    matches = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def describe(value: Any) -> str:  # noqa: PLR0911 - one return per YAML kind
    """A value as a person sees it in YAML: ``the text 'abc'``, ``a list``, ``the number 5``."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 3] + "..."
        return f"the text {shown!r}" if value else "empty text ''"
    if isinstance(value, dt.date):
        return f"the date {value.isoformat()}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence):
        return "a list"
    return f"a {type(value).__name__}"  # pragma: no cover - YAML gives no other kinds


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _quote_hint(value: Any) -> str:
    """YAML reads ``5``, ``true`` and ``2026-01-05`` as a number, a boolean, a date."""
    if isinstance(value, bool):
        return f' (put it in quotes: "{str(value).lower()}")'
    if isinstance(value, int | float):
        return f' (put it in quotes: "{value}")'
    if isinstance(value, dt.date):
        return f' (put it in quotes: "{value.isoformat()}")'
    return ""


def _choices(expected: str) -> list[Any]:
    """``"'a', 'b' or 'c'"`` (pydantic's ``ctx['expected']``) -> ``['a', 'b', 'c']``."""
    out = []
    for token in re.findall(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|-?\d+(?:\.\d+)?", expected):
        try:
            out.append(ast.literal_eval(token))
        except (ValueError, SyntaxError):  # pragma: no cover - the regex matches literals only
            out.append(token)
    return out


class _Error:
    """The parts of one pydantic error a message needs."""

    __slots__ = ("ctx", "input", "key", "kind", "msg")

    def __init__(self, error: Mapping[str, Any], key: str | int | None) -> None:
        self.kind: str = error["type"]
        self.msg: str = str(error["msg"])
        self.input: Any = error.get("input")
        self.ctx: Mapping[str, Any] = error.get("ctx") or {}
        self.key = key


def _expected(what: str) -> Callable[[_Error], str]:
    return lambda e: f"expected {what}, got {describe(e.input)}"


def _text(e: _Error) -> str:
    return f"expected text, got {describe(e.input)}{_quote_hint(e.input)}"


def _mapping(e: _Error) -> str:
    if e.ctx.get("class_name") in _SECRET_MODELS:
        # never repeat the value: it is likely the secret itself
        return f"a secret is never written in the config: name where to read it, {SECRET_FORMS}"
    return f"expected a mapping (key: value), got {describe(e.input)}"


def _choice(e: _Error) -> str:
    choices = _choices(str(e.ctx.get("expected", "")))
    shown = ", ".join(str(c) for c in choices)
    value = e.input
    texts = [c for c in choices if isinstance(c, str)]
    if not isinstance(value, str) and str(value) in texts:
        return f'{value} must be written in quotes here: "{value}" (one of {shown})'
    message = f"unknown value {value!r}" if isinstance(value, str) else f"unknown value {describe(value)}"
    hint = did_you_mean(str(value), texts) if isinstance(value, str) else None
    if hint is not None:
        message += f" (did you mean {hint!r}?)"
    return f"{message}: expected one of {shown}"


def _too_short(e: _Error) -> str:
    least = e.ctx.get("min_length", 1)
    if least == 1:
        return "must not be empty"
    return f"needs at least {least} items, got {e.ctx.get('actual_length', 'fewer')}"


def _too_long(e: _Error) -> str:
    return f"takes at most {e.ctx.get('max_length')} items, got {e.ctx.get('actual_length', 'more')}"


def _string_too_short(e: _Error) -> str:
    least = e.ctx.get("min_length", 1)
    return "must not be empty" if least == 1 else f"must be at least {least} characters long"


def _string_too_long(e: _Error) -> str:
    return f"must be at most {e.ctx.get('max_length')} characters long, got {len(str(e.input))}"


def _bound(word: str, key: str) -> Callable[[_Error], str]:
    return lambda e: f"must be {word} {_number(e.ctx.get(key))}, got {_number(e.input)}"


def _missing(e: _Error) -> str:
    if isinstance(e.key, int):
        return f"too few items: item {e.key + 1} is missing"
    return f"missing required key {e.key!r}"


def _own(e: _Error) -> str:
    """Our validators' messages are written for people already."""
    return e.msg.removeprefix("Value error, ")


_DATETIME = "a date and time such as 2026-01-05T08:00:00Z"
_SIZE = "a size such as 256MiB, 64KiB, 1GB or a number of bytes"

MESSAGES: dict[str, Callable[[_Error], str]] = {
    "string_type": _text,
    "int_type": _expected("a whole number"),
    "int_parsing": _expected("a whole number"),
    "int_from_float": _expected("a whole number"),
    "float_type": _expected("a number"),
    "float_parsing": _expected("a number"),
    "bool_type": _expected("true or false"),
    "bool_parsing": _expected("true or false"),
    "dict_type": _mapping,
    "model_type": _mapping,
    "list_type": _expected("a list (`- item` lines, or [a, b])"),
    "tuple_type": _expected("a list (`- item` lines, or [a, b])"),
    "path_type": _expected("a file path"),
    "byte_size": _expected(_SIZE),
    "byte_size_unit": _expected(_SIZE),
    "datetime_type": _expected(_DATETIME),
    "datetime_from_date_parsing": lambda e: f"{_expected(_DATETIME)(e)} ({e.msg.partition(', ')[2]})",
    "timezone_aware": lambda e: "needs a time zone: end it with Z (UTC) or an offset such as +01:00",
    "literal_error": _choice,
    "too_short": _too_short,
    "too_long": _too_long,
    "string_too_short": _string_too_short,
    "string_too_long": _string_too_long,
    "greater_than": _bound("greater than", "gt"),
    "greater_than_equal": _bound("at least", "ge"),
    "less_than_equal": _bound("at most", "le"),
    "missing": _missing,
    "value_error": _own,
}
"""pydantic error type -> the message a person reads (``extra_forbidden`` is placed and
worded by :mod:`gateway.yamlio`, which knows the keys that would have been valid)."""


def plain_message(error: Mapping[str, Any], *, key: str | int | None = None) -> str:
    """The plain message for one pydantic error (``key``: the last part of its path)."""
    info = _Error(error, key)
    render = MESSAGES.get(info.kind)
    return render(info) if render is not None else info.msg


_KINDS_IN_UNIONS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def union_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """One message for the errors of each member of a union (``str | list``...)."""
    wanted: list[str] = []
    for error in errors:
        what = _KINDS_IN_UNIONS.get(error["type"]) or plain_message(error)
        if what not in wanted:
            wanted.append(what)
    if "a number" in wanted and "a whole number" in wanted:
        wanted.remove("a whole number")
    listed = wanted[0] if len(wanted) == 1 else ", ".join(wanted[:-1]) + " or " + wanted[-1]
    return f"expected {listed}, got {describe(errors[0].get('input'))}"
