"""A deterministic discrete-event simulation of the multi-partition paper design (docs/CLUSTER.md
§7): committed commands/s against the number of partitions and Tally nodes, from the measured cost
of one partition's PostgreSQL commit.

Model (every time in ms; one run is a pure function of its `SimConfig` and seed):

- **Nodes** lead partitions round-robin (partition p on node p mod N). A node's CPU turns requests
  into log records at `node_commands_per_s` (measured: deducts/s of one `tally serve`), less what
  tailing costs: every partition has `replicas` copies, and applying a tailed command costs
  `apply_fraction` of serving one, so a node leads at most node_rate / (1 + apply_fraction *
  (replicas - 1)) commands/s. The node's leading capacity is shared evenly by the partitions it
  leads; the clients offer more than that (saturated), up to `queue_records_max` queued per
  partition.
- **One append in flight per partition** (CONTRACT §12.4, wal/pg/store.py): when a partition's
  previous row is committed, the next row takes up to `batch_records_max` queued commands.
- **PostgreSQL**: a row first needs CPU on one of `pg_cores` (FIFO): `row_cpu_ms + row_byte_ms *
  bytes`, then the WAL flush that covers it: one flusher, each flush takes `flush_ms` and covers
  every row whose CPU part ended before it started (PostgreSQL's own group commit), then the
  reply crosses the network (`rtt_ms`). Every service time is multiplied by a lognormal factor of
  median 1 whose p99 is `jitter_p99` (seeded: `random.Random(seed)`).

`calibrate` turns measured one-in-flight commit p50s (bench/cluster_bench.py: rows of 1, 16, 128
commands) and the disk's fdatasync time (pg_test_fsync) into row_cpu_ms and row_byte_ms.

    .venv/bin/python -m bench.partition_sim [--figures cluster.json] [--seconds 20]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

Z99 = 2.3263  # the standard normal's 99th percentile


@dataclass(frozen=True)
class SimConfig:
    partitions: int
    nodes: int
    node_commands_per_s: float = 13_588.0  # bench/results/2026-11-30-32a49e0.md: deduct spread, 64 conns
    apply_fraction: float = 0.15  # a tailed command's apply vs serving it (assumption, see CLUSTER.md)
    replicas: int = 2  # copies of each partition's state (leader + standbys)
    batch_records_max: int = 1024  # wal/pg/backend.py BATCH_RECORDS_MAX_DEFAULT
    queue_records_max: int = 65536  # wal/pg/backend.py QUEUE_RECORDS_MAX_DEFAULT
    record_bytes: int = 85  # one framed deduct record (bench/cluster_bench.py row of 1)
    pg_cores: int = 2
    flush_ms: float = 3.5  # one fdatasync of PostgreSQL's WAL
    row_cpu_ms: float = 4.0  # per row: parse, lease check, insert, commit bookkeeping
    row_byte_ms: float = 0.0002  # per payload byte
    rtt_ms: float = 0.1
    jitter_p99: float = 3.0
    seconds: float = 20.0
    seed: int = 1


@dataclass(frozen=True)
class SimResult:
    config: SimConfig
    commands_per_s: float
    rows_per_s: float
    mean_row_records: float
    commit_p50_ms: float
    commit_p99_ms: float
    bound: str  # what limits it: "node CPU", "PostgreSQL CPU", "one append in flight"
    pg_cpu_share: float  # busy share of PostgreSQL's cores


def lead_rate(config: SimConfig) -> float:
    """Commands/s one node can lead once tailing its share of the other partitions is paid."""
    return config.node_commands_per_s / (1.0 + config.apply_fraction * (config.replicas - 1))


class _Sim:
    """The event loop of one run: events (time_ms, seq, kind, partition) in a heap."""

    def __init__(self, config: SimConfig) -> None:
        self.c = config
        self.rng = random.Random(config.seed)
        self.sigma = math.log(config.jitter_p99) / Z99
        self.events: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.queued = [0] * config.partitions
        self.in_flight = [False] * config.partitions
        self.row_records = [0] * config.partitions
        self.row_sent = [0.0] * config.partitions
        self.cpu_free = [0.0] * config.pg_cores  # when each PostgreSQL core is next idle
        self.flush_waiting: list[int] = []  # partitions whose row waits for a flush
        self.flushing: list[int] | None = None
        self.committed = 0
        self.rows = 0
        self.cpu_busy = 0.0  # PostgreSQL CPU ms spent after the warm-up
        self.latencies: list[float] = []
        self.node_of = [p % config.nodes for p in range(config.partitions)]
        led = [self.node_of.count(n) for n in range(config.nodes)]
        # Commands per ms offered to each partition: its node's leading capacity, shared.
        self.rate = [lead_rate(config) / 1000.0 / led[self.node_of[p]] for p in range(config.partitions)]
        self.credit = [0.0] * config.partitions

    def jitter(self) -> float:
        return math.exp(self.rng.gauss(0.0, self.sigma))

    def push(self, at: float, kind: str, partition: int = -1) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, partition))

    def run(self) -> SimResult:
        end = self.c.seconds * 1000.0
        tick = 1.0  # ms between node-CPU deliveries
        self.push(0.0, "tick")
        warmup = end * 0.1
        committed_at_warmup = rows_at_warmup = 0
        while self.events:
            now, _, kind, p = heapq.heappop(self.events)
            if now > end:
                break
            if warmup and now >= warmup:
                committed_at_warmup, rows_at_warmup, warmup = self.committed, self.rows, 0.0
                self.latencies.clear()
                self.cpu_busy = 0.0
            if kind == "tick":
                self._deliver(tick)
                self.push(now + tick, "tick")
            elif kind == "cpu_done":
                self.flush_waiting.append(p)
                self._maybe_flush(now)
            elif kind == "flush_done":
                done, self.flushing = self.flushing or [], None
                for q in done:
                    self.push(now + self.c.rtt_ms, "reply", q)
                self._maybe_flush(now)
            elif kind == "reply":
                self._committed(now, p)
            for q in range(self.c.partitions):
                if not self.in_flight[q] and self.queued[q] > 0:
                    self._send(now, q)
        span_s = (end - self.c.seconds * 100.0) / 1000.0
        return self._result((self.committed - committed_at_warmup) / span_s, (self.rows - rows_at_warmup) / span_s,
                            self.cpu_busy / (span_s * 1000.0 * self.c.pg_cores))

    def _deliver(self, ms: float) -> None:
        for p in range(self.c.partitions):
            self.credit[p] += self.rate[p] * ms
            whole = int(self.credit[p])
            room = self.c.queue_records_max - self.queued[p]
            self.queued[p] += min(whole, room)
            self.credit[p] -= whole  # a full queue drops the node's work (clients wait)

    def _send(self, now: float, p: int) -> None:
        records = min(self.queued[p], self.c.batch_records_max)
        self.queued[p] -= records
        self.in_flight[p], self.row_records[p], self.row_sent[p] = True, records, now
        cpu = (self.c.row_cpu_ms + self.c.row_byte_ms * records * self.c.record_bytes) * self.jitter()
        core = min(range(self.c.pg_cores), key=lambda i: self.cpu_free[i])
        begin = max(now + self.c.rtt_ms, self.cpu_free[core])
        self.cpu_free[core] = begin + cpu
        self.cpu_busy += cpu
        self.push(begin + cpu, "cpu_done", p)

    def _maybe_flush(self, now: float) -> None:
        if self.flushing is None and self.flush_waiting:
            self.flushing, self.flush_waiting = self.flush_waiting, []
            self.push(now + self.c.flush_ms * self.jitter(), "flush_done")

    def _committed(self, now: float, p: int) -> None:
        self.in_flight[p] = False
        self.committed += self.row_records[p]
        self.rows += 1
        self.latencies.append(now - self.row_sent[p])

    def _result(self, commands_per_s: float, rows_per_s: float, pg_cpu_share: float) -> SimResult:
        lat = sorted(self.latencies) or [0.0]
        c = self.c
        node_share = commands_per_s / (lead_rate(c) * min(c.nodes, c.partitions))
        if node_share >= 0.95:
            bound = "node CPU"
        elif pg_cpu_share >= 0.9:
            bound = "PostgreSQL CPU"
        else:
            bound = "one append in flight"
        return SimResult(c, commands_per_s, rows_per_s, commands_per_s / rows_per_s if rows_per_s else 0.0,
                         lat[len(lat) // 2], lat[max(0, int(len(lat) * 0.99) - 1)], bound, pg_cpu_share)  # fmt: skip


def simulate(config: SimConfig) -> SimResult:
    """One deterministic run (same config and seed → same result)."""
    assert config.partitions >= 1 and config.nodes >= 1 and config.pg_cores >= 1 and config.replicas >= 1
    return _Sim(config).run()


def calibrate(base: SimConfig, commit: dict[str, Any], flush_ms: float | None) -> SimConfig:
    """Fit row_cpu_ms and row_byte_ms to measured one-in-flight commit p50s by row size
    (cluster_bench's "commit": {"1": {"p50_ms", "row_bytes"}, "16": ..., "128": ...}) by least
    squares of p50 against row bytes (slope floored at 0); flush_ms from pg_test_fsync if given.
    One append in flight costs rtt + cpu + bytes * per_byte + flush + rtt."""
    points = [(float(row["row_bytes"]), float(row["p50_ms"])) for row in commit.values()]
    flush = flush_ms if flush_ms is not None else base.flush_ms
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    per_byte = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in points) / spread) if spread else 0.0
    intercept = mean_y - per_byte * mean_x
    cpu = max(0.2, intercept - flush - 2 * base.rtt_ms)
    smallest = commit[min(commit, key=int)]
    return replace(base, flush_ms=flush, row_cpu_ms=cpu, row_byte_ms=per_byte,
                   record_bytes=max(1, round(float(smallest["row_bytes"]) / int(min(commit, key=int)))))  # fmt: skip


def table(base: SimConfig, partitions: tuple[int, ...], nodes: tuple[int, ...]) -> list[SimResult]:
    return [simulate(replace(base, partitions=p, nodes=n)) for n in nodes for p in partitions if p >= 1]


def render(results: list[SimResult]) -> str:
    c = results[0].config
    out = [f"Simulated ({c.seconds:.0f} s each, seed {c.seed}): node {c.node_commands_per_s:,.0f} commands/s, "
           f"apply {c.apply_fraction:.0%}, {c.replicas} replicas, PostgreSQL {c.pg_cores} cores, flush "
           f"{c.flush_ms:.2f} ms, row CPU {c.row_cpu_ms:.2f} ms + {c.row_byte_ms * 1000:.3f} µs/byte, batch ≤ "
           f"{c.batch_records_max}.", "",
           "| nodes | partitions | commands/s | rows/s | commands/row | commit p50 | commit p99 | PG CPU | bound |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        out.append(f"| {r.config.nodes} | {r.config.partitions} | {r.commands_per_s:,.0f} | {r.rows_per_s:,.0f} | "
                   f"{r.mean_row_records:,.0f} | {r.commit_p50_ms:.1f} ms | {r.commit_p99_ms:.1f} ms | {r.pg_cpu_share:.0%} | {r.bound} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.partition_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=Path, help="bench.cluster_bench --json output to calibrate from")
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per cell")
    parser.add_argument("--pg-cores", type=int, nargs="*", default=[2, 8], help="PostgreSQL cores (one table each)")
    parser.add_argument("--node-rate", type=float,
                        help="one node's commands/s (default: the figures' local-log deducts/s, else 13,588)")
    args = parser.parse_args(argv)
    base = SimConfig(partitions=1, nodes=1, seconds=args.seconds)
    if args.figures:
        figures = json.loads(args.figures.read_text())
        base = calibrate(base, figures["commit"], figures.get("flush_ms"))
        deducts = figures.get("deducts", {}).get("local log")
        if deducts:
            base = replace(base, node_commands_per_s=float(deducts["rps"]))
    if args.node_rate:
        base = replace(base, node_commands_per_s=args.node_rate)
    for cores in args.pg_cores:
        print(render(table(replace(base, pg_cores=cores), (1, 4, 16, 32), (1, 2, 4, 8, 16))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
