"""scripts/arm64, the parts that run without emulation: the mirror it takes from apt's
sources, what it says it cannot do, the suites it names. (What runs under emulation is
in `scripts/arm64 ci`, a step of .ci/run of its own.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "arm64"


def _run(*args: str, apt: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "EDGEGW_ARM64_MIRROR"}
    if apt is not None:
        environ["EDGEGW_ARM64_APT_DIR"] = str(apt)
    environ.update(env)
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False, env=environ
    )


def _apt(tmp_path: Path, files: dict[str, str]) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (apt / name).write_text(text)
    return apt


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb-src deb
URIs: http://mirror.example/debian http://other.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


DISABLED_FIRST = (
    "Enabled: no\nTypes: deb\nURIs: http://off.example/d\nSuites: bookworm\n\n"
    "Types: deb\nURIs: https://on.example/debian\nSuites: trixie\n"
)
ONE_LINE = (
    "# a comment\n"
    "deb http://security.debian.org/debian-security bookworm-security main\n"
    "deb [arch=amd64 signed-by=/k.gpg] http://ftp.example/debian bookworm main contrib\n"
)
IGNORED = {
    "sources.list.d/a.list.disabled": "deb http://never.example/debian bookworm main\n",
    "sources.list.d/src.sources": "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n",
    "sources.list": "deb http://line.example/debian bookworm main\n",
}


@pytest.mark.parametrize(
    ("files", "mirror"),
    [
        ({"sources.list.d/debian.sources": DEB822}, "http://mirror.example/debian"),
        ({"sources.list.d/debian.sources": DISABLED_FIRST}, "https://on.example/debian"),
        ({"sources.list": ONE_LINE}, "http://ftp.example/debian"),
        (IGNORED, "http://line.example/debian"),  # deb-src stanzas and *.list.disabled files are not apt's
    ],
    ids=["deb822", "disabled-stanza", "one-line", "ignored"],
)
def test_the_mirror_is_the_one_apt_uses(tmp_path: Path, files: dict[str, str], mirror: str) -> None:
    result = _run("mirror", apt=_apt(tmp_path, files))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == mirror


def test_no_mirror_is_said_and_the_override_wins(tmp_path: Path) -> None:
    apt = _apt(tmp_path, {"sources.list": "deb cdrom:[Debian]/ bookworm main\n"})
    missing = _run("mirror", apt=apt)
    assert missing.returncode == 1
    assert "no Debian mirror in apt's sources" in missing.stderr
    chosen = _run("mirror", apt=apt, EDGEGW_ARM64_MIRROR="http://mine.example/debian")
    assert chosen.stdout.strip() == "http://mine.example/debian"


def test_it_says_what_it_cannot_show() -> None:
    result = _run("limits")
    assert result.returncode == 0
    for words in ("speed", "binfmt_misc", "systemd", "armhf"):
        assert words in result.stdout
    unknown = _run("frobnicate")
    assert unknown.returncode == 2
    assert "unknown command: frobnicate" in unknown.stderr


def test_the_suites_it_runs_under_emulation_exist() -> None:
    text = SCRIPT.read_text()
    block = re.search(r"PURE_SUITES=\(\n(.*?)\n\)", text, re.DOTALL)
    assert block is not None
    paths = block.group(1).split()
    assert "tests/rules" in paths
    for path in paths:
        assert (ROOT / path).exists(), path
