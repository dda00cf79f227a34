"""bench/cluster_bench.py's commit-latency measurement against the worker's real PostgreSQL: the
rows it times are real log rows (conditional appends under a lease), so they read back intact."""

from __future__ import annotations

import asyncio

from bench.cluster_bench import ROW_SIZES, FULL, commit_latency, render
from tests.cluster.pg import PostgresServer
from wal.pg.asyncpg_port import AsyncpgPort
from wal.pg.port import decode_batch


def test_commit_latency_appends_real_rows(postgres: PostgresServer, pg_db: str) -> None:
    figures = asyncio.run(commit_latency(pg_db, 10))
    assert sorted(figures) == list(ROW_SIZES)
    for size, row in figures.items():
        assert 0 < row["p50_ms"] <= row["p99_ms"] < 10_000, (size, row)
        assert row["commands_per_s"] > 0 and row["row_bytes"] > 50 * size

    async def read_back() -> list[int]:
        port = AsyncpgPort(pg_db, timeout_s=10.0)
        try:
            rows = await port.rows_after_lsn(0, 1000)
        finally:
            await port.close()
        return [len(decode_batch(row)) for row in rows]

    sizes = asyncio.run(read_back())
    assert sizes == [size for size in ROW_SIZES for _ in range(15)]  # 5 warm-up rows + 10 timed, per size
    text = render(FULL, {"commit": figures, "flush_ms": 1.0, "loadavg": 0.5, "deducts": {}, "failover_s": [1.0, 2.0]})
    assert "| 128 |" in text and "p50 1.50 s, max 2.00 s" in text
