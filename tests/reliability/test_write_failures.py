"""Write failures: the log cannot be written (fdatasync error, write error, torn write, full disk).

(a) In-process: Runtime.open(..., log_file_factory=FaultPlan(...).factory) served by aiohttp's
TestServer on 127.0.0.1, driven by the concurrent workload until the injected failure (the 2nd to
58th write or fsync after the set-up's own, so at least one client batch is acknowledged). Then:
every write answered after the first 503 is itself a 503 `storage_unavailable` with
`retryable: true` (none is acknowledged once the failure was reported; no 500 anywhere);
/health is 503; a customer with no unanswered write still reads 200 with exactly the balance its
acknowledged ops imply (one that had a write in the failed batch reads 200 with that same
balance, or 503 -- never anything else); after reopening the data dir with a sound file,
every acknowledged op is present (harness.check_server) and `tally verify` exits 0.

(b) A real full disk: a 2 MiB tmpfs holds the data dir of a real `tally serve`; deposits with
long descriptions fill it to ENOSPC. The same checks over HTTP; then the directory is copied
to a real disk and served from there: every acknowledged write is present. Skipped (with the
reason) when mount is not permitted. The tmpfs is always unmounted.

CI: three failure points per kind. TALLY_LONG=1: twenty.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from engine.runtime import Runtime, RuntimeConfig
from net.app import create_app
from net.config import ServerConfig
from tests.app_server import TallyTestServer
from tests.reliability.harness import (
    ACKED,
    API_KEY,
    LONG,
    UNKNOWN,
    History,
    Op,
    Workload,
    _check_customer,
    _check_model,
    assert_verify_ok,
    check_server,
    fetch_json,
    seed_from_env,
    send,
    settle,
)
from tests.system.server import TallyProcess
from tests.wal.faults import FaultPlan

POINTS = 20 if LONG else 3
SEED = seed_from_env()
FIGURES: dict[str, int] = {}


def tally(kind: str, n: int = 1) -> None:
    FIGURES[kind] = FIGURES.get(kind, 0) + n


@pytest.fixture(scope="module", autouse=True)
def report():
    print(f"\nwrite failures seed={SEED}")
    yield
    print(f"write failures (seed={SEED}): {FIGURES}")


async def drive_until_failure(session: aiohttp.ClientSession, base_url: str, history: History,
                              rng: random.Random, *, after_failure_ops: int = 150, deadline_s: float = 30.0) -> None:
    """Run the workload until the first 503 was answered and `after_failure_ops` more ops were sent."""
    workload = Workload(history, rng)
    stop = asyncio.Event()

    async def watch() -> None:
        marker = None
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while loop.time() < end:
            if marker is None and any(status == 503 for _, _, status, _ in history.sends):
                marker = len(history.ops)
            if marker is not None and len(history.ops) >= marker + after_failure_ops:
                break
            await asyncio.sleep(0.02)
        stop.set()

    await asyncio.gather(workload.run(session, base_url, stop, 8), watch())


def failed_at(history: History) -> float:
    """When the first 503 was answered: the writer had failed by then."""
    when = min((answered for _, answered, status, _ in history.sends if status == 503), default=None)
    assert when is not None, "the injected failure never showed as a 503"
    return when


def check_no_ack_after_failure(history: History) -> int:
    """Every write answered after the first 503 answer is a 503 storage_unavailable."""
    after = [(status, code) for sent, _, status, code in history.sends if sent > failed_at(history)]
    assert after, "no write was sent after the failure"
    assert all(status == 503 and code == "storage_unavailable" for status, code in after), after[:20]
    assert not history.server_errors, history.server_errors[:10]
    return len(after)


async def check_reads_while_failed(session: aiohttp.ClientSession, base_url: str, history: History) -> tuple[int, int]:
    status, body = await fetch_json(session, base_url + "/health")
    assert status == 503, (status, body)
    untouched = touched = 0
    failure = failed_at(history)
    for customer, ops in sorted(history.by_customer().items()):
        # Touched: an unanswered write sent before the failure was reported (it may sit in the
        # failed batch). Writes sent later were refused before they were applied.
        if any(op.outcome == UNKNOWN and op.first_sent is not None and op.first_sent <= failure for op in ops):
            status, view = await fetch_json(session, f"{base_url}/v1/customers/{customer}")
            assert status in (200, 503, 404), (customer, status, view)
            if status == 200:
                problems = await _check_model(session, base_url, customer, ops)
                assert not problems, problems
            touched += 1
        else:
            problems = await _check_model(session, base_url, customer, ops)
            assert not problems, problems
            from tests.reliability.harness import CheckStats

            problems = await _check_customer(session, base_url, customer, ops, CheckStats())
            assert not problems, problems
            untouched += 1
    return untouched, touched


# -- (a) in-process --------------------------------------------------------------------------------


async def _in_process(data_dir: Path, faults: dict[str, int], rng: random.Random) -> None:
    """`faults`: FaultPlan's fault points, counted from the first client write (_arm)."""
    plan = FaultPlan(tear_bytes=faults.get("tear_bytes", FaultPlan.tear_bytes))
    history = History(prefix=f"wf{rng.randrange(10**6)}")
    config = RuntimeConfig(data_dir=data_dir, snapshot_interval_records=0, snapshot_interval_s=0)
    runtime = await Runtime.open(config, log_file_factory=plan.factory)
    await runtime.create_api_key("default", API_KEY, "key_reliability")
    _arm(plan, faults)
    server = TallyTestServer(create_app(ServerConfig(port=0), runtime), host="127.0.0.1")
    await server.start_server()
    base_url = str(server.make_url("")).rstrip("/")
    try:
        async with aiohttp.ClientSession() as session:
            await drive_until_failure(session, base_url, history, rng)
            tally("writes_503_after_failure", check_no_ack_after_failure(history))
            untouched, touched = await check_reads_while_failed(session, base_url, history)
            tally("reads_untouched_ok", untouched)
            tally("reads_touched", touched)
            assert untouched > 0, "no customer was left untouched by the failed batch"
    finally:
        await server.close()
        await runtime.close()
    acked_before = sum(op.outcome == ACKED for op in history.ops)
    assert acked_before > 0

    # Reopen with a sound file: nothing acknowledged is lost; the unanswered ops resolve.
    runtime = await Runtime.open(config)
    server = TallyTestServer(create_app(ServerConfig(port=0), runtime), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            stats = await check_server(session, str(server.make_url("")).rstrip("/"), history, rng)
    finally:
        await server.close()
        await runtime.close()
    tally("acked_verified_after_reopen", stats.acked_verified)
    tally("unknown_found_applied", stats.unknown_resolved_applied)
    assert_verify_ok(data_dir)


def _arm(plan: FaultPlan, faults: dict[str, int]) -> None:
    """Set the fault points, counted from here: the writes and fsyncs the set-up made (segment
    header, its zeros, the key's batch: 3 fsyncs today) are not what is under test, and a point
    inside them, or at the first client batch, would leave nothing acknowledged to check."""
    for name in ("fail_write_at", "tear_write_at"):
        if name in faults:
            setattr(plan, name, plan.writes + faults[name])
    if "fail_fsync_at" in faults:
        plan.fail_fsync_at = plan.fsyncs + faults["fail_fsync_at"]


@pytest.mark.parametrize("kind", ["fail_fsync_at", "fail_write_at", "tear_write_at"])
async def test_log_failure_in_process(kind: str, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-{kind}")
    for point in range(POINTS):
        at = rng.randint(2, 58)  # the at-th after the set-up's (_arm): batch 1 is always acknowledged
        options = {kind: at}
        if kind == "tear_write_at":
            options["tear_bytes"] = rng.randint(1, 200)
        try:
            await _in_process(tmp_path / f"{kind}-{point}", options, rng)
        except BaseException as error:
            raise AssertionError(f"{kind}={options} seed={SEED}: {error}") from error
        tally(kind)


# -- (b) a real full disk --------------------------------------------------------------------------


def _mount_tmpfs(target: Path) -> None:
    target.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], capture_output=True, timeout=30)


async def _fill(base_url: str, history: History, rng: random.Random) -> None:
    quiet = [f"{history.prefix}_quiet{i}" for i in range(4)]
    busy = [f"{history.prefix}_busy{i}" for i in range(8)]
    async with aiohttp.ClientSession() as session:
        for customer in quiet:  # written once, early, then only read
            op = history.new("deposit", "/v1/customers/deposit",
                             {"customer_id": customer, "amount": 500, "idempotency_key": history.next_id("dep")},
                             customer, f"{history.prefix}_dep{history.counter}")
            status, body = await send(session, base_url, op, history)
            settle(op, status, body, history)
            assert status == 200, body

        failures = 0

        async def writer() -> None:
            nonlocal failures
            for _ in range(3000):
                if failures >= 60:
                    return
                customer = rng.choice(busy)
                if rng.random() < 0.7:
                    key = history.next_id("dep")
                    body = {"customer_id": customer, "amount": rng.randint(100, 900), "idempotency_key": key,
                            "description": "x" * 1800}
                    op: Op = history.new("deposit", "/v1/customers/deposit", body, customer, key)
                else:
                    key = history.next_id("ded")
                    body = {"customer_id": customer, "amount": rng.randint(1, 50), "transaction_id": key,
                            "description": "y" * 1800}
                    op = history.new("deduct", "/v1/billing/deduct", body, customer, key)
                status, answer = await send(session, base_url, op, history)
                settle(op, status, answer, history)
                if status == 503:
                    failures += 1
                assert status in (200, 400, 404, 503), (status, answer)

        await asyncio.gather(*(writer() for _ in range(6)))
        assert failures >= 60, "the disk never filled up"
        tally("full_disk_503s", check_no_ack_after_failure(history))
        untouched, touched = await check_reads_while_failed(session, base_url, history)
        assert untouched >= len(quiet), (untouched, touched)
        tally("full_disk_reads_untouched_ok", untouched)


async def test_full_disk_tmpfs(tmp_path: Path) -> None:
    mount = tmp_path / "tmpfs"
    _mount_tmpfs(mount)
    rng = random.Random(f"{SEED}-enospc")
    history = History(prefix=f"fd{SEED % 10**6}")
    server = None
    try:
        server = TallyProcess(mount / "data", api_key=API_KEY,
                              extra_args=("--snapshot-interval-records", "0", "--snapshot-interval-s", "0"))
        server.log_path = tmp_path / "server.log"  # the log must not share the full disk
        server.start()
        await _fill(server.base_url, history, rng)
        server.kill()
        server = None
        shutil.copytree(mount / "data", tmp_path / "copy", ignore=shutil.ignore_patterns("LOCK"))
    finally:
        if server is not None:
            server.kill()
        _umount(mount)
    assert not any(mount.iterdir()), "tmpfs still mounted"
    acked = sum(op.outcome == ACKED for op in history.ops)
    server = TallyProcess(tmp_path / "copy", api_key=API_KEY).start()
    try:
        async with aiohttp.ClientSession() as session:
            stats = await check_server(session, server.base_url, history, rng)
    finally:
        assert server.stop() == 0, server.log()
    assert_verify_ok(tmp_path / "copy")
    tally("full_disk_acked_verified", stats.acked_verified)
    tally("full_disk_acked_before_enospc", acked)
