"""AsyncpgPort: the LogPort on a real PostgreSQL (CONTRACT §12), one connection, reconnected lazily.

Tables (created if missing, under an advisory lock so that nodes starting together do not race):

    tally_log   (partition, position) PRIMARY KEY, epoch, first_lsn, last_lsn, payload bytea
                one row per group-commit batch; index (partition, last_lsn) for recovery reads
    tally_lease (partition PRIMARY KEY, holder, epoch, expires_at timestamptz)

Every lease comparison uses clock_timestamp() of the server. Any connection-level error or a
timeout (`timeout_s` per operation) closes the connection and raises PortUnavailable: the
outcome is unknown. A unique violation or a refused lease check raises Fenced.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # ships no type information

from wal.pg.port import Fenced, LeaseView, PortUnavailable, Row

__all__ = ["AsyncpgPort", "SCHEMA"]

SCHEMA = """
SELECT pg_advisory_xact_lock(1952540012);  -- "tall": nodes starting together do not race
CREATE TABLE IF NOT EXISTS tally_log (
    partition integer NOT NULL,
    position bigint NOT NULL,
    epoch bigint NOT NULL,
    first_lsn bigint NOT NULL,
    last_lsn bigint NOT NULL,
    payload bytea NOT NULL,
    PRIMARY KEY (partition, position)
);
CREATE INDEX IF NOT EXISTS tally_log_last_lsn ON tally_log (partition, last_lsn);
CREATE TABLE IF NOT EXISTS tally_lease (
    partition integer PRIMARY KEY,
    holder text NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
INSERT INTO tally_lease VALUES (0, '', 0, 'epoch') ON CONFLICT DO NOTHING;
"""

_ROW = "SELECT position, epoch, first_lsn, last_lsn, payload FROM tally_log WHERE partition = $1"
_LEASE_OK = "holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()"

# The errors after which the operation's outcome is unknown and the connection is not reusable.
_UNKNOWN = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
            asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.CrashShutdownError, asyncpg.exceptions.QueryCanceledError)  # fmt: skip


class AsyncpgPort:
    """LogPort over one asyncpg connection to `dsn`; partition 0 (one leader per cluster)."""

    def __init__(self, dsn: str, *, timeout_s: float, partition: int = 0) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s
        self.partition = partition
        self._connection: Any = None  # asyncpg.Connection (its generic type is not worth naming)
        self._schema_ready = False

    async def _connect(self) -> Any:
        if self._connection is None or self._connection.is_closed():
            self._connection = None
            connection = await asyncpg.connect(self.dsn, timeout=self.timeout_s, command_timeout=self.timeout_s)
            if not self._schema_ready:
                await connection.execute(SCHEMA)
                self._schema_ready = True
            self._connection = connection
        return self._connection

    async def _run(self, work: Any) -> Any:
        """Run `work(connection)`; map failures to PortUnavailable / Fenced."""
        try:
            connection = await self._connect()
            return await asyncio.wait_for(work(connection), self.timeout_s)
        except asyncpg.UniqueViolationError:
            raise Fenced("the log position is taken") from None
        except _UNKNOWN as error:
            await self._drop()
            raise PortUnavailable(f"postgresql: {type(error).__name__}: {error}") from None
        except asyncpg.PostgresError as error:  # e.g. the server is starting up or read-only
            await self._drop()
            raise PortUnavailable(f"postgresql: {type(error).__name__}: {error}") from None

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), self.timeout_s)
            except (*_UNKNOWN, asyncpg.PostgresError):
                connection.terminate()

    async def lease(self) -> LeaseView:
        async def work(c: Any) -> LeaseView:
            record = await c.fetchrow(
                "SELECT holder, epoch, GREATEST(0, CEIL(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000))::bigint"
                " AS remaining FROM tally_lease WHERE partition = $1", self.partition)  # fmt: skip
            if record is None:
                return LeaseView("", 0, 0)
            remaining = record["remaining"]
            return LeaseView(record["holder"], record["epoch"], int(remaining or 0))

        result: LeaseView = await self._run(work)
        return result

    async def acquire(self, node_id: str, lease_ms: int) -> int | None:
        async def work(c: Any) -> int | None:
            epoch = await c.fetchval(
                "UPDATE tally_lease SET holder = $2, epoch = epoch + 1,"
                " expires_at = clock_timestamp() + $3 * interval '1 millisecond'"
                " WHERE partition = $1 AND (expires_at <= clock_timestamp() OR holder = $2) RETURNING epoch",
                self.partition, node_id, lease_ms)  # fmt: skip
            return None if epoch is None else int(epoch)

        result: int | None = await self._run(work)
        return result

    async def renew(self, node_id: str, epoch: int, lease_ms: int) -> bool:
        async def work(c: Any) -> bool:
            status = await c.execute(
                "UPDATE tally_lease SET expires_at = clock_timestamp() + $4 * interval '1 millisecond'"
                f" WHERE partition = $1 AND {_LEASE_OK}", self.partition, node_id, epoch, lease_ms)  # fmt: skip
            return bool(status == "UPDATE 1")

        result: bool = await self._run(work)
        return result

    async def release(self, node_id: str, epoch: int) -> None:
        async def work(c: Any) -> None:
            await c.execute(f"UPDATE tally_lease SET expires_at = clock_timestamp() WHERE partition = $1 AND {_LEASE_OK}",
                            self.partition, node_id, epoch)  # fmt: skip

        await self._run(work)

    async def append(self, node_id: str, row: Row) -> None:
        async def work(c: Any) -> None:
            # ONE statement (its own transaction, one round trip): a node paused between the
            # statements of a multi-statement transaction would keep the lease row locked, and no
            # standby could take over until it resumed (found by tests/cluster/test_pause.py). The
            # CTE locks the lease row: a takeover waits for this statement, then sees its row.
            status = await c.execute(
                f"WITH lease AS (SELECT 1 FROM tally_lease WHERE partition = $1 AND {_LEASE_OK} FOR UPDATE)"
                " INSERT INTO tally_log SELECT $1, $4, $3, $5, $6, $7 FROM lease",
                self.partition, node_id, row.epoch, row.position, row.first_lsn, row.last_lsn, row.payload)  # fmt: skip
            if status != "INSERT 0 1":
                raise Fenced(f"the lease of epoch {row.epoch} is not held by {node_id!r}")

        await self._run(work)

    async def row_at(self, position: int) -> Row | None:
        async def work(c: Any) -> Row | None:
            record = await c.fetchrow(f"{_ROW} AND position = $2", self.partition, position)
            return None if record is None else _row(record)

        result: Row | None = await self._run(work)
        return result

    async def tail(self) -> Row | None:
        async def work(c: Any) -> Row | None:
            record = await c.fetchrow(f"{_ROW} ORDER BY position DESC LIMIT 1", self.partition)
            return None if record is None else _row(record)

        result: Row | None = await self._run(work)
        return result

    async def rows_after_lsn(self, after_lsn: int, limit: int) -> list[Row]:
        async def work(c: Any) -> list[Row]:
            records = await c.fetch(f"{_ROW} AND last_lsn > $2 ORDER BY position LIMIT $3", self.partition, after_lsn, limit)
            return [_row(record) for record in records]

        result: list[Row] = await self._run(work)
        return result


def _row(record: Any) -> Row:
    return Row(int(record["position"]), int(record["epoch"]), int(record["first_lsn"]), int(record["last_lsn"]),
               bytes(record["payload"]))  # fmt: skip
