"""A desired-state document over the local config: validated exactly as ``edgegw check``
validates the config file, every error at ``file:line:column`` of the document.

The local YAML stays the base; each section the document holds (``rules``, ``devices``,
``actuators``, ``location``) replaces the base's section of that name. A document with
``rules`` replaces the local rules entirely, inline and ``include:`` files alike (two
sources of one rule id would be a duplicate). Everything else (spool, Kafka, MQTT,
credentials, state directory, HTTP) comes from the local file only; a document naming
one of those is rejected with the reason (:data:`gateway.deploy.policy.REFUSED`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import ConfigReview, LoadedConfig, review_document
from gateway.deploy.policy import DEPLOYABLE, digest, header_version, refused_sections
from gateway.errors import ConfigError, ConfigIssue
from gateway.yamlio import YamlDocument, load_yaml, parse_yaml, sorted_issues

__all__ = [
    "DeploymentReview",
    "check_document",
    "document_name",
    "overlay",
    "review_deployment",
    "with_version",
]


def document_name(key: str, version: int | None) -> str:
    """How errors name a document: ``desired[hall-pi]@v3``."""
    return f"desired[{key}]@v{version if version is not None else '?'}"


@dataclass(slots=True)
class DeploymentReview:
    name: str
    version: int | None
    digest: str
    sections: tuple[str, ...] = ()
    loaded: LoadedConfig | None = None
    issues: list[ConfigIssue] = field(default_factory=list)


def overlay(base: YamlDocument, doc: YamlDocument, sections: tuple[str, ...]) -> YamlDocument:
    """The base document with ``sections`` replaced by the document's, positions included
    (the merged document's ``file`` is the deployment's; see :func:`review_deployment`)."""
    data = copy.deepcopy(base.data) if isinstance(base.data, dict) else {}
    positions = {p: pos for p, pos in base.positions.items() if not p or p[0] not in sections}
    for section in sections:
        data[section] = copy.deepcopy(doc.data[section])
        positions.update({p: pos for p, pos in doc.positions.items() if p and p[0] == section})
    if "rules" in sections:
        data.pop("include", None)
        positions = {p: pos for p, pos in positions.items() if not p or p[0] != "include"}
    return YamlDocument(data=data, file=doc.file, positions=positions)


def review_deployment(
    base_path: Path, raw: bytes, key: str, *, max_bytes: int, base: YamlDocument | None = None
) -> DeploymentReview:
    """Validate ``raw`` (YAML or JSON) over the config file at ``base_path``."""
    if len(raw) > max_bytes:
        name = document_name(key, None)
        too_large = f"document of {len(raw)} bytes is larger than max_document_bytes ({max_bytes})"
        issue = ConfigIssue(too_large, name)
        return DeploymentReview(name, None, digest(raw), issues=[issue])
    try:
        text = raw.decode("utf-8")
        probe = parse_yaml(text, document_name(key, None))
    except UnicodeDecodeError:
        name = document_name(key, None)
        return DeploymentReview(name, None, digest(raw), issues=[ConfigIssue("not UTF-8 text", name)])
    except ConfigError as exc:
        return DeploymentReview(document_name(key, None), None, digest(raw), issues=exc.issues)
    version = header_version(probe.data)
    name = document_name(key, version)
    doc = parse_yaml(text, name)
    review = DeploymentReview(name, version, digest(raw))
    if not isinstance(doc.data, dict):
        review.issues.append(doc.issue((), "a document is a mapping with version: and rules:"))
        return review
    if version is None:
        review.issues.append(doc.issue(("version",), "version: a positive integer is required", at_key=True))
    for section, reason in refused_sections(doc.data):
        review.issues.append(doc.issue((section,), f"refused: {reason}", at_key=True))
    sections = tuple(s for s in DEPLOYABLE if s != "version" and s in doc.data)
    review.sections = sections
    if not sections:
        nothing = "nothing to deploy: give rules:, devices:, actuators: or location:"
        review.issues.append(doc.issue((), nothing))
    if not sections:
        return review
    # the deployable sections are checked even when others were refused: every problem at once
    base_doc = base if base is not None else load_yaml(base_path)
    merged = overlay(base_doc, doc, sections)
    result: ConfigReview = review_document(merged, base_path)
    issues = review.issues + [_relocate(i, sections, str(base_path), name) for i in result.issues]
    review.issues = sorted_issues(issues)
    review.loaded = result.loaded if not issues else None
    return review


def _relocate(issue: ConfigIssue, sections: tuple[str, ...], base_file: str, name: str) -> ConfigIssue:
    """An issue outside the document's sections sits in the local file."""
    head = issue.path.split(".")[0].split("[")[0]
    if issue.file == name and head and head not in sections:
        return ConfigIssue(issue.message, base_file, issue.line, issue.column, issue.path)
    return issue


def parse_sections(raw: bytes) -> dict[str, Any]:
    """The deployable sections of a document already validated (for ``edgegw check``)."""
    doc = parse_yaml(raw.decode("utf-8"), "<document>")
    return {k: v for k, v in doc.data.items() if k in DEPLOYABLE} if isinstance(doc.data, dict) else {}


def check_document(raw: bytes, name: str) -> list[ConfigIssue]:
    """What can be checked of a document without a gateway's config (``edgegw deploy``
    without ``--config``): its shape, refused sections, devices, actuators and rules (the
    rules against the document's own devices and actuators, when it holds them)."""
    from pydantic import TypeAdapter  # noqa: PLC0415

    from devices.config import ActuatorConfig, DeviceConfig  # noqa: PLC0415
    from gateway.rulesload import Declared, load_rules  # noqa: PLC0415
    from gateway.yamlio import validate  # noqa: PLC0415

    try:
        doc = parse_yaml(raw.decode("utf-8"), name)
    except UnicodeDecodeError:
        return [ConfigIssue("not UTF-8 text", name)]
    except ConfigError as exc:
        return exc.issues
    if not isinstance(doc.data, dict):
        return [doc.issue((), "a document is a mapping with version: and rules:")]
    issues = [doc.issue((s,), f"refused: {reason}", at_key=True) for s, reason in refused_sections(doc.data)]
    if "version" in doc.data and header_version(doc.data) is None:
        issues.append(doc.issue(("version",), "version: a positive integer"))
    devices = actuators = None
    for key, model in (("devices", DeviceConfig), ("actuators", ActuatorConfig)):
        if key not in doc.data:
            continue
        try:
            items: list[Any] = validate(doc, TypeAdapter(list[model]), path=(key,))  # type: ignore[valid-type]
        except ConfigError as exc:
            issues += exc.issues
            continue
        if key == "devices":
            from gateway.config import declared_sensors  # noqa: PLC0415

            devices = declared_sensors(items)
        else:
            actuators = frozenset(a.id for a in items)
    if isinstance(doc.data.get("rules"), list):
        issues += load_rules([(doc, ("rules",))], declared=Declared(devices, actuators)).issues
    elif "rules" in doc.data:
        issues.append(doc.issue(("rules",), "rules: a list of rules"))
    return sorted_issues(issues)


def with_version(raw: bytes, version: int) -> bytes:
    """The document with ``version`` set, its lines where they were (errors the gateway
    reports point at the lines of the file as written): a JSON object is rewritten, a YAML
    mapping gets its ``version:`` line replaced or appended."""
    import json  # noqa: PLC0415
    import re  # noqa: PLC0415

    text = raw.decode("utf-8")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:  # a YAML flow mapping ({rules: [...]}): checked already, so valid YAML
            data = parse_yaml(text).data
        return json.dumps({"version": version, **{k: v for k, v in data.items() if k != "version"}}).encode()
    line = re.compile(r"^version:[^\n]*$", re.MULTILINE)
    if line.search(text):
        return line.sub(f"version: {version}", text, count=1).encode()
    return (
        text if text.endswith("\n") or not text else text + "\n"
    ).encode() + f"version: {version}\n".encode()
