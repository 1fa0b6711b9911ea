"""The rule-state file of earlier versions: ``<state_dir>/rules-state.json``.

The rule state now commits with the readings in the spool (docs/bridge.md, "Rule events
and commands: exactly once across crashes"). At the first start of this version the
runtime reads this file once, imports it into the spool and renames it
``rules-state.imported``; a file that cannot be read is set aside as
``rules-state.bad-<time>`` so the gateway starts fresh instead of staying dark.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import structlog

__all__ = ["RULE_STATE_FILE", "read_rule_state", "set_aside"]

RULE_STATE_FILE = "rules-state.json"
_log = structlog.get_logger("edgegw.rulestate")


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
