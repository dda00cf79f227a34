"""Tally benchmark suite: throughput, latency, CPU, memory and recovery, on 127.0.0.1 only.

    .venv/bin/python -m bench.run            # full run (several minutes; wait for an idle box)
    .venv/bin/python -m bench.run --smoke    # < 90 s: every row once, tiny sizes
    .venv/bin/python -m bench.run --profile deduct_hot   # also py-spy the server under that load

Every server (the bare aiohttp baseline and `tally serve`) is a subprocess on a free loopback
port with a fresh temp data dir; it is stopped by its own PID. Load comes from wrk (-t2) with
bench/lua/load.lua, which makes every transaction_id and idempotency key unique (a reused one is
an idempotent replay: cheaper, and it would flatter the numbers). The table goes to
bench/results/<date>-<commit>.md and stdout; bench/README.md explains each column.

Measured per row: wrk's request rate and latency percentiles (closed loop: each connection keeps
one request in flight, so these are service times under load, without coordinated-omission
correction), responses with status >= 400 (wrk counts them as "Non-2xx or 3xx"), socket errors,
server CPU (utime+stime delta from /proc/<pid>/stat, all threads) and wrk's own CPU
(getrusage(RUSAGE_CHILDREN) delta around the wrk process), both in % of one core.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.procs import children_of

ROOT = Path(__file__).resolve().parent.parent
LUA_DIR = ROOT / "bench" / "lua"
RESULTS_DIR = ROOT / "bench" / "results"
WRK_THREADS = 2
CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTUP_TIMEOUT_S = 600.0  # recovery of 10 M entries may take minutes on this box
STOP_TIMEOUT_S = 120.0
HOT_FUNDS = 10**15
SPREAD_FUNDS = 10**12

# Velobase OSS (velobase-oss-observed.md §4, 64 connections, 20 s; two passes r1/r2): logical
# operations per second as a (low, high) range; the ratio column divides by the midpoint.
VELOBASE_OPS = {
    "deduct_hot": (95.0, 128.0),  # reserve 1 + settle 1 on one customer
    "deduct_spread": (207.0, 207.0),  # same over 10,000 customers
    "pair_hot": (85.0, 121.0),  # reserve 10 + settle 7, pairs/s
    "pair_spread": (176.0, 202.0),
    "freeze_hot": (215.0, 236.0),
    "freeze_spread": (316.0, 387.0),
    "get_spread": (1897.0, 2308.0),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    server: str  # "baseline" | "tally"
    mode: str  # load.lua MODE
    hot: bool  # one hot customer, else the spread set
    kind: str = "post"  # which baseline row a ratio divides by: "post" | "get" | "post2" (2 processes)
    requests_per_op: int = 1  # a freeze+consume pair is 2 HTTP requests
    serve_args: tuple[str, ...] = ()  # extra `tally serve` flags for this row's server
    reference: bool = True  # a baseline row: the one its kind's ratios divide by (False: a ratio of its own)


SCENARIOS = (
    Scenario("baseline_post", "bare aiohttp POST (decode + encode, no ledger, no fsync)", "baseline", "deduct", False),
    Scenario("baseline_get", "bare aiohttp GET (pre-encoded body)", "baseline", "get", False, kind="get"),
    Scenario("deduct_hot", "(a) deduct 1, one hot customer", "tally", "deduct", True),
    # issue 14: the front/ledger split against the bare handler run as as many processes (every
    # other Tally row runs --workers 1: deduct_hot is its one-process counterpart, same run).
    Scenario("baseline_post_2p", "bare aiohttp POST, 2 processes (SO_REUSEPORT)", "baseline", "deduct", False,
             kind="post2", serve_args=("--processes", "2")),
    Scenario("deduct_hot_w2", "(a) deduct 1, hot, --workers 2 (ledger + 2 fronts)", "tally", "deduct", True,
             kind="post2", serve_args=("--workers", "2")),
    # The split's floor: the bare handler's 2 processes, each POST's balance update crossing to a
    # hub process that writes it durably (O_DSYNC, one write per read: group commit) before it
    # answers. No ledger, no Tally code: about the most a --workers 2 that waits for the disk can
    # reach on this machine (bench/baseline_server.py --hop --hop-fsync).
    Scenario("baseline_post_2p_floor", "bare aiohttp POST, 2 processes + a hop to a hub that writes durably "
             "(the split's floor)", "baseline", "deduct", False, kind="post2",
             serve_args=("--processes", "2", "--hop", "--hop-fsync"), reference=False),
    # The cost of the per-request log line (CONTRACT §9.4): the same load with request lines off.
    Scenario("deduct_hot_nolog", "(a') deduct 1, hot, request log off (--log-level warning)", "tally", "deduct",
             True, serve_args=("--log-level", "warning")),
    # Where the wall is (issue 14): the same loads with fsync off (--unsafe-skip-fsync, never for
    # real use). What these rows lack against the bare handler is CPU and inter-process hops, not
    # the disk: the ceiling the durable rows above can reach on this machine.
    Scenario("deduct_hot_nosync", "(a'') deduct 1, hot, fsync off (--unsafe-skip-fsync: the CPU ceiling)", "tally",
             "deduct", True, serve_args=("--unsafe-skip-fsync",)),
    Scenario("deduct_hot_w2_nosync", "(a'') deduct 1, hot, --workers 2, fsync off (the split's ceiling)", "tally",
             "deduct", True, kind="post2", serve_args=("--workers", "2", "--unsafe-skip-fsync")),
    Scenario("deduct_spread", "(b) deduct 1, spread customers", "tally", "deduct", False),
    Scenario("pair_hot", "(c) freeze 10 + consume 7, hot", "tally", "pair", True, requests_per_op=2),
    Scenario("pair_spread", "(c) freeze 10 + consume 7, spread", "tally", "pair", False, requests_per_op=2),
    Scenario("freeze_hot", "(d) freeze 10 only, hot", "tally", "freeze", True),
    Scenario("freeze_spread", "(d) freeze 10 only, spread", "tally", "freeze", False),
    Scenario("get_spread", "(e) GET customer, spread", "tally", "get", False, kind="get"),
    Scenario("deposit_spread", "(f) deposit 1, spread", "tally", "deposit", False),
    Scenario("slot_pair_hot", "(g) slot claim 1 + release, hot", "tally", "slot", True, requests_per_op=2),
)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run; `--smoke` shrinks everything to fit in well under 90 s."""

    smoke: bool
    duration_s: int
    warmup_s: int
    connections: tuple[int, ...]
    spread_customers: int
    memory_steps: tuple[int, ...]  # cumulative customer counts at which RSS is read
    fresh_tally_per_scenario: bool
    recovery_rounds_extra: int  # extra deposit rounds over the memory customers (10 M entries)
    many_spent: int = 20_000  # many_buckets row: spent buckets on hot-0 (CONTRACT §7.11)
    many_samples: int = 300  # sequential deducts timed per measurement
    many_hammer_s: int = 10  # wrk on hot-0 while the bystander is timed
    hooks_rounds: int = 1500  # hooks row: deduct + deposit rounds per receiver kind (CONTRACT §11.3)
    hooks_repeat: int = 2
    hooks_customers: int = 200
    paired_rounds: int = 5  # paired row (bench/paired.py): rounds of (Tally, bare) runs per pair
    paired_duration_s: int = 5


FULL = Plan(False, duration_s=10, warmup_s=3, connections=(16, 64), spread_customers=10_000,
            memory_steps=(100_000, 1_000_000), fresh_tally_per_scenario=True, recovery_rounds_extra=9)
SMOKE = Plan(True, duration_s=1, warmup_s=0, connections=(64,), spread_customers=2_000,
             memory_steps=(1_000, 2_000), fresh_tally_per_scenario=False, recovery_rounds_extra=0,
             many_spent=50, many_samples=10, many_hammer_s=1, hooks_rounds=10, hooks_repeat=1,
             hooks_customers=5, paired_rounds=1, paired_duration_s=1)

# Rows that are not wrk scenarios: their own drivers (bench/many_buckets.py, bench/hooks_bench.py,
# bench/instructions.py, bench/paired.py).
EXTRA_ROWS = ("many_buckets", "hooks", "instructions", "paired")
ROW_NAMES = SCENARIO_NAMES + EXTRA_ROWS


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # getsockname() is typed Any
        return port


class Server:
    """One server subprocess (ours): start, wait for /health 200, sample /proc, stop by PID."""

    def __init__(self, kind: str, work_dir: Path, api_key: str, *, data_dir: Path | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="data-", dir=work_dir))
        self.log_path = work_dir / f"{kind}-{self.port}.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.kind == "baseline":
            return [sys.executable, "-m", "bench.baseline_server", "--host", "127.0.0.1", "--port", str(self.port),
                    *self.extra_args]
        # one process unless the row says otherwise (the default, the number of cores, would
        # change every older row's meaning)
        workers = () if "--workers" in self.extra_args else ("--workers", "1")
        return [sys.executable, "-m", "net.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), *workers, *self.extra_args]

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> float:
        """Start and wait (at most timeout_s) until /health answers 200; return the seconds."""
        assert self.proc is None
        env = dict(os.environ, TALLY_BOOTSTRAP_KEY=self.api_key)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if http_status(self.url + "/health") == 200:
                return time.monotonic() - started
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.kind} not healthy after {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> float:
        """SIGTERM our own PID and wait (SIGKILL after STOP_TIMEOUT_S); return the seconds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0.0
        started = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        return time.monotonic() - started

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        """utime + stime of the whole process (all threads) and of its live children (the fronts
        of --workers N, the WAL flusher, the baseline's --processes N), seconds."""
        total = 0.0
        for pid in (self.pid, *self.child_pids()):
            try:
                text = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)
        return total

    def child_pids(self, module: str = "") -> list[int]:
        """The server's live children, by pid; with `module`, only those running `python -m
        <module>` ("net.front": the fronts; "wal.flusher_main": the WAL flusher)."""
        return sorted(children_of(self.pid, module))

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def http_status(url: str, *, body: bytes | None = None, key: str | None = None) -> int:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status: int = response.status  # urlopen() is typed to return Any
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


# -- load --------------------------------------------------------------------------------------


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(server: Server, mode: str, customers: int, connections: int, duration_s: int) -> dict[str, Any]:
    """One wrk run of load.lua; the BENCH_JSON line plus req/s and both CPU shares."""
    tag = "r" + secrets.token_hex(4)
    command = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s",
               "--latency", "-s", str(LUA_DIR / "load.lua"), server.url, "--",
               mode, str(customers), tag, server.api_key]
    server_cpu_before, wrk_cpu_before = server.cpu_s(), children_cpu_s()
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 120, cwd=ROOT)
    wall_s = time.monotonic() - started
    server_cpu, wrk_cpu = server.cpu_s() - server_cpu_before, children_cpu_s() - wrk_cpu_before
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["server_cpu_pct"] = 100.0 * server_cpu / wall_s
    result["wrk_cpu_pct"] = 100.0 * wrk_cpu / wall_s
    result["socket_errors"] = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return result


def fund(server: Server, prefix: str, first: int, count: int, amount: int, *, tag: str = "0",
         connections: int = 64, timeout_s: float = 3600.0) -> tuple[float, int, int]:
    """Deposit `amount` once into each of prefix<first> .. prefix<first+count-1>; (seconds, ok, bad)."""
    done_dir = Path(tempfile.mkdtemp(prefix="fund-"))
    command = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{int(timeout_s)}s", "--timeout", "30s",
               "-s", str(LUA_DIR / "fund.lua"), server.url, "--", prefix, str(first), str(count),
               str(amount), str(WRK_THREADS), str(done_dir), server.api_key, tag]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        while len(list(done_dir.iterdir())) < WRK_THREADS:
            if proc.poll() is not None:
                raise RuntimeError(f"funding wrk exited early: {proc.communicate()}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError("funding timed out")
            time.sleep(0.02)
        seconds = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # wrk's own handler: stop sleeping, join, exit
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    ok = bad = 0
    for path in done_dir.iterdir():
        thread_ok, thread_bad = path.read_text().split()
        ok, bad = ok + int(thread_ok), bad + int(thread_bad)
    shutil.rmtree(done_dir, ignore_errors=True)
    return seconds, ok, bad


# The slot row (load.lua MODE slot): each wrk thread claims and releases on its own SLOT_LANES pools
# of "hot-0" (source "t<thread>-<lane>"); a lane has at most one request in flight, so a thread
# needs at least as many lanes as connections. Capacity per pool: far more than a lane holds (1).
SLOT_LANES = 64  # = SLOT_LANES in bench/lua/load.lua
SLOT_LANE_CAPACITY = 1000
assert max(FULL.connections + SMOKE.connections) <= SLOT_LANES * WRK_THREADS, "a thread needs a lane per connection"


def grant_slot_lanes(server: Server) -> None:
    """Grant the slot row's pools, lane by lane across threads (the engine scans a customer's
    pools in creation order; the lanes a run uses most are the low ones)."""
    for lane in range(1, SLOT_LANES + 1):
        for thread in range(WRK_THREADS):
            grant = (f'{{"customer_id":"hot-0","wallet":"bench","source":"t{thread}-{lane}",'
                     f'"amount":{SLOT_LANE_CAPACITY}}}').encode()
            if http_status(server.url + "/v1/slot/grant", body=grant, key=server.api_key) != 200:
                raise RuntimeError(f"slot grant failed\n{server.log_tail()}")


# -- throughput --------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: Scenario
    connections: int
    result: dict[str, Any]


def prepare_tally(work_dir: Path, api_key: str, plan: Plan, notes: list[str],
                  serve_args: tuple[str, ...] = ()) -> Server:  # fmt: skip
    server = Server("tally", work_dir, api_key, extra_args=serve_args)
    server.start()
    seconds, ok, bad = fund(server, "hot-", 0, 1, HOT_FUNDS)
    seconds2, ok2, bad2 = fund(server, "c-", 0, plan.spread_customers, SPREAD_FUNDS)
    if bad or bad2 or ok + ok2 != 1 + plan.spread_customers:
        raise RuntimeError(f"funding failed: ok={ok + ok2} bad={bad + bad2}\n{server.log_tail()}")
    grant_slot_lanes(server)
    if not notes:
        notes.append(f"funding {plan.spread_customers:,} spread customers took {seconds2:.2f} s "
                     f"({plan.spread_customers / seconds2:,.0f} deposits/s at 64 connections)")
    return server


def run_throughput(plan: Plan, names: tuple[str, ...], work_dir: Path, api_key: str,
                   profile: str | None, profile_out: Path | None) -> tuple[list[Row], list[str], str | None]:
    rows: list[Row] = []
    notes: list[str] = []
    profile_text: str | None = None
    tally: Server | None = None
    baseline: Server | None = None
    try:
        for scenario in SCENARIOS:
            if scenario.name not in names:
                continue
            customers = 1 if scenario.hot else plan.spread_customers
            if scenario.server == "baseline":
                if baseline is not None and baseline.extra_args != scenario.serve_args:
                    baseline.stop()
                    baseline = None
                if baseline is None:
                    baseline = Server("baseline", work_dir, api_key, extra_args=scenario.serve_args)
                    baseline.start()
                server = baseline
            else:
                if tally is not None and (plan.fresh_tally_per_scenario or tally.extra_args != scenario.serve_args):
                    tally.stop()
                    shutil.rmtree(tally.data_dir, ignore_errors=True)
                    tally = None
                if tally is None:
                    tally = prepare_tally(work_dir, api_key, plan, notes, scenario.serve_args)
                server = tally
            if plan.warmup_s:
                run_wrk(server, scenario.mode, customers, max(plan.connections), plan.warmup_s)
            for connections in plan.connections:
                commits_before = group_commits(server) if scenario.server == "tally" else None
                result = run_wrk(server, scenario.mode, customers, connections, plan.duration_s)
                rows.append(Row(scenario, connections, result))
                if commits_before is not None:
                    notes.append(commit_note(scenario.name, connections, commits_before, group_commits(server)))
                print(f"  {scenario.name:15s} c={connections:3d} {result['rps']:10,.0f} req/s "
                      f"p99 {result['p99_us'] / 1000:6.2f} ms non2xx {result['non2xx']} "
                      f"cpu {result['server_cpu_pct']:.0f}%/{result['wrk_cpu_pct']:.0f}%", flush=True)
            if profile == scenario.name and profile_out is not None:
                profile_text = run_profile(server, scenario, customers, max(plan.connections),
                                           max(plan.duration_s, 5), profile_out)
    finally:
        for started in (tally, baseline):
            if started is not None:
                started.stop()
    return rows, notes, profile_text


_COMMIT_SAMPLES = ("tally_wal_batch_records_count", "tally_wal_batch_records_sum",
                   "tally_wal_fsync_duration_seconds_sum")


def group_commits(server: Server) -> tuple[float, ...] | None:
    """The server's group-commit counters from /metrics (CONTRACT §9.4): (commits, records,
    write + sync seconds), or None when it does not expose them (not the ledger's process)."""
    try:
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    values = dict(line.split(" ", 1) for line in text.splitlines() if line.startswith(_COMMIT_SAMPLES))
    if any(name not in values for name in _COMMIT_SAMPLES):
        return None
    return tuple(float(values[name]) for name in _COMMIT_SAMPLES)


def commit_note(name: str, connections: int, before: tuple[float, ...], after: tuple[float, ...] | None) -> str:
    """One row's group commits, as the server measured them over the wrk run."""
    if after is None:
        return f"{name} c={connections}: group commits not exposed"
    commits, records, sync_s = (a - b for a, b in zip(after, before))
    if not commits:
        return f"{name} c={connections}: no group commit"
    return (f"{name} c={connections}: {records / commits:.1f} records per group commit, "
            f"{sync_s / commits * 1000:.2f} ms write + sync each (server /metrics)")


# -- profile (py-spy) --------------------------------------------------------------------------


def run_profile(server: Server, scenario: Scenario, customers: int, connections: int, duration_s: int,
                out_path: Path) -> str:
    """py-spy record the server (with --workers N, its first front too; and its WAL flusher) while wrk drives the
    scenario; summarise top functions per process."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return "py-spy not installed: bash bench/setup.sh --profiler"
    targets = [("", server.pid)] + [("-front", pid) for pid in sorted(server.child_pids("net.front"))[:1]]
    targets += [("-flusher", pid) for pid in server.child_pids("wal.flusher_main")[:1]]
    spies = []
    for suffix, pid in targets:
        raw_path = out_path.with_name(out_path.stem + suffix).with_suffix(".collapsed.txt")
        spies.append((suffix, raw_path, subprocess.Popen(
            [spy, "record", "-p", str(pid), "-d", str(duration_s), "-r", "200", "-f", "raw", "-o", str(raw_path),
             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))  # fmt: skip
    time.sleep(0.5)
    result = run_wrk(server, scenario.mode, customers, connections, duration_s)
    texts = []
    for suffix, raw_path, proc in spies:
        _, err = proc.communicate(timeout=duration_s + 60)
        if not raw_path.exists():
            texts.append(f"py-spy failed: {err[-1000:]}")
            continue
        who = {"-front": " (a front process)", "-flusher": " (the WAL flusher process)"}.get(suffix, "")
        who = who or (" (the ledger process)" if server.child_pids("net.front") else "")
        texts.append(summarise_profile(raw_path, f"{scenario.name}{who} at {connections} connections, "
                                       f"{result['rps']:,.0f} req/s under py-spy (200 Hz, non-blocking)",
                                       samples_max=200.0 * duration_s))  # fmt: skip
    text = "\n\n".join(texts)
    out_path.write_text(text)
    return text


def summarise_profile(raw_path: Path, title: str, samples_max: float, top: int = 20) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks, split into
    the event-loop thread (stacks under the uvloop runner) and the other threads (WAL executor).

    py-spy leaves out idle samples (a thread blocked in epoll_wait), so a thread's sample count
    over `samples_max` (rate × seconds) is roughly its busy share. A thread blocked in fdatasync
    counts as busy: that is disk wait, not CPU. `Runner.run` self time is uvloop's C code (socket
    reads and writes, callbacks) with no Python frame above it.
    """
    groups: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
    totals: dict[str, int] = {}
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in (_frame_name(f) for f in stack.split(";")) if f]
        if not frames:
            continue
        group = "other threads (WAL flusher: write + fdatasync)" if frames[0].startswith("Thread._bootstrap") \
            else "event-loop thread"
        self_counts, incl_counts = groups.setdefault(group, ({}, {}))
        totals[group] = totals.get(group, 0) + count
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for name in set(frames):
            incl_counts[name] = incl_counts.get(name, 0) + count
    lines = [f"# py-spy profile: {title}", ""]
    for group in sorted(groups, key=lambda g: g != "event-loop thread"):
        self_counts, incl_counts = groups[group]
        total = totals[group]
        lines += [f"## {group}: {total} samples, busy ≈ {100 * total / samples_max:.0f} % of the run", "",
                  "| % self | function | | % incl | function |", "| ---: | --- | --- | ---: | --- |"]
        self_top = sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]
        skip = {"_run_module_as_main", "_run_code", "<module>", "main", "_cmd_serve", "serve", "run",
                "Thread._bootstrap", "Thread._bootstrap_inner", "Thread.run"}
        incl_top = [kv for kv in sorted(incl_counts.items(), key=lambda kv: -kv[1])
                    if kv[0].split(" (")[0] not in skip][:top]
        for i in range(max(len(self_top), len(incl_top))):
            left = f"{100 * self_top[i][1] / total:.1f} | `{self_top[i][0]}`" if i < len(self_top) else " | "
            right = f"{100 * incl_top[i][1] / total:.1f} | `{incl_top[i][0]}`" if i < len(incl_top) else " | "
            lines.append(f"| {left} | | {right} |")
        lines.append("")
    return "\n".join(lines)


def _frame_name(frame: str) -> str:
    """'deduct (net/handlers.py:88)' -> 'deduct (net/handlers.py)'; thread/process headers dropped."""
    frame = frame.strip()
    if frame.startswith(("process ", "thread ")):
        return ""
    if frame.endswith(")") and "(" in frame:
        name, _, location = frame[:-1].partition(" (")
        path = location.rsplit(":", 1)[0]
        for marker in ("site-packages/", "/lib/python3"):
            if marker in path:
                path = path.split(marker, 1)[1]
        path = path.replace(str(ROOT) + "/", "")
        return f"{name} ({path})"
    return frame


# -- memory and recovery -------------------------------------------------------------------------


def snapshot_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("snapshot-*.snap"))


def data_dir_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())


def run_memory_and_recovery(plan: Plan, work_dir: Path, api_key: str, do_recovery: bool,
                            recovery_10m: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Fund customers with one deposit each, reading RSS; then restart over that ledger."""
    no_snapshots = ("--snapshot-interval-records", "0", "--snapshot-interval-s", "0")
    notes: list[str] = []
    memory: list[dict[str, Any]] = []
    recovery: list[dict[str, Any]] = []
    server = Server("tally", work_dir, api_key, extra_args=no_snapshots)
    data_dir = server.data_dir
    try:
        server.start()
        time.sleep(0.5)
        rss_empty = server.rss_bytes()
        funded = 0
        for target in plan.memory_steps:
            seconds, ok, bad = fund(server, "m-", funded, target - funded, 1000)
            if bad or ok != target - funded:
                raise RuntimeError(f"memory funding: ok={ok} bad={bad}")
            funded = target
            time.sleep(1.0)
            rss = server.rss_bytes()
            memory.append({"customers": target, "step": ok, "seconds": seconds, "rate": ok / seconds,
                           "rss": rss, "rss_empty": rss_empty,
                           "per_customer": (rss - rss_empty) / target})
            print(f"  memory {target:>9,} customers: RSS {rss / 2**20:,.1f} MiB, "
                  f"{(rss - rss_empty) / target:,.0f} B/customer, funding {seconds:.1f} s", flush=True)
        entries = funded
        if not do_recovery:
            return memory, recovery, notes
        recovery += measure_recovery(server, entries, no_snapshots)
        if recovery_10m and plan.recovery_rounds_extra:
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)  # one large ledger on disk at a time
            rows, note = measure_filled_recovery(work_dir, api_key, funded, plan.recovery_rounds_extra + 1,
                                                 no_snapshots)  # fmt: skip
            recovery += rows
            notes.append(note)
        elif plan.recovery_rounds_extra:
            base_plain = recovery[0]["start_s"]
            base_snap = recovery[1]["start_s"]
            factor = (funded * (plan.recovery_rounds_extra + 1)) / funded
            recovery.append({"entries": funded * (plan.recovery_rounds_extra + 1), "snapshot": "no",
                             "start_s": base_plain * factor, "stop_s": None, "extrapolated": True,
                             "data_bytes": None, "rss": None})
            recovery.append({"entries": funded * (plan.recovery_rounds_extra + 1), "snapshot": "yes",
                             "start_s": base_snap * factor, "stop_s": None, "extrapolated": True,
                             "data_bytes": None, "rss": None})
            notes.append("10 M rows are EXTRAPOLATED, not measured (run with --recovery-10m to measure the "
                         "snapshot row; bench.fill --direct builds that ledger): both × 10, linear in ledger "
                         "entries (WAL records; a snapshot holds every entry too). For the snapshot row "
                         "an upper bound: the 1 M customers' own share does not grow.")
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return memory, recovery, notes


def measure_filled_recovery(work_dir: Path, api_key: str, customers: int, rounds: int,
                            no_snapshots: tuple[str, ...]) -> tuple[list[dict[str, Any]], str]:  # fmt: skip
    """The large recovery row, measured: `bench.fill --direct` builds `customers` x `rounds`
    deposits (the commands fund.lua sends) with the engine core and writes one snapshot (no WAL);
    then one start over it, timed to /health 200. There is no WAL to replay, so the full-replay
    row at this size is not measured (the 1 M one is)."""
    data_dir = Path(tempfile.mkdtemp(prefix="data-fill-", dir=work_dir))
    shutil.rmtree(data_dir)  # fill --direct wants to make it (an empty one would do too)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "bench.fill", "--direct", "--data-dir", str(data_dir), "--customers",
                    str(customers), "--rounds", str(rounds), "--api-key", api_key], check=True, cwd=ROOT)  # fmt: skip
    fill_s = time.monotonic() - started
    entries = customers * rounds
    server = Server("tally", work_dir, api_key, data_dir=data_dir, extra_args=no_snapshots)
    try:
        snapshot = snapshot_files(data_dir)[-1]
        with snapshot.open("rb") as file:  # the header's version: the payload's layout (wal/snapshot.py)
            layout = int.from_bytes(file.read(12)[8:12], "little")
        start_s = server.start()
        rss = server.rss_bytes()
        rows = [{"entries": entries, "snapshot": "yes", "start_s": start_s, "stop_s": server.stop(),
                 "snapshot_bytes": snapshot.stat().st_size, "snapshot_s": None,
                 "built": f"bench.fill --direct, snapshot layout {layout}",
                 "data_bytes": data_dir_bytes(data_dir), "rss": rss}]  # fmt: skip
        print(f"  recovery {entries:>10,} entries (bench.fill --direct, layout {layout}), snapshot: {start_s:.2f} s to /health",
              flush=True)  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    note = (f"Rows marked bench.fill --direct: the ledger of {customers:,} customers x {rounds} deposits (the "
            f"commands fund.lua sends, one stamp) was applied by the engine core in-process and written as one "
            f"snapshot, no WAL, in {fill_s:.0f} s (tests/bench/test_fill.py: the same digest as through a "
            f"Runtime); the row is one start over that snapshot, measured, not extrapolated.")
    return rows, note


def measure_recovery(server: Server, entries: int, no_snapshots: tuple[str, ...]) -> list[dict[str, Any]]:
    """Restart over `entries` WAL records: first replaying the whole WAL, then from a snapshot."""
    rows = []
    stop_s = server.stop()
    for path in snapshot_files(server.data_dir):  # a snapshot is a cache the WAL rebuilds
        path.unlink()
    server.extra_args = no_snapshots
    start_s = server.start()
    rows.append({"entries": entries, "snapshot": "no", "start_s": start_s, "stop_s": stop_s,
                 "data_bytes": data_dir_bytes(server.data_dir), "rss": server.rss_bytes()})
    print(f"  recovery {entries:>10,} entries, no snapshot: {start_s:.2f} s to /health", flush=True)
    server.stop()
    # Take a snapshot with the server's own trigger: 1 s after a new record.
    server.extra_args = ("--snapshot-interval-records", "0", "--snapshot-interval-s", "1")
    server.start()
    status = http_status(server.url + "/v1/customers/deposit", key=server.api_key,
                         body=json.dumps({"customer_id": "m-0", "amount": 1,
                                          "idempotency_key": "snap-" + secrets.token_hex(4)}).encode())
    assert status == 200, status
    entries += 1
    snapshot_started = time.monotonic()
    while not snapshot_files(server.data_dir):
        if time.monotonic() - snapshot_started > STARTUP_TIMEOUT_S:
            raise RuntimeError("no snapshot was written")
        time.sleep(0.1)
    snapshot = snapshot_files(server.data_dir)[-1]
    snapshot_s = time.monotonic() - snapshot_started
    stop_s = server.stop()
    server.extra_args = no_snapshots
    start_s = server.start()
    rows.append({"entries": entries, "snapshot": "yes", "start_s": start_s, "stop_s": stop_s,
                 "snapshot_bytes": snapshot.stat().st_size, "snapshot_s": snapshot_s,
                 "data_bytes": data_dir_bytes(server.data_dir), "rss": server.rss_bytes()})
    print(f"  recovery {entries:>10,} entries, snapshot ({snapshot.stat().st_size / 2**20:.1f} MiB): "
          f"{start_s:.2f} s to /health", flush=True)
    server.stop()
    return rows


# -- rows with their own drivers -----------------------------------------------------------------


def run_extra_rows(plan: Plan, names: tuple[str, ...], work_dir: Path, api_key: str) -> dict[str, Any]:
    """The rows with drivers of their own: many_buckets, hooks, paired, instructions (each starts
    and stops its own servers, by PID)."""
    import asyncio

    from bench import hooks_bench, instructions, many_buckets, paired  # not at import: they import this module

    extras: dict[str, Any] = {}
    if "many_buckets" in names:
        extras["many_buckets"] = many_buckets.run(work_dir, api_key, spent=plan.many_spent,
                                                  samples=plan.many_samples, hammer_s=plan.many_hammer_s)
        for line in many_buckets.report(extras["many_buckets"]):
            print(f"  many_buckets: {line}", flush=True)
    if "hooks" in names:
        extras["hooks"] = asyncio.run(hooks_bench.run_all(plan.hooks_rounds, 32, plan.hooks_repeat,
                                                          plan.hooks_customers))
        for row in extras["hooks"]:
            print(f"  hooks: {row['kind']:5s} {row['writes_per_s']:8,.0f} writes/s p99 {row['p99_ms']:.1f} ms", flush=True)
    if "paired" in names:
        extras["paired"] = paired.run(work_dir, api_key, plan.paired_rounds, plan.paired_duration_s, plan.connections)
    # Not in --smoke: python under valgrind starts in ~40 s, past the smoke budget.
    if "instructions" in names and not plan.smoke and shutil.which("valgrind") and shutil.which("callgrind_control"):
        extras["instructions"] = instructions.run(1000, 16)
        print(f"  instructions: bare {extras['instructions']['bare']:,.0f}, tally {extras['instructions']['tally']:,.0f} "
              f"per request ({extras['instructions']['ratio']:.2f}x)", flush=True)
    return extras


def _opt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _opt_ratio(value: float, base: float | None) -> str:
    """value / base as "0.97×", or "n/a" without a base. A bystander served like any other
    connection (its CPU share, FIFO) is near 1×; a hot customer that slowed others is far above."""
    return "n/a" if not base else f"{value / base:.2f}×"


def render_extra_rows(extras: dict[str, Any]) -> list[str]:
    import statistics

    from bench.many_buckets import p99

    out: list[str] = []
    many = extras.get("many_buckets")
    if many:
        hot, fresh, bystander = many["hot_ms"], many["fresh_ms"], many["bystander_ms"]
        out += ["", f"## Many buckets (CONTRACT §7.11): hot-0 with {many['spent']:,} spent buckets", "",
                "| measurement | p50 ms | p99 ms | note |", "| --- | ---: | ---: | --- |",
                f"| deduct on hot-0 ({many['spent']:,} spent buckets), sequential | {statistics.median(hot):.2f} | "
                f"{p99(hot):.2f} | ratio to a fresh customer (p50): {statistics.median(hot) / statistics.median(fresh):.2f}× |",
                f"| deduct on fresh c-1, sequential | {statistics.median(fresh):.2f} | {p99(fresh):.2f} | |",
                f"| bystander c-1 while wrk hammers hot-0 (64 conns) | {statistics.median(bystander):.2f} | "
                f"{p99(bystander):.2f} | ratio to idle (p50): {statistics.median(bystander) / statistics.median(fresh):.2f}×; "
                f"to the hammering connections' own p50 ({_opt_ms(many.get('hammer_p50_ms'))} ms): "
                f"{_opt_ratio(statistics.median(bystander), many.get('hammer_p50_ms'))} |",
                "", f"- {many['samples']} samples each; GET hot-0 body {many['get_bytes']:,} bytes; "
                f"building the spent buckets took {many['build_s']:.1f} s (bench/many_buckets.py)."]
    counted = extras.get("instructions")
    if counted:
        from bench.instructions import report

        out += ["", "## Instructions per request (callgrind): hot deduct vs the bare handler", "", *report(counted)]
    pairs = extras.get("paired")
    if pairs:
        from bench.paired import report as paired_report

        out += ["", *paired_report(pairs)]
    hooks = extras.get("hooks")
    if hooks:
        out += ["", "## Webhooks (CONTRACT §11.3): deduct + deposit with a dead or hanging receiver", "",
                "| receiver | writes/s | p99 ms | events pending at end |", "| --- | ---: | ---: | ---: |"]
        out += [f"| {r['kind']} | {r['writes_per_s']:,.0f} | {r['p99_ms']:.1f} | {r['pending']} |" for r in hooks]
        out += ["", "- 32 concurrent clients, a threshold alert per customer so every write derives an event; "
                "none = no webhook, dead = connection refused, hang = accepted, never answered "
                "(bench/hooks_bench.py)."]
    return out


# -- report ------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    wrk_banner = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()
    wrk_version = wrk_banner[1] if len(wrk_banner) > 1 else "unknown"
    return {
        "cpu": model, "cores": str(os.cpu_count()), "memory": f"{mem_kib / 2**20:.1f} GiB",
        "commit": commit, "dirty": "yes (uncommitted changes in tracked files)" if dirty else "no",
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "python": sys.version.split()[0], "wrk": wrk_version.strip(),
        "load": Path("/proc/loadavg").read_text().split()[0],
    }


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def render(plan: Plan, info: dict[str, str], rows: list[Row], notes: list[str],
           memory: list[dict[str, Any]], recovery: list[dict[str, Any]], memory_notes: list[str],
           profile_text: str | None, extras: dict[str, Any] | None = None) -> str:
    out = [f"# Tally benchmark {info['date'][:10]} ({info['commit']}){' — SMOKE (tiny sizes)' if plan.smoke else ''}", ""]
    out += ["| machine | value |", "| --- | --- |",
            f"| CPU | {info['cpu']}, {info['cores']} cores |", f"| memory | {info['memory']} |",
            f"| commit | {info['commit']} (dirty: {info['dirty']}) |", f"| date | {info['date']} |",
            f"| Python / wrk | {info['python']} / {info['wrk']} |",
            f"| 1-min load at start | {info['load']} |",
            f"| load | wrk -t{WRK_THREADS}, {', '.join(map(str, plan.connections))} connections, "
            f"{plan.duration_s} s per row{f' after a {plan.warmup_s} s warm-up at {max(plan.connections)}' if plan.warmup_s else ''}; "
            f"hot = 1 customer, spread = {plan.spread_customers:,} customers (uniform random) |",
            f"| Tally | `tally serve` defaults (durable: fsync per group commit), "
            f"{'a fresh data dir per scenario' if plan.fresh_tally_per_scenario else 'one data dir for all scenarios'} |", ""]
    out += ["## Throughput and latency", "",
            "| scenario | conns | req/s | ops/s | p50 ms | p90 ms | p99 ms | non-2xx | sock err | server CPU | wrk CPU | vs bare | vs Velobase (mid) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    bare = {(r.scenario.kind, r.connections): r.result["rps"]
            for r in rows if r.scenario.server == "baseline" and r.scenario.reference}  # fmt: skip
    for row in rows:
        res, sc = row.result, row.scenario
        ops = res["rps"] / sc.requests_per_op
        ratio_bare = "—"
        if (sc.server == "tally" or not sc.reference) and (sc.kind, row.connections) in bare:
            ratio_bare = f"{res['rps'] / bare[(sc.kind, row.connections)]:.2f}×"
        ratio_velo = "—"
        if sc.name in VELOBASE_OPS:
            low, high = VELOBASE_OPS[sc.name]
            ratio_velo = f"{ops / ((low + high) / 2):,.0f}×"
        out.append(f"| {sc.label} | {row.connections} | {res['rps']:,.0f} | {ops:,.0f} | {_ms(res['p50_us'])} | "
                   f"{_ms(res['p90_us'])} | {_ms(res['p99_us'])} | {res['non2xx']} | {res['socket_errors']} | "
                   f"{res['server_cpu_pct']:.0f} % | {res['wrk_cpu_pct']:.0f} % | {ratio_bare} | {ratio_velo} |")
    out += ["", "- ops/s: logical operations; a freeze + consume pair is 2 requests, so pairs/s = req/s ÷ 2.",
            "- vs bare: Tally req/s ÷ the bare aiohttp baseline's req/s (POST or GET) at the same connections, same run.",
            "- vs Velobase (mid): ops/s ÷ the midpoint of the Velobase OSS range (velobase-oss-observed.md §4, 64 conns): "
            + "; ".join(f"{k} {lo:g}–{hi:g} → {(lo + hi) / 2:g}/s" for k, (lo, hi) in VELOBASE_OPS.items()) + ".",
            "- CPU: % of one core over the row (2 cores in all); latency is wrk's closed-loop service time."]
    out += [f"- {n}" for n in notes]
    out += ["", *render_targets(rows, memory, bare, (extras or {}).get("paired"))]
    out += render_extra_rows(extras or {})
    if memory:
        out += ["", "## Memory (idle customers, one deposit each)", "",
                "| customers | funding time | deposits/s | server RSS | RSS − empty | bytes / customer |",
                "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for m in memory:
            out.append(f"| {m['customers']:,} | {m['seconds']:.1f} s (+{m['step']:,}) | {m['rate']:,.0f} | "
                       f"{m['rss'] / 2**20:,.1f} MiB | {(m['rss'] - m['rss_empty']) / 2**20:,.1f} MiB | "
                       f"{m['per_customer']:,.0f} |")
        out += ["", f"- RSS from /proc/<pid>/status VmRSS, 1 s after funding; empty server: "
                f"{memory[0]['rss_empty'] / 2**20:.1f} MiB. Funding: wrk -t2 -c64 with bench/lua/fund.lua "
                f"(unique customer ids and idempotency keys). Each customer also holds its one ledger entry."]
    if recovery:
        out += ["", "## Recovery (SIGTERM, start again, time until GET /health is 200)", "",
                "| ledger entries | from | start → /health 200 | SIGTERM → exit | data dir | RSS after | notes |",
                "| ---: | --- | ---: | ---: | ---: | ---: | --- |"]
        for r in recovery:
            note = "EXTRAPOLATED" if r.get("extrapolated") else ""
            if r.get("snapshot_bytes"):
                note = f"snapshot {r['snapshot_bytes'] / 2**20:,.1f} MiB" + (
                    "" if r.get("snapshot_s") is None else f", written {r['snapshot_s']:.1f} s after the trigger")
            if r.get("built"):
                note = f"built by {r['built']}" + (f"; {note}" if note else "")
            source = "snapshot + WAL tail" if r["snapshot"] == "yes" else "full WAL replay"
            stop = "—" if r["stop_s"] is None else f"{r['stop_s']:.2f} s"
            size = "—" if not r["data_bytes"] else f"{r['data_bytes'] / 2**20:,.1f} MiB"
            rss = "—" if not r["rss"] else f"{r['rss'] / 2**20:,.0f} MiB"
            out.append(f"| {r['entries']:,} | {source} | {r['start_s']:.2f} s | {stop} | {size} | {rss} | {note} |")
        out += ["", "- Ledger: the memory run's customers, one deposit each (plus a few bootstrap records); "
                "snapshots off (`--snapshot-interval-records 0 --snapshot-interval-s 0`) except to take one: "
                "restart with `--snapshot-interval-s 1`, one deposit, wait for `snapshot-*.snap`, SIGTERM.",
                "- 'full WAL replay' deletes snapshot files first (segments are kept by default, so the WAL "
                "alone rebuilds the state)."]
        out += [f"- {n}" for n in memory_notes]
    if profile_text:
        out += ["", "## Profile", "", profile_text.replace("# py-spy", "### py-spy")]
    return "\n".join(out) + "\n"


ISSUE14_ROWS: Final = {"deduct_hot": "hot deduct, 1 process", "deduct_hot_w2": "hot deduct, --workers 2"}
ISSUE14_RATIO: Final = 0.70  # of the bare handler run as as many processes


def durable(scenario: Scenario) -> bool:
    """False for the fsync-off ceiling rows: no durability target applies to them."""
    return "--unsafe-skip-fsync" not in scenario.serve_args


def _issue14_targets(rows: list[Row], bare: dict[tuple[str, int], float], paired: Any) -> list[str]:
    """Durable hot deducts at 0.70x the bare handler run as as many processes (issue 14): the
    paired medians (bench/paired.py) when that row ran, else the main table's one run each."""
    if paired:
        from bench.paired import medians

        return [f"| {ISSUE14_ROWS[row]} ≥ {ISSUE14_RATIO:.2f}× bare, {c} conns | {ratio:.3f}× (paired, median of "
                f"rounds) | {'yes' if ratio >= ISSUE14_RATIO else 'NO'} |" for (row, c), ratio in medians(paired).items()
                if row in ISSUE14_ROWS]  # fmt: skip
    out = []
    for row in rows:
        base = bare.get((row.scenario.kind, row.connections))
        if row.scenario.name in ISSUE14_ROWS and base:
            ratio = row.result["rps"] / base
            out.append(f"| {ISSUE14_ROWS[row.scenario.name]} ≥ {ISSUE14_RATIO:.2f}× bare, {row.connections} conns | "
                       f"{ratio:.2f}× ({row.result['rps']:,.0f} / {base:,.0f}) | "
                       f"{'yes' if ratio >= ISSUE14_RATIO else 'NO'} |")
    return out


def render_targets(rows: list[Row], memory: list[dict[str, Any]], bare: dict[tuple[str, int], float],
                   paired: Any = None) -> list[str]:  # fmt: skip
    out = ["## Targets (reported, not asserted)", "", "| target | measured | met |", "| --- | --- | --- |"]
    low, high = VELOBASE_OPS["deduct_hot"]
    mid = (low + high) / 2
    for row in rows:
        if row.scenario.name != "deduct_hot":
            continue
        rps = row.result["rps"]
        out.append(f"| hot deduct ≥ 100× Velobase ({100 * mid:,.0f}/s), {row.connections} conns | "
                   f"{rps:,.0f}/s = {rps / mid:,.0f}× | {'yes' if rps >= 100 * mid else 'NO'} |")
        base = bare.get(("post", row.connections))
        if base:
            out.append(f"| hot deduct ≥ 60 % of bare POST, {row.connections} conns | {100 * rps / base:.0f} % "
                       f"({rps:,.0f} / {base:,.0f}) | {'yes' if rps >= 0.6 * base else 'NO'} |")
    out += _issue14_targets(rows, bare, paired)
    at64 = [r for r in rows if r.connections == 64 and r.scenario.server == "tally" and durable(r.scenario)]
    if at64:
        worst = max(at64, key=lambda r: r.result["p99_us"])
        misses = [r.scenario.name for r in at64 if r.result["p99_us"] > 10_000]
        out.append(f"| p99 ≤ 10 ms at 64 conns (every durable Tally row) | worst {_ms(worst.result['p99_us'])} ms "
                   f"({worst.scenario.name}) | {'yes' if not misses else 'NO: ' + ', '.join(misses)} |")
    if memory:
        last = memory[-1]
        out.append(f"| ≤ 1 KiB per idle customer | {last['per_customer']:,.0f} B at {last['customers']:,} | "
                   f"{'yes' if last['per_customer'] <= 1024 else 'NO'} |")
    non2xx = sum(r.result["non2xx"] for r in rows)
    out.append(f"| no 4xx/5xx under load | {non2xx} | {'yes' if non2xx == 0 else 'NO'} |")
    return out


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 s rows: a < 90 s check that it all works")
    parser.add_argument("--out", type=Path, help="directory for the results file (default bench/results, smoke: a temp dir)")
    parser.add_argument("--only", help=f"comma-separated rows (default all): {','.join(ROW_NAMES)}")
    parser.add_argument("--skip-memory", action="store_true", help="no memory/recovery section")
    parser.add_argument("--skip-recovery", action="store_true", help="memory, but no restart timing")
    parser.add_argument("--recovery-10m", action="store_true",
                        help="measure recovery from a snapshot at 10 M entries (built by bench.fill --direct) instead of extrapolating")
    parser.add_argument("--profile", choices=SCENARIO_NAMES, help="py-spy the server under this scenario (64 conns)")
    parser.add_argument("--duration", type=int, help="seconds per row (overrides the plan)")
    parser.add_argument("--readme", action="store_true",
                        help="also replace the '## Benchmarks' section of README.md with this run's tables")
    parser.add_argument("--cluster", action="store_true",
                        help="also the cluster-mode rows (bench/cluster_bench.py: a local PostgreSQL, --log-store)")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if args.duration:
        plan = Plan(**{**plan.__dict__, "duration_s": args.duration})
    if shutil.which("wrk") is None:
        print("wrk is not installed: run bash bench/setup.sh", file=sys.stderr)
        return 2
    names = tuple(args.only.split(",")) if args.only else ROW_NAMES
    unknown = set(names) - set(ROW_NAMES)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    info = machine()
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="tally-bench-smoke-")) if plan.smoke else RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{info['date'][:10]}-{info['commit']}{'-smoke' if plan.smoke else ''}"
    api_key = "tly_" + secrets.token_hex(24)
    work_dir = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    print(f"bench: {info['cpu']} x{info['cores']}, commit {info['commit']}, load {info['load']}, work dir {work_dir}", flush=True)
    try:
        profile_out = out_dir / f"{stem}-profile-{args.profile}.md" if args.profile else None
        rows, notes, profile_text = run_throughput(plan, names, work_dir, api_key, args.profile, profile_out)
        extras = run_extra_rows(plan, names, work_dir, api_key)
        memory: list[dict[str, Any]] = []
        recovery: list[dict[str, Any]] = []
        memory_notes: list[str] = []
        if not args.skip_memory:
            memory, recovery, memory_notes = run_memory_and_recovery(
                plan, work_dir, api_key, not args.skip_recovery, args.recovery_10m)
    except Exception:
        print(f"bench: failed; server logs kept in {work_dir}", file=sys.stderr)
        raise
    text = render(plan, info, rows, notes, memory, recovery, memory_notes, profile_text, extras)
    if args.cluster:
        from bench import cluster_bench

        text += "\n" + cluster_bench.run_all(cluster_bench.SMOKE if plan.smoke else cluster_bench.FULL)[0]
    out_path = out_dir / f"{stem}.md"
    out_path.write_text(text)
    shutil.rmtree(work_dir, ignore_errors=True)
    print(text)
    print(f"bench: wrote {out_path}")
    if args.readme:
        update_readme(ROOT / "README.md", text, out_path)
        print("bench: updated the Benchmarks section of README.md")
    return 0


def update_readme(readme: Path, text: str, out_path: Path) -> None:
    """Replace (or append) the '## Benchmarks' section; the rest of README.md stays as it is."""
    body = text.split("\n## Profile", 1)[0].rstrip("\n")
    body = body.split("\n", 1)[1].lstrip("\n")  # drop the results file's own title
    body = body.replace("\n## ", "\n### ")
    try:
        rel = out_path.resolve().relative_to(ROOT)
    except ValueError:
        rel = out_path
    section = (f"## Benchmarks\n\nFrom `{rel}` (`.venv/bin/python -m bench.run`; how to rerun and what "
               f"each column means: `bench/README.md`).\n\n{body}\n")
    current = readme.read_text()
    start = current.find("\n## Benchmarks\n")
    if start < 0:
        readme.write_text(current.rstrip("\n") + "\n\n" + section)
        return
    end = current.find("\n## ", start + 1)
    tail = current[end:] if end >= 0 else ""
    readme.write_text(current[:start + 1] + section + tail)


if __name__ == "__main__":
    sys.exit(main())
