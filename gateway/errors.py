"""The one error tree of edgegw.

Every error edgegw raises on purpose is a :class:`GatewayError`. Library exceptions
(``serial.SerialException``, ``confluent_kafka.KafkaException``, ``OSError`` and
``ssl.SSLError`` from paho-mqtt's sockets, ``sqlite3.Error``...) are converted where they
enter our code, at the adapter edge::

    raise SpoolError("cannot open spool") from exc

The tree::

    GatewayError
    ├── ConfigError            invalid YAML, config or rules; carries file:line:column issues
    ├── DeviceError            sensors and actuators
    │   ├── PayloadError       one bad message (counted per device and reason, never fatal)
    │   ├── SourceError        a source lost its broker or port (retryable)
    │   │   └── SourceRefusedError  bad credentials or TLS verification (not retried)
    │   └── ActuatorError      a command could not be delivered
    │       └── CommandRefusedError  a Home Assistant command that does not fit its entity
    ├── RuleError              rule evaluation problems that are not config errors
    ├── BridgeError            store and forward
    │   ├── SpoolError         the on-disk spool (SQLite)
    │   │   └── SpoolFullError the byte cap or the disk is full
    │   └── UplinkError        Kafka is unreachable or refused us
    │       └── UplinkRefusedError  bad credentials or TLS (retried at the longest backoff)
    ├── PlatformError          the host failed us: systemd's notify settings, the state directory
    └── TestBedError           a test broker (Mosquitto, Kafka) failed to start or stop

This module imports nothing else of the project, so every package may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ActuatorError",
    "BridgeError",
    "CommandRefusedError",
    "ConfigError",
    "ConfigIssue",
    "DeviceError",
    "GatewayError",
    "PayloadError",
    "PlatformError",
    "RuleError",
    "SourceError",
    "SourceRefusedError",
    "SpoolError",
    "SpoolFullError",
    "TestBedError",
    "UplinkError",
    "UplinkRefusedError",
]


class GatewayError(Exception):
    """Root of every error edgegw raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a user's YAML, located the way compilers do (1-based)."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str = ""  # key path such as ``rules[3].when.for``

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ConfigError(GatewayError):
    """The config, a rules file or a scenario is invalid. Holds every issue found."""

    def __init__(self, issues: list[ConfigIssue] | ConfigIssue | str) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue(issues)]
        elif isinstance(issues, ConfigIssue):
            issues = [issues]
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class DeviceError(GatewayError):
    """A sensor or actuator problem."""


class PayloadError(DeviceError):
    """One message could not be turned into readings; ``reason`` is a short counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class SourceError(DeviceError):
    """A source lost its broker or serial port; the supervisor retries with backoff."""


class SourceRefusedError(SourceError):
    """The broker refused our credentials or failed TLS verification: retrying won't help."""


class ActuatorError(DeviceError):
    """A command could not be delivered to its actuator."""


class CommandRefusedError(ActuatorError):
    """A command from outside the rules (Home Assistant) that its actuator does not take."""


class RuleError(GatewayError):
    """A rule could not be evaluated (not a config error)."""


class BridgeError(GatewayError):
    """Store-and-forward problems."""


class SpoolError(BridgeError):
    """The on-disk spool failed."""


class SpoolFullError(SpoolError):
    """The spool reached its byte cap or the disk is full."""


class UplinkError(BridgeError):
    """Kafka is unreachable, refused our credentials, or rejected a record."""


class UplinkRefusedError(UplinkError):
    """Kafka refused our credentials or failed TLS verification: retrying soon won't help."""


class PlatformError(GatewayError):
    """The host failed us: systemd's notify socket refused a message, or the state
    directory (where the derived gateway id is kept) cannot be read or written."""


class TestBedError(GatewayError):
    """A test broker (Mosquitto, Kafka) could not be started, reached or stopped."""

    __test__ = False  # not a pytest test class, despite the name
