"""`tally serve`'s WAL flusher process (wal/flusher.py): its death is a fail-stop, never a lost write.

Real processes only, one process and --workers 2.
- The flusher is one child per server (`python -m wal.flusher_main`) and dies with the server.
- SIGKILL of the flusher while the server runs: the next writes are 503 `storage_unavailable` (the
  server no longer acknowledges anything), a read never shows a refused deduct; after the server
  is killed and restarted, every acknowledged deduct is in the ledger and no refused one is.
Could fail if: the server keeps acknowledging after its flusher died, hangs instead of refusing,
or acknowledged a deduct the restart does not find.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.api.harness import Server, request
from bench.procs import alive, children_of
from tests.waiting import wait_for

WAIT_S = 90.0  # bound on waiting for a process to vanish or the server to notice (not a timing assertion)
DEDUCTS_BEFORE_KILL = 5


def deduct(port: int, n: int) -> tuple[int, str | None]:
    reply = request(port, "POST", "/v1/billing/deduct",
                    body={"customer_id": "k", "amount": 1, "transaction_id": f"txn_{n}"})  # fmt: skip
    code = reply.json().get("error", {}).get("code") if reply.status != 200 else None
    return reply.status, code


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_killed_flusher_stops_acknowledging_and_loses_nothing(tmp_path: Path, workers: str) -> None:
    server = Server(tmp_path / "data", extra_args=("--workers", workers)).start()
    try:
        assert server.proc is not None
        flushers = children_of(server.proc.pid, "wal.flusher_main")
        assert len(flushers) == 1, flushers
        assert request(server.port, "POST", "/v1/customers/deposit", body={"customer_id": "k", "amount": 100}).status == 200
        acked = [n for n in range(DEDUCTS_BEFORE_KILL) if deduct(server.port, n) == (200, None)]
        assert len(acked) == DEDUCTS_BEFORE_KILL
        (flusher,) = flushers
        os.kill(flusher, signal.SIGKILL)
        wait_for(lambda: not alive(flusher), what="the killed flusher to vanish", within_s=WAIT_S)
        # Nothing can be durable once the flusher is gone: the very next write is refused, for good.
        assert deduct(server.port, DEDUCTS_BEFORE_KILL) == (503, "storage_unavailable")
        assert deduct(server.port, DEDUCTS_BEFORE_KILL + 1) == (503, "storage_unavailable")
        read = request(server.port, "GET", "/v1/customers/k")  # never the refused deducts
        assert (read.status, read.json()["balance"]["used"] if read.status == 200 else read.json()["error"]["code"]) in {
            (200, DEDUCTS_BEFORE_KILL), (503, "storage_unavailable")}  # fmt: skip
        assert server.kill() == -signal.SIGKILL
        server.start()
        balance = request(server.port, "GET", "/v1/customers/k").json()["balance"]
        assert balance["used"] == len(acked) and balance["available"] == 100 - len(acked)
    finally:
        server.kill()
