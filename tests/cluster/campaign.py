"""Shared pieces of the cluster campaigns (tests/cluster/test_*.py).

- `ClusterWorkload`: the reliability workload (tests/reliability/harness.py: deposits with
  idempotency keys, freezes and their consumes/unfreezes, deducts, deliberate replays, every
  request and answer recorded) with a client that follows the leader: a 503 `not_leader` moves
  it to the node whose /health is 200 (polled every 100 ms); a 503 or a refused connection makes
  it pause 50 ms and go on. It never stops on failures, only when told to.
- `retry_until_acked`: a client that resends one op (same ids) to the nodes until one answers 200.
- `assert_standby_refuses`: CONTRACT §12.3 on a standby, for /health and a /v1 write.
- `sends_between`: the recorded sends in a time window, to hold a paused leader or a PostgreSQL
  outage to "no 2xx".
- `LeaderProxy`: a loopback HTTP proxy to whichever node leads, resending a request (same bytes,
  so the same ids) on a 503 or a refused connection: what a retrying client does. The checker
  (`check_server`) runs through it, so a leadership change during the check (a leader that steps
  down on a busy machine is allowed to) costs a retry, not a false failure.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from tests.cluster.nodes import Cluster, ClusterNode, get_health
from tests.reliability.harness import API_KEY, ACKED, History, Op, Workload, check_replay_body, headers, send, settle

__all__ = ["API_KEY", "ClusterWorkload", "retry_until_acked", "probe_deposit", "assert_standby_refuses", "sends_between"]
SEND_TIMEOUT_S = 15.0


class ClusterWorkload(Workload):
    """The reliability workload against whichever node is the leader (`target`, re-chosen every
    100 ms from /health)."""

    def __init__(self, history: History, rng: Any, cluster: Cluster, target: ClusterNode) -> None:
        super().__init__(history, rng)
        self.cluster = cluster
        self.target = target

    async def run_following(self, session: aiohttp.ClientSession, stop: asyncio.Event, workers: int) -> None:
        tasks = [asyncio.create_task(self._follow_worker(session, stop)) for _ in range(workers)]
        tasks.append(asyncio.create_task(self._watch_leader(stop)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow_worker(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            status = await self.step(session, self.target.base_url)
            if status is None or status >= 500:
                await asyncio.sleep(0.05)

    async def _watch_leader(self, stop: asyncio.Event) -> None:
        """Every 100 ms: the running, unpaused node whose /health is 200 becomes the target."""
        while not stop.is_set():
            for node in list(self.cluster.nodes):
                if node.running and not node.paused:
                    answer = await asyncio.to_thread(get_health, node.base_url, 0.5)
                    if answer is not None and answer[0] == 200:
                        self.target = node
                        break
            await asyncio.sleep(0.1)


async def retry_until_acked(session: aiohttp.ClientSession, nodes: list[ClusterNode], op: Op, history: History,
                            *, timeout_s: float = 30.0) -> tuple[ClusterNode, float]:
    """Resend `op` (same ids) to each node in turn until one answers 200; (that node, seconds
    until then). Asserts the op is decided within `timeout_s` and never rejected."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        for node in nodes:
            if not node.running or node.paused:
                continue
            status, body = await send(session, node.base_url, op, history)
            settle(op, status, body, history)
            if status == 200:
                return node, time.monotonic() - began
            assert status is None or status == 503, f"{node.node_id}: {op.describe()} -> {status} {body}"
        await asyncio.sleep(0.02)
    raise AssertionError(f"{op.describe()} not acknowledged by any of {[n.node_id for n in nodes]} in {timeout_s}s")


def probe_deposit(history: History, customer: str, amount: int = 100) -> Op:
    key = history.next_id("probe")
    body = {"customer_id": customer, "amount": amount, "idempotency_key": key}
    return history.new("deposit", "/v1/customers/deposit", body, customer, key)


async def assert_standby_refuses(session: aiohttp.ClientSession, standby: ClusterNode, leader: ClusterNode,
                                 *, timeout_s: float = 15.0) -> None:
    """§12.3: a standby's /health is 503 role standby naming the leader; a /v1 write to it is 503
    not_leader, retryable, with details.leader (waits up to `timeout_s` for it to learn the leader)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await asyncio.to_thread(get_health, standby.base_url)
        assert answer is not None, f"{standby.node_id}: /health does not answer"
        status, body = answer
        if body.get("leader") == leader.node_id or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert status == 503 and body == {"status": "standby", "role": "standby", "node_id": standby.node_id,
                                      "leader": leader.node_id}, (standby.node_id, answer)
    async with session.post(standby.base_url + "/v1/billing/deduct", headers=headers(),
                            json={"customer_id": "standby_probe", "amount": 1, "transaction_id": "standby_probe_1"},
                            timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)) as response:
        refused = await response.json(content_type=None)
        assert response.status == 503, (response.status, refused)
    error = refused["error"]
    assert error["code"] == "not_leader" and error["retryable"] is True, refused
    assert error["details"]["leader"] == leader.node_id, refused


def sends_between(history: History, start: float, end: float = float("inf")) -> list[tuple[float, float, int | None, str | None]]:
    """Recorded sends (sent, answered, status, code) first sent within [start, end)."""
    return [entry for entry in history.sends if start <= entry[0] < end]


def acked_ops(history: History) -> list[Op]:
    return [op for op in history.ops if op.outcome == ACKED]


async def replay_acked(session: aiohttp.ClientSession, node: ClusterNode, ops: list[Op], history: History) -> int:
    """Resend acked ops to `node`: each must answer its original body with is_idempotent_replay."""
    for op in ops:
        status, body = await send(session, node.base_url, op, history)
        assert status == 200, f"{node.node_id}: replay of {op.describe()} -> {status} {body}"
        check_replay_body(op, body, history, where=f"replay on {node.node_id}", must_be_replay=True)
    assert not history.violations, history.violations[:10]
    return len(ops)


class LeaderProxy:
    """http://127.0.0.1:<port> forwarding every request to the current leader; retries (the same
    request) on 503 or no answer for up to `retry_s`, then answers what it last got (or 502)."""

    def __init__(self, cluster: Cluster, *, retry_s: float = 30.0) -> None:
        self.cluster = cluster
        self.retry_s = retry_s
        self.retries = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._leader: ClusterNode | None = None
        self.base_url = ""

    async def __aenter__(self) -> LeaderProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _current_leader(self) -> ClusterNode | None:
        for node in self.cluster.nodes:
            if node.running and not node.paused:
                answer = await asyncio.to_thread(get_health, node.base_url, 1.0)
                if answer is not None and answer[0] == 200:
                    return node
        return None

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        forwarded = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        deadline = time.monotonic() + self.retry_s
        last: tuple[int, bytes] | None = None
        while True:
            if self._leader is None:
                self._leader = await self._current_leader()
            if self._leader is not None:
                try:
                    async with self._session.request(request.method, self._leader.base_url + request.path_qs, data=body,
                                                     headers=forwarded, timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)) as answer:
                        raw = await answer.read()
                        if answer.status != 503:
                            return web.Response(status=answer.status, body=raw, content_type="application/json")
                        last = (answer.status, raw)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
            if time.monotonic() > deadline:
                status, raw = last or (502, b'{"error": {"code": "proxy_no_leader"}}')
                return web.Response(status=status, body=raw, content_type="application/json")
            self.retries += 1
            self._leader = None
            await asyncio.sleep(0.05)
