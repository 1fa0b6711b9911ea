"""The runtime side of deployments: read, validate, apply, settle, keep or roll back.

::

    agent = CloudAgent(runtime, cloud_section, config_path)
    loaded = agent.startup(loaded)      # before the runtime builds: last-good over the local file
    await agent.run()                   # in the runtime's task group

Flow of one document (docs/fleet.md): the reader hands over the records of the
gateway's keys; once the desired topic has been read to its end (at every start, so a
gateway that was offline applies only the newest version), the newest document among
its keys is chosen (:func:`gateway.deploy.policy.choose`). A version at or below the one
decided is ignored. Otherwise it is validated over the local config in a worker thread
(exactly as ``edgegw check``); invalid: a rejected event, the running config stays.
Valid: it is written as ``trying``, applied as a reload (rules that did not change keep
their state), and health is watched for ``settle`` seconds (the pipeline acks, no
component restarting in a loop, no rule tripping its loop guard). Healthy: it becomes
last-good and an applied event goes out. Not: the last-good document (or the local
config alone) is applied again and a rolled-back event says why. A newer version that
arrives during a settle waits for its end (bounded: never stuck "in progress").
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bridge.envelope import Record
from bridge.inbound import Inbound, InboundReader
from gateway.config import LoadedConfig, load_config
from gateway.deploy import reports
from gateway.deploy.document import DeploymentReview, review_deployment
from gateway.deploy.policy import Candidate, choose, header_version, is_new, keys_for
from gateway.deploy.remote import RemoteCommands
from gateway.deploy.settings import CloudSection
from gateway.deploy.settle import settle_problem, snapshot
from gateway.deploy.store import AppliedDoc, CommandStore, DeploymentState, DeploymentStore
from gateway.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    from gateway.metrics import Family
    from gateway.runtime import Runtime

__all__ = ["CloudAgent"]

_log = structlog.get_logger("edgegw.cloud")

CHECK_EVERY_S = 0.25


class CloudAgent:
    def __init__(self, runtime: Runtime, cloud: CloudSection, config_path: Path) -> None:
        self.rt = runtime
        self.cloud = cloud
        self.config_path = config_path
        self.gateway_id = runtime.gateway_id
        self.keys = keys_for(runtime.gateway_id, runtime.config.gateway.group)
        self.store = DeploymentStore(runtime.state_dir)
        self.state = DeploymentState()
        self.commands = RemoteCommands(self, CommandStore.open(runtime.state_dir, cloud.remember_commands))
        self.outcomes: Counter[str] = Counter()  # applied, rejected, rolled_back, ignored
        self.refused: Counter[str] = Counter()  # what was refused, by kind
        self.settling: AppliedDoc | None = None
        self._candidates: dict[str, Candidate] = {}
        self._before: LoadedConfig | None = None
        self._caught_up = False
        self._wake = asyncio.Event()
        self._outbox: list[Record] = []
        self._reader: InboundReader | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._startup_reports: list[Record] = []
        self._unreadable: set[str] = set()
        self._versions: dict[str, int | None] = {}  # digest -> version (None: unreadable)

    # ------------------------------------------------------------------ start
    def startup(self, base: LoadedConfig) -> LoadedConfig:
        """The config to start with: the local file with the last-good document over it.
        A ``trying`` document left by a run that died during its settle time is rolled back."""
        self.state = self.store.load()
        trying = self.state.trying
        if trying is not None:
            reason = "the gateway stopped during the settle time (a crash or a kill)"
            _log.error("deployment rolled back at start", version=trying.version, reason=reason)
            self.state.decided = max(self.state.decided, trying.version)
            self.state.trying = None
            self.store.save(self.state)
            self.outcomes["rolled_back"] += 1
            self._startup_reports.append(self._rolled_back(trying, reason))
        good = self.state.last_good
        if good is None:
            return base
        review = self._review(good.document.encode(), good.source)
        if review.loaded is None:
            _log.error(
                "last-good deployment does not fit the local config any more; running the local config",
                version=good.version,
                issues=[str(i) for i in review.issues][:5],
            )
            return base
        _log.info("running the last-good deployment", version=good.version, source=good.source)
        return review.loaded

    def current_loaded(self) -> LoadedConfig:
        """The local file now, with the running document over it (SIGHUP reloads use this)."""
        doc = self.settling or self.state.last_good
        base = load_config(self.config_path)
        if doc is None:
            return base
        review = self._review(doc.document.encode(), doc.source)
        if review.loaded is None:
            raise ConfigError(review.issues)
        return review.loaded

    def _review(self, raw: bytes, source: str) -> DeploymentReview:
        return review_deployment(self.config_path, raw, source, max_bytes=int(self.cloud.max_document_bytes))

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        from bridge.kafka import client_config  # noqa: PLC0415 - librdkafka only where used
        from gateway.assembly import kafka_secrets  # noqa: PLC0415

        self._loop = asyncio.get_running_loop()
        kafka = self.rt.config.bridge.kafka
        assert kafka is not None
        conf = client_config(kafka, kafka_secrets(self.rt.config, self.rt.environ))
        self._reader = InboundReader(
            conf,
            [self.cloud.desired_topic, self.cloud.commands_topic],
            keys=frozenset(self.keys),
            start=self._start_offset,
            deliver=self._from_reader,
        )
        self._reader.start()
        self.report(*self._startup_reports)
        self._startup_reports.clear()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._deployments(), name="cloud-deployments")
                group.create_task(self.commands.run(), name="cloud-commands")
                group.create_task(self._flush_outbox(), name="cloud-outbox")
        finally:
            await asyncio.to_thread(self._reader.stop)

    def stop(self) -> None:
        """At a graceful stop: a document still settling was not decided; the next start reads it again."""
        if self.settling is not None and self.state.trying is not None:
            self.state.trying = None
            self.store.save(self.state)

    def _start_offset(self, topic: str, partition: int) -> int:
        if topic == self.cloud.commands_topic:
            return self.commands.store.start_offset(topic, partition)
        return -1  # the desired topic: always from its start (a table, compacted)

    def _from_reader(self, records: list[Inbound], caught_up: frozenset[str]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._take, records, caught_up)

    def _take(self, records: list[Inbound], caught_up: frozenset[str]) -> None:
        for rec in records:
            if rec.topic == self.cloud.desired_topic:
                if rec.value is None:
                    self._candidates.pop(rec.key, None)
                else:
                    self._candidates[rec.key] = Candidate(rec.key, None, rec.value, rec.offset)
            else:
                self.commands.queue.put_nowait(rec)
        if self.cloud.desired_topic in caught_up:
            self._caught_up = True
        if self._caught_up:
            self._wake.set()

    # ------------------------------------------------------------------ deployments
    async def _deployments(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            candidates = await asyncio.to_thread(self._with_versions, dict(self._candidates))
            for cand in candidates.values():  # no readable version (too large, not YAML...): rejected once
                if cand.version is None and cand.digest not in self._unreadable:
                    await self._deploy(cand)
            readable = {k: c for k, c in candidates.items() if c.version is not None}
            chosen = choose(readable, self.keys)
            if chosen is not None and is_new(chosen.version, self.state.decided):
                await self._deploy(chosen)

    def _with_versions(self, candidates: dict[str, Candidate]) -> dict[str, Candidate]:
        """Read each candidate's version (a worker thread: YAML parsing takes time)."""
        from gateway.yamlio import parse_yaml  # noqa: PLC0415

        out = {}
        limit = int(self.cloud.max_document_bytes)
        for key, cand in candidates.items():
            digest = cand.digest
            if digest not in self._versions:  # each document is read once
                version = None
                if len(cand.raw) <= limit:
                    try:
                        version = header_version(parse_yaml(cand.raw.decode("utf-8")).data)
                    except (GatewayError, UnicodeDecodeError):
                        version = None
                if len(self._versions) > 1000:
                    self._versions.clear()
                self._versions[digest] = version
            out[key] = Candidate(key, self._versions[digest], cand.raw, cand.offset)
        return out

    async def _deploy(self, cand: Candidate) -> None:
        log = _log.bind(version=cand.version, source=cand.key)
        review = await asyncio.to_thread(self._review, cand.raw, cand.key)
        if review.loaded is None or review.version is None:
            self.outcomes["rejected"] += 1
            self.refused["document"] += 1
            for issue in review.issues[:20]:
                log.error("deployment rejected; the running config stays", issue=str(issue))
            if review.version is not None:
                self.state.decided = max(self.state.decided, review.version)
                await asyncio.to_thread(self.store.save, self.state)
            else:
                self._unreadable.add(cand.digest)
            self.report(
                reports.rejected(
                    self.gateway_id,
                    source=cand.key,
                    version=review.version,
                    digest=review.digest,
                    issues=review.issues,
                    ts=time.time(),
                )
            )
            return
        doc = AppliedDoc(
            cand.key, review.version, review.digest, cand.raw.decode("utf-8"), review.sections, time.time()
        )
        self.state.trying = doc
        await asyncio.to_thread(self.store.save, self.state)
        self.settling = doc
        self._before = self.rt.loaded  # what a rollback falls back to if the local file broke since
        log.info("applying deployment", sections=list(review.sections), settle_s=self.cloud.settle)
        try:
            await self.rt.apply_loaded(review.loaded, reason=f"deployment v{doc.version}")
            reason = await self._settle()
        except GatewayError as exc:
            reason = f"the reload failed: {exc}"
        self.settling = None
        self.state.trying = None
        self.state.decided = max(self.state.decided, doc.version)
        if reason is None:
            self.state.last_good = doc
            await asyncio.to_thread(self.store.save, self.state)
            self.outcomes["applied"] += 1
            log.info("deployment applied", digest=doc.digest)
            self.report(
                reports.applied(
                    self.gateway_id,
                    source=doc.source,
                    version=doc.version,
                    digest=doc.digest,
                    sections=doc.sections,
                    settle_s=self.cloud.settle,
                    ts=time.time(),
                )
            )
            return
        await asyncio.to_thread(self.store.save, self.state)
        await self._roll_back(doc, reason)

    async def _roll_back(self, doc: AppliedDoc, reason: str) -> None:
        good = self.state.last_good
        log = _log.bind(version=doc.version, source=doc.source)
        log.error(
            "deployment failed its settle check; rolling back",
            reason=reason,
            to_version=good.version if good else None,
        )
        loaded = await asyncio.to_thread(self._loaded_of, good)
        await self.rt.apply_loaded(loaded, reason="rollback")
        self.outcomes["rolled_back"] += 1
        self.report(self._rolled_back(doc, reason))

    def _rolled_back(self, doc: AppliedDoc, reason: str) -> Record:
        """The rolled-back event of ``doc``: back to the last-good document (or the local file)."""
        good = self.state.last_good
        return reports.rolled_back(self.gateway_id, source=doc.source, version=doc.version, digest=doc.digest,
                                   reason=reason, restored_version=good.version if good else None,
                                   ts=time.time())  # fmt: skip

    def _loaded_of(self, good: AppliedDoc | None) -> LoadedConfig:
        if good is not None:
            review = self._review(good.document.encode(), good.source)
            if review.loaded is not None:
                return review.loaded
        try:
            return load_config(self.config_path)
        except ConfigError as exc:  # the local file broke while the deployment settled
            if self._before is None:
                raise
            _log.error("the local config is invalid now; rolling back to what ran before", error=str(exc))
            return self._before

    async def _settle(self) -> str | None:
        """None when health held for the settle time, else what went wrong."""
        before = snapshot(self.rt)
        deadline = time.monotonic() + self.cloud.settle
        while True:
            problem = settle_problem(before, snapshot(self.rt))
            left = deadline - time.monotonic()
            if problem is not None or left <= 0:
                return problem
            await asyncio.sleep(min(CHECK_EVERY_S, left))

    # ------------------------------------------------------------------ reports
    def report(self, *records: Record) -> None:
        """Spool outcome events (kept in memory while the spool is being reopened)."""
        if not records:
            return
        self._outbox.extend(records)
        self._flush()

    def _flush(self) -> None:
        spool = self.rt.spool
        if not self._outbox or spool is None or spool.failed is not None:
            return
        try:
            spool.submit(list(self._outbox))
        except GatewayError:
            return
        self._outbox.clear()

    async def _flush_outbox(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._flush()

    # ------------------------------------------------------------------ observability
    def heartbeat_fields(self) -> dict[str, Any]:
        good = self.state.last_good
        running = (
            None if good is None else {"version": good.version, "digest": good.digest, "source": good.source}
        )
        return {"deployment": running, "groups": list(self.rt.config.gateway.group)}

    def health(self) -> dict[str, Any]:
        good = self.state.last_good
        reader = self._reader
        return {
            "applied_version": good.version if good else None,
            "source": good.source if good else None,
            "settling_version": self.settling.version if self.settling else None,
            "decided_version": self.state.decided,
            "inbound": reader.state if reader else "starting",
            "inbound_error": reader.last_error if reader else None,
        }

    def families(self) -> Iterator[Family]:
        from gateway.metrics import Family  # noqa: PLC0415

        good = self.state.last_good
        version = Family(
            "edgegw_deployment_version",
            "Version of the desired-state document running (0: none)",
            "gauge",
            (),
        )
        version.add([], float(good.version if good else 0))
        yield version
        yield _family(Family, "edgegw_deployments", "Deployment outcomes", "outcome", self.outcomes)
        yield _family(
            Family, "edgegw_remote_commands", "Remote command results", "status", self.commands.results
        )
        yield _family(
            Family,
            "edgegw_cloud_refused",
            "Documents and commands refused, never executed",
            "what",
            self.refused,
        )
        ignored: Counter[str] = Counter(duplicate_command=self.commands.duplicates)
        if self._reader is not None:
            ignored["other_key"] = self._reader.skipped
        yield _family(Family, "edgegw_cloud_ignored", "Inbound records ignored: another key, a command "
                      "seen before", "why", ignored)  # fmt: skip


def _family(cls: type[Family], name: str, doc: str, label: str, counts: Counter[str]) -> Family:
    fam = cls(name, doc, "counter", (label,))
    for key, value in sorted(counts.items()):
        fam.add([key], float(value))
    return fam
