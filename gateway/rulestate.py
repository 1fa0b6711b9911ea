"""The rule-state snapshot on disk: ``<state_dir>/rules-state.json``.

The engine turns its state into plain data (:mod:`rules.state`, schema-versioned); this
module only writes and reads the file: atomically (write, fsync, rename), and a file
that cannot be read is set aside as ``rules-state.bad-<time>`` so the gateway starts
fresh instead of staying dark.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import structlog

__all__ = ["RULE_STATE_FILE", "read_rule_state", "write_rule_state"]

RULE_STATE_FILE = "rules-state.json"
_log = structlog.get_logger("edgegw.rulestate")


def write_rule_state(path: Path, data: dict[str, Any]) -> bool:
    """Write ``data`` atomically; False (and an error log) when the disk refuses."""
    tmp = path.with_suffix(".tmp")
    try:
        with tmp.open("w") as handle:
            json.dump(data, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        _log.error("cannot save rule state", path=str(path), error=str(exc))
        return False
    return True


def read_rule_state(path: Path) -> dict[str, Any] | None:
    """The saved data, or None when there is none or it is unreadable (then set aside)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        set_aside(path, str(exc))
        return None
    return data


def set_aside(path: Path, error: str) -> Path:
    """Move an unusable snapshot out of the way (kept for a post-mortem)."""
    keep = path.with_suffix(f".bad-{int(time.time())}")
    try:
        path.replace(keep)
    except OSError:
        keep = path
    _log.error("rule state unreadable; starting fresh", path=str(path), kept=str(keep), error=error)
    return keep
