"""ClusterNode: one Tally node of a cluster whose log lives in PostgreSQL (CONTRACT §12).

    node = ClusterNode(config, log, on_leader=..., on_standby=...)
    await node.run()        until close(): standby <-> leader, forever
    node.role               "standby" | "leader";  node.leader: the lease holder's id or None

The two roles, one at a time:

- standby: recover (the local snapshot + the PostgreSQL log), then tail the log every
  TAIL_INTERVAL_S in bounded pages, applying each record exactly as recovery does (state and the
  timer index stay current; no timer fires, no webhook is delivered: there is no Runtime). The
  snapshotter runs on the standby's state too (snapshots are local to each node). When the lease
  is free (expired, or still ours from before), take over: PgLogStore.start (acquire with epoch + 1,
  check the tail, write the epoch marker); behind the tail -> catch up and try again.
- leader: a Runtime over the store (engine/runtime/runtime.py) serves. When the store fails (lease
  lost or expired, an append fenced, the database gone past the lease) the Runtime's requests get
  503 storage_unavailable, and the node throws its in-memory state away (applied but unacknowledged
  commands vanish with it) and starts again as a standby from the snapshot + the log.

`on_leader(runtime)` runs before the role flips (bootstrap keys, bind the HTTP handlers);
`on_standby()` right after it flips back (not at close()), before the old Runtime closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import wal
from engine.core.state import LedgerState
from engine.runtime.config import RuntimeConfig
from engine.runtime.deliveries import PostFn
from engine.runtime.recovery import Recovered, recover, replay_one
from engine.runtime.runtime import Runtime
from engine.runtime.snapshots import Snapshotter
from wal.pg import Fenced, LeaseHeld, LogBehind, LogPort, PgLog, PortUnavailable, decode_batch

__all__ = ["ClusterNode", "LEADER", "STANDBY"]

log = logging.getLogger("tally.cluster")

LEADER: Final = "leader"
STANDBY: Final = "standby"
TAIL_INTERVAL_S: Final = 0.05  # a standby reads new rows (and the lease) this often
TAIL_ROWS_MAX: Final = 64  # rows applied per read: the loop stays responsive while catching up
RETRY_INTERVAL_S: Final = 0.5  # the database unreachable: try again this often
LEADER_CHECK_INTERVAL_S: Final = 0.05  # how often the leader looks whether its store failed


class _AlwaysDurable:
    """A standby's state comes from the log: every LSN it holds is durable already."""

    async def wait_durable(self, lsn: int) -> None:
        return None


class ClusterNode:
    """Standby or leader over `log`; holds the data-dir lock for its whole life."""

    def __init__(
        self, config: RuntimeConfig, log: PgLog, *, on_leader: Callable[[Runtime], Awaitable[None]],
        on_standby: Callable[[], None], on_wal_batch: Callable[[int, float | None], None] | None = None,
        webhook_post: PostFn | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.node_id = log.node_id
        self.role: str = STANDBY
        self.leader: str | None = None
        self.runtime: Runtime | None = None
        self._log = log
        self._on_leader = on_leader
        self._on_standby = on_standby
        self._on_wal_batch = on_wal_batch
        self._webhook_post = webhook_post
        self._lock = wal.DataDirLock(config.data_dir)
        self._closing = False
        self._done = asyncio.Event()
        self.takeovers = 0

    async def run(self) -> None:
        """Lock the data dir, then standby/leader until close(). Raises wal.DataDirLocked."""
        self.config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            while not self._closing:
                recovered = await self._recover()
                if recovered is None:
                    return
                runtime = await self._standby(recovered)
                if runtime is None:
                    return
                await self._lead(runtime)
        finally:
            self._lock.release()
            self._done.set()

    async def close(self) -> None:
        """Leader: finish the in-flight batches, give the lease back. Either role: stop. Returns
        once run() has ended (call it only while run() runs)."""
        self._closing = True
        await self._done.wait()

    # -- standby ---------------------------------------------------------------------------

    async def _recover(self) -> Recovered | None:
        """The local snapshot + the log; None when close() came first."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                return await loop.run_in_executor(
                    None, lambda: recover(self.config.data_dir, truncate_torn_tail=False, log=self._log)
                )
            except wal.WalFailed as error:  # the database is unreachable: not damage, wait
                log.warning("cannot read the log yet: %s", error)
                await asyncio.sleep(RETRY_INTERVAL_S)
        return None

    async def _standby(self, recovered: Recovered) -> Runtime | None:
        """Tail the log until this node takes over (its Runtime) or close() (None)."""
        state = recovered.state
        snapshots = Snapshotter(
            state, self.config.data_dir, _AlwaysDurable(), lock=self._lock, snapshot_lsn=recovered.snapshot_lsn,
            interval_records=self.config.snapshot_interval_records, interval_s=self.config.snapshot_interval_s,
            keep_segments=True,
        )  # fmt: skip
        snapshot_task = asyncio.get_running_loop().create_task(snapshots.run(), name="tally-standby-snapshots")
        port = self._log.port()
        try:
            while not self._closing:
                try:
                    if await self._tail(port, state):
                        continue  # more rows: read on before looking at the lease
                    runtime = await self._try_take_over(port, recovered, snapshots.snapshot_lsn)
                    if runtime is not None:
                        return runtime
                except PortUnavailable as error:
                    self.leader = None
                    log.warning("standby: the log store is unreachable: %s", error)
                    await asyncio.sleep(RETRY_INTERVAL_S)
                    continue
                await asyncio.sleep(TAIL_INTERVAL_S)
            return None
        finally:
            snapshot_task.cancel()
            await asyncio.gather(snapshot_task, return_exceptions=True)
            await port.close()

    async def _tail(self, port: LogPort, state: LedgerState) -> bool:
        """Apply the next page of rows; True when the page was full (more may follow)."""
        rows = await port.rows_after_lsn(state.last_lsn, TAIL_ROWS_MAX)
        for row in rows:
            for lsn, payload in decode_batch(row):
                if lsn > state.last_lsn:
                    replay_one(state, lsn, payload)
        return len(rows) == TAIL_ROWS_MAX

    async def _try_take_over(self, port: LogPort, recovered: Recovered, snapshot_lsn: int) -> Runtime | None:
        lease = await port.lease()
        if lease.remaining_ms > 0 and lease.holder != self.node_id:
            self.leader = lease.holder
            return None
        state = recovered.state
        store = self._log.open_store(state.last_lsn + 1)
        try:
            await store.start()
        except (LeaseHeld, LogBehind, Fenced, PortUnavailable) as error:
            await store.close()
            log.info("takeover deferred: %s", error)
            return None
        self.takeovers += 1
        self.leader = self.node_id
        log.info("leader epoch=%d lsn=%d", store.epoch, state.last_lsn)
        recovered = Recovered(state, snapshot_lsn, recovered.records_replayed, None, ())
        return await Runtime.start(self.config, recovered, store, self._lock, owns_lock=False,
                                   on_wal_batch=self._on_wal_batch, webhook_post=self._webhook_post)  # fmt: skip

    # -- leader ----------------------------------------------------------------------------

    async def _lead(self, runtime: Runtime) -> None:
        self.runtime = runtime
        try:
            await self._on_leader(runtime)
        except Exception:
            log.exception("becoming the leader failed; stepping down")
        else:
            self.role = LEADER
            while runtime.ready and not self._closing:
                await asyncio.sleep(LEADER_CHECK_INTERVAL_S)
        self.runtime = None
        self.role = STANDBY
        self.leader = None
        if not self._closing:
            self._on_standby()
            log.warning("stepping down: the log store failed or the lease was lost")
        await runtime.close()
