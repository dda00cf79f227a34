"""The many-buckets row (CONTRACT §7.11, issue 14): one customer with N spent buckets.

    .venv/bin/python -m bench.many_buckets [--spent 20000] [--samples 300]

Builds `hot-0` with N deposits of 1, each spent by a deduct of 1 (a daily top-up customer), then
a large bucket; `c-1` is a fresh customer. Reports the median / p99 latency of sequential deducts
on hot-0 vs c-1 (the ratio should be ~1: spent buckets are off the hot path), the GET body size of
hot-0, and c-1's (the bystander's) deduct latency while wrk hammers hot-0 with 64 connections.
Loopback only; the server is ours and stopped by PID (bench.run.Server).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.run import HOT_FUNDS, LUA_DIR, ROOT, WRK_THREADS, Server


async def _post(session: aiohttp.ClientSession, path: str, body: dict[str, object]) -> None:
    async with session.post(path, json=body) as response:
        assert response.status == 200, (response.status, await response.text())
        await response.read()


async def _build(session: aiohttp.ClientSession, spent: int, concurrency: int = 32) -> None:
    """N buckets of 1 on hot-0, each spent at once; concurrency per worker keeps it quick."""

    async def worker(first: int) -> None:
        for n in range(first, spent, concurrency):
            await _post(session, "/v1/customers/deposit", {"customer_id": "hot-0", "amount": 1})
            await _post(session, "/v1/billing/deduct", {"customer_id": "hot-0", "amount": 1, "transaction_id": f"s{n}"})

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    for customer_id in ("hot-0", "c-1"):
        await _post(session, "/v1/customers/deposit", {"customer_id": customer_id, "amount": HOT_FUNDS})


async def _latencies_ms(session: aiohttp.ClientSession, customer_id: str, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        await _post(session, "/v1/billing/deduct",
                    {"customer_id": customer_id, "amount": 1, "transaction_id": secrets.token_hex(8)})
        out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def _fmt(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.2f} ms, p99 {values[int(0.99 * (len(values) - 1))]:.2f} ms"


async def _measure(server: Server, spent: int, samples: int, hammer_s: int) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with aiohttp.ClientSession(server.url, headers=headers) as session:
        started = time.monotonic()
        await _build(session, spent)
        print(f"built {spent:,} spent buckets on hot-0 in {time.monotonic() - started:.1f} s")
        hot, fresh = await _latencies_ms(session, "hot-0", samples), await _latencies_ms(session, "c-1", samples)
        print(f"deduct hot-0 ({spent:,} spent): {_fmt(hot)}; fresh c-1: {_fmt(fresh)}; "
              f"ratio p50 {statistics.median(hot) / statistics.median(fresh):.2f}x")
        async with session.get("/v1/customers/hot-0") as response:
            print(f"GET hot-0 body: {len(await response.read()):,} bytes")
        wrk = subprocess.Popen(["wrk", f"-t{WRK_THREADS}", "-c64", f"-d{hammer_s}s", "-s", str(LUA_DIR / "load.lua"),
                                server.url, "--", "deduct", "1", "h" + secrets.token_hex(4), server.api_key],
                               stdout=subprocess.DEVNULL, cwd=ROOT)  # fmt: skip
        try:
            await asyncio.sleep(0.5)
            bystander = await _latencies_ms(session, "c-1", samples)
        finally:
            wrk.wait(timeout=hammer_s + 60)
        print(f"bystander c-1 while hot-0 is hammered (64 conns): {_fmt(bystander)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spent", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--hammer-s", type=int, default=10)
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="tally-many-"))
    server = Server("tally", work_dir, "tly_" + secrets.token_hex(24))
    server.start()
    try:
        asyncio.run(_measure(server, args.spent, args.samples, args.hammer_s))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
