"""systemd/edgegw.service: `systemd-analyze verify` is clean, `security --offline=true` scores <= 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.systemd.conftest import UNIT

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")
MAX_EXPOSURE = 2.0


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def _security(unit: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_analyze
def test_security_exposure_is_at_most_2() -> None:
    result = _security(UNIT)
    match = re.search(r"Overall exposure level for edgegw\.service: (\d+\.\d+)", result.stdout)
    assert match, f"no overall score in:\n{result.stdout}\n{result.stderr}"
    score = float(match.group(1))
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n{result.stdout}"


@needs_analyze
def test_every_remaining_exposure_is_explained_in_a_comment() -> None:
    """Each check that `security` still flags names a setting that a comment in the unit discusses."""
    failing = [
        line.split()[1] for line in _security(UNIT).stdout.splitlines() if line.startswith("✗")
    ]
    assert failing, "expected a few deliberate exposures (network, serial devices)"
    comments = "\n".join(line for line in UNIT.read_text().splitlines() if line.startswith("#"))
    for check in failing:
        setting = check.split("=", 1)[0]  # RestrictAddressFamilies=~AF_UNIX -> RestrictAddressFamilies
        assert f"{setting}=" in comments, f"{check} is exposed but no comment in the unit says why"


def test_unit_contract() -> None:
    """What `edgegw run` and install.sh rely on."""
    unit = _directives(UNIT.read_text())
    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == ["/opt/edgegw/venv/bin/edgegw run --config /etc/edgegw/edgegw.yaml"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["WatchdogSec"] == ["30s"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["StateDirectory"] == ["edgegw"]
    assert unit["ConfigurationDirectory"] == ["edgegw"]
    assert unit["SupplementaryGroups"] == ["dialout"]
    assert unit["DynamicUser"] == ["yes"]
    assert sorted(unit["LoadCredential"]) == [
        "http-token:edgegw.http-token",
        "kafka-sasl-password:edgegw.kafka-sasl-password",
        "mqtt-password:edgegw.mqtt-password",
    ]
    assert {"char-ttyUSB rw", "char-ttyACM rw", "char-ttyAMA rw"} <= set(unit["DeviceAllow"])


@needs_analyze
@pytest.mark.slow
def test_verify_is_clean(installed: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` checks that ExecStart= exists, and /opt/edgegw is not installed
    here. So this verifies a copy of the unit whose /opt/edgegw/venv paths point at the
    virtualenv that install.sh put under its DESTDIR (the `installed` fixture); everything
    else is the unit as shipped."""
    assert ANALYZE is not None
    venv = installed / "opt" / "edgegw" / "venv"
    assert (venv / "bin" / "edgegw").exists()
    copy = tmp_path / "edgegw.service"
    copy.write_text(UNIT.read_text().replace("/opt/edgegw/venv", str(venv)))
    result = subprocess.run(
        [ANALYZE, "verify", str(copy)], capture_output=True, text=True, timeout=120, check=False
    )
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "edgegw" in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert ours == []


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The verify test above would notice a mistake: a typo in a directive is reported."""
    assert ANALYZE is not None
    broken = tmp_path / "edgegw.service"
    broken.write_text(UNIT.read_text().replace("WatchdogSec=30s", "WatchdogSec=30s\nWatchdogSecs=30s"))
    result = subprocess.run(
        [ANALYZE, "verify", str(broken)], capture_output=True, text=True, timeout=120, check=False
    )
    assert "WatchdogSecs" in result.stderr


DOCS = UNIT.parents[1] / "docs" / "raspberry-pi.md"


def _doc_dropins() -> list[str]:
    return re.findall(r"```ini\n(.*?)```", DOCS.read_text(), re.DOTALL)


def test_the_docs_show_dropins() -> None:
    assert len(_doc_dropins()) >= 4


@needs_analyze
@pytest.mark.parametrize("index", range(len(_doc_dropins())))
def test_every_dropin_in_the_docs_is_valid_and_keeps_the_score(index: int, tmp_path: Path) -> None:
    """The unit plus one drop-in from docs/raspberry-pi.md (appended: a unit file may repeat
    its sections, as a drop-in does). ExecStart= points at this Python, which exists, because
    only the drop-in is under test here (test_verify_is_clean covers the installed path)."""
    assert ANALYZE is not None
    dropin = _doc_dropins()[index]
    merged = tmp_path / "edgegw.service"
    merged.write_text(
        UNIT.read_text().replace("/opt/edgegw/venv/bin/edgegw", sys.executable) + "\n" + dropin
    )
    verify = subprocess.run(
        [ANALYZE, "verify", str(merged)], capture_output=True, text=True, timeout=120, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert [line for line in verify.stderr.splitlines() if "edgegw" in line] == []
    match = re.search(r"Overall exposure level for edgegw\.service: (\d+\.\d+)", _security(merged).stdout)
    assert match
    assert float(match.group(1)) <= MAX_EXPOSURE, dropin
