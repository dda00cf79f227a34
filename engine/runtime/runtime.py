"""Runtime: the facade net/ uses around the pure ledger (CONTRACT §4, §6).

    Runtime.open(config)          lock the data dir, recover, open the log store, start shards
      .submit(command)            route by stable hash -> shard: stamp, apply, log -> durable
      .get_customer / get_ledger  reads, waiting until what they show is durable
      .read(project, customer, view)  any pure view of one customer (slots, entitlements), likewise
      .authenticate(key)          API key -> project (keys live in the log like everything else)
      .close()                    drain shards, last group commit + fsync, release the lock

Its parts, one module each: `shards` (single writers), `durability` (answers wait for the log),
`clock` (stamps at the ordering point), `timer_loop`, `snapshots`, `recovery`.

Durability rule: a write's answer waits until the log is durable up to the ledger's last LSN at
the moment it was decided (its own change and every change its outcome could depend on); a read
waits for the customer's last LSN. So no answer shows state a crash could lose (CONTRACT §4).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from pathlib import Path
from typing import Any, Callable, TypeVar, cast

import msgspec

import wal
from engine.core import queries
from engine.core.commands import (
    AnyCommand,
    Command,
    Consume,
    CreateApiKey,
    Unfreeze,
    encode_command,
)
from engine.core.keys import hash_api_key, keys_match
from engine.core.ledger import apply
from engine.core.results import Applied, CustomerResponse, LedgerPage, Rejected
from engine.core.state import LedgerState
from engine.core.timers import due_commands
from engine.runtime.clock import Stamper, wall_clock_ms
from engine.runtime.config import RuntimeConfig
from engine.runtime.durability import Durability
from engine.runtime.errors import Unavailable
from engine.runtime.recovery import Recovered, recover
from engine.runtime.shards import Shard
from engine.runtime.snapshots import Snapshotter
from engine.runtime.timer_loop import TimerLoop

__all__ = ["Runtime", "RuntimeConfig"]

log = logging.getLogger("tally.runtime")

V = TypeVar("V")  # what a read returns


class Runtime:
    """Owns the ledger state, the shards, the log store and the timers of one data directory."""

    def __init__(
        self, config: RuntimeConfig, recovered: Recovered, store: wal.LogStore, lock: wal.DataDirLock,
        clock: Callable[[], int],
    ) -> None:  # fmt: skip
        self.config = config
        self.recovered = recovered
        self.state: LedgerState = recovered.state
        self._store = store
        self._lock = lock
        self._stamper = Stamper(clock, recovered.state.stamp_ms_last)
        self._durability = Durability(store)
        self._shards = [
            Shard(
                self._durability, index, queue_depth_max=config.shard_queue_depth_max,
                batch_size_max=config.shard_batch_size_max, on_failure=self.fail_stop,
            )  # fmt: skip
            for index in range(config.shard_count)
        ]
        self._timers = TimerLoop(self.state, self._stamper.stamp, self._submit_due_timers)
        self._snapshots = Snapshotter(
            self.state, config.data_dir, self._durability, lock=lock, snapshot_lsn=recovered.snapshot_lsn,
            interval_records=config.snapshot_interval_records, interval_s=config.snapshot_interval_s,
            keep_segments=config.keep_segments,
        )  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None
        self._accepting = False

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, config: RuntimeConfig, *, clock: Callable[[], int] = wall_clock_ms,
        log_file_factory: Callable[[Path], wal.LogFile] | None = None,
    ) -> Runtime:  # fmt: skip
        """Lock, recover (truncating a torn tail), open the log store, start shards and timers.

        `clock` and `log_file_factory` are seams for tests (a fake clock; a LogFile that fails
        on purpose). Raises wal.DataDirLocked, wal.WalCorrupt, engine.runtime.recovery.RecoveryError.
        """
        config.data_dir.mkdir(parents=True, exist_ok=True)
        lock = wal.DataDirLock(config.data_dir)
        lock.acquire()
        try:
            loop = asyncio.get_running_loop()
            recovered = await loop.run_in_executor(None, lambda: recover(config.data_dir, truncate_torn_tail=True))
            _report_recovery(recovered)
            store = wal.WalWriter.open(
                config.data_dir, next_lsn=recovered.state.last_lsn + 1,
                segment_size_max=config.wal_segment_size_max, batch_records_max=config.wal_batch_records_max,
                queue_records_max=config.wal_queue_records_max, fsync=config.fsync,
                log_file_factory=log_file_factory,
            )  # fmt: skip
        except BaseException:
            lock.release()
            raise
        runtime = cls(config, recovered, store, lock, clock)
        await runtime._start()
        return runtime

    async def _start(self) -> None:
        await self._store.start()
        for shard in self._shards:
            shard.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._timers.run(), name="tally-timers"))
        self._tasks.append(loop.create_task(self._snapshots.run(), name="tally-snapshots"))
        # Deadlines that passed while the server was down fire now (CONTRACT §3.10).
        await self._timers.fire_due()
        self._accepting = True

    @property
    def ready(self) -> bool:
        """Recovered and accepting writes: what GET /health reports (CONTRACT §5)."""
        return self._accepting and self._failure is None and not self._store.failed

    def stop_accepting(self) -> None:
        """Shutdown begins: /health turns 503; queued and in-flight work still completes."""
        self._accepting = False

    async def close(self) -> None:
        """Stop intake, finish queued work, last group commit + fsync, release the lock."""
        self._accepting = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for shard in self._shards:
            await shard.stop()
        await self._store.close()
        await self._durability.drain()  # answer the last batch
        self._lock.release()

    def fail_stop(self, error: BaseException) -> None:
        """A broken invariant: refuse every later write; reads of untouched state keep working."""
        if self._failure is None:
            log.critical("fail-stop: %r", error, exc_info=error)
            self._failure = error

    # -- the API used by net/ ----------------------------------------------------------------

    def clock_ms(self) -> int:
        """A stamp from the runtime clock (never going backwards): what "now" is for a read."""
        return self._stamper.stamp()

    def authenticate(self, api_key: str) -> str | Rejected:
        """Bearer key -> project id, or a 401 code (CONTRACT §3.15)."""
        if not api_key:
            return Rejected("missing_api_key", "missing API key")
        key_hash = hash_api_key(api_key)
        record = queries.find_api_key(self.state, key_hash)
        # The index finds the candidate by digest; the comparison that decides is constant-time.
        if record is None or not keys_match(record.key_hash, key_hash):
            return Rejected("invalid_api_key", "invalid API key")
        if record.revoked:
            return Rejected("api_key_revoked", "API key has been revoked")
        return record.project

    async def submit(self, command: Command) -> Applied | Rejected:
        """Apply one command and return once its outcome is durable. Raises Unavailable.

        The command's `at_ms` is replaced by the stamp taken on its shard, where it gets its LSN.
        """
        self._check_writable()
        project: str = getattr(command, "project", "")
        customer_id: str | None = getattr(command, "customer_id", None)
        if isinstance(command, (Consume, Unfreeze)) and customer_id is None:
            customer_id = queries.transaction_owner(self.state, project, command.transaction_id)
            if customer_id is not None:
                command = msgspec.structs.replace(command, customer_id=customer_id)
        shard = self._shard_for(project, customer_id)
        # Every Command subclass is a member of AnyCommand (asserted in engine/core/commands.py).
        any_command = cast(AnyCommand, command)
        return await shard.submit(lambda: self._apply_write(any_command, customer_id))

    async def get_customer(self, project: str, customer_id: str) -> CustomerResponse | Rejected:
        def view(now_ms: int) -> CustomerResponse | Rejected:
            return queries.customer_view(self.state, project, customer_id, now_ms)

        return await self._read(project, customer_id, view)

    async def get_ledger(
        self, project: str, customer_id: str, *, limit: int, cursor: str | None, operation_type: str | None,
        transaction_id: str | None,
    ) -> LedgerPage | Rejected:  # fmt: skip
        def view(now_ms: int) -> LedgerPage | Rejected:
            return queries.ledger_page(
                self.state, project, customer_id, limit=limit, cursor=cursor, operation_type=operation_type,
                transaction_id=transaction_id,
            )  # fmt: skip

        return await self._read(project, customer_id, view)

    async def read(self, project: str, customer_id: str, view: Callable[[LedgerState, int], Any]) -> Any:
        """Run a pure view `view(state, now_ms)` of one customer (e.g. engine.core.slot_queries):
        after the customer's due timers, answered once what it shows is durable (CONTRACT §4,
        §7.3). Returns what `view` returns."""

        def at(now_ms: int) -> Any:
            return view(self.state, now_ms)

        return await self._read(project, customer_id, at)

    async def create_api_key(self, project: str, key: str, key_id: str) -> None:
        """Log a new key for `project` (created if new) and wait until it is durable.
        Raises ValueError when the key id or key already exists."""
        command = CreateApiKey(at_ms=0, project=project, key_id=key_id, key_hash=hash_api_key(key))
        result = await self.submit(command)
        if isinstance(result, Rejected):
            raise ValueError(result.message)

    async def fire_due_timers(self) -> int:
        """Fire every timer due now (tests and start-up); returns the customers deferred."""
        return await self._timers.fire_due()

    async def take_snapshot(self) -> int:
        """Write a snapshot now (see engine/runtime/snapshots.py); returns its LSN."""
        return await self._snapshots.take()

    @property
    def durable_lsn(self) -> int:
        return self._store.durable_lsn

    # -- on the shard task: the ordering point -------------------------------------------------

    def _apply_write(self, command: AnyCommand, customer_id: str | None) -> tuple[Applied | Rejected, int]:
        self._check_writable()
        stamp_ms = self._stamper.stamp()
        command = msgspec.structs.replace(command, at_ms=stamp_ms)
        if customer_id is not None:
            self._run_due_timers(project_of(command), customer_id, stamp_ms)
        result = self._apply_and_log(command)
        # A rejection or a replay may rest on changes still in flight: wait for all of them.
        return result, self.state.last_lsn

    def _apply_and_log(self, command: AnyCommand) -> Applied | Rejected:
        lsn = self.state.last_lsn + 1
        result = apply(self.state, lsn, command)
        if isinstance(result, Applied) and result.logged:
            assert self.state.last_lsn == lsn
            self._store.append(lsn, encode_command(command))
        else:
            assert self.state.last_lsn == lsn - 1
        return result

    def _run_due_timers(self, project: str, customer_id: str, now_ms: int) -> None:
        if self._failure is not None or self._store.failed:
            return  # nothing can be logged; balance views still exclude expired buckets
        for timer in due_commands(self.state, project, customer_id, now_ms):
            result = self._apply_and_log(timer)
            assert isinstance(result, Applied) and result.logged, (timer, result)

    def _submit_due_timers(self, project: str, customer_id: str, now_ms: int) -> asyncio.Future[Any]:
        def tick() -> tuple[None, int]:
            self._run_due_timers(project, customer_id, now_ms)
            return None, self.state.last_lsn

        return self._shard_for(project, customer_id).submit(tick)

    # -- helpers -------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._failure is not None or self._store.failed:
            raise Unavailable("storage_unavailable", "the write-ahead log failed; writes are refused")

    def _shard_for(self, project: str, customer_id: str | None) -> Shard:
        if customer_id is None:
            return self._shards[0]
        # A stable hash (not Python's salted hash()): routing is the same in every process.
        key = f"{project}\x00{customer_id}".encode("utf-8", "surrogatepass")
        return self._shards[zlib.crc32(key) % len(self._shards)]

    async def _read(self, project: str, customer_id: str, view: Callable[[int], V]) -> V:
        """A read sees every timer due before it (CONTRACT §7.3) and waits until what it shows
        is durable. With no timer due, it is answered right here: the state is only changed by
        synchronous shard code on this same thread, so no half-applied command can be seen.
        With timers due, it goes through the customer's shard, which applies and logs them."""
        now_ms = self._stamper.stamp()
        if not due_commands(self.state, project, customer_id, now_ms):
            result = view(now_ms)
            await self._durability.wait_durable(queries.customer_last_lsn(self.state, project, customer_id))
            return result

        def on_shard() -> tuple[V, int]:
            now_ms = self._stamper.stamp()
            self._run_due_timers(project, customer_id, now_ms)
            return view(now_ms), queries.customer_last_lsn(self.state, project, customer_id)

        return await self._shard_for(project, customer_id).submit(on_shard)


def project_of(command: AnyCommand) -> str:
    """The project a customer command belongs to (key commands have none: "")."""
    return getattr(command, "project", "")


def _report_recovery(recovered: Recovered) -> None:
    if recovered.torn is not None:
        log.warning("truncated a torn WAL tail: %s", recovered.torn)
    for damaged in recovered.snapshots_skipped:
        log.warning("damaged snapshot set aside (started from an older one): %s", damaged)
        wal.quarantine_snapshot(damaged.path)
