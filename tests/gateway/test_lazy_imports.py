"""`edgegw run` imports what it uses, and the config parse leaves nothing behind (issue 16,
item 5: idle memory). Asserts on ``sys.modules`` in fresh interpreters, never on RSS."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.commands import COMMAND_WORDS, COMMANDS, command_word
from gateway.errors import ConfigError

# What the gateway process needs none of: other commands, the YAML parser (the config is
# parsed in a forked child), optional packages structlog would pull, the fleet view, the
# scenario runner, the Home Assistant link when disabled, test-only tools.
NOT_IN_RUN = (
    "gateway.commands.deploy",
    "gateway.commands.discover",
    "gateway.commands.rules",
    "gateway.commands.simulate",
    "gateway.commands.demo",
    "gateway.commands.fleet",
    "gateway.checks",
    "gateway.demo",
    "gateway.discovered",
    "gateway.homeassistant.link",
    "gateway.homeassistant.discovery",
    "rules.scenario",
    "rules.json_schema",
    "devices.discovery",
    "simulators",
    "fleet",
    "ruamel",
    "rich",
    "greenlet",
    "pygments",
    "jsonschema",
    "fastjsonschema",
    "psycopg",
    "playwright",
    "prometheus_client",
    "serial",
)

CONFIG = """\
gateway: {id: lazy-gw, state_dir: STATE}
mqtt: {host: 127.0.0.1, port: 1}
devices:
  - {id: t1, profile: zigbee2mqtt, topic: zigbee2mqtt/t1}
  - {id: t2, profile: zigbee2mqtt, topic: zigbee2mqtt/t2}
actuators:
  - {id: plug, profile: zigbee2mqtt, name: plug}
rules:
  - id: hot
    when: {sensor: t1/temperature, above: 30}
    then: [{set: plug, to: {state: "ON"}}]
"""

# What `edgegw run` does up to the runtime's start: parse its command line, load the
# config as it does, import the runtime, HTTP and metrics; then the loaded modules.
RUN = """
import json, sys
from gateway import cli
structlog = cli._import_structlog()
args = cli.build_parser(sys.argv[1:]).parse_args(sys.argv[1:])
from gateway.config import load_config_at_start
loaded = load_config_at_start(args.config)
import gateway.runtime, gateway.http, gateway.metrics, common.logs, gateway.identity, gateway.sdnotify
print(json.dumps({"modules": sorted(sys.modules), "devices": len(loaded.config.devices),
                  "rules": len(loaded.rules.rules)}))
"""


def _config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "edgegw.yaml"
    path.write_text(text.replace("STATE", str(tmp_path / "state")))
    return path


def _run_modules(config: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", RUN, "run", "--config", str(config)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    data: dict[str, object] = json.loads(out)
    return data


def test_run_loads_none_of_what_it_does_not_use(tmp_path: Path) -> None:
    data = _run_modules(_config(tmp_path))
    assert data["devices"] == 2
    modules = data["modules"]
    assert isinstance(modules, list)
    loaded = [m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_IN_RUN)]
    assert loaded == []
    assert "gateway.commands.run" in modules  # the one command module


def test_a_bad_config_is_reported_from_the_child_with_its_position(tmp_path: Path) -> None:
    from gateway.config import load_config, load_config_at_start  # noqa: PLC0415

    bad = _config(tmp_path, CONFIG.replace("above: 30", "above: hot"))
    with pytest.raises(ConfigError) as in_process:
        load_config(bad)
    # pytest runs threads at times: force the forked path as `edgegw run` takes it
    code = (
        "import sys; from gateway.config import load_config_at_start as f\n"
        "from gateway.errors import ConfigError\n"
        "try: f(sys.argv[1])\n"
        "except ConfigError as e: print('\\n'.join(str(i) for i in e.issues))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines() == [str(i) for i in in_process.value.issues]
    assert ":10:43:" in out.stdout  # line 10, column 43: located, as load_config locates it
    with pytest.raises(ConfigError):
        load_config_at_start(bad)  # in-process (or forked): the same error either way


def test_a_missing_config_is_the_same_error_as_before(tmp_path: Path) -> None:
    from gateway.config import load_config_at_start  # noqa: PLC0415

    with pytest.raises(ConfigError, match="cannot read file"):
        load_config_at_start(tmp_path / "nothing.yaml")


def test_the_forked_load_gives_the_same_config_as_load_config(tmp_path: Path) -> None:
    code = (
        "import sys; from gateway.config import load_config, load_config_at_start\n"
        "a, b = load_config_at_start(sys.argv[1]), load_config(sys.argv[1])\n"
        "print(a.config == b.config, [r.id for r in a.rules.rules] == [r.id for r in b.rules.rules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(_config(tmp_path))], capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.split() == ["True", "True"]


def test_command_words_name_what_each_module_registers() -> None:
    registered: dict[str, str] = {}
    for name in COMMANDS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        __import__(f"gateway.commands.{name}", fromlist=["register"]).register(sub)
        registered.update(dict.fromkeys(sub.choices, name))
    assert registered == COMMAND_WORDS


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["run", "-c", "x"], "run"),
        (["--version"], None),
        ([], None),
        (["--", "run"], None),
        (["check"], "check"),
    ],
)
def test_command_word(argv: list[str], word: str | None) -> None:
    assert command_word(argv) == word


def test_help_still_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "--help"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    for word in COMMAND_WORDS:
        assert f"    {word} " in out or f"    {word}\n" in out


def test_lazy_package_exports_resolve() -> None:
    import bridge  # noqa: PLC0415
    import devices  # noqa: PLC0415
    import rules  # noqa: PLC0415

    for package in (bridge, devices, rules):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
        with pytest.raises(AttributeError):
            _ = package.no_such_name
