"""Deduct throughput with no webhook vs a webhook whose receiver never answers (CONTRACT §11.3:
a slow or dead receiver never slows the ledger).

Each run starts a fresh `tally serve` on 127.0.0.1. Customers have a threshold at 50 and 100
credits; every round is a deduct of 60 (-> below) and a deposit of 60 (-> recovered), so with
the webhook every write derives one event. Receivers: "none" (no webhook), "hang" (accepts and
never answers: each attempt waits the 10 s timeout), "dead" (connection refused at once).
Reports writes/s and p99 latency. The machine is shared: compare rows of the same run only.

    .venv/bin/python -m bench.hooks_bench [--rounds 1500] [--concurrency 32] [--repeat 2]

`bench.run` runs it as the `hooks` row (`--only hooks`) through `run_all()`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

KEY = "vb_live_hooks_bench_key_0123456789abcdef"
ADMIN = "tly_admin_hooks_bench_key_0123456789abcdef"
CUSTOMERS = 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`tally serve` on a free loopback port, once /health is 200 (bounded wait)."""
    port = free_port()
    env = dict(os.environ, TALLY_BOOTSTRAP_KEY=KEY, TALLY_ADMIN_KEY=ADMIN)
    command = [sys.executable, "-m", "net.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("tally serve not healthy after 30 s")


def hanging_receiver() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # accepted by the kernel, never read or answered
    return sock, sock.getsockname()[1]


async def one_run(kind: str, rounds: int, concurrency: int, customers: int = CUSTOMERS) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, server_port = start_server(Path(tmp) / "data")
        hang = None
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{server_port}") as http:
                auth = {"Authorization": f"Bearer {KEY}"}
                if kind != "none":
                    if kind == "hang":
                        hang, port = hanging_receiver()
                    else:
                        port = free_port()  # nothing listens: refused
                    async with http.post("/admin/v1/webhooks", headers={"Authorization": f"Bearer {ADMIN}"},
                                         json={"project": "default", "url": f"http://127.0.0.1:{port}/"}) as r:  # fmt: skip
                        assert r.status == 200, await r.text()
                for c in range(customers):
                    async with http.post("/v1/customers/deposit", headers=auth, json={"customer_id": f"c{c}", "amount": 100}) as r:
                        assert r.status == 200
                    async with http.put(f"/v1/alerts/c{c}", headers=auth, json={"thresholds": [50]}) as r:
                        assert r.status == 200
                latencies: list[float] = []
                queue: asyncio.Queue[int] = asyncio.Queue()
                for n in range(rounds):
                    queue.put_nowait(n)

                async def worker(w: int) -> None:
                    while not queue.empty():
                        n = queue.get_nowait()
                        c = f"c{(n * concurrency + w) % customers}"
                        for path, body in (("/v1/billing/deduct", {"customer_id": c, "amount": 60, "transaction_id": f"t{n}"}),
                                           ("/v1/customers/deposit", {"customer_id": c, "amount": 60})):  # fmt: skip
                            t0 = time.perf_counter()
                            async with http.post(path, headers=auth, json=body) as r:
                                await r.read()
                                assert r.status in (200, 400), r.status
                            latencies.append(time.perf_counter() - t0)

                started = time.perf_counter()
                await asyncio.gather(*(worker(w) for w in range(concurrency)))
                elapsed = time.perf_counter() - started
                pending = 0
                if kind != "none":
                    async with http.get("/admin/v1/webhooks", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                        pending = (await r.json())["items"][0]["pending"]
            latencies.sort()
            return len(latencies) / elapsed, latencies[int(len(latencies) * 0.99)] * 1000, pending
        finally:
            proc.kill()  # ours, by PID
            proc.wait(timeout=30)
            if hang is not None:
                hang.close()


KINDS = ("none", "dead", "hang")


async def run_all(rounds: int, concurrency: int, repeat: int, customers: int = CUSTOMERS) -> list[dict[str, object]]:
    """Every receiver kind, `repeat` times in turn: [{kind, writes_per_s, p99_ms, pending}]."""
    rows: list[dict[str, object]] = []
    for _ in range(repeat):
        for kind in KINDS:
            rate, p99, pending = await one_run(kind, rounds, concurrency, customers)
            rows.append({"kind": kind, "writes_per_s": rate, "p99_ms": p99, "pending": pending})
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print("| receiver | writes/s | p99 ms | events pending at end |")
    print("|---|---:|---:|---:|")
    for row in await run_all(args.rounds, args.concurrency, args.repeat):
        print(f"| {row['kind']} | {row['writes_per_s']:,.0f} | {row['p99_ms']:.1f} | {row['pending']} |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
