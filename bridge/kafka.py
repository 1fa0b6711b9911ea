"""The Kafka edge of the forwarder: confluent-kafka (librdkafka) behind :class:`bridge.forwarder.Uplink`.

- ``exactly_once``: a transactional producer (``transactional.id`` = prefix + gateway id).
  :meth:`KafkaUplink.send` runs one transaction: the batch, then the checkpoint record.
- ``at_least_once``: an idempotent producer; :meth:`KafkaUplink.send` produces and
  flushes, and reports which records Kafka has.

Errors are sorted here, where librdkafka's codes are known: a record Kafka refuses for
good (too large, unknown topic, not authorised) is reported per record for the dead-letter
table; credentials or TLS refused raise :class:`UplinkRefusedError`; anything else raises
:class:`UplinkError` and the forwarder reconnects with backoff. ``message.timeout.ms``
cannot drop a row: a timed-out record only fails its send, and the row stays spooled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from bridge.checkpoint import Checkpoint, ensure_checkpoint_topic, read_checkpoint
from bridge.config import KafkaConfig, KafkaSecrets
from bridge.envelope import OutMessage
from bridge.forwarder import SendResult
from gateway.errors import UplinkError, UplinkRefusedError

__all__ = ["KafkaUplink", "client_config"]

_log = structlog.get_logger("edgegw.bridge.kafka")

PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError._INVALID_ARG,
    }
)
REFUSED = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError._SSL,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
    }
)


def _await_broker(producer: Producer, topic: str, timeout: float) -> None:
    """Return once the producer is connected to a broker the cluster named: librdkafka's
    ``init_transactions`` asks for the transaction coordinator only through such a
    connection, and finding none it asks again 500 ms later (seen in its ``eos`` debug log:
    half a second of most uplink starts). The first metadata request goes over the bootstrap
    connection, which librdkafka drops once the answer names the brokers; the second goes
    over one of those, so a connection is up when it returns. ``topic``: the readings topic,
    not the whole cluster's metadata."""
    for _ in range(2):
        producer.list_topics(topic, timeout=timeout)


class _LibrdkafkaLog(logging.Handler):
    """librdkafka's own log lines, into structlog (quiet: they repeat while Kafka is away)."""

    def emit(self, record: logging.LogRecord) -> None:
        _log.debug("librdkafka", message=record.getMessage()[:500])


_rdlog = logging.getLogger("edgegw.librdkafka")
_rdlog.addHandler(_LibrdkafkaLog())
_rdlog.propagate = False


def client_config(config: KafkaConfig, secrets: KafkaSecrets | None = None) -> dict[str, Any]:
    """librdkafka properties shared by producer, consumers and admin: bootstrap and security."""
    sec = config.security
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap,
        "security.protocol": sec.protocol.lower(),
        "logger": _rdlog,
        "socket.connection.setup.timeout.ms": 10_000,
        "reconnect.backoff.max.ms": 5_000,
    }
    if sec.sasl is not None:
        if secrets is None or secrets.sasl_password is None:
            raise UplinkError("Kafka SASL is configured but no password was resolved")
        conf["sasl.mechanism"] = sec.sasl.mechanism
        conf["sasl.username"] = sec.sasl.username
        conf["sasl.password"] = secrets.sasl_password.get_secret_value()
    if sec.tls is not None:
        tls = sec.tls
        if tls.ca_file is not None:
            conf["ssl.ca.location"] = str(tls.ca_file)
        if tls.cert_file is not None and tls.key_file is not None:
            conf["ssl.certificate.location"] = str(tls.cert_file)
            conf["ssl.key.location"] = str(tls.key_file)
        if secrets is not None and secrets.ssl_key_password is not None:
            conf["ssl.key.password"] = secrets.ssl_key_password.get_secret_value()
        conf["ssl.endpoint.identification.algorithm"] = "https" if tls.verify_hostname else "none"
    return conf


_RecordId = tuple[str, bytes | None, bytes | None]  # topic, key, value


def _describe(err: KafkaError) -> str:
    return f"{err.name()}: {err.str()}"


class KafkaUplink:
    """One producer incarnation. The forwarder makes a new one after any failure."""

    def __init__(self, config: KafkaConfig, gateway_id: str, secrets: KafkaSecrets | None = None) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.exactly_once = config.mode == "exactly_once"
        self._client = client_config(config, secrets)
        self._producer: Producer | None = None
        self._failures: dict[_RecordId, KafkaError] = {}
        self._refusal: KafkaError | None = None
        self.last_error: str | None = None

    # ------------------------------------------------------------------ callbacks (forwarder thread)
    def _on_error(self, err: KafkaError) -> None:
        self.last_error = _describe(err)
        if err.code() in REFUSED:
            self._refusal = err
        _log.debug("kafka client error", error=self.last_error)

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            return
        # librdkafka does not hand headers back with a failed record: identify it by content
        self._failures[(msg.topic(), msg.key(), msg.value())] = err

    # ------------------------------------------------------------------ lifecycle
    def _producer_config(self) -> dict[str, Any]:
        cfg = self.config
        timeout_ms = int(cfg.send_timeout * 1000)
        conf = dict(self._client)
        conf.update(
            {
                "client.id": f"edgegw-{self.gateway_id}",
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "zstd",
                "linger.ms": 5,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": max(100_000, cfg.batch_rows * 2 + 10),
                "queue.buffering.max.kbytes": 1_048_576,
                "message.timeout.ms": timeout_ms,
                "partitioner": "murmur2_random",
                # an unknown topic fails its records well inside one round (dead letters)
                "topic.metadata.propagation.max.ms": min(10_000, timeout_ms // 2),
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,
                "error_cb": self._on_error,
            }
        )
        if self.exactly_once:
            conf["transactional.id"] = f"{cfg.transactional_id_prefix}{self.gateway_id}"
            conf["transaction.timeout.ms"] = max(timeout_ms + 30_000, 60_000)
        conf.update(cfg.producer_overrides)
        return conf

    def _refused_or(self, exc: KafkaException, what: str) -> UplinkError:
        err: KafkaError = exc.args[0]
        refusal = self._refusal if self._refusal is not None else (err if err.code() in REFUSED else None)
        if refusal is not None:
            return UplinkRefusedError(f"Kafka refused the connection ({_describe(refusal)}); check the "
                                      "credentials and TLS settings")  # fmt: skip
        last = f" (last: {self.last_error})" if self.last_error else ""
        return UplinkError(f"{what}: {_describe(err)}{last}")

    def connect(self) -> Checkpoint | None:
        """Make the producer; in exactly-once mode fence older incarnations and read the checkpoint."""
        timeout = self.config.send_timeout
        try:
            self._producer = Producer(self._producer_config())
            if not self.exactly_once:
                self._producer.list_topics(timeout=timeout)
                return None
            _await_broker(self._producer, self.config.topics.readings, timeout)
            self._producer.init_transactions(timeout)
        except KafkaException as exc:
            if self._producer is not None:
                self._producer.poll(0)  # serve queued error callbacks: was it a refusal?
            raise self._refused_or(exc, "cannot connect to Kafka") from exc
        if self._refusal is not None:
            raise UplinkRefusedError(f"Kafka refused the connection ({_describe(self._refusal)})")
        topic = self.config.topics.checkpoints
        ensure_checkpoint_topic(self._client, topic, timeout)
        return read_checkpoint(self._client, topic, self.gateway_id, timeout=max(timeout, 60.0))

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.flush(0)
            except KafkaException as exc:  # a fatal producer state: it is being dropped anyway
                _log.debug("kafka producer closed in a failed state", error=_describe(exc.args[0]))

    # ------------------------------------------------------------------ sending
    def send(self, messages: Sequence[OutMessage], checkpoint: Checkpoint | None) -> SendResult:
        producer = self._producer
        if producer is None:
            raise UplinkError("not connected")
        self._failures = {}
        try:
            if self.exactly_once:
                return self._send_transaction(producer, messages, checkpoint)
            return self._send_flush(producer, messages)
        except KafkaException as exc:
            raise self._refused_or(exc, "Kafka send failed") from exc

    def _produce_all(self, producer: Producer, messages: Sequence[OutMessage]) -> dict[int, KafkaError]:
        """Produce each record; the ones librdkafka refuses at once (e.g. too large) come back."""
        refused: dict[int, KafkaError] = {}
        produce = producer.produce
        for i, m in enumerate(messages):
            while True:
                try:
                    produce(m.topic, m.value, m.key, headers=m.headers)  # type: ignore[arg-type]
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    refused[i] = exc.args[0]
                    break
        return refused

    @staticmethod
    def _index(
        messages: Sequence[OutMessage], failures: Mapping[_RecordId, KafkaError]
    ) -> dict[int, KafkaError]:
        out: dict[int, KafkaError] = {}
        if not failures:
            return out
        for i, m in enumerate(messages):
            err = failures.get((m.topic, m.key, m.value))
            if err is not None:
                out[i] = err
        return out

    def _send_transaction(self, producer: Producer, messages: Sequence[OutMessage],
                          checkpoint: Checkpoint | None) -> SendResult:  # fmt: skip
        timeout = self.config.send_timeout
        deadline = time.monotonic() + timeout
        producer.begin_transaction()
        failed = self._produce_all(producer, messages)
        if checkpoint is not None and not failed:
            producer.produce(self.config.topics.checkpoints, checkpoint.to_bytes(), self.gateway_id.encode())
        commit_error: KafkaError | None = None
        if not failed:
            # flush first: it serves the delivery reports, so a refused record shows up here
            # (and a failed transaction stops the flush early: its other records never leave)
            while producer.flush(0.2) > 0 and not self._failures and time.monotonic() < deadline:
                pass
            failed = self._index(messages, self._failures)
        if not failed and not self._failures:
            while True:
                try:
                    producer.commit_transaction(max(1.0, deadline - time.monotonic()))
                    return SendResult()
                except KafkaException as exc:
                    commit_error = exc.args[0]
                    if commit_error.retriable() and time.monotonic() < deadline and not self._failures:
                        continue
                    if not commit_error.txn_requires_abort():
                        raise
                    break
            self._serve_reports(producer, timeout)
            failed = self._index(messages, self._failures)
        self._abort(producer, timeout)
        permanent = {i: (e.name().lower(), _describe(e)) for i, e in failed.items() if e.code() in PERMANENT}
        if permanent:
            return SendResult(permanent=permanent)
        why = next(iter(failed.values()), None) or next(iter(self._failures.values()), None) or commit_error
        raise UplinkError(f"transaction aborted: {_describe(why) if why is not None else 'unknown'}")

    @staticmethod
    def _serve_reports(producer: Producer, timeout: float) -> None:
        """Serve the delivery reports of a failed transaction (abort waits for them)."""
        deadline = time.monotonic() + timeout
        while len(producer) > 0 and time.monotonic() < deadline:
            producer.poll(0.1)

    def _abort(self, producer: Producer, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                producer.abort_transaction(max(1.0, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise
                producer.poll(0.1)

    def _send_flush(self, producer: Producer, messages: Sequence[OutMessage]) -> SendResult:
        refused = self._produce_all(producer, messages)
        while producer.flush(1.0) > 0:  # message.timeout.ms bounds this: every record gets a report
            pass
        failed = {**self._index(messages, self._failures), **refused}
        permanent = {i: (e.name().lower(), _describe(e)) for i, e in failed.items() if e.code() in PERMANENT}
        transient = {i for i in failed if i not in permanent}
        if transient and self._refusal is not None:
            raise UplinkRefusedError(f"Kafka refused the connection ({_describe(self._refusal)})")
        return SendResult(permanent=permanent, transient=transient)
