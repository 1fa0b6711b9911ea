"""scripts/check-pi-wheels: every runtime dependency installs on a 64-bit Pi from a wheel."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.systemd.conftest import ROOT

SCRIPT = ROOT / "scripts" / "check-pi-wheels"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900, check=False
    )


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group(0)


@pytest.mark.slow
def test_every_runtime_dependency_has_an_aarch64_wheel() -> None:
    """Asks PyPI, as CI and this machine can."""
    result = _run()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    with (ROOT / "pyproject.toml").open("rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    for requirement in dependencies:
        name = _name(requirement).lower().replace("_", "-").replace(".", "-")
        assert name in listed, f"{name} not in the report:\n{result.stdout}"
    wheels = [line.split()[-1] for line in lines if line.startswith("  ")]
    assert all(w.endswith(".whl") for w in wheels)
    assert all(w.endswith("-none-any.whl") or "aarch64" in w for w in wheels)
    # the one that needs the newest glibc tag of the range
    kafka = next(w for w in wheels if w.startswith("confluent_kafka-"))
    assert "manylinux_2_28_aarch64" in kafka


def _wheel(directory: Path, name: str, tag: str) -> None:
    """A minimal valid wheel, enough for pip download to resolve it."""
    dist = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(directory / f"{name}-1.0-{tag}.whl", "w") as whl:
        whl.writestr(f"{name}/__init__.py", "")
        whl.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        wheel_meta = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"
        whl.writestr(f"{dist}/WHEEL", wheel_meta)
        whl.writestr(f"{dist}/RECORD", "")


def test_names_every_package_without_a_wheel(tmp_path: Path) -> None:
    """Offline, against a local index: one pure wheel passes, two x86-only packages are named."""
    _wheel(tmp_path, "purepkg", "py3-none-any")
    _wheel(tmp_path, "x86only", "cp311-cp311-manylinux_2_17_x86_64")
    _wheel(tmp_path, "alsox86", "cp311-cp311-manylinux_2_28_x86_64")
    _wheel(tmp_path, "pi64", "cp311-cp311-manylinux_2_28_aarch64")
    local = ["--pip-arg=--no-index", f"--pip-arg=--find-links={tmp_path}"]

    ok = _run(*local, "purepkg", "pi64")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "pi64-1.0-cp311-cp311-manylinux_2_28_aarch64.whl" in ok.stdout

    bad = _run(*local, "purepkg", "x86only", "alsox86")
    assert bad.returncode == 1
    assert "error: no wheel for CPython 3.11 on aarch64: x86only, alsox86" in bad.stderr
    assert "purepkg" not in bad.stderr


def test_the_tags_span_manylinux2014_to_2_28() -> None:
    result = _run("--help")
    assert result.returncode == 0
    namespace = runpy.run_path(str(SCRIPT), run_name="check_pi_wheels")
    platforms = namespace["platforms"]
    assert callable(platforms)
    tags = platforms("aarch64")
    assert tags[0] == "manylinux2014_aarch64"
    assert tags[-1] == "manylinux_2_28_aarch64"
    assert [f"manylinux_2_{m}_aarch64" for m in range(17, 29)] == tags[1:]
