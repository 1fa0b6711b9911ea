"""Fixtures of the fleet view's tests: a real PostgreSQL for the session, a database per test."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator

import pytest

from simulators.testbed.postgres import PostgresServer, postgres_problem
from tests.fleet.helpers import MADE
from tests.gateway.conftest import broker, gateways

__all__ = ["broker", "gateways", "pg_url", "postgres"]  # the gateway tests' fixtures, for the end to end test


@pytest.fixture(autouse=True)
def _no_fleet_process_left() -> Iterator[None]:
    """``fleet serve`` processes a test started are killed after it, passed or failed."""
    before = len(MADE)
    yield
    for process in MADE[before:]:
        if process.running:
            process.kill()
    del MADE[before:]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL on a free loopback port (skipped, or failed in CI, where it cannot run)."""
    problem = postgres_problem()
    if problem is not None:
        if os.environ.get("EDGEGW_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required (EDGEGW_REQUIRE_POSTGRES=1) but: {problem}")
        pytest.skip(problem)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """An empty database of this test's own."""
    name = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40] + "_" + secrets.token_hex(3)
    return postgres.create_database(name)
