"""Commands from the centre (``edgegw.commands.in``): at most once, never late, declared
actuators only, every outcome reported (``edgegw.command.result.v1``).

A command's id is written to the state directory before it runs, so a crash right after
cannot run it again; one seen before is a duplicate and does nothing. A command whose
``expires_at`` passed (the gateway was offline) is reported ``expired`` and not run. One
for an actuator the config does not declare, or that cannot be read, is ``refused``.
Otherwise it goes through the same :class:`~devices.Actuators` as a rule's command:
``sent``, then ``confirmed`` when the actuator has read-back and its state shows it, or
``failed`` (not delivered, or not confirmed in time).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING

import structlog

from bridge.inbound import Inbound
from devices.actuators import encode_command
from gateway.deploy import reports
from gateway.deploy.policy import RemoteCommand, decide_command, parse_command
from gateway.deploy.store import CommandStore
from gateway.errors import ActuatorError
from gateway.model import Command

if TYPE_CHECKING:
    from gateway.deploy.agent import CloudAgent

__all__ = ["RemoteCommands"]

_log = structlog.get_logger("edgegw.cloud.commands")


class RemoteCommands:
    def __init__(self, agent: CloudAgent, store: CommandStore) -> None:
        self.agent = agent
        self.store = store
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue()
        self.results: Counter[str] = Counter()
        self.duplicates = 0
        self._watching: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while not self.agent.rt.ready:  # noqa: ASYNC110 - the runtime exposes no ready event
            await asyncio.sleep(0.1)  # ready: the actuators' MQTT link is up (or never needed)
        while True:
            rec = await self.queue.get()
            await self._handle(rec)

    async def _handle(self, rec: Inbound) -> None:
        agent = self.agent
        parsed = parse_command(rec.value or b"", int(agent.cloud.max_command_bytes))
        if isinstance(parsed, tuple):
            cid, reason, actuator = parsed
            if cid is not None and cid in self.store.seen:
                self.duplicates += 1
                return
            await asyncio.to_thread(self.store.remember, cid, rec.topic, rec.partition, rec.offset)
            self._result(rec, cid, actuator, "refused", reason)
            return
        verdict = decide_command(
            parsed, seen=self.store.seen, declared=agent.rt.actuators.configs, now=time.time()
        )
        if verdict.action == "duplicate":
            self.duplicates += 1
            _log.info("command seen before; not run again", command_id=parsed.command_id)
            return
        # on disk before it runs: a crash from here on cannot run it twice
        await asyncio.to_thread(self.store.remember, parsed.command_id, rec.topic, rec.partition, rec.offset)
        if verdict.action != "execute":
            self._result(rec, parsed.command_id, parsed.actuator, verdict.action, verdict.reason)
            return
        self._execute(rec, parsed)

    def _execute(self, rec: Inbound, cmd: RemoteCommand) -> None:
        rt = self.agent.rt
        mono = time.monotonic()
        command = Command(cmd.actuator, cmd.payload, f"command:{cmd.command_id}", time.time())
        cfg = rt.actuators.configs.get(cmd.actuator)
        try:
            if cfg is not None:
                encode_command(cfg, cmd.payload)
        except ActuatorError as exc:  # a payload this actuator cannot take: never sent
            self._result(rec, cmd.command_id, cmd.actuator, "refused", str(exc))
            return
        link = rt.command_link
        if cfg is not None and cfg.transport == "mqtt" and (link is None or not link.link.connected):
            # not held like a rule's command: it could leave after its expires_at, and the
            # operator is told now instead of "sent" for a command that may never leave
            self._result(rec, cmd.command_id, cmd.actuator, "failed", "the actuators' MQTT link is down")
            return
        try:
            rt.actuators.apply(command, mono)
        except (ActuatorError, ValueError) as exc:  # ValueError: what paho refuses to publish
            self._result(rec, cmd.command_id, cmd.actuator, "failed", str(exc))
            return
        rt.state.commands[cmd.actuator] += 1
        rt.state.actuator_state[cmd.actuator] = dict(cmd.payload)
        pending = rt.actuators.pending.get(cmd.actuator)
        if pending is None or pending.command is not command:
            has_confirm = rt.actuators.configs[cmd.actuator].confirm is not None
            why = "no read-back" if not has_confirm else "held by the MQTT link; sent when it can"
            self._result(rec, cmd.command_id, cmd.actuator, "sent", why)
            return
        task = asyncio.ensure_future(self._confirm(rec, cmd, command, pending.deadline))
        self._watching.add(task)
        task.add_done_callback(self._watching.discard)

    async def _confirm(self, rec: Inbound, cmd: RemoteCommand, command: Command, deadline: float) -> None:
        acts = self.agent.rt.actuators
        confirmed = acts.confirmed[cmd.actuator]
        while True:
            await asyncio.sleep(0.05)
            pending = acts.pending.get(cmd.actuator)
            if pending is not None and pending.command is command and time.monotonic() <= deadline + 1.0:
                continue
            if acts.confirmed[cmd.actuator] > confirmed and pending is None:
                self._result(rec, cmd.command_id, cmd.actuator, "confirmed", "")
            elif pending is not None and pending.command is not command:
                self._result(
                    rec, cmd.command_id, cmd.actuator, "sent", "a newer command replaced it before read-back"
                )
            else:
                self._result(
                    rec, cmd.command_id, cmd.actuator, "failed", "not confirmed by read-back in time"
                )
            return

    def _result(
        self, rec: Inbound, cid: str | None, actuator: str | None, status: reports.CommandStatus, reason: str
    ) -> None:
        agent = self.agent
        self.results[status] += 1
        if status == "refused":
            agent.refused["command"] += 1
        log = _log.warning if status in ("refused", "expired", "failed") else _log.info
        log("remote command " + status, command_id=cid, actuator=actuator, reason=reason, source=rec.key)
        agent.report(
            reports.command_result(
                agent.gateway_id,
                source=rec.key,
                command_id=cid,
                actuator=actuator,
                status=status,
                reason=reason,
                ts=time.time(),
            )
        )
