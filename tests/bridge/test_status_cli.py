"""``edgegw spool status`` reads the file alone, read-only, while a gateway writes to it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.envelope import Record
from bridge.policy import Kind, Priority
from bridge.spool import DeadLetter, Spool
from gateway.cli import main
from gateway.model import Event, EventKind
from tests.bridge.helpers import readings, spool_config


def test_status_while_the_spool_is_open_and_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = spool_config(tmp_path, max_bytes=30_000)
    spool = Spool.open(cfg)
    spool.append_many(readings(300))  # over the cap: some dropped
    spool.append_many([Event(EventKind.FIRED, "hot", 1_800_000_000.0)])
    spool.append_many([Record(Kind.COMMAND, "relay", 1.0, b'{"x":1}')])
    refused = DeadLetter(302, Priority.COMMAND, "msg_size_too_large", "Broker: Message size too large")
    spool.settle(dead=[refused], wait=True)
    spool.submit(readings(10, start=300))  # still writing while we read

    assert main(["spool", "status", "--spool", str(cfg.path)]) == 0
    out = capsys.readouterr().out
    assert "depth" in out
    assert "readings" in out
    assert "events" in out
    assert "cap=" in out
    assert "dead letters 1" in out
    assert "#302 command key=relay" in out
    assert "msg_size_too_large" in out

    assert main(["spool", "status", "--spool", str(cfg.path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["by_priority"]["events"]["rows"] == 1
    assert doc["dead_letters"] == 1
    assert doc["dropped"]["cap"] > 0
    assert doc["depth"] == doc["by_priority"]["events"]["rows"] + doc["by_priority"]["readings"]["rows"]
    assert doc["oldest_age"] is not None
    spool.close()
    with sqlite3.connect(cfg.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_status_of_a_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spool", "status", "--spool", str(tmp_path / "nope.db")]) == 1
    assert "no spool at" in capsys.readouterr().err


def test_status_command_line(tmp_path: Path) -> None:
    cfg = spool_config(tmp_path)
    with Spool.open(cfg) as spool:
        spool.append_many(readings(3))
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "spool", "status", "--spool", str(cfg.path)],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "depth        3 rows" in result.stdout
