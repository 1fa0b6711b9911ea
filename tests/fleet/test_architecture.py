"""The fleet view stays apart: it imports only leaves of the gateway, and the gateway (which
runs on a Pi without the ``fleet`` extra) never imports it but from the two commands that run it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.rules.test_architecture import ROOT, _id, _project_imports

FLEET_MAY_IMPORT = ("fleet", "common", "gateway.errors", "gateway.secrets", "common.logs", "bridge.config",
                    "bridge.kafka")  # the gateway's own librdkafka settings (security), not re-written here
IMPORTERS_OF_FLEET = {"gateway.commands.fleet", "gateway.demo_fleet"}  # both import it lazily, in a function


def _modules(package: str) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


@pytest.mark.parametrize(("module", "path"), _modules("fleet"), ids=_id)
def test_fleet_imports_only_leaves_of_the_gateway(module: str, path: object) -> None:
    bad = sorted(
        m
        for m in _project_imports(module, path)  # type: ignore[arg-type]
        if not any(m == allowed or m.startswith(f"{allowed}.") for allowed in FLEET_MAY_IMPORT)
    )
    assert not bad, f"{module} imports {', '.join(bad)}"


@pytest.mark.parametrize(
    ("module", "path"),
    [
        m
        for package in ("gateway", "devices", "rules", "bridge", "common", "simulators")
        for m in _modules(package)
    ],
    ids=_id,
)
def test_nothing_of_the_gateway_imports_fleet(module: str, path: object) -> None:
    if module in IMPORTERS_OF_FLEET:
        return
    fleet_imports = {m for m in _project_imports(module, path) if m.split(".")[0] == "fleet"}  # type: ignore[arg-type]
    assert not fleet_imports, f"{module} imports {fleet_imports}"


def test_edgegw_run_loads_neither_fleet_nor_its_extra() -> None:
    code = (
        "import sys, gateway.cli, gateway.runtime, gateway.commands.fleet;"
        "bad = [m for m in ('fleet', 'psycopg', 'fastjsonschema') if m in sys.modules];"
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
