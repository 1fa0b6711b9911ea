"""A real Mosquitto broker on a free loopback port, with a config written here.

Two flavours: anonymous plain TCP, and TLS (certificates generated at test time) with a
password file. Both keep QoS 1 queues for offline persistent sessions on disk
(``persistence true``, saved every second and on shutdown) and raise
``max_queued_messages`` far above Mosquitto's default of 100, so a restarted broker
or a restarting gateway loses no queued message.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import uuid
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.errors import TestBedError
from simulators.testbed._process import free_port, stop_process, tail, wait_for
from simulators.testbed.certs import TlsFiles, make_tls_files

__all__ = ["Mosquitto", "find_mosquitto"]

HOST = "127.0.0.1"


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin), or None."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


class Mosquitto:
    """One Mosquitto process. ``start``/``stop``/``restart``/``kill``; same port and data across restarts."""

    def __init__(
        self,
        workdir: Path,
        *,
        tls: bool = False,
        users: dict[str, str] | None = None,
        port: int | None = None,
        max_queued_messages: int = 1_000_000,
        max_inflight_messages: int = 1000,
        autosave_interval_s: int = 1,
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise TestBedError(
                "mosquitto is not installed: run ./scripts/test (it installs the Debian "
                "package) or `sudo apt-get install mosquitto`"
            )
        self.binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.tls = tls
        self.users = dict(users or {})
        if tls and not self.users:
            raise TestBedError("the TLS test broker needs at least one user")
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.autosave_interval_s = autosave_interval_s
        self.tls_files: TlsFiles | None = make_tls_files(workdir / "tls") if tls else None
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    # ------------------------------------------------------------------ config
    def _write_config(self) -> None:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        lines = [
            "# written by the edgegw test bed",
            "user root" if _is_root() else "",
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {data}/",
            f"autosave_interval {self.autosave_interval_s}",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            f"max_inflight_messages {self.max_inflight_messages}",
            "persistent_client_expiration 1d",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self.users:
            pwfile = self.workdir / "passwords"
            pwfile.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    [self._passwd_binary(), "-b", str(pwfile), user, password],
                    check=True,
                    capture_output=True,
                )
            pwfile.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls_files is not None:
            lines += [
                f"cafile {self.tls_files.ca_cert}",
                f"certfile {self.tls_files.server_cert}",
                f"keyfile {self.tls_files.server_key}",
                "tls_version tlsv1.2",
            ]
        self.config_path.write_text("\n".join(line for line in lines if line) + "\n")

    def _passwd_binary(self) -> str:
        found = shutil.which("mosquitto_passwd") or shutil.which(
            "mosquitto_passwd", path="/usr/bin:/usr/sbin"
        )
        if found is None:
            raise TestBedError("mosquitto_passwd not found (Debian package mosquitto)")
        return found

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 15.0) -> Mosquitto:
        if self.running:
            return self
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for(
            f"mosquitto on {self.host}:{self.port}",
            self.ping,
            timeout=timeout,
            proc=self._proc,
            log=self.log_path,
            interval=0.05,
        )
        return self

    def stop(self) -> None:
        """Clean stop (SIGTERM): Mosquitto writes its persistence file on the way out."""
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL: whatever was not autosaved yet is lost, as on a power cut."""
        if self._proc is not None:
            stop_process(self._proc, kill=True)
            self._proc = None

    def restart(self, *, kill: bool = False) -> None:
        self.kill() if kill else self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    # ------------------------------------------------------------------ clients
    def client(
        self,
        client_id: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        clean_session: bool = True,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    ) -> mqtt.Client:
        """A paho client set up for this broker (TLS and credentials), not yet connected."""
        client_id = client_id or f"testbed-{uuid.uuid4().hex[:12]}"
        if protocol == MQTTProtocolVersion.MQTTv5:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                clean_session=clean_session,
                protocol=protocol,
            )
        if username is not None:
            client.username_pw_set(username, password)
        if self.tls_files is not None:
            client.tls_set(ca_certs=str(self.tls_files.ca_cert), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        return client

    def ping(self) -> bool:
        """True when the broker answers an MQTT CONNECT with a CONNACK (any reason code)."""
        client = self.client()
        if self.users:
            user, password = next(iter(self.users.items()))
            client.username_pw_set(user, password)
        try:
            client.connect(self.host, self.port, keepalive=5)
        except (OSError, ssl.SSLError):
            return False
        answered: list[bool] = []
        client.on_connect = lambda *_args: answered.append(True)
        for _ in range(20):
            client.loop(timeout=0.1)
            if answered:
                break
        client.disconnect()
        return bool(answered)


def _is_root() -> bool:
    import os  # noqa: PLC0415

    return os.geteuid() == 0
