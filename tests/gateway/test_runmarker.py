"""The run marker: a clean stop, an unclean one, and what the spool lost in between (issue 17)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.config import load_config
from gateway.runmarker import SLOT, RunMarker
from gateway.runtime import Runtime
from gateway.sdnotify import Notifier
from tests.bridge.helpers import readings


def test_a_clean_stop_leaves_nothing_and_an_unclean_one_is_seen(tmp_path: Path) -> None:
    first = RunMarker(tmp_path)
    assert first.begin(1).clean
    first.note(120)
    # killed: no end()
    second = RunMarker(tmp_path)
    last = second.begin(80)
    assert not last.clean
    assert last.seq_mark == 120
    assert last.lost_at_least(80) == 40  # the spool came back 40 rows short
    assert last.lost_at_least(130) == 0
    second.end()
    assert RunMarker(tmp_path).begin(1).clean


def test_a_torn_marker_means_unclean_with_nothing_known(tmp_path: Path) -> None:
    (tmp_path / "running").write_bytes(b'{"seq": 12')
    last = RunMarker(tmp_path).begin(5)
    assert not last.clean
    assert last.lost_at_least(5) == 0


def test_a_note_rewrites_a_slot_in_place_not_a_new_file(tmp_path: Path) -> None:
    marker = RunMarker(tmp_path)
    marker.begin(1)
    inode = (tmp_path / "running").stat().st_ino
    for seq in range(2, 12):
        marker.note(seq)
    assert (tmp_path / "running").stat().st_ino == inode  # no rename: no new inode, no directory entry
    assert (tmp_path / "running").stat().st_size == 2 * SLOT
    assert not list(tmp_path.glob(".*.tmp"))
    assert RunMarker(tmp_path).begin(1).seq_mark == 11


def test_a_slot_torn_by_a_power_cut_leaves_the_note_before_it(tmp_path: Path) -> None:
    marker = RunMarker(tmp_path)
    marker.begin(1)
    marker.note(40)
    marker.note(55)  # the 2nd note: slot 0
    path = tmp_path / "running"
    raw = bytearray(path.read_bytes())
    raw[20:30] = b"\x00" * 10  # the newest slot half written
    path.write_bytes(bytes(raw))
    last = RunMarker(tmp_path).begin(1)
    assert not last.clean
    assert last.seq_mark == 40


def test_the_marker_of_an_earlier_version_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "running").write_text(json.dumps({"seq": 77, "at": 1.5, "pid": 9}))
    last = RunMarker(tmp_path).begin(1)
    assert (last.clean, last.seq_mark, last.at) == (False, 77, 1.5)


def _runtime(tmp_path: Path) -> Runtime:
    config = tmp_path / "edgegw.yaml"
    state = tmp_path / "state"
    config.write_text(f"gateway: {{id: marker-test, state_dir: {state}}}\nhttp: {{enabled: false}}\n")
    rt = Runtime(load_config(config), gateway_id="marker-test", notifier=Notifier({}), environ={})
    rt.state_dir.mkdir(parents=True, exist_ok=True)
    return rt


def test_the_runtime_reports_an_unclean_start_and_the_rows_the_spool_lost(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    rt._open_spool()
    rt._check_last_run()
    assert rt.spool is not None
    rt.spool.append_many(readings(50))
    rt.marker.note(rt.spool.committed_seq)  # as the ticker does: these 50 were acknowledged
    rt.spool.close()
    (tmp_path / "state" / "spool.db").unlink()  # the power cut took the whole file (worst case)
    for suffix in ("-wal", "-shm"):
        (tmp_path / "state" / f"spool.db{suffix}").unlink(missing_ok=True)

    again = _runtime(tmp_path)
    again._open_spool()
    with capture_logs() as logs:
        again._check_last_run()
    assert again.state.unclean_start
    assert again.state.lost_at_unclean_start == 50  # no Kafka uplink: nothing of it can be there
    assert any(e["event"].startswith("unclean start") for e in logs)
    assert any(e["event"].startswith("acknowledged rows lost") and e.get("lost_at_least") == 50 for e in logs)
    assert again.spool is not None
    again.spool.close()


def test_a_note_is_synced_only_where_the_mark_can_show_a_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``synchronous: full`` (the default) nothing acknowledged can be lost, so a note
    is left to the kernel's writeback (SD-card wear: a synced page a second); under
    ``normal`` the mark is the evidence of a loss and each note is synced."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    assert not _runtime(tmp_path).marker.sync
    for sync, expected in ((False, 0), (True, 3)):
        marker = RunMarker(tmp_path / str(sync), sync=sync)
        (tmp_path / str(sync)).mkdir()
        marker.begin(1)
        synced.clear()
        for seq in (5, 6, 7):
            marker.note(seq)
        assert len(synced) == expected
        assert RunMarker(tmp_path / str(sync)).begin(1).seq_mark == 7  # read back all the same
    config = tmp_path / "normal.yaml"
    config.write_text(f"gateway: {{id: m, state_dir: {tmp_path / 's'}}}\nhttp: {{enabled: false}}\n"
                      "bridge: {spool: {synchronous: normal}}\n")  # fmt: skip
    assert Runtime(load_config(config), gateway_id="m", notifier=Notifier({}), environ={}).marker.sync
