"""The run marker: a clean stop, an unclean one, and what the spool lost in between (issue 17)."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from gateway.config import load_config
from gateway.runmarker import RunMarker
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
