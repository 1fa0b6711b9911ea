"""``edgegw deploy FILE --gateway ID | --group NAME`` and ``edgegw command GATEWAY ACTUATOR PAYLOAD``.

``deploy`` checks the document locally (with ``--config``: exactly as the gateway will,
over that config; without: its shape, devices, actuators and rules), writes it to the
desired topic under the gateway's key (or ``group/NAME``) with the next version (the
highest in the topic + 1), and waits for the targeted gateways' applied, rejected or
rolled-back events, with a progress line, until ``--timeout``. Exit 0: every target
applied it; 1: one rejected it, rolled it back or did not answer in time; 2: invalid.

``command`` writes one command (a fresh ``command_id``, ``expires_at`` = now +
``--expires-in``) and prints its result event. Exit 0 when sent or confirmed.

Both take the bridge's Kafka settings: ``--config`` (a gateway config: its
``bridge.kafka`` and ``cloud:`` topics) and/or the options below (they win).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _kafka_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka", metavar="HOST:PORT", help="bootstrap servers (default: the config's)")
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        metavar="FILE",
        help="a gateway config: its bridge.kafka and cloud: topics",
    )
    sec = parser.add_argument_group("Kafka security (as bridge.kafka.security)")
    sec.add_argument("--security-protocol", choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    sec.add_argument("--sasl-mechanism", choices=("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"))
    sec.add_argument("--sasl-username")
    sec.add_argument("--sasl-password-env", metavar="VAR", help="environment variable holding the password")
    sec.add_argument("--sasl-password-file", type=Path, metavar="FILE", help="file holding the password")
    sec.add_argument("--tls-ca", type=Path, metavar="FILE")
    sec.add_argument("--tls-cert", type=Path, metavar="FILE")
    sec.add_argument("--tls-key", type=Path, metavar="FILE")
    top = parser.add_argument_group("topics")
    top.add_argument("--desired-topic", help="default: edgegw.desired (or the config's)")
    top.add_argument("--commands-topic", help="default: edgegw.commands.in (or the config's)")
    top.add_argument("--events-topic", help="default: edgegw.events (or the config's)")
    top.add_argument("--heartbeats-topic", help="default: edgegw.heartbeats (or the config's)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the outcome")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deploy = subparsers.add_parser(
        "deploy",
        help="deploy rules (and devices, actuators) to a gateway or a group over Kafka",
        description="Check a desired-state document, write it with the next version to the desired "
        "topic and wait for the targeted gateways to apply it (docs/fleet.md).",
    )
    deploy.add_argument("file", type=Path, metavar="FILE", help="YAML or JSON: rules:, devices:, actuators:")
    target = deploy.add_mutually_exclusive_group(required=True)
    target.add_argument("--gateway", metavar="ID")
    target.add_argument("--group", metavar="NAME")
    deploy.add_argument("--expect", action="append", default=[], metavar="ID",
                        help="with --group: a gateway to wait for (default: those whose heartbeat of the "
                        "last 5 minutes names the group)")  # fmt: skip
    deploy.add_argument("--no-wait", action="store_true", help="write it and exit")
    _kafka_args(deploy)
    deploy.set_defaults(func=_deploy)
    command = subparsers.add_parser(
        "command",
        help="send one command to an actuator of a gateway over Kafka",
        description="Send a command to a declared actuator of a gateway and print its result.",
    )
    command.add_argument("gateway", metavar="GATEWAY")
    command.add_argument("actuator", metavar="ACTUATOR")
    command.add_argument("payload", metavar="PAYLOAD", help='JSON object, e.g. \'{"state": "on"}\'')
    command.add_argument("--expires-in", default="5m", help="never run after this (default 5m)")
    command.add_argument("--command-id", help="default: a fresh one")
    _kafka_args(command)
    command.set_defaults(func=_command)


class _Settings:
    def __init__(self, conf: dict[str, Any], topics: dict[str, str], max_bytes: int = 256 * 1024) -> None:
        self.conf = conf
        self.topics = topics
        self.max_bytes = max_bytes
        """The gateways' cloud.max_document_bytes (the config's, else the default)."""


def _settings(args: argparse.Namespace) -> _Settings:
    from bridge.config import KafkaConfig, KafkaSecrets  # noqa: PLC0415
    from bridge.kafka import client_config  # noqa: PLC0415
    from gateway.assembly import kafka_secrets  # noqa: PLC0415
    from gateway.errors import ConfigError  # noqa: PLC0415

    base: dict[str, Any] = {}
    topics = {"desired": "edgegw.desired", "commands": "edgegw.commands.in", "events": "edgegw.events",
              "heartbeats": "edgegw.heartbeats"}  # fmt: skip
    secrets = KafkaSecrets()
    max_bytes = 256 * 1024
    if args.config is not None:
        from gateway.config import load_config  # noqa: PLC0415

        config = load_config(args.config).config
        if config.bridge.kafka is not None:
            base = config.bridge.kafka.model_dump(exclude_none=True)
            secrets = kafka_secrets(config, dict(os.environ))
            topics["events"] = config.bridge.kafka.topics.events
            topics["heartbeats"] = config.bridge.kafka.topics.heartbeats
        if config.cloud is not None:
            topics["desired"], topics["commands"] = config.cloud.desired_topic, config.cloud.commands_topic
            max_bytes = int(config.cloud.max_document_bytes)
    if args.kafka:
        base["bootstrap"] = args.kafka
    if "bootstrap" not in base:
        raise ConfigError("give --kafka HOST:PORT (or --config with a bridge.kafka section)")
    base["security"] = _security(args, dict(base.get("security", {})))
    try:
        kafka = KafkaConfig.model_validate(base)
    except ValueError as exc:
        raise ConfigError(f"Kafka settings: {exc}") from exc
    if kafka.security.sasl is not None and secrets.sasl_password is None:
        from gateway.secrets import resolve_secret  # noqa: PLC0415

        secrets = KafkaSecrets(
            sasl_password=resolve_secret(kafka.security.sasl.password, what="kafka sasl password")
        )
    for name in ("desired", "commands", "events", "heartbeats"):
        value = getattr(args, f"{name}_topic")
        if value:
            topics[name] = value
    conf = client_config(kafka, secrets)
    return _Settings(conf, topics, max_bytes)


def _security(args: argparse.Namespace, security: dict[str, Any]) -> dict[str, Any]:
    """``bridge.kafka.security`` of the config, with the command line's options over it."""
    if args.security_protocol:
        security["protocol"] = args.security_protocol
    if args.sasl_username or args.sasl_password_env or args.sasl_password_file:
        sasl = dict(security.get("sasl", {}))
        if args.sasl_username:
            sasl["username"] = args.sasl_username
        if args.sasl_mechanism:
            sasl["mechanism"] = args.sasl_mechanism
        if args.sasl_password_env:
            sasl["password"] = {"env": args.sasl_password_env}
        elif args.sasl_password_file:
            sasl["password"] = {"file": args.sasl_password_file}
        security["sasl"] = sasl
    if args.tls_ca or args.tls_cert or args.tls_key:
        tls = dict(security.get("tls", {}))
        given = {"ca_file": args.tls_ca, "cert_file": args.tls_cert, "key_file": args.tls_key}
        tls.update({k: v for k, v in given.items() if v is not None})
        security["tls"] = tls
    return security


# ---------------------------------------------------------------------- deploy
def _deploy(args: argparse.Namespace) -> int:
    from bridge.central import EventWatch, ensure_compacted_topic, latest_per_key, produce  # noqa: PLC0415
    from gateway.deploy.document import check_document, review_deployment, with_version  # noqa: PLC0415
    from gateway.deploy.policy import GROUP_PREFIX, header_version  # noqa: PLC0415
    from gateway.errors import ConfigError, ConfigIssue  # noqa: PLC0415
    from gateway.yamlio import parse_yaml  # noqa: PLC0415

    try:
        raw = args.file.read_bytes()
    except OSError as exc:
        raise ConfigError(ConfigIssue(f"cannot read file: {exc.strerror}", str(args.file))) from exc
    key = args.gateway or f"{GROUP_PREFIX}{args.group}"
    issues = check_document(raw, str(args.file))
    if issues:
        raise ConfigError(issues)
    settings = _settings(args)
    ensure_compacted_topic(settings.conf, settings.topics["desired"])
    latest = latest_per_key(settings.conf, settings.topics["desired"], timeout=args.timeout)
    highest = max((_version_of(v, parse_yaml, header_version) for v in latest.values()), default=0)
    written = header_version(parse_yaml(raw.decode("utf-8"), str(args.file)).data)
    if written is not None and written <= highest:
        raise ConfigError(ConfigIssue(f"version {written} is not above the highest in the topic ({highest}); "
                                      "leave version: out to get the next one", str(args.file)))  # fmt: skip
    version = written or highest + 1
    document = with_version(raw, version)
    if len(document) > settings.max_bytes:
        why = f"{len(document)} bytes: larger than the gateways' max_document_bytes ({settings.max_bytes})"
        raise ConfigError(ConfigIssue(why, str(args.file)))
    if args.config is not None:  # exactly as that gateway will check it
        review = review_deployment(args.config, document, key, max_bytes=settings.max_bytes)
        if review.issues:
            raise ConfigError(review.issues)
    watch = None if args.no_wait else EventWatch(settings.conf, settings.topics["events"])
    try:
        produce(settings.conf, settings.topics["desired"], key, document)
        print(f"{args.file}: version {version} written to {settings.topics['desired']} under {key}")
        if watch is None:
            return EXIT_OK
        targets = set(args.expect) if args.group else {args.gateway}
        if args.group and not targets:
            targets = _group_members(settings, args.group)
        return _wait_outcomes(watch, version, key, targets, args.timeout)
    finally:
        if watch is not None:
            watch.close()


def _version_of(raw: bytes, parse: Any, header: Any) -> int:
    try:
        return int(header(parse(raw.decode("utf-8")).data) or 0)
    except Exception:  # noqa: BLE001 - someone else's broken document: it has no version
        return 0


def _group_members(settings: _Settings, group: str) -> set[str]:
    from bridge.central import recent_keys  # noqa: PLC0415

    members = set()
    for gateway_id, value in recent_keys(
        settings.conf, settings.topics["heartbeats"], since=time.time() - 300
    ).items():
        try:
            if group in json.loads(value).get("groups", []):
                members.add(gateway_id)
        except (ValueError, AttributeError):
            continue
    return members


_OUTCOMES = {
    "edgegw.deployment.applied.v1": "applied",
    "edgegw.deployment.rejected.v1": "rejected",
    "edgegw.deployment.rolled_back.v1": "rolled back",
}


def _wait_outcomes(watch: Any, version: int, key: str, targets: set[str], timeout: float) -> int:
    outcome: dict[str, str] = {}
    details: dict[str, list[str]] = {}
    began = time.monotonic()
    shown = ""
    while time.monotonic() - began < timeout:
        for event in watch.poll(0.5):
            kind = _OUTCOMES.get(event.type)
            data = event.data
            if kind is None or data.get("version") != version or data.get("source") != key:
                continue
            gateway_id = str(data.get("gateway_id"))
            outcome[gateway_id] = kind
            details[gateway_id] = [e.get("text", "") for e in data.get("errors", [])] or (
                [data["reason"]] if data.get("reason") else []
            )
        waiting = sorted(targets - set(outcome))
        counts = {
            k: sum(1 for v in outcome.values() if v == k) for k in ("applied", "rejected", "rolled back")
        }
        line = (f"v{version} -> {key}: {counts['applied']} applied, {counts['rejected']} rejected, "
                f"{counts['rolled back']} rolled back; waiting for {len(waiting)}"
                + (f" ({', '.join(waiting[:5])})" if waiting else "")
                + f" [{time.monotonic() - began:.0f}s]")  # fmt: skip
        if line.split(" [", maxsplit=1)[0] != shown.split(" [", maxsplit=1)[0]:
            print(line, file=sys.stderr, flush=True)
            shown = line
        if targets and not waiting:
            break
    for gateway_id, kind in sorted(outcome.items()):
        print(f"{gateway_id}: {kind}")
        for text in details.get(gateway_id, []):
            print(f"  {text}")
    missing = sorted(targets - set(outcome))
    for gateway_id in missing:
        print(f"{gateway_id}: no answer within {timeout:.0f} s")
    ok = bool(outcome) and all(v == "applied" for v in outcome.values()) and not missing
    return EXIT_OK if ok else EXIT_FAILED


# ---------------------------------------------------------------------- command
def _command(args: argparse.Namespace) -> int:
    from bridge.central import EventWatch, produce  # noqa: PLC0415
    from common.configtypes import parse_duration  # noqa: PLC0415
    from gateway.errors import ConfigError  # noqa: PLC0415

    try:
        payload = json.loads(args.payload)
        expires_in = parse_duration(args.expires_in)
    except ValueError as exc:
        raise ConfigError(f"PAYLOAD must be a JSON object and --expires-in a duration: {exc}") from exc
    if not isinstance(payload, dict):
        raise ConfigError("PAYLOAD must be a JSON object")
    settings = _settings(args)
    command_id = args.command_id or f"cmd-{uuid.uuid4().hex}"
    now = time.time()
    body = {"command_id": command_id, "actuator": args.actuator, "payload": payload,
            "expires_at": now + expires_in, "issued_at": now}  # fmt: skip
    watch = EventWatch(settings.conf, settings.topics["events"])
    try:
        produce(settings.conf, settings.topics["commands"], args.gateway, json.dumps(body).encode())
        print(f"command {command_id} sent to {args.gateway} ({args.actuator})", file=sys.stderr)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            for event in watch.poll(0.5):
                data = event.data
                if event.type == "edgegw.command.result.v1" and data.get("command_id") == command_id:
                    print(json.dumps(data))
                    return EXIT_OK if data.get("status") in ("sent", "confirmed") else EXIT_FAILED
        print(f"no result for {command_id} within {args.timeout:.0f} s", file=sys.stderr)
        return EXIT_FAILED
    finally:
        watch.close()
