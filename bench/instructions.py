"""Instructions per request under callgrind: a noise-free view of the hot path's cost (issue 14).

Throughput ratios on a shared 2-core VM move by ±20 % from one run to the next (the host's load).
This counts the user-space instructions each server executes per request instead, which do not
move with the host: the bare aiohttp handler (bench/baseline_server.py) and `tally serve
--workers 1` each run under `valgrind --tool=callgrind`; after a warm-up the counters are zeroed
(callgrind_control -z), a fixed number of hot deducts (one customer, keep-alive connections) is
sent, and the counters are dumped (callgrind_control -d).

    python -m bench.instructions [--requests 1000] [--connections 16] [--workers 2]

`--workers 2`: the bare handler as 2 SO_REUSEPORT processes (`--processes 2`) against
`tally serve --workers 2`, every process under callgrind (--trace-children=yes, one counter file
per pid); each process's count is zeroed and dumped by its pid, and the table shows the sum per
request and each process's share, named from its command line (the ledger, front 0, front 1, and
the WAL flusher process, which every `tally serve` runs). Counting starts once every serving process listens on the port (/proc/net/tcp): /health answers as soon as one does, and a
process still importing under valgrind would get no connection and have its start-up counted as
request work (how 2 bare processes once summed to 606k instead of ~235k). The per-process split
moves by a few % between runs (how many writes share a frame and a group commit depends on
timing); the single-process figures repeat within ~1 %.

What it does not see: kernel time (fdatasync, socket and futex syscalls, thread wake-ups), cache
misses, and the WAL flusher's waiting. So it bounds the throughput ratio from above; wrk's
rows (bench/run.py) stay the measurement. Needs valgrind (bash bench/setup.sh --profiler).
"""

from __future__ import annotations

import argparse
import asyncio
import os
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

from bench.procs import children_of
from bench.run import ROOT, Server

WARMUP_REQUESTS = 200
CALLGRIND_STARTUP_S = 600.0  # python starts ~50x slower under valgrind; recovery too
_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


class CallgrindServer(Server):
    """A bench Server run under callgrind (its child processes too), the counters of process
    <pid> written to `out_prefix`.<pid>[.<dump>]."""

    def __init__(self, kind: str, work_dir: Path, api_key: str, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(kind, work_dir, api_key, extra_args=extra_args)
        self.out_prefix = work_dir / f"callgrind-{kind}-{self.port}.out"

    def command(self) -> list[str]:
        return ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={self.out_prefix}.%p",
                "--dump-instr=no", *super().command()]  # fmt: skip

    def wait_listening(self, count: int, timeout_s: float = CALLGRIND_STARTUP_S) -> None:
        """Wait until `count` of this server's processes listen on its port. /health answers
        as soon as ONE does; a process still importing under callgrind would otherwise get no
        connection and its start-up would be counted as request work (the cause of the 2-process
        bare figure of 606k: the child's imports, not its requests)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(listening_pids(self.pids(), self.port)) >= count:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind}: fewer than {count} processes listen on {self.port}\n{self.log_tail()}")

    def pids(self) -> list[int]:
        """This server's process, then its children (the fronts, or the baseline's 2nd process)."""
        return [self.pid, *sorted(children_of(self.pid))]

    def control(self, flag: str, pids: list[int]) -> None:
        for pid in pids:
            subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True, timeout=120)

    def dumped_instructions(self, pid: int) -> int:
        """Process `pid`'s largest dump total so far (the one after `control("-d")`)."""
        name = f"{self.out_prefix.name}.{pid}"
        paths = [path for path in self.out_prefix.parent.glob(name + "*") if path.name == name or
                 path.name.startswith(name + ".")]  # fmt: skip
        totals = [int(match) for path in paths for match in _TOTALS.findall(path.read_text(errors="replace"))]
        if not totals:
            raise RuntimeError(f"no callgrind dump of pid {pid} under {self.out_prefix}")
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


def listening_pids(pids: list[int], port: int) -> set[int]:
    """Those of `pids` that hold a TCP socket listening on 127.0.0.1:`port` (/proc/net/tcp's
    LISTEN rows, state 0A, matched to the processes' socket inodes)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    found = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    found.add(pid)
                    break
            except FileNotFoundError:
                continue
    return found


def measure(server: CallgrindServer, requests: int, connections: int, *, fund: bool,
            listeners: int = 1) -> list[tuple[str, float]]:  # fmt: skip
    """Start under callgrind, wait until `listeners` processes listen, warm up, count
    `requests` deducts; each process's instructions divided by `requests` (the server's
    process first, then its children by pid)."""
    server.start(timeout_s=CALLGRIND_STARTUP_S)
    try:
        server.wait_listening(listeners)
        if fund:
            deposit = b'{"customer_id":"hot-0","amount":1000000000000,"wallet":"bench","source":"s","idempotency_key":"f"}'
            asyncio.run(_post(server.url + "/v1/customers/deposit", server.api_key, deposit))
        if asyncio.run(_deducts(server.url, server.api_key, WARMUP_REQUESTS, connections, "warm")):
            raise RuntimeError(f"{server.kind}: warm-up requests failed\n{server.log_tail()}")
        pids = server.pids()
        server.control("-z", pids)
        bad = asyncio.run(_deducts(server.url, server.api_key, requests, connections, "count"))
        server.control("-d", pids)
        if bad:
            raise RuntimeError(f"{server.kind}: {bad} of {requests} requests failed")
        return [(process_name(pid, pids), server.dumped_instructions(pid) / requests) for pid in pids]
    finally:
        server.stop()


def process_name(pid: int, pids: list[int]) -> str:
    """What `pid` is among a server's processes (`pids`: the server first): "ledger" (or "server"
    without fronts), "front N", "WAL flusher", or "process N" (the baseline's)."""
    def argv(of: int) -> list[bytes]:
        return Path(f"/proc/{of}/cmdline").read_bytes().split(b"\0")
    fronts = [other for other in pids if b"net.front" in argv(other)]
    if pid in fronts:
        return f"front {fronts.index(pid)}"
    if b"wal.flusher_main" in argv(pid):
        return "WAL flusher"
    if pid == pids[0]:
        return "ledger" if fronts else "server"
    return f"process {pids.index(pid)}"


async def _post(url: str, api_key: str, body: bytes) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {api_key}"}) as session:
        async with session.post(url, data=body) as response:
            if response.status != 200:
                raise RuntimeError(f"funding failed: {response.status} {await response.text()}")


def run(requests: int, connections: int, workers: int = 1) -> dict[str, Any]:
    """Both servers, one after the other; the figures (the sum over processes, and each
    process's) and the ratio bare / tally."""
    work_dir = Path(tempfile.mkdtemp(prefix="tally-instructions-"))
    api_key = "tly_" + secrets.token_hex(24)
    bare_args = ("--processes", str(workers)) if workers > 1 else ()
    try:
        bare = measure(CallgrindServer("baseline", work_dir, api_key, bare_args), requests, connections, fund=False,
                       listeners=workers)  # fmt: skip
        tally = measure(CallgrindServer("tally", work_dir, api_key, ("--workers", str(workers))), requests,
                        connections, fund=True, listeners=workers)  # fmt: skip
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    bare_each, tally_each = [count for _, count in bare], [count for _, count in tally]
    return {"requests": requests, "connections": connections, "workers": workers, "bare": sum(bare_each),
            "tally": sum(tally_each), "ratio": sum(bare_each) / sum(tally_each), "bare_each": bare_each,
            "tally_each": tally_each, "tally_names": [name for name, _ in tally]}  # fmt: skip


def report(result: dict[str, Any]) -> list[str]:
    workers = result.get("workers", 1)
    bare_label = "bare aiohttp POST" + (f", {workers} processes" if workers > 1 else "")
    lines = [
        "| server | instructions / request | vs bare |", "| --- | ---: | ---: |",
        f"| {bare_label} | {result['bare']:,.0f} | — |",
        f"| Tally deduct, hot, --workers {workers} (durable) | {result['tally']:,.0f} | {result['ratio']:.2f}× |",
    ]
    if len(result.get("tally_each", ())) > 1:
        names = result.get("tally_names") or ["ledger", *(f"front {i}" for i in range(len(result["tally_each"]) - 1))]
        shares = ", ".join(f"{name} {count:,.0f}" for name, count in zip(names, result["tally_each"]))
        bare_shares = ", ".join(f"{count:,.0f}" for count in result["bare_each"])
        lines += ["", f"- per process (instructions / all requests): Tally {shares}; bare {bare_shares}."]
    return lines + [
        "", f"- callgrind, user space only, {result['requests']:,} requests over {result['connections']} "
        "connections after a warm-up (bench/instructions.py): exact and repeatable, but blind to kernel "
        "time (fdatasync, syscalls), so an upper bound on the throughput ratio.",
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="2: against --workers 2 and 2 bare processes")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed: bash bench/setup.sh --profiler", file=sys.stderr)
        return 2
    started = time.monotonic()
    result = run(args.requests, args.connections, args.workers)
    print("\n".join(report(result)))
    print(f"\n({time.monotonic() - started:.0f} s; from {ROOT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
