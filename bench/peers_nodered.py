"""Node-RED as a peer of ``bench.peers``: installed once by npm, run headless with a flow the bench writes.

- :func:`install`: ``npm install --prefix <cache> node-red@4.1`` unless that cache already
  holds a 4.1 (``$XDG_CACHE_HOME/edgegw-bench/node-red``, else ``~/.cache/edgegw-bench/node-red``);
  :class:`NodeRedMissing` (with the reason) when node or npm is not installed or npm fails.
- :func:`prepare`: a user dir with ``settings.js`` (no editor, no admin API, no HTTP
  nodes, console log at ``warn``) and ``flows.json``: mqtt in (``zigbee2mqtt/+``, JSON, QoS
  of the run) -> a function ``temperature > 30`` -> mqtt out to ``zigbee2mqtt/act-<n>/set``
  with ``{"state":"ON"}`` at the same QoS (the bytes edgegw's actuator sends). No
  durability: a clean MQTT session, nothing stored.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NodeRed", "NodeRedMissing", "cache_dir", "flows", "install", "prepare"]

WANTED = "4.1"


class NodeRedMissing(RuntimeError):
    """Node-RED cannot be run here (no node, no npm, or the install failed)."""


@dataclass(frozen=True)
class NodeRed:
    node: str
    red_js: Path
    version: str
    node_version: str

    def command(self, user_dir: Path) -> list[str]:
        return [
            self.node,
            str(self.red_js),
            "--settings",
            str(user_dir / "settings.js"),
            "--userDir",
            str(user_dir),
        ]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgegw-bench" / "node-red"


def _installed_version(prefix: Path) -> str | None:
    try:
        data = json.loads((prefix / "node_modules" / "node-red" / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = data.get("version")
    return version if isinstance(version, str) else None


def install(prefix: Path | None = None) -> NodeRed:
    prefix = prefix or cache_dir()
    node = shutil.which("node")
    if node is None:
        raise NodeRedMissing("node is not installed (apt-get install nodejs npm): no Node-RED row")
    version = _installed_version(prefix)
    if version is None or not (version == WANTED or version.startswith(WANTED + ".")):
        npm = shutil.which("npm")
        if npm is None:
            raise NodeRedMissing("npm is not installed (apt-get install npm): no Node-RED row")
        prefix.mkdir(parents=True, exist_ok=True)
        print(f"  installing node-red@{WANTED} into {prefix} (once) ...", flush=True)
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", f"node-red@{WANTED}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        version = _installed_version(prefix)
        if done.returncode != 0 or version is None:
            raise NodeRedMissing(f"npm install node-red@{WANTED} failed: {done.stderr.strip()[-500:]}")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
    return NodeRed(node, prefix / "node_modules" / "node-red" / "red.js", version, node_version.strip())


FUNCTION = """\
const t = msg.payload && msg.payload.temperature;
if (typeof t === "number" && t > 30) {
    const dev = msg.topic.slice(msg.topic.lastIndexOf("/") + 1);
    return {topic: "zigbee2mqtt/act-" + dev.slice(dev.indexOf("-") + 1) + "/set",
            payload: '{"state":"ON"}', qos: %d, retain: false};
}
return null;
"""


def flows(port: int, qos: int) -> list[dict[str, object]]:
    """The flow: mqtt in -> function ``temperature > 30`` -> mqtt out."""
    broker = {
        "id": "bench-broker",
        "type": "mqtt-broker",
        "name": "test bed",
        "broker": "127.0.0.1",
        "port": str(port),
        "clientid": f"bench-nodered-{uuid.uuid4().hex[:6]}",
        "autoConnect": True,
        "usetls": False,
        "protocolVersion": "4",
        "keepalive": "60",
        "cleansession": True,
        "birthTopic": "",
        "closeTopic": "",
        "willTopic": "",
    }
    return [
        {"id": "bench-tab", "type": "tab", "label": "bench"},
        broker,
        {
            "id": "bench-in",
            "type": "mqtt in",
            "z": "bench-tab",
            "topic": "zigbee2mqtt/+",
            "qos": str(qos),
            "datatype": "json",
            "broker": "bench-broker",
            "nl": False,
            "rap": True,
            "rh": 0,
            "inputs": 0,
            "wires": [["bench-rule"]],
        },
        {
            "id": "bench-rule",
            "type": "function",
            "z": "bench-tab",
            "name": "temperature > 30",
            "func": FUNCTION % qos,
            "outputs": 1,
            "wires": [["bench-out"]],
        },
        {
            "id": "bench-out",
            "type": "mqtt out",
            "z": "bench-tab",
            "topic": "",
            "qos": str(qos),
            "retain": "false",
            "broker": "bench-broker",
            "wires": [],
        },
    ]


SETTINGS = """\
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %d,
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    flowFile: "flows.json",
    credentialSecret: false,
    userDir: %s,
    telemetry: {enabled: false},
    externalModules: {autoInstall: false, palette: {allowInstall: false}, modules: {allowInstall: false}},
    logging: {console: {level: "warn", metrics: false, audit: false}},
};
"""


def prepare(user_dir: Path, mqtt_port: int, http_port: int, qos: int) -> None:
    """Write ``settings.js`` and ``flows.json`` into ``user_dir``."""
    user_dir.mkdir(parents=True, exist_ok=True)
    (user_dir / "settings.js").write_text(SETTINGS % (http_port, json.dumps(str(user_dir))))
    (user_dir / "flows.json").write_text(json.dumps(flows(mqtt_port, qos), indent=1) + "\n")
