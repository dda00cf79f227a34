"""WAL micro-bench: group commit vs a raw write+fdatasync loop, replay speed, fsync latency.

    .venv/bin/python -m bench.bench_wal [--smoke] [--output bench/results/wal.md] [--dir DIR]

Rows, all measured in the same run on the same filesystem:
- raw: one os.write of one 120-byte frame + one os.fdatasync per record, in a plain loop (the
  ceiling of "sync every record", ~6.6k/s on the standard machine per machine-limits.md §1);
- group commit with batch_records_max 1, 16, 256: `appenders` concurrent tasks each loop
  append -> await wait_durable, so batches form the way they do under a server;
- replay: read_log over `replay_records` 100-byte records (target >= 300,000 records/s).
Latencies: fdatasync only, µs, from the writer's own samples (raw: from the loop).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from wal import WalWriter, read_log
from wal.frame import encode_frame

PAYLOAD = b"p" * 100


@dataclass(frozen=True)
class Row:
    case: str
    records: int
    seconds: float
    batches: int | None = None
    fsync_latency_us_p50: float | None = None
    fsync_latency_us_p99: float | None = None

    @property
    def per_s(self) -> float:
        return self.records / self.seconds


def percentile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_raw(directory: Path, seconds: float) -> Row:
    path = directory / "raw.log"
    frame = encode_frame(1, PAYLOAD)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    samples = []
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            os.write(fd, frame)
            before = time.perf_counter_ns()
            os.fdatasync(fd)
            samples.append((time.perf_counter_ns() - before) / 1000)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - started
    path.unlink()
    return Row("raw write+fdatasync per record", len(samples), elapsed, len(samples),
               percentile(samples, 0.5), percentile(samples, 0.99))


async def drive_writer(directory: Path, *, batch_records_max: int, appenders: int, seconds: float,
                       fsync: bool = True) -> Row:
    writer = WalWriter.open(directory, next_lsn=1, batch_records_max=batch_records_max,
                            queue_records_max=max(batch_records_max, appenders) * 4, fsync=fsync)
    await writer.start()
    deadline = time.perf_counter() + seconds

    async def appender() -> None:
        while time.perf_counter() < deadline:
            if writer.room() <= 0:
                await writer.wait_for_room()
            lsn = writer.appended_lsn + 1
            writer.append(lsn, PAYLOAD)
            await writer.wait_durable(lsn)

    started = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(appenders)))
    elapsed = time.perf_counter() - started
    await writer.close()
    stats = writer.stats()
    name = f"group commit, batch_records_max={batch_records_max}, {appenders} appenders"
    if not fsync:
        name += " (fsync=False, unsafe)"
    return Row(name, writer.durable_lsn, elapsed, writer.batches,
               stats.fsync_latency_us_p50, stats.fsync_latency_us_p99)


async def write_bulk(directory: Path, records: int) -> None:
    """Fill a log fast (fsync=False: replay speed does not depend on how it was synced)."""
    writer = WalWriter.open(directory, next_lsn=1, batch_records_max=4096, queue_records_max=65536, fsync=False)
    await writer.start()
    for lsn in range(1, records + 1):
        if writer.room() <= 0:
            await writer.wait_for_room()
        writer.append(lsn, PAYLOAD)
    await writer.close()


def bench_replay(directory: Path, records: int) -> Row:
    asyncio.run(write_bulk(directory, records))
    os.sync()
    reader = read_log(directory)
    started = time.perf_counter()
    count = 0
    for _lsn, _payload in reader:
        count += 1
    elapsed = time.perf_counter() - started
    assert count == records == reader.records
    return Row(f"replay read_log, {records:,} x 100-byte records", count, elapsed)


def run(scratch: Path, *, smoke: bool) -> list[Row]:
    seconds = 0.3 if smoke else 3.0
    replay_records = 20_000 if smoke else 1_000_000
    rows = [bench_raw(scratch, seconds)]
    for batch_records_max, appenders in ((1, 64), (16, 64), (256, 512)):
        case = scratch / f"gc-{batch_records_max}"
        case.mkdir()
        rows.append(asyncio.run(drive_writer(case, batch_records_max=batch_records_max,
                                             appenders=appenders, seconds=seconds)))
        shutil.rmtree(case)
    case = scratch / "unsafe"
    case.mkdir()
    rows.append(asyncio.run(drive_writer(case, batch_records_max=256, appenders=512, seconds=seconds, fsync=False)))
    shutil.rmtree(case)
    case = scratch / "replay"
    case.mkdir()
    rows.append(bench_replay(case, replay_records))
    shutil.rmtree(case)
    return rows


def markdown(rows: list[Row], *, smoke: bool) -> str:
    def number(value: float | None, digits: int = 0) -> str:
        return "" if value is None else f"{value:,.{digits}f}"

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"WAL bench ({'smoke' if smoke else 'full'}): {platform.machine()}, {os.cpu_count()} CPU, "
        f"Python {platform.python_version()}, commit {commit or '?'}, "
        f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "| case | records | records/s | batches | records/batch | fsync_latency_us_p50 | fsync_latency_us_p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        per_batch = row.records / row.batches if row.batches else None
        lines.append(f"| {row.case} | {row.records:,} | {number(row.per_s)} | {number(row.batches)} | "
                     f"{number(per_batch, 1)} | {number(row.fsync_latency_us_p50)} | {number(row.fsync_latency_us_p99)} |")
    raw = rows[0].per_s
    lines.append("")
    lines.append("Group commit vs raw: " + ", ".join(
        f"batch {row.case.split('=')[1].split(',')[0]}: {row.per_s / raw:.1f}x" for row in rows[1:4]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, runs in a few seconds")
    parser.add_argument("--output", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--dir", type=Path, help="scratch directory parent (default: the system temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tally-bench-wal-", dir=args.dir) as name:
        rows = run(Path(name), smoke=args.smoke)
    table = markdown(rows, smoke=args.smoke)
    print(table, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)


if __name__ == "__main__":
    main()
