"""bench/cluster_bench.py's commit-latency measurement against the worker's real PostgreSQL: the
rows it times are real log rows (conditional appends under a lease), so they read back intact."""

from __future__ import annotations

import asyncio

from bench.cluster_bench import ROW_SIZES, commit_latency
from tests.cluster.pg import PostgresServer
from wal.pg.asyncpg_port import AsyncpgPort
from wal.pg.port import decode_batch


def test_commit_latency_appends_real_rows(postgres: PostgresServer, pg_db: str) -> None:
    figures = asyncio.run(commit_latency(pg_db, 10))
    assert sorted(figures) == list(ROW_SIZES)

    async def read_back() -> list[tuple[int, int]]:
        port = AsyncpgPort(pg_db, timeout_s=10.0)
        try:
            rows = await port.rows_after_lsn(0, 1000)
        finally:
            await port.close()
        return [(len(decode_batch(row)), len(row.payload)) for row in rows]

    rows = asyncio.run(read_back())
    assert [count for count, _ in rows] == [size for size in ROW_SIZES for _ in range(15)]  # 5 warm-up + 10 timed
    # Latencies and rates are the bench's report (bench/cluster_bench.py), never asserted here.
    for index, row in enumerate(figures.values()):
        assert row["row_bytes"] == rows[15 * index + 14][1]  # the last row timed for this size, as stored
