"""A deterministic simulation of the PostgreSQL log protocol (wal/pg): a virtual-time event loop,
an in-memory database with the LogPort's semantics, and a seeded fault injector.

- `VirtualClockLoop`: an asyncio loop whose clock only moves when nothing is ready to run (it
  jumps to the next timer), so a run is a pure function of the seed and takes no wall time.
- `SimDatabase`: the log rows and the lease, with PostgreSQL's semantics (one clock: the loop's;
  every operation atomic at one instant). It records every commit for the checks.
- `SimPort(db, node, rng, faults)`: a node's connection: each operation waits a random delay on
  the way in and out; a lost request raises PortUnavailable after the timeout without running; a
  lost reply runs it, then raises PortUnavailable; a paused node (SIGSTOP) neither sends nor
  handles replies until it resumes.
- `SimNode`: a Tally node reduced to the protocol: a standby tails the log and takes over when the
  lease is free (PgLogStore.start); a leader appends commands and records which were acknowledged
  (wait_durable returned); a failed store throws the node's memory away and it starts again from
  the log. A killed node (SIGKILL) stops every task where it is and restarts later from the log.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from wal.errors import WalError, WalFailed
from wal.pg import Fenced, LeaseHeld, LeaseView, LogBehind, PgLogStore, PortUnavailable, Row, decode_batch

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events:
            return events
        if timeout is None:
            raise RuntimeError("simulation deadlock: nothing scheduled")
        assert self.loop is not None
        self.loop.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self.now


@dataclass
class Faults:
    delay_s: float = 0.004  # mean one-way delay
    lost_request: float = 0.0
    lost_reply: float = 0.0
    slow: float = 0.0  # chance of a delay of up to a lease
    timeout_s: float = 0.3


@dataclass
class Commit:
    at: float
    node: str
    row: Row


class SimDatabase:
    """The log and the lease, PostgreSQL's semantics, the loop's clock."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self.loop = loop
        self.rows: dict[int, Row] = {}
        self.holder = ""
        self.epoch = 0
        self.expires_at = 0.0
        self.commits: list[Commit] = []

    def lease_held(self, node: str, epoch: int) -> bool:
        return self.holder == node and self.epoch == epoch and self.expires_at > self.loop.now

    def lease(self) -> LeaseView:
        remaining = max(0, math.ceil((self.expires_at - self.loop.now) * 1000))
        return LeaseView(self.holder, self.epoch, remaining)

    def acquire(self, node: str, lease_ms: int) -> int | None:
        if self.expires_at <= self.loop.now or self.holder == node:
            self.holder, self.epoch = node, self.epoch + 1
            self.expires_at = self.loop.now + lease_ms / 1000
            return self.epoch
        return None

    def renew(self, node: str, epoch: int, lease_ms: int) -> bool:
        if not self.lease_held(node, epoch):
            return False
        self.expires_at = self.loop.now + lease_ms / 1000
        return True

    def release(self, node: str, epoch: int) -> None:
        if self.lease_held(node, epoch):
            self.expires_at = self.loop.now

    def append(self, node: str, row: Row) -> None:
        if not self.lease_held(node, row.epoch):
            raise Fenced("lease")
        if row.position in self.rows:
            raise Fenced("position taken")
        self.rows[row.position] = row
        self.commits.append(Commit(self.loop.now, node, row))

    def tail(self) -> Row | None:
        return self.rows[max(self.rows)] if self.rows else None

    def rows_after_lsn(self, after_lsn: int, limit: int) -> list[Row]:
        return [self.rows[p] for p in sorted(self.rows) if self.rows[p].last_lsn > after_lsn][:limit]


class SimPort:
    """One node's connection to the SimDatabase, with injected delays and lost messages."""

    def __init__(self, db: SimDatabase, node: SimNode, rng: random.Random, faults: Faults) -> None:
        self.db = db
        self.node = node
        self.rng = rng
        self.faults = faults

    async def _delay(self) -> None:
        f = self.faults
        delay = self.rng.expovariate(1 / f.delay_s)
        if self.rng.random() < f.slow:
            delay += self.rng.uniform(0, self.node.lease_ms / 1000)
        await asyncio.sleep(delay)
        await self.node.wait_running()

    async def _call(self, op: Callable[[], T]) -> T:
        await self.node.wait_running()
        await self._delay()
        if self.rng.random() < self.faults.lost_request:
            await asyncio.sleep(self.faults.timeout_s)
            raise PortUnavailable("request lost")
        try:
            result = op()
        except Fenced:
            await self._delay()
            raise
        lost = self.rng.random() < self.faults.lost_reply
        await self._delay()
        if lost:
            await asyncio.sleep(self.faults.timeout_s)
            raise PortUnavailable("reply lost")
        return result

    async def lease(self) -> LeaseView:
        return await self._call(self.db.lease)

    async def acquire(self, node_id: str, lease_ms: int) -> int | None:
        return await self._call(lambda: self.db.acquire(node_id, lease_ms))

    async def renew(self, node_id: str, epoch: int, lease_ms: int) -> bool:
        return await self._call(lambda: self.db.renew(node_id, epoch, lease_ms))

    async def release(self, node_id: str, epoch: int) -> None:
        await self._call(lambda: self.db.release(node_id, epoch))

    async def append(self, node_id: str, row: Row) -> None:
        await self._call(lambda: self.db.append(node_id, row))

    async def row_at(self, position: int) -> Row | None:
        return await self._call(lambda: self.db.rows.get(position))

    async def tail(self) -> Row | None:
        return await self._call(self.db.tail)

    async def rows_after_lsn(self, after_lsn: int, limit: int) -> list[Row]:
        return await self._call(lambda: self.db.rows_after_lsn(after_lsn, limit))

    async def close(self) -> None:
        return None


@dataclass
class Ack:
    node: str
    epoch: int
    lsn: int
    payload: bytes
    at: float


@dataclass
class SimNode:
    name: str
    db: SimDatabase
    rng: random.Random
    faults: Faults
    lease_ms: int
    acks: list[Ack] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    refused: int = 0
    takeovers: int = 0
    paused_until: float = 0.0
    stopping: bool = False
    records: list[tuple[int, bytes]] = field(default_factory=list)  # the node's state
    serial: int = 0
    task: asyncio.Task[None] | None = None
    store: PgLogStore | None = None
    waiters: list[asyncio.Task[None]] = field(default_factory=list)
    kills: int = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    def kill(self) -> None:
        """SIGKILL: every task of the process stops where it is; nothing is released or acknowledged."""
        self.kills += 1
        tasks = [self.task, *self.waiters, *(self.store._tasks if self.store is not None else ())]  # noqa: SLF001
        for task in tasks:
            if task is not None:
                task.cancel()
        self.store = None
        self.waiters = []

    async def wait_running(self) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < self.paused_until:
            await asyncio.sleep(self.paused_until - loop.time())

    def port(self) -> SimPort:
        return SimPort(self.db, self, self.rng, self.faults)

    async def run(self) -> None:
        while not self.stopping:
            self.records = []  # a new start: memory thrown away, rebuilt from the log
            store = await self._standby()
            if store is None:
                return
            await self._lead(store)

    async def _standby(self) -> PgLogStore | None:
        port = self.port()
        while not self.stopping:
            try:
                rows = await port.rows_after_lsn(self.last_lsn, 8)
                for row in rows:
                    for lsn, payload in decode_batch(row):
                        if lsn > self.last_lsn:
                            assert lsn == self.last_lsn + 1, (self.name, lsn, self.last_lsn)
                            self.records.append((lsn, payload))
                if len(rows) == 8:
                    continue
                lease = await port.lease()
                if lease.remaining_ms == 0 or lease.holder == self.name:
                    store = PgLogStore(self.port(), self.port(), self.name, next_lsn=self.last_lsn + 1,
                                       lease_ms=self.lease_ms, batch_records_max=4, queue_records_max=64)  # fmt: skip
                    try:
                        self.store = store
                        await store.start()
                        self.takeovers += 1
                        return store
                    except (LeaseHeld, LogBehind, Fenced, PortUnavailable):
                        await store.close()
            except PortUnavailable:
                pass
            await asyncio.sleep(0.05)
        return None

    @property
    def last_lsn(self) -> int:
        return self.records[-1][0] if self.records else 0

    async def _lead(self, store: PgLogStore) -> None:
        waiters = self.waiters = []
        while not store.failed and not self.stopping:
            await self.wait_running()
            for _ in range(self.rng.randint(1, 3)):
                if store.failed or store.room() < 1:
                    break
                lsn = self.last_lsn + 1
                self.serial += 1
                payload = f"{self.name}:{self.serial}".encode()
                store.append(lsn, payload)
                self.records.append((lsn, payload))
                waiters.append(asyncio.get_running_loop().create_task(self._await_ack(store, lsn, payload)))
            await asyncio.sleep(self.rng.expovariate(1 / 0.01))
        await store.close()
        await asyncio.gather(*waiters)

    async def _await_ack(self, store: PgLogStore, lsn: int, payload: bytes) -> None:
        try:
            await store.wait_durable(lsn)
        except WalFailed:
            self.refused += 1
            return
        loop = asyncio.get_running_loop()
        if not self.db.lease_held(self.name, store.epoch):
            self.violations.append(f"{self.name} acknowledged lsn {lsn} at {loop.time():.3f} without the lease")
        self.acks.append(Ack(self.name, store.epoch, lsn, payload, loop.time()))


@dataclass
class Outcome:
    rows: dict[int, Row]
    commits: list[Commit]
    acks: list[Ack]
    violations: list[str]
    refused: int
    takeovers: int
    kills: int


def simulate(seed: int, *, nodes: int, duration_s: float, lease_ms: int = 500) -> Outcome:
    """One seeded run: `nodes` nodes, random faults and pauses for `duration_s` of virtual time,
    then a quiet period in which the last leader's acknowledgements settle."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(_simulate(loop, seed, nodes, duration_s, lease_ms))
    finally:
        loop.close()


async def _simulate(loop: VirtualClockLoop, seed: int, nodes: int, duration_s: float, lease_ms: int) -> Outcome:
    rng = random.Random(seed)
    faults = Faults(lost_request=rng.choice((0.0, 0.02, 0.1)), lost_reply=rng.choice((0.0, 0.02, 0.1)),
                    slow=rng.choice((0.0, 0.01, 0.05)), timeout_s=lease_ms / 1000 / 3)  # fmt: skip
    db = SimDatabase(loop)
    sim_nodes = [SimNode(f"n{i}", db, random.Random(rng.random()), faults, lease_ms) for i in range(nodes)]
    for node in sim_nodes:
        node.start()
    restarts: list[asyncio.Task[None]] = []
    end = loop.time() + duration_s
    while loop.time() < end:
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        victim = rng.choice(sim_nodes)
        chance = rng.random()
        if chance < 0.3:  # SIGSTOP a node, sometimes past its lease; SIGCONT later
            victim.paused_until = loop.time() + rng.uniform(0.05, 3 * lease_ms / 1000)
        elif chance < 0.4 and victim.task is not None and not victim.task.done():  # SIGKILL, restart later
            victim.kill()
            restarts.append(loop.create_task(_restart(victim, rng.uniform(0.1, 1.0))))
    await asyncio.gather(*restarts)
    for node in sim_nodes:
        node.stopping = True
    await _wait_all([node.task for node in sim_nodes if node.task is not None], loop, timeout_s=30.0)
    return Outcome(dict(db.rows), list(db.commits), [a for n in sim_nodes for a in n.acks],
                   [v for n in sim_nodes for v in n.violations], sum(n.refused for n in sim_nodes),
                   sum(n.takeovers for n in sim_nodes), sum(n.kills for n in sim_nodes))  # fmt: skip


async def _restart(node: SimNode, after_s: float) -> None:
    await asyncio.sleep(after_s)
    node.records = []
    node.start()


async def _wait_all(tasks: list[asyncio.Task[None]], loop: VirtualClockLoop, timeout_s: float) -> None:
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.cancelled():
            continue
        error = task.exception()
        if error is not None and not isinstance(error, WalError):
            raise error
    assert not pending, "nodes did not stop within the quiet period"


__all__ = ["Ack", "Commit", "Faults", "Outcome", "SimDatabase", "SimNode", "SimPort", "VirtualClockLoop", "simulate"]
