"""Cluster-mode figures (CONTRACT §12), against a real local PostgreSQL started here
(tests/cluster/pg.py: Debian's binaries, fsync=on, synchronous_commit=on, 127.0.0.1):

1. **Commit latency of one log row** (wal/pg/asyncpg_port.py's conditional append, one in flight,
   as the leader does it) for rows of 1, 16 and 128 deduct commands (real encoded commands):
   p50/p99 ms and commands/s. These feed the partition simulation (bench/partition_sim.py).
2. **Deducts per second**: the same wrk load (bench/lua/load.lua, deduct 1 over the spread
   customers, 64 connections) on `tally serve` with the local log and with `--log-store`, same run.
3. **Failover time**: two nodes, lease `--lease-ms`; SIGKILL the leader, then resend one deposit
   (same idempotency key) to the survivor until it answers 200: seconds from the kill to that 2xx,
   over several kills (the killed node restarts as a standby between kills), p50 and max.

    .venv/bin/python -m bench.cluster_bench [--smoke] [--kills 5] [--duration 10] [--json PATH]

Prints a markdown section (also returned by `run_all` for bench/run.py --cluster). The machine is
shared: compare rows of the same run only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.commands import Deduct, encode_command
from tests.cluster.pg import PostgresServer, free_port, missing_reason
from wal.pg.asyncpg_port import AsyncpgPort
from wal.pg.port import Row, encode_batch

KEY = "vb_live_cluster_bench_key_0123456789abcdef"
ROW_SIZES = (1, 16, 128)


@dataclass(frozen=True)
class ClusterPlan:
    smoke: bool
    appends: int  # rows timed per size
    duration_s: int  # seconds per wrk row
    spread_customers: int
    kills: int
    lease_ms: int


FULL = ClusterPlan(False, appends=400, duration_s=10, spread_customers=10_000, kills=5, lease_ms=1000)
SMOKE = ClusterPlan(True, appends=40, duration_s=1, spread_customers=500, kills=1, lease_ms=1000)


# -- 1. commit latency -------------------------------------------------------------------------


def deduct_batch(first_lsn: int, size: int) -> bytes:
    """`size` framed deduct records from `first_lsn` on, as the leader writes one row."""
    records = []
    for i in range(size):
        command = Deduct(at_ms=1_796_000_000_000 + i, project="default", customer_id=f"c-{(first_lsn + i) % 10_000}",
                         amount=1, transaction_id=f"bench-{first_lsn + i:012d}")  # fmt: skip
        records.append((first_lsn + i, encode_command(command)))
    return encode_batch(records)


async def commit_latency(dsn: str, appends: int) -> dict[int, dict[str, float]]:
    """Per row size: p50/p99/mean ms of one conditional append (lease check + insert, one
    transaction, committed with synchronous_commit=on) and the commands/s one partition reaches
    with one append in flight."""
    port = AsyncpgPort(dsn, timeout_s=10.0)
    try:
        epoch = await port.acquire("bench", 60_000)
        assert epoch is not None, "the bench database's lease is held"
        position, lsn = 0, 1
        out: dict[int, dict[str, float]] = {}
        for size in ROW_SIZES:
            samples: list[float] = []
            for i in range(appends + 5):
                position += 1
                row = Row(position, epoch, lsn, lsn + size - 1, deduct_batch(lsn, size))
                began = time.perf_counter()
                await port.append("bench", row)
                if i >= 5:  # the first few warm the connection and the prepared statements
                    samples.append(time.perf_counter() - began)
                lsn += size
            samples.sort()
            mean = statistics.fmean(samples)
            out[size] = {"p50_ms": 1000 * samples[len(samples) // 2], "p99_ms": 1000 * samples[int(len(samples) * 0.99) - 1],
                         "mean_ms": 1000 * mean, "commands_per_s": size / mean, "row_bytes": float(len(row.payload))}  # fmt: skip
        return out
    finally:
        await port.close()


def fdatasync_ms(pg: PostgresServer) -> float | None:
    """One 8 kB write + fdatasync on PostgreSQL's disk (pg_test_fsync, 2 s), ms; None if unknown."""
    target = pg.root / "fsync-test"
    command = [str(pg.bin_dir / "pg_test_fsync"), "-f", str(target), "-s", "2"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["fdatasync"] and "usecs/op" in line:
            return float(parts[-2]) / 1000.0  # the first table: one 8 kB write
    return None


# -- 2. deducts per second ---------------------------------------------------------------------


def deducts_per_second(plan: ClusterPlan, pg: PostgresServer, work_dir: Path) -> dict[str, dict[str, Any]]:
    """wrk deduct (spread, 64 connections) on the local log and on the PostgreSQL log."""
    from bench.run import Server, fund, run_wrk  # the main bench's process and load helpers

    out: dict[str, dict[str, Any]] = {}
    for label, args in (("local log", ()), ("postgresql log", ("--log-store", pg.create_database("bench"),
                                                                "--node-id", "b1", "--lease-ms", "3000"))):
        server = Server("tally", work_dir, KEY, extra_args=args)
        server.start()
        try:
            _, ok, bad = fund(server, "c-", 0, plan.spread_customers, 10**12)
            if bad or ok != plan.spread_customers:
                raise RuntimeError(f"funding failed on the {label}: ok={ok} bad={bad}\n{server.log_tail()}")
            if not plan.smoke:
                run_wrk(server, "deduct", plan.spread_customers, 64, 3)  # warm-up
            out[label] = run_wrk(server, "deduct", plan.spread_customers, 64, plan.duration_s)
        finally:
            server.stop()
    return out


# -- 3. failover -------------------------------------------------------------------------------


def _post(url: str, body: dict[str, Any]) -> int | None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


class Node:
    """One `tally serve --log-store` process of the failover bench (ours; signalled by PID)."""

    def __init__(self, work_dir: Path, dsn: str, node_id: str, lease_ms: int) -> None:
        self.node_id = node_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = work_dir / node_id
        self.log_path = work_dir / f"{node_id}.log"
        self.command = [sys.executable, "-m", "net.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                        "--data-dir", str(self.data_dir), "--log-store", dsn, "--node-id", node_id,
                        "--lease-ms", str(lease_ms)]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until /health says leader (200) or standby (503 role standby)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, TALLY_BOOTSTRAP_KEY=KEY))  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.node_id} exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            if self.role() in ("leader", "standby"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.node_id} not up after 60 s: {self.log_path.read_text()[-2000:]}")

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            return {}
        return body

    def role(self) -> str | None:
        role = self.health().get("role")
        return role if isinstance(role, str) else None

    def signal(self, signum: int) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signum)
        return proc.wait(timeout=30)


def failover_times(plan: ClusterPlan, pg: PostgresServer, work_dir: Path) -> list[float]:
    """Seconds from SIGKILL of the leader to the first 200 for a write on the new leader."""
    dsn = pg.create_database("failover")
    nodes = [Node(work_dir, dsn, f"f{i}", plan.lease_ms) for i in (1, 2)]
    took: list[float] = []
    try:
        for node in nodes:
            node.start()
        for kill in range(plan.kills):
            leader = _leader(nodes)
            survivor = next(node for node in nodes if node is not leader)
            body = {"customer_id": "failover", "amount": 1, "idempotency_key": f"failover-{kill}"}
            assert _post(leader.url + "/v1/customers/deposit", dict(body, idempotency_key=f"warm-{kill}")) == 200
            killed_at = time.monotonic()
            assert leader.signal(signal.SIGKILL) == -signal.SIGKILL
            while _post(survivor.url + "/v1/customers/deposit", body) != 200:
                if time.monotonic() - killed_at > 60:
                    raise RuntimeError(f"no failover in 60 s: {survivor.log_path.read_text()[-2000:]}")
                time.sleep(0.01)
            took.append(time.monotonic() - killed_at)
            leader.start()
            _wait_standby(leader)
    finally:
        for node in nodes:
            node.signal(signal.SIGKILL)
    return took


def _leader(nodes: list[Node]) -> Node:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for node in nodes:
            if node.role() == "leader":
                return node
        time.sleep(0.05)
    raise RuntimeError("no leader after 30 s")


def _wait_standby(node: Node) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = node.health()
        if health.get("role") == "standby" and health.get("leader"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{node.node_id} did not come back as a standby: {node.log_path.read_text()[-2000:]}")


# -- all ---------------------------------------------------------------------------------------


def run_all(plan: ClusterPlan, *, with_wrk: bool = True) -> tuple[str, dict[str, Any]]:
    """Every cluster figure on a fresh PostgreSQL; (markdown section, raw figures)."""
    reason = missing_reason()
    if reason is not None:
        return f"## Cluster mode (PostgreSQL log)\n\nNot measured: {reason}\n", {}
    work_dir = Path(tempfile.mkdtemp(prefix="tally-cluster-bench-"))
    pg = PostgresServer().start()
    try:
        figures: dict[str, Any] = {"commit": asyncio.run(commit_latency(pg.create_database("latency"), plan.appends)),
                                   "flush_ms": fdatasync_ms(pg), "loadavg": os.getloadavg()[0]}
        figures["deducts"] = deducts_per_second(plan, pg, work_dir) if with_wrk else {}
        figures["failover_s"] = failover_times(plan, pg, work_dir)
    finally:
        pg.close()
    return render(plan, figures), figures


def render(plan: ClusterPlan, figures: dict[str, Any]) -> str:
    out = ["## Cluster mode (PostgreSQL log, CONTRACT §12)", "",
           f"Local PostgreSQL on the same machine (fsync=on, synchronous_commit=on, no replica), loopback; "
           f"fdatasync of one 8 kB write on its disk: {figures.get('flush_ms') or 0:.2f} ms (pg_test_fsync); "
           f"1-min load average at the start {figures.get('loadavg', 0):.1f}.", "",
           "| row of N deduct commands | row bytes | commit p50 | commit p99 | commands/s (one append in flight) |",
           "| ---: | ---: | ---: | ---: | ---: |"]
    for size, row in sorted(figures["commit"].items(), key=lambda item: int(item[0])):
        out.append(f"| {size} | {row['row_bytes']:,.0f} | {row['p50_ms']:.2f} ms | {row['p99_ms']:.2f} ms | "
                   f"{row['commands_per_s']:,.0f} |")
    if figures.get("deducts"):
        out += ["", "| deduct 1, spread, 64 connections | req/s | p50 | p99 | non-2xx |", "| --- | ---: | ---: | ---: | ---: |"]
        for label, result in figures["deducts"].items():
            out.append(f"| {label} | {result['rps']:,.0f} | {result['p50_us'] / 1000:.2f} ms | "
                       f"{result['p99_us'] / 1000:.2f} ms | {result['non2xx']} |")
    took = figures["failover_s"]
    out += ["", f"Failover (2 nodes, --lease-ms {plan.lease_ms}, SIGKILL of the leader → first 2xx write on the "
                f"new leader, {len(took)} kills, no other load): p50 {statistics.median(took):.2f} s, "
                f"max {max(took):.2f} s ({', '.join(f'{t:.2f}' for t in took)})."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (about a minute)")
    parser.add_argument("--kills", type=int, help="failover kills (default 5)")
    parser.add_argument("--duration", type=int, help="seconds per wrk row (default 10)")
    parser.add_argument("--no-wrk", action="store_true", help="skip the deducts/s rows (no wrk needed)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if args.kills is not None or args.duration is not None:
        plan = ClusterPlan(plan.smoke, plan.appends, args.duration or plan.duration_s, plan.spread_customers,
                           args.kills or plan.kills, plan.lease_ms)  # fmt: skip
    text, figures = run_all(plan, with_wrk=not args.no_wrk)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
