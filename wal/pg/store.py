"""PgLogStore: the wal.LogStore of a leader whose log lives in PostgreSQL (CONTRACT §12).

    start()     take the lease (epoch + 1), check the log's tail is where we are (LogBehind
                otherwise: catch up and try again), write the epoch marker row, then run the
                group-commit task and the lease keeper
    append()    buffer one record (sync, like WalWriter); wait_durable(lsn) resolves once the
                row holding it is committed in PostgreSQL
    fence(why)  stop for good: nothing more is ever acknowledged (the node becomes a standby)

Group commit: ONE append in flight. While it is, the next batch accumulates; it becomes the row at
the next position once the previous one is known committed. (Pipelined appends at predicted
positions could slip past a new leader's epoch marker.) Each append is conditional, in one
transaction, on our lease (holder, epoch, unexpired by the database's clock) and on the position
being free (the primary key): a deposed leader's append always fails.

An append whose outcome is unknown (timeout, lost reply, dropped connection) is resolved by
reading the row at its position: ours (same epoch and LSNs) -> committed; another's -> fenced;
absent -> append it again (same row, same position). Never by guessing.

The lease: renewed every lease/3 by the database clock (`renew`); locally it is trusted until
send time of the last successful renewal + LEASE_TRUST * lease (the database's expiry is later
than that). Past that deadline the store acknowledges nothing more, even a batch whose commit
reply arrives late (a process paused past its lease), and fails: the runtime answers 503 and the
node re-opens as a standby, so applied-but-unacknowledged commands vanish with its memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from wal.errors import WalError, WalFailed
from wal.pg.port import Fenced, LogPort, PortUnavailable, Row, encode_batch
from wal.waiters import DurableWaiters

__all__ = ["LeaseHeld", "LogBehind", "PgLogStore", "LEASE_TRUST"]

LEASE_TRUST = 0.9  # fraction of the lease a node trusts after sending a successful renewal
RENEW_FRACTION = 3  # renew every lease / 3: two more tries before the local deadline
RETRY_FRACTION = 20  # an unknown outcome is re-read every lease / 20


class LeaseHeld(WalError):
    """Another node holds the lease (`holder`): this node stays a standby."""


class LogBehind(WalError):
    """The log's tail is past this node's state (`tail_lsn`): catch up first, then start again."""

    def __init__(self, tail_lsn: int) -> None:
        super().__init__(f"the log ends at lsn {tail_lsn}: catch up first")
        self.tail_lsn = tail_lsn


class PgLogStore:
    """One leader's appender. `port` carries appends and reads, `lease_port` the renewals (two
    connections: asyncpg runs one query at a time per connection)."""

    def __init__(self, port: LogPort, lease_port: LogPort, node_id: str, *, next_lsn: int, lease_ms: int,
                 batch_records_max: int, queue_records_max: int) -> None:  # fmt: skip
        assert next_lsn >= 1 and lease_ms >= 10 and 1 <= batch_records_max <= queue_records_max
        self.node_id = node_id
        self.lease_ms = lease_ms
        self.batch_records_max = batch_records_max
        self.queue_records_max = queue_records_max
        self._port = port
        self._lease_port = lease_port
        self.epoch = 0  # set by start()
        self.position = 0  # the last position we wrote (the epoch marker first)
        self.lease_deadline = 0.0  # loop time until which the lease is trusted
        # Appended / durable LSN, the failure (Fenced) and the waiters: wal/waiters.py.
        self._waiters = DurableWaiters(next_lsn, queue_records_max, self._failed_error)
        self._pending: list[tuple[int, bytes]] = []
        self._idle: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closing = False
        self.on_batch: Callable[[int, float | None], None] | None = None
        self.batches = 0

    # -- the LogStore protocol --------------------------------------------------------------

    @property
    def durable_lsn(self) -> int:
        return self._waiters.durable_lsn

    @property
    def failed(self) -> bool:
        return self._waiters.failure is not None

    def room(self) -> int:
        return self._waiters.room()

    def append(self, lsn: int, payload: bytes) -> None:
        self._waiters.check_append(lsn)  # WalFailed, WalFull
        self._pending.append((lsn, payload))
        self._waiters.appended_lsn = lsn
        self._wake()

    async def wait_for_room(self, records: int = 1) -> None:
        """Return once room() >= records; WalFailed on failure. Yields at least once."""
        await self._waiters.wait_for_room(records)

    async def wait_durable(self, lsn: int) -> None:
        await self._waiters.wait_durable(lsn)

    def durable_waiter(self, lsn: int) -> asyncio.Future[None] | None:
        """A future done once `lsn` is committed (WalFailed if fenced first); None when it is."""
        return self._waiters.waiter(lsn)

    async def start(self) -> None:
        """Take over the log (see the module docstring). Idempotent. Raises LeaseHeld, LogBehind,
        PortUnavailable (the database did not answer) or Fenced (lost a race: try again later)."""
        if self._started:
            return
        loop = asyncio.get_running_loop()
        sent = loop.time()
        epoch = await self._lease_port.acquire(self.node_id, self.lease_ms)
        if epoch is None:
            raise LeaseHeld("another node holds the lease")
        self.epoch = epoch
        self.lease_deadline = sent + LEASE_TRUST * self.lease_ms / 1000
        tail = await self._port.tail()
        tail_lsn = 0 if tail is None else tail.last_lsn
        appended_lsn = self._waiters.appended_lsn
        if tail_lsn != appended_lsn:
            await self._lease_port.release(self.node_id, epoch)
            raise LogBehind(tail_lsn)
        position = 0 if tail is None else tail.position
        # The epoch marker: an old leader's next append conflicts on this position.
        await self._commit(Row(position + 1, epoch, appended_lsn + 1, appended_lsn, b""))
        self.position = position + 1
        self._started = True
        self._tasks.append(loop.create_task(self._flush_loop(), name="pg-log-flusher"))
        self._tasks.append(loop.create_task(self._keep_lease(), name="pg-log-lease"))

    async def close(self) -> None:
        """Flush what is pending (if still the leader), give the lease back, stop. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._wake()
        if self._tasks:
            flusher, keeper = self._tasks
            await asyncio.gather(flusher, return_exceptions=True)
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        if self._started and self._waiters.failure is None:
            try:
                await self._lease_port.release(self.node_id, self.epoch)
            except PortUnavailable:
                pass  # it expires by itself
        self.fence("the log store is closed")
        await self._port.close()
        await self._lease_port.close()

    def fence(self, reason: str) -> None:
        """Stop for good: every waiter and every later append gets WalFailed."""
        self._waiters.fail(Fenced(reason))  # kept only if the first; room waiters wake and raise
        self._wake()

    # -- the flusher and the lease keeper -----------------------------------------------------

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiters.failure is None:
                if not self._pending:
                    if self._closing:
                        return
                    self._idle = loop.create_future()
                    await self._idle
                    await asyncio.sleep(0)  # let appends ready in this loop turn join the batch
                    continue
                records = self._pending[: self.batch_records_max]
                del self._pending[: len(records)]
                self._waiters.cut(records[-1][0])
                started = loop.time()
                row = Row(self.position + 1, self.epoch, records[0][0], records[-1][0], encode_batch(records))
                await self._commit(row)
                self.position = row.position
                if loop.time() >= self.lease_deadline:  # e.g. the reply came after a pause
                    raise Fenced("the lease expired while the batch was in flight")
                self._batch_durable(row.last_lsn, loop.time() - started)
        except Fenced as error:
            self.fence(str(error))
        except BaseException as error:
            self.fence(f"the log store stopped: {error!r}")
            raise

    async def _commit(self, row: Row) -> None:
        """Append `row`; an unknown outcome is resolved by reading its position. Fenced if not ours."""
        loop = asyncio.get_running_loop()
        retry_s = self.lease_ms / 1000 / RETRY_FRACTION
        while True:
            if loop.time() >= self.lease_deadline:
                raise Fenced("the lease expired before the batch was known committed")
            refused = False
            try:
                await self._port.append(self.node_id, row)
                return
            except Fenced:
                refused = True  # the lease check or the primary key; which one, the row says
            except PortUnavailable:
                pass
            found = await self._read_position(row.position, retry_s)
            if found is not None:
                if (found.epoch, found.first_lsn, found.last_lsn) == (row.epoch, row.first_lsn, row.last_lsn):
                    return  # it was committed: the reply was lost
                raise Fenced(f"position {row.position} holds epoch {found.epoch}'s row")
            if refused:
                raise Fenced(f"the lease of epoch {row.epoch} is not ours any more")
            await asyncio.sleep(retry_s)  # not written: append the same row again

    async def _read_position(self, position: int, retry_s: float) -> Row | None:
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() >= self.lease_deadline:
                raise Fenced("the lease expired before the batch was known committed")
            try:
                return await self._port.row_at(position)
            except PortUnavailable:
                await asyncio.sleep(retry_s)

    async def _keep_lease(self) -> None:
        loop = asyncio.get_running_loop()
        interval_s = self.lease_ms / 1000 / RENEW_FRACTION
        while self._waiters.failure is None:
            await asyncio.sleep(interval_s)
            sent = loop.time()
            try:
                held = await self._lease_port.renew(self.node_id, self.epoch, self.lease_ms)
            except PortUnavailable:
                held = None
            if held is False:
                self.fence(f"lost the lease of epoch {self.epoch}")
            elif held:
                self.lease_deadline = max(self.lease_deadline, sent + LEASE_TRUST * self.lease_ms / 1000)
            if loop.time() >= self.lease_deadline:
                self.fence(f"could not renew the lease of epoch {self.epoch} in time")

    # -- helpers --------------------------------------------------------------------------------

    def _batch_durable(self, lsn_last: int, seconds: float) -> None:
        records = lsn_last - self._waiters.durable_lsn
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(records, seconds)
        self._waiters.release(lsn_last)  # durable_lsn = lsn_last

    def _wake(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    def _failed_error(self) -> WalFailed:
        return WalFailed(f"not the leader any more (epoch {self.epoch}): {self._waiters.failure}")
