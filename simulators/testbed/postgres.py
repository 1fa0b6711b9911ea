"""A real PostgreSQL (Debian's ``postgresql`` package) on a free loopback port, in a temp folder.

``initdb`` into a folder of its own and ``pg_ctl start`` with TCP on 127.0.0.1 only (no
Unix socket) and trust authentication: a throwaway server for the fleet view's tests and
benchmarks, never the packaged system service. PostgreSQL refuses to run as root, so as
root the folder is given to the ``postgres`` system user and the binaries run as it
(``runuser``). ``durable=False`` (tests) turns fsync off; the benchmarks keep it on.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from gateway.errors import TestBedError
from simulators.testbed._process import free_port, tail, wait_for

__all__ = ["PostgresServer", "postgres_problem"]

HOST = "127.0.0.1"


def _bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb, or initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def postgres_problem() -> str | None:
    """Why this machine cannot run the test PostgreSQL, or None."""
    if _bindir() is None:
        return "PostgreSQL is not installed (./scripts/test installs Debian's postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    if os.geteuid() == 0:
        try:
            import pwd  # noqa: PLC0415

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


class PostgresServer:
    """``start()``, ``stop()``, ``create_database(name) -> url``; ``url`` of the ``postgres`` db."""

    def __init__(self, *, port: int | None = None, durable: bool = False) -> None:
        problem = postgres_problem()
        if problem is not None:
            raise TestBedError(problem)
        self.bindir = _bindir()
        self.port = port or free_port()
        self.durable = durable
        # a folder the postgres user can reach (pytest's tmp folders are root's, mode 700)
        self.workdir = Path(tempfile.mkdtemp(prefix="edgegw-pg-"))
        self.datadir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        assert self.bindir is not None
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, check=check, timeout=120, cwd=self.workdir)

    def start(self) -> PostgresServer:
        if self._as_root:
            shutil.chown(self.workdir, "postgres", "postgres")
        try:
            self._run(
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            )
        except subprocess.CalledProcessError as exc:
            raise TestBedError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
        options = (
            f"-c listen_addresses={HOST} -p {self.port} -c unix_socket_directories='' -c max_connections=50"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            self._run(
                "pg_ctl",
                "-D",
                str(self.datadir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            )
        except subprocess.CalledProcessError as exc:
            raise TestBedError(f"PostgreSQL did not start:\n{tail(self.log_path)}") from exc
        wait_for("PostgreSQL", self.ping, timeout=30, log=self.log_path)
        return self

    def ping(self) -> bool:
        import psycopg  # noqa: PLC0415 - the fleet extra

        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@{HOST}:{self.port}/{name}"

    def stop(self) -> None:
        if self.datadir.exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop", check=False)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.workdir)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
