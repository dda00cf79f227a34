"""Fixtures of the cluster tests: one real PostgreSQL per xdist worker (session scope), a fresh
database per test, and Tally nodes that die with the test (tests/cluster/nodes.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.pg import PostgresServer, missing_reason


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The worker's PostgreSQL (started once, stopped by PID at the end of the session). A test
    that stops or kills it must start it again before it ends (the `pg_db` fixture checks)."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_db(postgres: PostgresServer) -> Iterator[str]:
    """The DSN of a fresh database on the worker's PostgreSQL."""
    if not postgres.running:
        postgres.start()
    yield postgres.create_database()
    if not postgres.running:  # a test that stopped it and failed before starting it again
        postgres.start()
