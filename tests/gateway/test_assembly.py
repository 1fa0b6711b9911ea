"""Building the gateway's parts from its config (gateway/assembly.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.assembly import open_spool
from gateway.config import load_config


def _spool_acks(tmp_path: Path, mqtt: str, spool_yaml: str = "{}") -> int:
    config = tmp_path / "edgegw.yaml"
    config.write_text(
        f"gateway: {{id: acks, state_dir: {tmp_path / 'state'}}}\nhttp: {{enabled: false}}\n"
        f"mqtt: {mqtt}\nbridge: {{spool: {spool_yaml}}}\n"
        "devices:\n  - {id: a, topic: home/a, profile: plain, metric: t}\n"
    )
    spool = open_spool(load_config(config).config, tmp_path / "state")
    try:
        return int(spool.config.commit_batch_acks)
    finally:
        spool.close()


@pytest.mark.parametrize(
    ("mqtt", "spool", "acks"),
    [
        ("{}", "{}", 16),  # 3.1.1: the broker's window is not known (Mosquitto's default is 20)
        ('{protocol: "5"}', "{}", 500),  # MQTT 5: half the receive maximum edgegw announces
        ('{protocol: "5", receive_maximum: 100}', "{}", 50),
        ('{protocol: "5", receive_maximum: 10}', "{}", 5),
        ('{protocol: "5", receive_maximum: 1}', "{}", 1),
        ('{protocol: "5"}', "{commit_batch_acks: 40}", 40),  # set by hand: kept
    ],
)
def test_a_commit_holds_at_most_half_the_brokers_in_flight_window(tmp_path: Path, mqtt: str, spool: str,
                                                                   acks: int) -> None:  # fmt: skip
    """A group waiting for more QoS 1 messages than the broker sends unacknowledged would
    hold back the readings behind the window; on MQTT 5 the window is edgegw's own
    receive maximum (Mosquitto 2 honours it over its max_inflight_messages)."""
    assert _spool_acks(tmp_path, mqtt, spool) == acks
