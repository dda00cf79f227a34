"""Runtime: the imperative shell around the pure ledger (CONTRACT §4, §6).

    Runtime.open(config)          lock the data dir, recover, open the WAL writer, start shards
      .submit(command)            route by stable hash -> shard -> apply -> WAL -> wait durable
      .get_customer / get_ledger  reads, also through the shard, waiting for durability
      .authenticate(key)          API key -> project (keys live in the log like everything else)
      .close()                    drain shards, last group commit + fsync, release the lock

Durability rule: a write's response waits until the WAL is durable up to the ledger's last LSN at
the moment it was decided (its own change and every change its outcome could depend on); a read
waits for the customer's last LSN. So no response shows state a crash could lose (CONTRACT §4).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import msgspec

import wal
from engine import queries
from engine.codec import encode_state
from engine.commands import Command, Consume, CreateApiKey, Unfreeze, encode_command
from engine.errors import Unavailable
from engine.keys import hash_api_key, keys_match
from engine.ledger import apply, due_commands, next_due_ms, pop_due_customers
from engine.recovery import Recovered, recover
from engine.results import Applied, CustomerResponse, LedgerPage, Rejected
from engine.shard import Shard
from engine.state import LedgerState

log = logging.getLogger("tally.runtime")

# The WAL must keep this much room before a shard applies one more item: an item logs its
# command plus the customer's due timers, which are few; a breach is a broken bound (fail-stop).
LOG_ROOM_PER_ITEM_MIN = 64
TIMER_POLL_INTERVAL_S_MAX = 1.0
TIMER_RETRY_INTERVAL_S = 0.005


@dataclass(frozen=True)
class RuntimeConfig:
    """Every knob of the runtime; built by net/cli.py from flags, passed in explicitly."""

    data_dir: Path
    shard_count: int = 4
    shard_queue_depth_max: int = 8192
    shard_batch_size_max: int = 256
    wal_batch_records_max: int = 4096
    wal_queue_records_max: int = 65536
    wal_segment_size_max: int = 64 * 1024 * 1024
    snapshot_interval_records: int = 1_000_000  # 0 = never by count
    snapshot_interval_s: float = 3600.0  # 0 = never by time
    keep_segments: bool = True  # False: delete segments a durable snapshot covers
    fsync: bool = True  # False only for benchmarks: acknowledged writes can be lost

    def __post_init__(self) -> None:
        assert 1 <= self.shard_count <= 256
        assert self.shard_queue_depth_max >= self.shard_batch_size_max >= 1
        assert self.wal_queue_records_max >= self.wal_batch_records_max >= 1
        # One shard batch (plus timers) must always fit in the WAL queue, or shards could deadlock.
        assert self.wal_queue_records_max >= self.shard_count * (
            self.shard_batch_size_max + LOG_ROOM_PER_ITEM_MIN
        )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Runtime:
    """Owns the ledger state, the shards, the WAL writer and the timers of one data directory."""

    def __init__(
        self,
        config: RuntimeConfig,
        recovered: Recovered,
        writer: wal.WalWriter,
        lock: wal.DataDirLock,
        clock: Callable[[], int],
    ) -> None:
        self.config = config
        self.recovered = recovered
        self.state: LedgerState = recovered.state
        self._writer = writer
        self._lock = lock
        self._clock = clock
        self._stamp_ms_last = 0
        self._shards = [
            Shard(
                self,
                index,
                queue_depth_max=config.shard_queue_depth_max,
                batch_size_max=config.shard_batch_size_max,
            )
            for index in range(config.shard_count)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._resolvers: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._snapshot_lsn = recovered.snapshot_lsn
        self._snapshot_at_s = time.monotonic()
        self._snapshot_running = False
        self._accepting = False

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        config: RuntimeConfig,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        log_file_factory: Callable[[Path], wal.LogFile] | None = None,
    ) -> Runtime:
        """Lock, recover (truncating a torn tail), open the writer, start shards and timers.

        `clock` and `log_file_factory` are seams for tests (a fake clock; a LogFile that fails
        on purpose). Raises wal.DataDirLocked, wal.WalCorrupt, engine.recovery.RecoveryError.
        """
        config.data_dir.mkdir(parents=True, exist_ok=True)
        lock = wal.DataDirLock(config.data_dir)
        lock.acquire()
        try:
            loop = asyncio.get_running_loop()
            recovered = await loop.run_in_executor(
                None, lambda: recover(config.data_dir, truncate_torn_tail=True)
            )
            if recovered.torn is not None:
                log.warning("truncated a torn WAL tail: %s", recovered.torn)
            for damaged in recovered.snapshots_skipped:
                log.warning("damaged snapshot set aside (started from an older one): %s", damaged)
                wal.quarantine_snapshot(damaged.path)
            writer = wal.WalWriter.open(
                config.data_dir,
                next_lsn=recovered.state.last_lsn + 1,
                segment_size_max=config.wal_segment_size_max,
                batch_records_max=config.wal_batch_records_max,
                queue_records_max=config.wal_queue_records_max,
                fsync=config.fsync,
                log_file_factory=log_file_factory,
            )
        except BaseException:
            lock.release()
            raise
        runtime = cls(config, recovered, writer, lock, clock)
        await runtime._start()
        return runtime

    async def _start(self) -> None:
        await self._writer.start()
        for shard in self._shards:
            shard.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._timer_loop(), name="tally-timers"))
        self._tasks.append(loop.create_task(self._snapshot_loop(), name="tally-snapshots"))
        # Deadlines that passed while the server was down fire now (CONTRACT §3.10).
        await self.fire_due_timers()
        self._accepting = True

    @property
    def ready(self) -> bool:
        """Recovered and accepting writes: what GET /health reports (CONTRACT §5)."""
        return self._accepting and self._failure is None and not self._writer.failed

    def stop_accepting(self) -> None:
        """Shutdown begins: /health turns 503; queued and in-flight work still completes."""
        self._accepting = False

    async def close(self) -> None:
        """Stop intake, finish queued work, last group commit + fsync, release the lock."""
        self._accepting = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        for shard in self._shards:
            await shard.stop()
        await self._writer.close()
        await asyncio.gather(*self._resolvers, return_exceptions=True)  # answer the last batch
        self._lock.release()

    def fail_stop(self, error: BaseException) -> None:
        """A broken invariant: refuse every later write; reads of untouched state keep working."""
        if self._failure is None:
            log.critical("fail-stop: %r", error, exc_info=error)
            self._failure = error

    # -- the API used by net/ ----------------------------------------------------------------

    def clock_ms(self) -> int:
        """Stamp for a new command: the wall clock, never going backwards (CONTRACT §3.16)."""
        stamp_ms = max(self._clock(), self._stamp_ms_last)
        self._stamp_ms_last = stamp_ms
        return stamp_ms

    def authenticate(self, api_key: str) -> str | Rejected:
        """Bearer key -> project id, or Rejected 401 (CONTRACT §3.15)."""
        if not api_key:
            return Rejected(401, "missing_api_key", "missing API key")
        key_hash = hash_api_key(api_key)
        record = queries.find_api_key(self.state, key_hash)
        # The index finds the candidate by digest; the comparison that decides is constant-time.
        if record is None or not keys_match(record.key_hash, key_hash):
            return Rejected(401, "invalid_api_key", "invalid API key")
        if record.revoked:
            return Rejected(401, "api_key_revoked", "API key has been revoked")
        return record.project

    async def submit(self, command: Command) -> Applied | Rejected:
        """Apply one command and return once its outcome is durable. Raises Unavailable."""
        self._check_writable()
        project = getattr(command, "project", "")
        customer_id = getattr(command, "customer_id", None)
        if isinstance(command, (Consume, Unfreeze)) and customer_id is None:
            customer_id = queries.transaction_owner(self.state, project, command.transaction_id)
            if customer_id is not None:
                command = msgspec.structs.replace(command, customer_id=customer_id)
        shard = self._shard_for(project, customer_id)
        return await shard.submit(lambda: self._apply_write(command))

    async def get_customer(self, project: str, customer_id: str) -> CustomerResponse | Rejected:
        def view(now_ms: int) -> Any:
            return queries.customer_view(self.state, project, customer_id, now_ms)

        return await self._read(project, customer_id, view)

    async def get_ledger(
        self,
        project: str,
        customer_id: str,
        *,
        limit: int,
        cursor: str | None,
        operation_type: str | None,
        transaction_id: str | None,
    ) -> LedgerPage | Rejected:
        def view(now_ms: int) -> Any:
            return queries.ledger_page(
                self.state,
                project,
                customer_id,
                limit=limit,
                cursor=cursor,
                operation_type=operation_type,
                transaction_id=transaction_id,
            )

        return await self._read(project, customer_id, view)

    async def create_api_key(self, project: str, key: str, key_id: str) -> None:
        """Log a new key for `project` (created if new) and wait until it is durable."""
        command = CreateApiKey(at_ms=self.clock_ms(), project=project, key_id=key_id, key_hash=hash_api_key(key))
        result = await self.submit(command)
        if isinstance(result, Rejected):
            raise ValueError(result.message)  # a key id or key hash that already exists

    async def fire_due_timers(self) -> None:
        """Apply (and log) every timer due now, customer by customer, and wait until durable."""
        now_ms = self.clock_ms()
        futures = []
        for project, customer_id in pop_due_customers(self.state, now_ms):
            shard = self._shard_for(project, customer_id)

            def tick(project: str = project, customer_id: str = customer_id) -> tuple[Any, int]:
                self._run_due_timers(project, customer_id, now_ms)
                return None, self.state.last_lsn

            try:
                futures.append(shard.submit(tick))
            except Unavailable:
                pass  # shard busy: the customer's next command or read applies these timers first
        for future in futures:
            try:
                await future
            except Unavailable:
                return

    @property
    def durable_lsn(self) -> int:
        return self._writer.durable_lsn

    # -- on the shard task -------------------------------------------------------------------

    def _apply_write(self, command: Command) -> tuple[Applied | Rejected, int]:
        self._check_writable()
        customer_id = getattr(command, "customer_id", None)
        if customer_id is not None:
            self._run_due_timers(command.project, customer_id, command.at_ms)  # type: ignore[attr-defined]
        result = self._apply_and_log(command)
        # A rejection or a replay may rest on changes still in flight: wait for all of them.
        return result, self.state.last_lsn

    def _apply_and_log(self, command: Command) -> Applied | Rejected:
        lsn = self.state.last_lsn + 1
        result = apply(self.state, lsn, command)
        if isinstance(result, Applied) and result.logged:
            assert self.state.last_lsn == lsn
            self._writer.append(lsn, encode_command(command))
        else:
            assert self.state.last_lsn == lsn - 1
        return result

    def _run_due_timers(self, project: str, customer_id: str, now_ms: int) -> None:
        if self._failure is not None or self._writer.failed:
            return  # nothing can be logged; balance views still exclude expired buckets
        for timer in due_commands(self.state, project, customer_id, now_ms):
            result = self._apply_and_log(timer)
            assert isinstance(result, Applied) and result.logged, (timer, result)

    # -- helpers -------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._failure is not None or self._writer.failed:
            raise Unavailable("storage_unavailable", "the write-ahead log failed; writes are refused")

    def _shard_for(self, project: str, customer_id: str | None) -> Shard:
        if customer_id is None:
            return self._shards[0]
        # A stable hash (not Python's salted hash()): routing is the same in every process.
        key = f"{project}\x00{customer_id}".encode("utf-8", "surrogatepass")
        return self._shards[zlib.crc32(key) % len(self._shards)]

    async def _read(self, project: str, customer_id: str, view: Callable[[int], Any]) -> Any:
        """A read sees every timer due before it (CONTRACT §7.3) and waits until what it shows
        is durable. With no timer due, it is answered right here: the state is only changed by
        synchronous shard code on this same thread, so no half-applied command can be seen.
        With timers due, it goes through the customer's shard, which applies and logs them."""
        now_ms = self.clock_ms()
        if not due_commands(self.state, project, customer_id, now_ms):
            result = view(now_ms)
            await self._wait_durable(queries.customer_last_lsn(self.state, project, customer_id))
            return result

        def on_shard() -> tuple[Any, int]:
            now_ms = self.clock_ms()
            self._run_due_timers(project, customer_id, now_ms)
            return view(now_ms), queries.customer_last_lsn(self.state, project, customer_id)

        return await self._shard_for(project, customer_id).submit(on_shard)

    def resolve_when_durable(self, lsn: int, waiting: list[tuple[asyncio.Future[Any], Any]]) -> None:
        """Called by a shard after a batch: answer these futures once the WAL is durable to `lsn`."""
        task = asyncio.get_running_loop().create_task(self._resolve_when_durable(lsn, waiting))
        # The loop keeps only a weak reference to a task: hold it until it is done.
        self._resolvers.add(task)
        task.add_done_callback(self._resolvers.discard)

    async def _resolve_when_durable(self, lsn: int, waiting: list[tuple[asyncio.Future[Any], Any]]) -> None:
        try:
            await self._wait_durable(lsn)
        except Unavailable as error:
            for future, _ in waiting:
                if not future.done():
                    future.set_exception(error)
            return
        for future, result in waiting:
            if not future.done():
                future.set_result(result)

    async def _wait_durable(self, lsn: int) -> None:
        if lsn <= self._writer.durable_lsn:
            return
        try:
            await self._writer.wait_durable(lsn)
        except wal.WalFailed:
            raise Unavailable("storage_unavailable", "the write-ahead log failed; outcome unknown") from None

    async def wait_for_log_room(self, items: int) -> None:
        """Called by a shard before a batch: keep the WAL queue bounded (backpressure)."""
        needed = items + LOG_ROOM_PER_ITEM_MIN
        if self._writer.room() >= needed or self._writer.failed:
            return
        try:
            await self._writer.wait_for_room(needed)
        except wal.WalFailed:
            return  # the shard's items each fail with storage_unavailable

    # -- background tasks ----------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            due_ms = next_due_ms(self.state)
            now_ms = self.clock_ms()
            if due_ms is not None and due_ms <= now_ms:
                await self.fire_due_timers()
                # A customer whose shard was too busy stays due; don't spin on it.
                await asyncio.sleep(TIMER_RETRY_INTERVAL_S)
                continue
            delay_s = TIMER_POLL_INTERVAL_S_MAX
            if due_ms is not None:
                delay_s = min(delay_s, max(0.001, (due_ms - now_ms) / 1000))
            await asyncio.sleep(delay_s)

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._snapshot_due():
                try:
                    await self.take_snapshot()
                except Exception as error:  # a failed snapshot loses nothing: the WAL has it all
                    log.error("snapshot failed: %r", error)

    def _snapshot_due(self) -> bool:
        config = self.config
        records = self.state.last_lsn - self._snapshot_lsn
        if records <= 0:
            return False
        if config.snapshot_interval_records and records >= config.snapshot_interval_records:
            return True
        elapsed_s = time.monotonic() - self._snapshot_at_s
        return bool(config.snapshot_interval_s) and elapsed_s >= config.snapshot_interval_s

    async def take_snapshot(self) -> int:
        """Write the full state at the current LSN without stopping writes; returns that LSN.

        A consistent cut between two applies, for free: fork. The child holds a copy-on-write
        image of the state at exactly `lsn`, encodes it and writes `<snapshot>.tmp` (fsync'd)
        while the parent keeps serving. The parent publishes it (rename + directory fsync) only
        after the child succeeded AND the WAL is durable up to `lsn`: a snapshot must never hold
        a change the log could still lose, or the next append would leave an LSN gap.
        """
        if self._snapshot_running:
            return self._snapshot_lsn
        self._snapshot_running = True
        try:
            lsn = self.state.last_lsn
            loop = asyncio.get_running_loop()
            child_pid = self._fork_snapshot_writer(lsn)
            try:
                await self._wait_durable(lsn)
            finally:
                _, status = await loop.run_in_executor(None, os.waitpid, child_pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"snapshot writer for lsn {lsn} failed: status {status}")
            temporary = wal.snapshot_temporary_path(self.config.data_dir, lsn)
            await loop.run_in_executor(None, wal.publish_snapshot, temporary)
            await loop.run_in_executor(None, self._prune, self._snapshot_lsn)
            self._snapshot_lsn = lsn
            self._snapshot_at_s = time.monotonic()
            return lsn
        finally:
            self._snapshot_running = False

    def _fork_snapshot_writer(self, lsn: int) -> int:
        """Fork; in the child, write the state as `<snapshot lsn>.tmp` and exit (0 = written)."""
        assert self.state.last_lsn == lsn
        child_pid = os.fork()
        if child_pid != 0:
            return child_pid
        exit_code = 1
        try:  # the child: no loop, no threads, no signals of the server's; only encode + write
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            self._lock.forget_in_child()
            wal.write_snapshot_temporary(self.config.data_dir, lsn, encode_state(self.state))
            exit_code = 0
        finally:
            os._exit(exit_code)  # never return into the parent's code, run no atexit hooks

    def _prune(self, previous_snapshot_lsn: int) -> None:
        """Keep two snapshots; delete segments only up to the OLDER one, so that if the newest
        snapshot is ever found damaged, recovery can still start from the older one + the WAL."""
        wal.prune_snapshots(self.config.data_dir, keep=2)
        if not self.config.keep_segments and previous_snapshot_lsn > 0:
            wal.prune_segments(self.config.data_dir, previous_snapshot_lsn)
