"""``edgegw fleet`` on the command line: what a user sees when something is missing or wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.cli import main


def test_without_the_fleet_extra_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "fleet.cli", None)  # as if psycopg / fastjsonschema were missing
    assert main(["fleet", "serve", "--bootstrap", "127.0.0.1:9"]) == 1
    assert "pip install 'edgegw[fleet]'" in capsys.readouterr().err


def test_an_invalid_config_is_refused_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text("kafka: {bootstrap: 127.0.0.1:9}\nbatch_size: 0\nlisten: none\n")
    assert main(["fleet", "serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err
    assert "batch_size" in err


def test_serve_needs_a_config_or_a_bootstrap(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "rebuild"]) == 1
    assert "--bootstrap" in capsys.readouterr().err


def test_help_lists_the_fleet_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fleet", "--help"])
    out = capsys.readouterr().out
    assert "serve" in out
    assert "rebuild" in out
