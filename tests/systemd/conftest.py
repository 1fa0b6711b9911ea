"""Run systemd/install.sh under a DESTDIR in a temporary directory, as a test may."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SH = ROOT / "systemd" / "install.sh"
UNIT = ROOT / "systemd" / "edgegw.service"

def run_installer(
    destdir: Path, *args: str, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``DESTDIR=destdir systemd/install.sh ARGS``; its temporary build copies go to destdir/../tmp."""
    tmp = destdir.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    environment = {**os.environ, "DESTDIR": str(destdir), "TMPDIR": str(tmp), **(env or {})}
    result = subprocess.run(
        ["bash", str(INSTALL_SH), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"install.sh {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `install.sh install` under a DESTDIR, shared read-only by the tests that need it."""
    destdir = tmp_path_factory.mktemp("installed") / "root"
    run_installer(destdir, "install")
    return destdir
