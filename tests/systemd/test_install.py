"""systemd/install.sh under DESTDIR: install, upgrade, rollback, uninstall, purge.

Each install or upgrade builds a real virtualenv with edgegw from this checkout (pip may
answer from its cache), so these are slow: about 12 s per build here.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.systemd.conftest import ROOT, UNIT, run_installer

pytestmark = pytest.mark.slow


def _target(link: Path) -> str:
    assert link.is_symlink(), f"{link} is not a symlink"
    return os.readlink(link)


def _releases(dest: Path) -> set[str]:
    return {p.name for p in (dest / "opt/edgegw/releases").iterdir()}


def test_lifecycle(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    opt = dest / "opt/edgegw"
    venv, previous = opt / "venv", opt / "previous"
    state = dest / "var/lib/edgegw"
    config = dest / "etc/edgegw/edgegw.yaml"
    env = {"EDGEGW_KEEP_RELEASES": "2"}

    # --- install: a release, the unit, the example config, the secrets directory
    out = run_installer(dest, "install", env=env).stdout
    first = _target(venv)
    assert re.fullmatch(r"releases/[0-9][^-]*-\d{8}T\d{6}Z(-\d+)?", first), first
    assert not previous.exists()
    assert (dest / "etc/systemd/system/edgegw.service").read_text() == UNIT.read_text()
    example = ROOT / "examples/edgegw.yaml"
    example = example if example.exists() else ROOT / "systemd/edgegw.example.yaml"
    assert config.read_text() == example.read_text()
    credstore = dest / "etc/credstore"
    assert stat.S_IMODE(credstore.stat().st_mode) == 0o700
    assert "skipped: systemctl enable edgegw.service" in out  # DESTDIR: systemctl is never called
    version = subprocess.run(
        [str(venv / "bin/edgegw"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith("edgegw ")
    # the release is a real, non-editable install: the package lives in the venv, not here
    site = next((opt / first).glob("lib/python3*/site-packages"))
    assert (site / "gateway" / "sdnotify.py").exists()
    assert not list(site.glob("__editable__*"))

    # what the service made meanwhile, and what the admin edited
    state.mkdir(parents=True)
    (state / "spool.db").write_bytes(b"spool rows")
    (state / "rules-state.json").write_text("{}")
    config.write_text(config.read_text() + "\n# edited by the admin\n")
    (credstore / "edgegw.mqtt-password").write_text("s3cret\n")
    edited = config.read_text()

    # --- upgrade: a new release, the symlink switches, the old one becomes `previous`
    run_installer(dest, "upgrade", env=env)
    second = _target(venv)
    assert second != first
    assert _target(previous) == first
    assert (venv / "bin/edgegw").exists()

    # --- install again on an installed system: like an upgrade, and the config is kept
    out = run_installer(dest, "install", env=env).stdout
    third = _target(venv)
    assert third not in (first, second)
    assert _target(previous) == second
    assert "keeping the existing config" in out
    assert config.read_text() == edited
    # EDGEGW_KEEP_RELEASES=2: the oldest release is gone, current and previous stay
    assert _releases(dest) == {second.removeprefix("releases/"), third.removeprefix("releases/")}

    # --- rollback and roll forward again
    run_installer(dest, "rollback", env=env)
    assert (_target(venv), _target(previous)) == (second, third)
    status = run_installer(dest, "status").stdout
    assert f"release {second.removeprefix('releases/')}" in status
    run_installer(dest, "rollback", env=env)
    assert (_target(venv), _target(previous)) == (third, second)

    # spool and rule state were never touched by any of it
    assert (state / "spool.db").read_bytes() == b"spool rows"
    assert (state / "rules-state.json").read_text() == "{}"

    # --- uninstall: code and unit go; config, secrets and data stay
    run_installer(dest, "uninstall")
    assert not opt.exists()
    assert not (dest / "etc/systemd/system/edgegw.service").exists()
    assert config.read_text() == edited
    assert (credstore / "edgegw.mqtt-password").exists()
    assert (state / "spool.db").read_bytes() == b"spool rows"
    assert run_installer(dest, "status", check=False).returncode == 1

    # --- uninstall --purge: the rest goes too (credstore itself may hold others' secrets)
    run_installer(dest, "uninstall", "--purge")
    assert not state.exists()
    assert not config.parent.exists()
    assert not (credstore / "edgegw.mqtt-password").exists()
    assert credstore.exists()

    # the builds cleaned up their temporary source copies
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_failed_upgrade_switches_nothing(installed: Path) -> None:
    dest = installed
    venv = dest / "opt/edgegw/venv"
    before, releases = _target(venv), _releases(dest)
    # pip cannot find the dependencies: the new release fails to build
    result = run_installer(
        dest, "upgrade", check=False, env={"EDGEGW_PIP_ARGS": "--no-index --find-links /nonexistent"}
    )
    assert result.returncode != 0
    assert "nothing was switched" in result.stderr
    assert _target(venv) == before
    assert _releases(dest) == releases
    assert not (dest / "opt/edgegw/previous").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["upgrade"], "edgegw is not installed; run:"),
        (["rollback"], "edgegw is not installed"),
        (["uninstall", "--everything"], "unknown option for uninstall"),
        (["reinstall"], "unknown command reinstall"),
    ],
)
def test_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_installer(tmp_path / "root", *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_rollback_needs_a_previous_release(installed: Path) -> None:
    result = run_installer(installed, "rollback", check=False)
    assert result.returncode != 0
    assert "no previous release" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (optional)")
def test_install_sh_is_shellcheck_clean() -> None:
    result = subprocess.run(
        ["shellcheck", str(ROOT / "systemd" / "install.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_a_second_installer_at_the_same_time_is_refused(installed: Path) -> None:
    lock_file = installed / "opt/edgegw/.install.lock"
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_installer(installed, "upgrade", check=False)
    assert result.returncode != 0
    assert "another install.sh is working on" in result.stderr
