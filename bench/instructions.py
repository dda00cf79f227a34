"""Instructions per request under callgrind: a noise-free view of the hot path's cost (issue 14).

Throughput ratios on a shared 2-core VM move by ±20 % from one run to the next (the host's load).
This counts the user-space instructions each server executes per request instead, which do not
move with the host: the bare aiohttp handler (bench/baseline_server.py) and `tally serve
--workers 1` each run under `valgrind --tool=callgrind`; after a warm-up the counters are zeroed
(callgrind_control -z), a fixed number of hot deducts (one customer, keep-alive connections) is
sent, and the counters are dumped (callgrind_control -d).

    python -m bench.instructions [--requests 1000] [--connections 16]

What it does not see: kernel time (fdatasync, socket and futex syscalls, thread wake-ups), cache
misses, and the flusher thread's waiting. So it bounds the throughput ratio from above; wrk's
rows (bench/run.py) stay the measurement. Needs valgrind (bash bench/setup.sh --profiler).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.run import ROOT, Server

WARMUP_REQUESTS = 200
CALLGRIND_STARTUP_S = 600.0  # python starts ~50x slower under valgrind; recovery too
_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


class CallgrindServer(Server):
    """A bench Server run under callgrind, its counters written to `out_prefix`.<pid>."""

    def __init__(self, kind: str, work_dir: Path, api_key: str, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(kind, work_dir, api_key, extra_args=extra_args)
        self.out_prefix = work_dir / f"callgrind-{kind}-{self.port}.out"

    def command(self) -> list[str]:
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out_prefix}", "--dump-instr=no",
                *super().command()]

    def control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.pid)], check=True, capture_output=True, timeout=120)

    def dumped_instructions(self) -> int:
        """The largest total of the dumps written so far (the one after `control("-d")`)."""
        totals = [int(match) for path in self.out_prefix.parent.glob(self.out_prefix.name + "*")
                  for match in _TOTALS.findall(path.read_text(errors="replace"))]  # fmt: skip
        if not totals:
            raise RuntimeError(f"no callgrind dump under {self.out_prefix}")
        return max(totals)


async def _deducts(url: str, api_key: str, requests: int, connections: int, tag: str) -> int:
    """`requests` deducts of 1 on hot-0 over `connections` connections; the count of non-200s."""
    body = b'{"customer_id":"hot-0","amount":1,"transaction_id":"%s-%d","wallet":"bench"}'
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Authorization": f"Bearer {api_key}"}
    bad = 0
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:
        numbers = iter(range(requests))

        async def connection() -> None:
            nonlocal bad
            for number in numbers:
                async with session.post("/v1/billing/deduct", data=body % (tag.encode(), number)) as response:
                    await response.read()
                    bad += response.status != 200

        await asyncio.gather(*(connection() for _ in range(connections)))
    return bad


def measure(server: CallgrindServer, requests: int, connections: int, *, fund: bool) -> float:
    """Start under callgrind, warm up, count `requests` deducts; instructions per request."""
    server.start(timeout_s=CALLGRIND_STARTUP_S)
    try:
        if fund:
            deposit = b'{"customer_id":"hot-0","amount":1000000000000,"wallet":"bench","source":"s","idempotency_key":"f"}'
            asyncio.run(_post(server.url + "/v1/customers/deposit", server.api_key, deposit))
        if asyncio.run(_deducts(server.url, server.api_key, WARMUP_REQUESTS, connections, "warm")):
            raise RuntimeError(f"{server.kind}: warm-up requests failed\n{server.log_tail()}")
        server.control("-z")
        bad = asyncio.run(_deducts(server.url, server.api_key, requests, connections, "count"))
        server.control("-d")
        if bad:
            raise RuntimeError(f"{server.kind}: {bad} of {requests} requests failed")
        return server.dumped_instructions() / requests
    finally:
        server.stop()


async def _post(url: str, api_key: str, body: bytes) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {api_key}"}) as session:
        async with session.post(url, data=body) as response:
            if response.status != 200:
                raise RuntimeError(f"funding failed: {response.status} {await response.text()}")


def run(requests: int, connections: int) -> dict[str, Any]:
    """Both servers, one after the other; the figures and the ratio bare / tally."""
    work_dir = Path(tempfile.mkdtemp(prefix="tally-instructions-"))
    api_key = "tly_" + secrets.token_hex(24)
    try:
        bare = measure(CallgrindServer("baseline", work_dir, api_key), requests, connections, fund=False)
        tally = measure(CallgrindServer("tally", work_dir, api_key), requests, connections, fund=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return {"requests": requests, "connections": connections, "bare": bare, "tally": tally, "ratio": bare / tally}


def report(result: dict[str, Any]) -> list[str]:
    return [
        "| server | instructions / request | vs bare |", "| --- | ---: | ---: |",
        f"| bare aiohttp POST | {result['bare']:,.0f} | — |",
        f"| Tally deduct, hot, --workers 1 (durable) | {result['tally']:,.0f} | {result['ratio']:.2f}× |",
        "", f"- callgrind, user space only, {result['requests']:,} requests over {result['connections']} "
        "connections after a warm-up (bench/instructions.py): exact and repeatable, but blind to kernel "
        "time (fdatasync, syscalls), so an upper bound on the throughput ratio.",
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed: bash bench/setup.sh --profiler", file=sys.stderr)
        return 2
    started = time.monotonic()
    result = run(args.requests, args.connections)
    print("\n".join(report(result)))
    print(f"\n({time.monotonic() - started:.0f} s; from {ROOT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
