"""Cloud to edge over Kafka: desired-state deployments and remote commands (docs/fleet.md).

- :mod:`gateway.deploy.settings`: the ``cloud:`` config section;
- :mod:`gateway.deploy.policy`: pure decisions (keys, versions, refused sections, commands);
- :mod:`gateway.deploy.document`: a document over the local config, validated as ``edgegw check`` does;
- :mod:`gateway.deploy.store`: last-good, the document being settled and command ids, in the state directory;
- :mod:`gateway.deploy.reports`: the CloudEvents every outcome becomes;
- :mod:`gateway.deploy.agent`: the runtime side (apply, settle, roll back; commands).
"""

from __future__ import annotations

from gateway.deploy.settings import CloudSection

__all__ = ["CloudSection"]
