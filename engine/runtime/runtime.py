"""Runtime: the facade net/ uses around the pure ledger (CONTRACT §4, §6).

    Runtime.open(config)          lock the data dir, recover, open the log store, start shards
      .submit(command)            route by stable hash -> shard: stamp, apply, log -> durable
      .get_customer / get_ledger  reads, waiting until what they show is durable
      .read(project, customer, view)  any pure view of one customer (slots, entitlements), likewise
      .authenticate(key)          API key -> project, or ADMIN (keys live in the log like everything else)
      .list_customers / list_projects / list_keys   the operator's listings (CONTRACT §9.2, §9.3)
      .close()                    drain shards, last group commit + fsync, release the lock

Its parts, one module each: `shards` (single writers), `durability` (answers wait for the log),
`clock` (stamps at the ordering point), `timer_loop`, `snapshots`, `recovery`.

Durability rule: a write's answer waits until the log is durable up to the ledger's last LSN at
the moment it was decided (its own change and every change its outcome could depend on); a read
waits for the customer's last LSN. So no answer shows state a crash could lose (CONTRACT §4).

Keys (CONTRACT §9.2): `authenticate` reads the in-memory state. A created key is refused until its
CreateApiKey is durable (`_keys_not_durable`), so no request is served on a key a crash could
still take back; its 2xx comes after that, so it works from the next request on. A revoked key is
refused from the moment the revocation is applied, before it is durable (and so before its 2xx):
refusing early is the safe side; a crash before the fsync brings the key back, and the caller,
who got no 2xx, revokes again.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from functools import partial
from pathlib import Path
from typing import Any, Callable, Final, TypeVar, cast

import msgspec

import wal
from engine.core import apikeys, hooks, listings, queries
from engine.core.commands import (
    AnyCommand,
    Command,
    Consume,
    CreateApiKey,
    Refund,
    Unfreeze,
    Void,
    encode_command,
)
from engine.core.keys import KeyHashMemo, hash_api_key, keys_match
from engine.core.ledger import apply
from engine.core.results import (
    Applied,
    AlertsView,
    AttemptPage,
    CustomerPage,
    CustomerResponse,
    KeyList,
    KeyView,
    LedgerPage,
    ProjectList,
    Rejected,
    WebhookList,
)
from engine.core.state import LedgerState
from engine.core.timers import due_commands
from engine.runtime.clock import Stamper, wall_clock_ms
from engine.runtime.config import RuntimeConfig
from engine.runtime.deliveries import AiohttpPoster, Deliverer, PostFn
from engine.runtime.durability import Durability, log_failed
from engine.runtime.errors import Unavailable
from engine.runtime.recovery import Recovered, recover
from engine.runtime.shards import Shard
from engine.runtime.snapshots import Snapshotter
from engine.runtime.timer_loop import TimerLoop

__all__ = ["ADMIN", "Admin", "Runtime", "RuntimeConfig"]

log = logging.getLogger("tally.runtime")

V = TypeVar("V")  # what a read returns


class Admin:
    """What `Runtime.authenticate` returns for an admin key (CONTRACT §9.1): no project."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ADMIN"


ADMIN: Final = Admin()


class Runtime:
    """Owns the ledger state, the shards, the log store and the timers of one data directory."""

    def __init__(
        self, config: RuntimeConfig, recovered: Recovered, store: wal.LogStore, lock: wal.DataDirLock,
        clock: Callable[[], int], webhook_post: PostFn | None = None,
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
        # CONTRACT §11.3: webhook deliveries, a task of their own off the shards' path
        self._deliverer = Deliverer(
            self.state, submit=self.submit, wait_durable=self._durability.wait_durable, clock_ms=self._stamper.stamp,
            post=webhook_post if webhook_post is not None else AiohttpPoster(),
        )  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None
        self._accepting = False
        # key_hash -> LSN of its CreateApiKey, until that LSN is durable (see the module docstring)
        self._keys_not_durable: dict[str, int] = {}
        self._key_hashes = KeyHashMemo()  # issue 14: no SHA-256 per request for a known key
        self._owns_lock = True

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, config: RuntimeConfig, *, clock: Callable[[], int] = wall_clock_ms,
        log_file_factory: Callable[[Path], wal.LogFile] | None = None,
        log: wal.LogBackend | None = None,
        on_record: Callable[[int], None] | None = None,
        on_wal_batch: Callable[[int, float | None], None] | None = None,
        webhook_post: PostFn | None = None,
    ) -> Runtime:  # fmt: skip
        """Lock, recover (truncating a torn tail), open the log store, start shards and timers.

        `log` is where the log lives (any wal.LogBackend; default: wal.LocalLog, segments in the
        data directory, built from the config). `clock` and `log_file_factory` are seams for tests
        (a fake clock; a LogFile that fails on purpose); `webhook_post` replaces the HTTP client that
        delivers webhooks (engine/runtime/deliveries.py). `on_record(lsn)` is called from the recovery thread after each replayed
        record (progress for GET /health, CONTRACT §9.5); `on_wal_batch(records, fsync_s | None)`
        on the loop after each durable group commit (metrics, §9.4). Both must be cheap and
        must not raise. Nothing outside sees the state until this returns.
        Raises wal.DataDirLocked, wal.WalCorrupt, engine.runtime.recovery.RecoveryError.
        """
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # CONTRACT §9.6
        lock = wal.DataDirLock(config.data_dir)
        lock.acquire()
        backend: wal.LogBackend = log if log is not None else wal.LocalLog(
            config.data_dir, segment_size_max=config.wal_segment_size_max,
            batch_records_max=config.wal_batch_records_max, queue_records_max=config.wal_queue_records_max,
            fsync=config.fsync, log_file_factory=log_file_factory,
            # The flusher process keeps the lock while it lives (wal/flusher.py ProcessFlusher).
            flusher_process=config.wal_flusher_process and log_file_factory is None, keep_fds=(lock.fileno(),),
        )  # fmt: skip
        try:
            loop = asyncio.get_running_loop()
            recovered = await loop.run_in_executor(
                None, lambda: recover(config.data_dir, truncate_torn_tail=True, log=backend, on_record=on_record)
            )
            _report_recovery(recovered)
            store = backend.open_store(recovered.state.last_lsn + 1)
        except BaseException:
            lock.release()
            raise
        return await cls.start(config, recovered, store, lock, clock=clock, on_wal_batch=on_wal_batch,
                               webhook_post=webhook_post)  # fmt: skip

    @classmethod
    async def start(
        cls, config: RuntimeConfig, recovered: Recovered, store: wal.LogStore, lock: wal.DataDirLock, *,
        owns_lock: bool = True, clock: Callable[[], int] = wall_clock_ms,
        on_wal_batch: Callable[[int, float | None], None] | None = None, webhook_post: PostFn | None = None,
    ) -> Runtime:  # fmt: skip
        """Serve `recovered` through `store` (not started yet, or started: LogStore.start is
        idempotent for the PostgreSQL store). `owns_lock` False: close() leaves the lock to its
        owner (a cluster node keeps it across roles, engine/runtime/cluster.py)."""
        store.on_batch = on_wal_batch
        runtime = cls(config, recovered, store, lock, clock, webhook_post)
        runtime._owns_lock = owns_lock
        try:
            await runtime._start()  # the store starts first: a PostgreSQL store may refuse (lease)
        except BaseException:
            if owns_lock:
                lock.release()
            raise
        return runtime

    async def _start(self) -> None:
        await self._store.start()
        for shard in self._shards:
            shard.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._timers.run(), name="tally-timers"))
        self._tasks.append(loop.create_task(self._snapshots.run(), name="tally-snapshots"))
        self._tasks.append(loop.create_task(self._deliverer.run(), name="tally-webhooks"))
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
        if self._owns_lock:
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

    def authenticate(self, api_key: str) -> str | Admin | Rejected:
        """Bearer key -> its project id, ADMIN for an admin key, or a 401 code (CONTRACT §3.15,
        §9.1): missing_api_key, invalid_api_key (unknown, or created but not yet durable),
        api_key_revoked."""
        if not api_key:
            return Rejected("missing_api_key", "missing API key")
        key_hash = self._key_hashes[api_key]
        record = queries.find_api_key(self.state, key_hash)
        # The index finds the candidate by digest; the comparison that decides is constant-time.
        if record is None or not keys_match(record.key_hash, key_hash):
            return Rejected("invalid_api_key", "invalid API key")
        if key_hash in self._keys_not_durable and not self._key_durable(key_hash):
            return Rejected("invalid_api_key", "invalid API key")
        if record.revoked:
            return Rejected("api_key_revoked", "API key has been revoked")
        return ADMIN if record.admin else record.project

    def _key_durable(self, key_hash: str) -> bool:
        lsn = self._keys_not_durable.get(key_hash)
        if lsn is None:
            return True
        if lsn > self._store.durable_lsn:
            return False
        del self._keys_not_durable[key_hash]
        return True

    def has_project(self, project: str) -> bool:
        """The project exists (it had a key once): what X-Tally-Project may name (CONTRACT §9.1)."""
        return project in self.state.projects

    async def submit(self, command: Command) -> Applied | Rejected:
        """Apply one command and return once its outcome is durable. Raises Unavailable.

        The command's `at_ms` is replaced by the stamp taken on its shard, where it gets its LSN.
        """
        shard, work = self._route(command)
        done = shard.run_now(work)  # the fast path: nothing queued ahead, room in the log
        if done is None:
            return await shard.submit(work)
        result, wait_lsn = done
        waiter = self._durability.waiter(wait_lsn)  # awaited here: no coroutine frame per answer (issue 14)
        if waiter is not None:
            try:
                await waiter
            except wal.WalFailed:
                raise log_failed() from None
        return result

    def try_apply(self, command: Command) -> tuple[Applied | Rejected, int] | None:
        """Apply `command` now, without waiting: (result, wait_lsn), whose answer may leave once
        `wait_durable(wait_lsn)` returned (CONTRACT §4). None when its shard has work queued or
        the log is full: use `submit`, which queues. Raises Unavailable. What a batch of calls
        uses (net/ledger_server.py): apply them all, then wait once for the largest wait_lsn."""
        shard, work = self._route(command)
        return shard.run_now(work)

    async def wait_durable(self, lsn: int) -> None:
        """Return once the log is durable up to `lsn`; Unavailable(storage_unavailable) if the
        log failed first (the outcome of what waited is unknown)."""
        await self._durability.wait_durable(lsn)

    def _route(self, command: Command) -> tuple[Shard, Callable[[], tuple[Applied | Rejected, int]]]:
        """The shard of `command`'s customer and the work to run there. A consume, unfreeze or
        refund names no customer: its transaction's owner does (a void: its bucket's owner)."""
        if self._failure is not None or self._store.failed:  # (the check, without a call per write)
            self._check_writable()
        project: str = getattr(command, "project", "")
        customer_id: str | None = getattr(command, "customer_id", None)
        if customer_id is None:  # (a deduct, freeze or deposit names its customer: the hot path)
            if isinstance(command, (Consume, Unfreeze, Refund)):
                customer_id = queries.transaction_owner(self.state, project, command.transaction_id)
                if customer_id is not None:
                    command = msgspec.structs.replace(command, customer_id=customer_id)
            elif isinstance(command, Void):
                customer_id = queries.bucket_owner(self.state, project, command.account_id)
                if customer_id is not None:
                    command = msgspec.structs.replace(command, customer_id=customer_id)
        # Every Command subclass is a member of AnyCommand (asserted in engine/core/commands.py).
        any_command = cast(AnyCommand, command)
        return self._shard_for(project, customer_id), partial(self._apply_write, any_command, customer_id)

    async def get_customer(self, project: str, customer_id: str) -> CustomerResponse | Rejected:
        def view(now_ms: int) -> CustomerResponse | Rejected:
            return queries.customer_view(self.state, project, customer_id, now_ms)

        return await self._read(project, customer_id, view)

    async def get_ledger(
        self, project: str, customer_id: str, *, limit: int, cursor: str | None, filters: queries.LedgerFilters
    ) -> LedgerPage | Rejected:
        """A ledger page (engine.core.queries.ledger_page, CONTRACT §3.12, §10.3)."""

        def view(now_ms: int) -> LedgerPage | Rejected:
            return queries.ledger_page(self.state, project, customer_id, limit=limit, cursor=cursor, filters=filters)

        return await self._read(project, customer_id, view)

    async def read(self, project: str, customer_id: str, view: Callable[[LedgerState, int], Any]) -> Any:
        """Run a pure view `view(state, now_ms)` of one customer (e.g. engine.core.slot_queries):
        after the customer's due timers, answered once what it shows is durable (CONTRACT §4,
        §7.3). Returns what `view` returns."""

        def at(now_ms: int) -> Any:
            return view(self.state, now_ms)

        return await self._read(project, customer_id, at)

    async def create_api_key(
        self, project: str, key: str, key_id: str, *, label: str | None = None, admin: bool = False
    ) -> KeyView:
        """Log a new key for `project` (created if new; "" with `admin`) and wait until it is
        durable. Raises ValueError when the key id or key already exists; Unavailable."""
        command = CreateApiKey(
            at_ms=0, project=project, key_id=key_id, key_hash=hash_api_key(key), label=label, admin=admin
        )
        result = await self.submit(command)
        if isinstance(result, Rejected):
            raise ValueError(result.message)
        assert isinstance(result.body, KeyView), result
        return result.body

    def find_key(self, key_id: str) -> KeyView | None:
        """A project key by id (None for an unknown id or an admin key: the admin API manages
        project keys only, CONTRACT §9.2)."""
        key_hash = self.state.key_hash_by_id.get(key_id)
        if key_hash is None:
            return None
        key = self.state.api_keys[key_hash]
        return None if key.admin else apikeys.key_view(key)

    def has_admin_key(self) -> bool:
        """An admin key that is not revoked exists: start-up makes one otherwise (§9.1)."""
        return any(key.admin and not key.revoked for key in self.state.api_keys.values())

    def has_project_key(self) -> bool:
        """Some project key was ever created: start-up bootstraps project `default` otherwise (§5)."""
        return any(not key.admin for key in self.state.api_keys.values())

    async def list_projects(self) -> ProjectList:
        """GET /admin/v1/projects (CONTRACT §9.2): every project by name, once durable."""
        return await self._read_all(listings.list_projects(self.state))

    async def list_keys(self, project: str | None) -> KeyList | Rejected:
        """GET /admin/v1/keys (CONTRACT §9.2): project keys, of `project` if given; Rejected
        project_not_found for a project that does not exist."""
        return await self._read_all(listings.list_keys(self.state, project))

    async def list_customers(
        self, project: str, *, limit: int, cursor: str | None, prefix: str | None
    ) -> CustomerPage | Rejected:
        """CONTRACT §9.3. Balances count buckets valid now, like GET /v1/customers/{id}; a due
        expiry not yet written off is already left out (bucket_valid_at), so no timer runs here."""
        page = listings.customer_page(
            self.state, project, limit=limit, cursor=cursor, prefix=prefix, now_ms=self._stamper.stamp()
        )
        return await self._read_all(page)

    # -- webhooks and alerts (CONTRACT §11) ---------------------------------------------------------

    async def list_webhooks(self, project: str | None) -> WebhookList | Rejected:
        """GET /admin/v1/webhooks[?project=]: registration order, never a secret; Rejected
        project_not_found for a named project that does not exist."""
        if project is not None and project not in self.state.projects:
            return Rejected("project_not_found", f"no project {project!r}", {"project": project})
        return await self._read_all(WebhookList(items=hooks.list_webhooks(self.state, project)))

    async def list_deliveries(self, webhook_id: str, *, limit: int, cursor: str | None) -> AttemptPage | Rejected:
        """GET /admin/v1/webhooks/{id}/deliveries: attempts newest first (engine/core/hooks.py)."""
        return await self._read_all(hooks.deliveries_page(self.state, webhook_id, limit=limit, cursor=cursor))

    async def get_alerts(self, project: str, customer_id: str) -> AlertsView | Rejected:
        """GET /v1/alerts/{customer_id}: the customer's rules; Rejected customer_not_found."""
        return await self._read(project, customer_id, lambda now_ms: hooks.get_alerts(self.state, project, customer_id))

    async def _read_all(self, result: V) -> V:
        """A listing may show any change: it waits until the whole ledger as read is durable."""
        await self._durability.wait_durable(self.state.last_lsn)
        return result

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
        if self._failure is not None or self._store.failed:  # (the check, without a call per write)
            self._check_writable()
        stamp_ms = self._stamper.stamp()
        command = msgspec.structs.replace(command, at_ms=stamp_ms)
        if customer_id is not None:
            self._run_due_timers(getattr(command, "project", ""), customer_id, stamp_ms)
        result = self._apply_and_log(command)
        # A rejection or a replay may rest on changes still in flight: wait for all of them.
        return result, self.state.last_lsn

    def _apply_and_log(self, command: AnyCommand) -> Applied | Rejected:
        lsn = self.state.last_lsn + 1
        result = apply(self.state, lsn, command)
        if isinstance(result, Applied) and result.logged:
            assert self.state.last_lsn == lsn
            self._store.append(lsn, encode_command(command))
            if type(command) is CreateApiKey:
                self._keys_not_durable[command.key_hash] = lsn
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


def _report_recovery(recovered: Recovered) -> None:
    if recovered.torn is not None:
        log.warning("truncated a torn WAL tail: %s", recovered.torn)
    for damaged in recovered.snapshots_skipped:
        log.warning("damaged snapshot set aside (started from an older one): %s", damaged)
        wal.quarantine_snapshot(damaged.path)
