"""`edgegw check` says what runs from where: the local file, or the last-good deployment over it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.deploy.policy import digest
from gateway.deploy.store import AppliedDoc, DeploymentState, DeploymentStore
from tests.gateway.conftest import ROOT
from tests.gateway.deploy.test_document import BASE

DOC = """version: 7
rules:
  - id: heating
    when: {sensor: temp-01/temperature, below: 17}
    then: [{set: living-room/thermostat, to: {state: heat}}]
  - id: cold
    when: {sensor: temp-01/temperature, below: 10}
    then: [{emit: {severity: warning}}]
"""


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def test_check_shows_what_is_applied_from_where(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = tmp_path / "edgegw.yaml"
    cloud = "bridge: {kafka: {bootstrap: 127.0.0.1:9092}}\ncloud: {settle: 10s}\n"
    path.write_text(
        BASE.replace("STATE", str(state)).replace("{id: hall-pi,", "{id: hall-pi, group: pis,") + cloud
    )

    before = _check(path)
    assert before.returncode == 0, before.stderr
    assert "keys hall-pi, group/pis; settle 10 s" in before.stdout
    assert "deployment: none applied yet" in before.stdout

    applied = AppliedDoc("group/pis", 7, digest(DOC.encode()), DOC, ("rules",), 1_780_000_000.0)
    DeploymentStore(state).save(DeploymentState(last_good=applied, decided=7))
    after = _check(path)
    assert after.returncode == 0, after.stderr
    assert "deployment: version 7 from key group/pis" in after.stdout
    assert "    rules: 2 from the deployment v7" in after.stdout
    assert "    actuators: 1 from the local file" in after.stdout
    assert "    devices: 1 from the local file" in after.stdout
