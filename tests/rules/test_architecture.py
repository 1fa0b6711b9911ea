"""The import rules of the design, checked on the source.

- rules/ stays pure: no asyncio, MQTT, Kafka, SQLite or file access, no other packages;
- bridge/ and devices/ import of the rest only the leaves (gateway.model, gateway.errors,
  common/), and common/ only gateway.model and gateway.errors;
- only the command line imports gateway/commands/; one Backoff.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "rules"
ALLOWED_THIRD_PARTY = {"pydantic", "astral", "structlog"}  # structlog: the engine's warnings
ALLOWED_PROJECT = {"gateway.model", "gateway.errors"}
FORBIDDEN_STDLIB = {"asyncio", "sqlite3", "socket", "selectors", "threading", "subprocess", "pathlib"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(RULES.glob("*.py")), ids=lambda p: p.name)
def test_rules_imports_only_what_it_may(path: Path) -> None:
    for module in _imports(path):
        top = module.split(".")[0]
        if top in {"__future__", "rules"} or module in ALLOWED_PROJECT:
            continue
        assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, f"{path.name}: {module}"
        assert top not in FORBIDDEN_STDLIB, f"{path.name}: {module}"


def test_rules_never_opens_files() -> None:
    for path in RULES.glob("*.py"):
        tree = ast.parse(path.read_text())
        calls = {
            n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert "open" not in calls, path.name


ROOT = RULES.parent
CLI_MODULES = {"gateway.cli", "gateway.__main__"}


def _project_modules() -> list[tuple[str, Path]]:
    out = []
    for package in ("gateway", "devices", "rules", "bridge", "simulators", "common"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


def _id(value: object) -> str:
    return value if isinstance(value, str) else ""


@pytest.mark.parametrize(("module", "path"), _project_modules(), ids=_id)
def test_only_the_cli_imports_the_command_modules(module: str, path: Path) -> None:
    """gateway/commands/ is the command line; the code it runs (e.g. the rules loader that
    config loading also needs) lives outside it, so the gateway never imports the CLI."""
    if module in CLI_MODULES or module.startswith("gateway.commands"):
        return
    for imported in _imports(path):
        assert not imported.startswith("gateway.commands"), f"{module} imports {imported}"


def test_one_backoff_for_every_package() -> None:
    """Reconnect backoff (MQTT, serial, Kafka, the supervisor) is one class in a leaf module."""
    defined = [
        module
        for module, path in _project_modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name == "Backoff"
    ]
    assert defined == ["common.backoff"]


PROJECT_PACKAGES = {"gateway", "devices", "rules", "bridge", "simulators", "common"}
LEAVES = {"gateway.model", "gateway.errors"}


def _project_imports(module: str, path: Path) -> set[str]:
    """The project modules ``path`` imports, at any depth (``TYPE_CHECKING`` and function
    bodies too); ``from pkg import mod`` counts as ``pkg.mod`` when ``mod`` is a module."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            names = [base]
            for alias in node.names:
                sub = ROOT.joinpath(*base.split("."), alias.name)
                if sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file():
                    names.append(f"{base}.{alias.name}")
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PROJECT_PACKAGES}
    return found


def _allowed(importer: str, imported: str) -> bool:
    own = importer.split(".", maxsplit=1)[0]
    if imported in LEAVES or any(imported.startswith(f"{leaf}.") for leaf in LEAVES):
        return True
    if own == "common":  # leaves: nothing of the project but gateway.model and gateway.errors
        return False
    return imported.split(".", maxsplit=1)[0] in {own, "common"}


@pytest.mark.parametrize(
    ("module", "path"),
    [(m, p) for m, p in _project_modules() if m.split(".")[0] in {"bridge", "devices", "common"}],
    ids=_id,
)
def test_bridge_and_devices_import_only_leaves_of_the_rest(module: str, path: Path) -> None:
    """Per the design, bridge/ and devices/ import nothing of gateway/ but the leaves
    gateway.model and gateway.errors (plus common/, the shared leaves), and never each other
    or rules/; common/ imports only gateway.model and gateway.errors."""
    bad = sorted(m for m in _project_imports(module, path) if not _allowed(module, m))
    assert not bad, f"{module} imports {', '.join(bad)}"


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_runtime_dependency_is_imported_by_the_product() -> None:
    """A runtime dependency nothing imports is weight on every Pi (and a supply-chain risk):
    tests, benchmarks and the demo broker have their own extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    used: set[str] = set()
    for _module, path in _project_modules():
        for name in _imports(path):
            top = name.split(".")[0]
            used |= {d.lower().replace("_", "-") for d in distributions.get(top, [])}
    assert sorted(declared - used) == []
