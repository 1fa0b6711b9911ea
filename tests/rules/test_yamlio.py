"""YAML 1.2 loading with positions, and pydantic errors mapped to file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from gateway.errors import ConfigError
from gateway.yamlio import format_path, load_model, load_yaml, parse_yaml, validate


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    items: list[Inner]


def test_yaml_1_2_keeps_on_off_yes_no_as_strings() -> None:
    doc = parse_yaml("a: on\nb: off\nc: yes\nd: no\ne: true\nf: 0x10\ng: 1_000\n")
    assert doc.data == {"a": "on", "b": "off", "c": "yes", "d": "no", "e": True, "f": 16, "g": 1000}
    assert all(type(v) in (str, bool, int) for v in doc.data.values())


def test_positions_are_one_based_for_keys_values_and_items() -> None:
    doc = parse_yaml("name: x\nitems:\n  - n: 1\n  - {n: 2}\n", "f.yaml")
    assert doc.locate(("name",)) == (1, 7)
    assert doc.locate(("name",), at_key=True) == (1, 1)
    assert doc.locate(("items", 1)) == (4, 5)
    assert doc.locate(("items", 1, "n")) == (4, 9)
    assert doc.locate(("items", 7, "n")) == (3, 3)  # the deepest existing parent: the list


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a: 1\na: 2\n", 'f.yaml:2:1: invalid YAML: duplicate key "a"', id="duplicate key"),
        pytest.param(
            "a: [1\nb: 2\n", "f.yaml:2:2: invalid YAML: expected ',' or ']', but got ':'", id="unclosed"
        ),
        pytest.param("a:\n\t- 1\n", "f.yaml:2:1: invalid YAML:", id="tab"),
    ],
)
def test_bad_yaml_is_a_located_config_error(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "f.yaml")
    assert str(info.value.issues[0]).startswith(expected)


def test_validation_errors_are_located_with_key_paths() -> None:
    doc = parse_yaml("name: x\nitems:\n  - n: one\n  - {n: 2, m: 3}\n  - {}\nextra: 1\n", "f.yaml")
    with pytest.raises(ConfigError) as info:
        validate(doc, Outer)
    assert [str(i) for i in info.value.issues] == [
        "f.yaml:3:8: items[0].n: expected a whole number, got the text 'one'",
        "f.yaml:4:12: items[1].m: unknown key 'm'",
        "f.yaml:5:5: items[2].n: missing required key 'n'",
        "f.yaml:6:1: extra: unknown key 'extra'",
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_yaml(tmp_path / "nope.yaml")


def test_format_path() -> None:
    assert format_path(("rules", 3, "when", "for")) == "rules[3].when.for"
    assert format_path((0, "a")) == "[0].a"


def test_load_model_reads_and_validates(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nitems: [{n: 1}]\n")
    assert load_model(path, Outer) == Outer(name="x", items=[Inner(n=1)])
    path.write_text("name: x\nitems: [{n: 1, nn: 2}]\n")
    with pytest.raises(ConfigError) as info:
        load_model(path, Outer)
    assert str(info.value) == f"{path}:2:16: items[0].nn: unknown key 'nn' (did you mean 'n'?)"
