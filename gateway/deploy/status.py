"""What ``edgegw check`` says about deployments: where each part of the running config
comes from (the local file, or the last-good document from Kafka over it)."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.config import LoadedConfig
from gateway.deploy.document import review_deployment
from gateway.deploy.policy import keys_for
from gateway.deploy.store import DeploymentStore

__all__ = ["deployment_summary"]


def deployment_summary(
    loaded: LoadedConfig, state_dir: Path, gateway_id: str | None
) -> tuple[list[str], list[str]]:
    """``(summary lines, warnings)`` for a config with a ``cloud:`` section."""
    config = loaded.config
    cloud = config.cloud
    if cloud is None or not cloud.enabled:
        return [], []
    keys = keys_for(gateway_id or "<gateway id>", config.gateway.group)
    lines = [
        f"  cloud: documents from {cloud.desired_topic}, commands from {cloud.commands_topic}, "
        f"keys {', '.join(keys)}; settle {cloud.settle:g} s",
    ]
    warnings: list[str] = []
    state = DeploymentStore(state_dir).load()
    good = state.last_good
    if good is None:
        lines.append("  deployment: none applied yet: everything comes from the local file")
    else:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(good.applied_at))
        lines.append(
            f"  deployment: version {good.version} from key {good.source} ({good.digest[:19]}...), "
            f"applied {when}"
        )
        review = review_deployment(
            loaded.path, good.document.encode(), good.source, max_bytes=int(cloud.max_document_bytes)
        )
        if review.loaded is None:
            warnings.append(
                f"the last-good deployment (version {good.version}) does not fit this config any "
                f"more; the gateway runs the local file alone: {review.issues[0]}"
            )
        else:
            run = review.loaded.config
            counts = {
                "rules": len(review.loaded.rules),
                "devices": len(run.devices),
                "actuators": len(run.actuators),
                "location": 1,
            }
            for section in ("rules", "devices", "actuators", "location"):
                source = f"deployment v{good.version}" if section in good.sections else "local file"
                amount = "" if section == "location" else f"{counts[section]} "
                lines.append(f"    {section}: {amount}from the {source}")
    if state.trying is not None:
        warnings.append(
            f"deployment version {state.trying.version} was settling when the gateway stopped; "
            "the next start rolls it back to the last-good one"
        )
    return lines, warnings
