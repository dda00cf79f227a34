"""The many-buckets row (CONTRACT §7.11, issue 14): one customer with N spent buckets.

    .venv/bin/python -m bench.many_buckets [--spent 20000] [--samples 300]

`bench.run` runs it as the `many_buckets` row (`--only many_buckets`) through `run()`.

Builds `hot-0` with N deposits of 1, each spent by a deduct of 1 (a daily top-up customer), then
a large bucket; `c-1` is a fresh customer. Reports the median / p99 latency of sequential deducts
on hot-0 vs c-1 (the ratio should be ~1: spent buckets are off the hot path), the GET body size of
hot-0, and c-1's (the bystander's) deduct latency while wrk hammers hot-0 with 64 connections.
Loopback only; the server is ours and stopped by PID (bench.run.Server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

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


async def _measure(server: Server, spent: int, samples: int, hammer_s: int) -> dict[str, Any]:
    """Build, then measure; every figure in ms (latencies sorted ascending) or bytes."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with aiohttp.ClientSession(server.url, headers=headers) as session:
        started = time.monotonic()
        await _build(session, spent)
        build_s = time.monotonic() - started
        hot, fresh = await _latencies_ms(session, "hot-0", samples), await _latencies_ms(session, "c-1", samples)
        async with session.get("/v1/customers/hot-0") as response:
            get_bytes = len(await response.read())
        wrk = subprocess.Popen(["wrk", f"-t{WRK_THREADS}", "-c64", f"-d{hammer_s}s", "-s", str(LUA_DIR / "load.lua"),
                                server.url, "--", "deduct", "1", "h" + secrets.token_hex(4), server.api_key],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
        try:
            await asyncio.sleep(min(0.5, hammer_s / 4))
            bystander = await _latencies_ms(session, "c-1", samples)
        finally:
            out, _ = wrk.communicate(timeout=hammer_s + 60)
    return {"spent": spent, "samples": samples, "build_s": build_s, "hot_ms": hot, "fresh_ms": fresh,
            "bystander_ms": bystander, "get_bytes": get_bytes, "hammer_p50_ms": _wrk_p50_ms(out)}


def _wrk_p50_ms(stdout: str) -> float | None:
    """The hammering connections' own p50 (load.lua's BENCH_JSON line), None if wrk gave none."""
    lines = [line for line in stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if not lines:
        return None
    p50_us: float = json.loads(lines[-1].removeprefix("BENCH_JSON "))["p50_us"]
    return p50_us / 1000


def run(work_dir: Path, api_key: str, *, spent: int, samples: int, hammer_s: int) -> dict[str, Any]:
    """The whole row on a fresh `tally serve` of our own (stopped by PID): `_measure`'s figures."""
    server = Server("tally", work_dir, api_key)
    server.start()
    try:
        return asyncio.run(_measure(server, spent, samples, hammer_s))
    finally:
        server.stop()


def p99(values: list[float]) -> float:
    return values[int(0.99 * (len(values) - 1))]


def report(result: dict[str, Any]) -> list[str]:
    hot, fresh, bystander = result["hot_ms"], result["fresh_ms"], result["bystander_ms"]
    return [f"built {result['spent']:,} spent buckets on hot-0 in {result['build_s']:.1f} s",
            f"deduct hot-0 ({result['spent']:,} spent): {_fmt(hot)}; fresh c-1: {_fmt(fresh)}; "
            f"ratio p50 {statistics.median(hot) / statistics.median(fresh):.2f}x",
            f"GET hot-0 body: {result['get_bytes']:,} bytes",
            f"bystander c-1 while hot-0 is hammered (64 conns): {_fmt(bystander)}; "
            f"the hammering connections' own p50: {result['hammer_p50_ms']} ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spent", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--hammer-s", type=int, default=10)
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="tally-many-"))
    result = run(work_dir, "tly_" + secrets.token_hex(24), spent=args.spent, samples=args.samples,
                 hammer_s=args.hammer_s)
    print("\n".join(report(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
