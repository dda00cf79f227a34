"""`tally serve --workers 2` (issue 14): fronts that die, a main process that dies, keys across fronts.

Real processes only. Which front a connection reaches is the kernel's choice (SO_REUSEPORT), so
the key tests find a crossing by trying fresh connections: every answer's X-Request-Id starts with
its process's random prefix (net/errors.py), which names the front that answered.

- A front SIGKILLed under write load is replaced (a new PID, the server healthy again) and no
  acknowledged deduct is lost or doubled: after a clean restart every acknowledged transaction id
  is in the ledger exactly once.
- SIGKILL of the main process leaves no front behind (their PIDs disappear: PR_SET_PDEATHSIG), and
  `tally serve` on the same port and data directory starts at once.
- A key created through one front works on the next request through another; a key revoked through
  one front is refused on the next request through another (CONTRACT §9.2).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import aiohttp

from tests.api.harness import ADMIN_KEY, API_KEY, Server, full_ledger, request
from bench.procs import alive, children_of
from tests.waiting import wait_for

WORKERS_ARGS = ("--workers", "2")
WAIT_S = 90.0  # bound on waiting for a process to appear or vanish (not a timing assertion; a loaded box is slow)
LOAD_CONNECTIONS = 8
ACKED_BEFORE_KILL = 100
ACKED_AFTER_RESTART = 200
CROSSING_ATTEMPTS = 200


def front_of(reply_headers: dict[str, str]) -> str:
    """The answering process's request-id prefix (`req_<8 hex>`)."""
    return reply_headers["x-request-id"][:12]


def start(data_dir: Path) -> Server:
    return Server(data_dir, extra_args=WORKERS_ARGS).start()


async def _deduct_load(port: int, acked: list[str], stop: asyncio.Event) -> None:
    counter = iter(range(10**9))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    url = f"http://127.0.0.1:{port}/v1/billing/deduct"

    async def one_connection(n: int) -> None:
        connector = aiohttp.TCPConnector(force_close=True)  # fresh connections: both fronts get load
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            while not stop.is_set():
                txn = f"t_{n}_{next(counter)}"
                try:
                    async with session.post(url, json={"customer_id": "hot", "amount": 1, "transaction_id": txn},
                                            timeout=aiohttp.ClientTimeout(total=15)) as response:  # fmt: skip
                        if response.status == 200:
                            acked.append(txn)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass  # unknown outcome: not acknowledged, checked only for "at most once"

    await asyncio.gather(*(one_connection(n) for n in range(LOAD_CONNECTIONS)))


async def _kill_a_front_under_load(server: Server) -> tuple[list[str], int, set[int]]:
    assert server.proc is not None
    main_pid = server.proc.pid
    acked: list[str] = []
    stop = asyncio.Event()
    load = asyncio.get_running_loop().create_task(_deduct_load(server.port, acked, stop))
    await asyncio.to_thread(wait_for, lambda: len(acked) >= ACKED_BEFORE_KILL, what="acked deducts", within_s=WAIT_S)
    fronts = children_of(main_pid, "net.front")
    assert len(fronts) == 2, fronts
    victim = min(fronts)
    os.kill(victim, signal.SIGKILL)
    await asyncio.to_thread(wait_for, lambda: not alive(victim), what="the killed front to vanish", within_s=WAIT_S)
    await asyncio.to_thread(wait_for, lambda: len(children_of(main_pid, "net.front") - {victim}) == 2, what="a new front",
                            within_s=WAIT_S)
    replaced = children_of(main_pid, "net.front")
    before = len(acked)
    await asyncio.to_thread(wait_for, lambda: len(acked) >= before + ACKED_AFTER_RESTART, what="acks after the restart",
                            within_s=WAIT_S)
    stop.set()
    await load
    return acked, victim, replaced


def test_killed_front_is_replaced_and_no_acked_deduct_is_lost(tmp_path: Path) -> None:
    server = start(tmp_path / "data")
    try:
        reply = request(server.port, "POST", "/v1/customers/deposit", body={"customer_id": "hot", "amount": 10**9})
        assert reply.status == 200, reply.body
        acked, victim, replaced = asyncio.run(_kill_a_front_under_load(server))
        assert victim not in replaced and len(replaced) == 2
        assert request(server.port, "GET", "/health", key=None).status == 200
        log = server.log_path.read_text(errors="replace")
        assert "front exited" in log and "restarting" in log
        server.restart()  # SIGTERM (exit 0 asserted), then a recovery from the log
        entries = full_ledger(server.port, "hot")
        # one bucket: a deduct is one CONSUME entry carrying its transaction id
        deducts = Counter(e["transaction_id"] for e in entries if e["operation_type"] == "CONSUME")
        assert len(acked) >= ACKED_BEFORE_KILL + ACKED_AFTER_RESTART
        missing = [txn for txn in acked if deducts[txn] != 1]
        assert missing == [], f"{len(missing)} acknowledged deducts not in the ledger exactly once: {missing[:5]}"
        assert all(count == 1 for count in deducts.values()), [t for t, c in deducts.items() if c != 1][:5]
        body = request(server.port, "GET", "/v1/customers/hot").json()
        assert body["balance"]["used"] == sum(deducts.values())
    finally:
        server.kill()


def test_sigkill_of_main_leaves_no_front_and_restart_works_at_once(tmp_path: Path) -> None:
    server = start(tmp_path / "data")
    try:
        assert request(server.port, "POST", "/v1/customers/deposit", body={"customer_id": "k", "amount": 7}).status == 200
        assert server.proc is not None
        fronts = children_of(server.proc.pid, "net.front")
        assert len(fronts) == 2, fronts
        children = children_of(server.proc.pid, module="")
        assert children == fronts | children_of(server.proc.pid, "wal.flusher_main") and len(children) == 3, children
        assert server.kill() == -signal.SIGKILL
        wait_for(lambda: not any(alive(pid) for pid in children), what="the fronts and the WAL flusher to die with "
                 "the main process", within_s=WAIT_S)  # fmt: skip
        server.start()  # same port, same data dir: healthy (the start waits for /health 200)
        assert server.proc is not None and len(children_of(server.proc.pid, "net.front")) == 2
        assert request(server.port, "GET", "/v1/customers/k").json()["balance"]["available"] == 7
    finally:
        server.kill()


def _create_key(port: int) -> tuple[str, str, str]:
    reply = request(port, "POST", "/admin/v1/keys", key=ADMIN_KEY, body={"project": "default"})
    assert reply.status == 200, reply.body
    return reply.json()["key"], reply.json()["key_id"], front_of(reply.headers)


def test_key_created_or_revoked_through_one_front_holds_on_the_next_through_another(tmp_path: Path) -> None:
    server = start(tmp_path / "data")
    try:
        crossed_create = crossed_revoke = 0
        for _ in range(CROSSING_ATTEMPTS):
            key, key_id, created_on = _create_key(server.port)
            use = request(server.port, "GET", "/v1/customers?limit=1", key=key)
            assert use.status == 200, (use.status, use.body)  # on any front, at once
            crossed_create += front_of(use.headers) != created_on
            revoke = request(server.port, "POST", f"/admin/v1/keys/{key_id}/revoke", key=ADMIN_KEY)
            assert revoke.status == 200, revoke.body
            refused = request(server.port, "GET", "/v1/customers?limit=1", key=key)
            assert (refused.status, refused.code) == (401, "api_key_revoked"), refused.body
            crossed_revoke += front_of(refused.headers) != front_of(revoke.headers)
            if crossed_create >= 3 and crossed_revoke >= 3:
                break
        assert crossed_create >= 3 and crossed_revoke >= 3, (crossed_create, crossed_revoke)
    finally:
        server.kill()
