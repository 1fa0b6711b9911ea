"""The rule-state file of earlier versions: read once, imported into the spool, set aside
when unreadable; never fatal."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.config import load_config
from gateway.rulestate import read_rule_state
from gateway.runtime import Runtime
from gateway.sdnotify import Notifier
from rules import Now, RuleEngine


def test_corrupt_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "rules-state.json"
    path.write_text('{"version": 1, "rules": {')  # cut short by a power loss
    assert read_rule_state(path) is None
    assert not path.exists()
    kept = list(tmp_path.glob("rules-state.bad-*"))
    assert len(kept) == 1
    assert kept[0].read_text().startswith('{"version"')


def test_the_json_file_of_an_earlier_version_is_imported_into_the_spool(tmp_path: Path) -> None:
    """Upgrading keeps a rule that had fired fired: its clear comes, its fire does not repeat."""
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "edgegw.yaml"
    config.write_text(
        f"gateway: {{id: upgrade-test, state_dir: {state}}}\nhttp: {{enabled: false}}\n"
        "devices:\n  - {id: a, topic: home/a, profile: plain, metric: t}\n"
        "rules:\n  - {id: hot, when: {sensor: a/t, above: 30}, then: [{emit: {severity: warning}}]}\n"
    )
    loaded = load_config(config)
    old = RuleEngine(loaded.rules, Now(time.monotonic(), time.time()))
    from gateway.model import Reading  # noqa: PLC0415

    old.on_reading(Reading("a", "t", 35.0, time.time(), time.time()), Now(time.monotonic(), time.time()))
    (state / "rules-state.json").write_text(json.dumps(old.snapshot(Now(time.monotonic(), time.time()))))

    rt = Runtime(loaded, gateway_id="upgrade-test", notifier=Notifier({}), environ={})
    rt._open_spool()
    rt._attach_pipeline()
    assert rt.engine.rule("hot").fired
    assert not (state / "rules-state.json").exists()
    assert (state / "rules-state.imported").exists()
    assert rt.spool is not None
    rt.spool.close()

    again = Runtime(loaded, gateway_id="upgrade-test", notifier=Notifier({}), environ={})
    again._open_spool()  # now from the spool alone
    again._attach_pipeline()
    assert again.engine.rule("hot").fired
    assert again.spool is not None
    again.spool.close()
