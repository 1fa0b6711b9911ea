"""What the cloud agent keeps in the state directory, written atomically (fsync, rename).

- ``deployment.json``: the last-good document (applied and settled), the one being
  settled (``trying``: found at a start, it means the gateway died during its settle
  time, and the gateway goes back to last-good), and the highest version decided.
- ``commands.json``: the ids of the commands taken (executed at most once: an id is
  written before its command runs) and the commands topic's next offsets.

Neither touches the spool: a deployment never changes what the spool holds.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.runmarker import fsync_directory

__all__ = ["AppliedDoc", "CommandStore", "DeploymentState", "DeploymentStore"]

DEPLOYMENT_FILE = "deployment.json"
COMMANDS_FILE = "commands.json"


def _write_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, separators=(",", ":"))
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    fsync_directory(path.parent)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        path.replace(path.with_suffix(".unreadable"))  # kept for a person to look at
        return None


@dataclass(frozen=True, slots=True)
class AppliedDoc:
    source: str
    """The key it came from: the gateway id or ``group/<name>``."""
    version: int
    digest: str
    document: str
    sections: tuple[str, ...]
    applied_at: float

    @staticmethod
    def of(data: Any) -> AppliedDoc | None:
        if not isinstance(data, dict):
            return None
        try:
            return AppliedDoc(
                str(data["source"]),
                int(data["version"]),
                str(data["digest"]),
                str(data["document"]),
                tuple(data["sections"]),
                float(data["applied_at"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(slots=True)
class DeploymentState:
    last_good: AppliedDoc | None = None
    trying: AppliedDoc | None = None
    decided: int = 0
    """The highest version applied, rejected or rolled back: lower or equal ones are ignored."""


class DeploymentStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DEPLOYMENT_FILE

    def load(self) -> DeploymentState:
        data = _read(self.path)
        if not isinstance(data, dict):
            return DeploymentState()
        decided = data.get("decided")
        return DeploymentState(
            AppliedDoc.of(data.get("last_good")),
            AppliedDoc.of(data.get("trying")),
            decided if isinstance(decided, int) else 0,
        )

    def save(self, state: DeploymentState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(
            self.path,
            {
                "last_good": asdict(state.last_good) if state.last_good else None,
                "trying": asdict(state.trying) if state.trying else None,
                "decided": state.decided,
            },
        )


@dataclass(slots=True)
class CommandStore:
    path: Path
    capacity: int = 10_000
    seen: set[str] = field(default_factory=set)
    _order: deque[str] = field(default_factory=deque)
    offsets: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def open(state_dir: Path, capacity: int) -> CommandStore:
        store = CommandStore(state_dir / COMMANDS_FILE, capacity)
        data = _read(store.path)
        if isinstance(data, dict):
            for cid in data.get("seen", [])[-capacity:]:
                if isinstance(cid, str) and cid not in store.seen:
                    store.seen.add(cid)
                    store._order.append(cid)
            offsets = data.get("offsets", {})
            if isinstance(offsets, dict):
                store.offsets = {str(k): int(v) for k, v in offsets.items() if isinstance(v, int)}
        return store

    def start_offset(self, topic: str, partition: int) -> int:
        """Where to read ``topic``'s partition from: after the last record taken, else -1 (its start)."""
        return self.offsets.get(f"{topic}|{partition}", -1)

    def remember(self, command_id: str | None, topic: str, partition: int, offset: int) -> None:
        """Note a command as taken, on disk, before it runs (at most once)."""
        if command_id is not None and command_id not in self.seen:
            self.seen.add(command_id)
            self._order.append(command_id)
            while len(self._order) > self.capacity:
                self.seen.discard(self._order.popleft())
        self.offsets[f"{topic}|{partition}"] = offset + 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path, {"seen": list(self._order), "offsets": self.offsets})
