"""LedgerClient: net/handlers.py's Runtime protocol in a front process, over net/ipc.py (issue 14).

The front runs the very same aiohttp app as `tally serve --workers 1` (handlers, observer,
envelope, OpenAPI); every Runtime call becomes one Call message to the ledger process, batched per
loop turn (net/ipc.py Outbox), and its Reply resolves the caller's future. What crosses:

    submit                                                          -> Write (the command itself)
    get_customer / get_ledger / list_* / get_alerts / read(named read)   -> Call
    authenticate / has_project / find_key (synchronous)   answered from KeyReplica, a copy of the
        ledger's key table that the ledger updates (and waits for our KeysAck) before it
        acknowledges a key create or revoke (CONTRACT §9.1-§9.2: a new key works on the next
        request, a revoked one is refused from the next), whichever front that request reaches
    ready / durable_lsn      from the last Status message

Replies: OK carries the response's JSON bytes (a batch of writes' in one Oks message), handed to
the handlers as msgspec.Raw (encoded verbatim); key commands' bodies are decoded to KeyView /
RevokedKey (net/admin.py reads them).
REJECTED -> Rejected, UNAVAILABLE -> raises Unavailable with the same 503 code. At most
IN_FLIGHT_MAX calls wait at once: one more is 503 `overloaded`, as a full shard queue is.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Final

import msgspec

from engine.core.commands import Command, CreateApiKey, RevokeApiKey
from engine.core.keys import BoundedMemo, KeyHashMemo, keys_match
from engine.core.queries import LedgerFilters
from engine.core.reads import NamedRead
from engine.core.results import (
    AlertsView,
    Applied,
    AttemptPage,
    CustomerPage,
    CustomerResponse,
    KeyList,
    KeyView,
    LedgerPage,
    ProjectList,
    Rejected,
    RevokedKey,
    WebhookList,
)
from engine.core.apikeys import key_view
from engine.core.state import ApiKey, LedgerState
from engine.runtime import ADMIN, Admin
from engine.runtime.errors import Unavailable
from net import ipc

log = logging.getLogger("tally.front")

IN_FLIGHT_MAX: Final = 8192  # calls waiting for the ledger in one front; bounds its memory


class LedgerGone(Exception):
    """The ledger process closed the connection: the server is stopping or failed."""


class KeyReplica:
    """The front's copy of the key table: key hash -> ApiKey, key id -> hash, project names.

    `authenticate` keeps the answers it gave to accepted keys (raw key -> project or ADMIN, a
    BoundedMemo) until the table changes: every `apply` empties them, so a revoked key is refused
    from the first request after the ledger's Keys message, as without them (the lookup is the
    same dict lookup on the raw key KeyHashMemo makes; refusals are not kept)."""

    __slots__ = ("_by_hash", "_by_id", "_key_hashes", "_projects", "_accepted")

    def __init__(self) -> None:
        self._key_hashes = KeyHashMemo()  # as Runtime's: no SHA-256 per request for a known key
        self._by_hash: dict[str, ApiKey] = {}
        self._by_id: dict[str, str] = {}
        self._projects: set[str] = set()
        self._accepted: BoundedMemo[str, str | Admin] = BoundedMemo()

    def apply(self, message: ipc.Keys) -> None:
        self._accepted.clear()
        if message.full:
            self._by_hash, self._by_id, self._projects = {}, {}, set()
        for key in message.keys:
            self._by_hash[key.key_hash] = key
            self._by_id[key.key_id] = key.key_hash
        self._projects.update(message.projects)

    def authenticate(self, api_key: str) -> str | Admin | Rejected:
        """As engine.runtime.Runtime.authenticate: project, ADMIN, or a 401 Rejected."""
        accepted = self._accepted.get(api_key)
        if accepted is not None:
            return accepted
        if not api_key:
            return Rejected("missing_api_key", "missing API key")
        key_hash = self._key_hashes[api_key]
        record = self._by_hash.get(key_hash)
        if record is None or not keys_match(record.key_hash, key_hash):
            return Rejected("invalid_api_key", "invalid API key")
        if record.revoked:
            return Rejected("api_key_revoked", "API key has been revoked")
        answer = ADMIN if record.admin else record.project
        self._accepted.put(api_key, answer)
        return answer

    def has_project(self, project: str) -> bool:
        return project in self._projects

    def find_key(self, key_id: str) -> KeyView | None:
        key_hash = self._by_id.get(key_id)
        key = None if key_hash is None else self._by_hash.get(key_hash)
        return None if key is None or key.admin else key_view(key)


class LedgerClient:
    """The Runtime of a front. `on_open()` is called once the ledger opens the gate;
    `counters()` gives this front's HTTP counters for GET /metrics."""

    def __init__(
        self, index: int, *, on_open: Callable[[], None], on_records: Callable[[int], None],
        counters: Callable[[], ipc.FrontCounters],
    ) -> None:  # fmt: skip
        self._connection = ipc.Connection(msgspec.msgpack.Decoder(list[ipc.LedgerMsg]), self._on_frame)
        self._outbox = self._connection.outbox
        self._loop = asyncio.get_running_loop()  # kept: get_running_loop() costs a getpid() each
        self._index = index
        self._on_open = on_open
        self._on_records = on_records
        self._counters = counters
        self._waiting: dict[int, tuple[asyncio.Future[Any], Callable[[bytes], Any]]] = {}
        self._next_id = 0
        self._status = ipc.Status(open=False, ready=False, durable_lsn=0, records=0)
        self._opened = False
        self._gone = False
        self.keys = KeyReplica()
        self.authenticate = self.keys.authenticate
        self.has_project = self.keys.has_project
        self.find_key = self.keys.find_key

    # -- the connection ----------------------------------------------------------------------------

    async def connect(self, sock: socket.socket) -> None:
        """Open the connection to the ledger over `sock` (a connected Unix socket) and say hello."""
        self._outbox.send(ipc.Hello(self._index))
        await ipc.connect(sock, self._connection)

    async def run(self) -> None:
        """Wait until the ledger closes the connection (after `connect`); then every call still
        waiting fails with 503 shutting_down."""
        try:
            error = await self._connection.closed
            if error is not None:
                log.error("ledger connection broken: %r", error)
        finally:
            self._gone = True
            for future, _ in self._waiting.values():
                if not future.done():
                    future.set_exception(Unavailable("shutting_down", "the ledger process stopped"))
            self._waiting.clear()

    def _on_frame(self, messages: list[ipc.LedgerMsg]) -> None:
        waiting = self._waiting
        for message in messages:
            if type(message) is ipc.Oks:
                for call_id, body in zip(message.ids, message.bodies):
                    call = waiting.pop(call_id, None)
                    if call is not None and not call[0].done():
                        call[0].set_result(call[1](body))
            elif type(message) is ipc.Reply:
                call = waiting.pop(message.id, None)
                if call is not None and not call[0].done():
                    _resolve(call[0], call[1], message)
            else:
                self._handle(message)

    def _handle(self, message: ipc.LedgerMsg) -> None:
        if type(message) is ipc.Status:
            self._status = message
            self._on_records(message.records)
            if message.open and not self._opened:
                self._opened = True
                self._on_open()
        elif type(message) is ipc.Keys:
            self.keys.apply(message)
            self._outbox.send(ipc.KeysAck(message.seq))
        elif type(message) is ipc.CollectMetrics:
            self._outbox.send(ipc.MetricsPush(message.seq, self._counters()))

    def close(self) -> None:
        self._connection.close()

    def _call(self, op: ipc.AnyOp, decode: Callable[[bytes], Any] = msgspec.Raw) -> asyncio.Future[Any]:
        future, call_id = self._wait(decode)
        self._outbox.send(ipc.Call(call_id, op))
        return future

    def _wait(self, decode: Callable[[bytes], Any]) -> tuple[asyncio.Future[Any], int]:
        """A new call id and the future its answer resolves (`decode` of an OK body)."""
        if self._gone:
            raise Unavailable("shutting_down", "the ledger process stopped")
        if len(self._waiting) >= IN_FLIGHT_MAX:
            raise Unavailable("overloaded", "too many requests in flight; retry shortly")
        self._next_id = call_id = self._next_id + 1
        future: asyncio.Future[Any] = self._loop.create_future()
        self._waiting[call_id] = (future, decode)
        return future, call_id

    # -- the Runtime protocol (net/handlers.py) -----------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._opened and self._status.ready and not self._gone

    @property
    def durable_lsn(self) -> int:
        return self._status.durable_lsn

    async def submit(self, command: Command) -> Applied | Rejected:
        """One Write message; an OK answer resolves to Applied(its body, durable)."""
        decode: Callable[[bytes], Any] = _applied_raw
        if type(command) is CreateApiKey:
            decode = _KEY_VIEW
        elif type(command) is RevokeApiKey:
            decode = _REVOKED_KEY
        future, call_id = self._wait(decode)
        self._outbox.send(ipc.Write(call_id, command))  # type: ignore[arg-type]  # a Command of AnyCommand
        result: Applied | Rejected = await future
        return result

    async def get_customer(self, project: str, customer_id: str) -> CustomerResponse | Rejected:
        result: CustomerResponse | Rejected = await self._call(ipc.GetCustomer(project, customer_id))
        return result

    async def get_ledger(
        self, project: str, customer_id: str, *, limit: int, cursor: str | None, filters: LedgerFilters
    ) -> LedgerPage | Rejected:
        result: LedgerPage | Rejected = await self._call(ipc.GetLedger(project, customer_id, limit, cursor, filters))
        return result

    async def list_customers(
        self, project: str, *, limit: int, cursor: str | None, prefix: str | None
    ) -> CustomerPage | Rejected:
        result: CustomerPage | Rejected = await self._call(ipc.ListCustomers(project, limit, cursor, prefix))
        return result

    async def get_alerts(self, project: str, customer_id: str) -> AlertsView | Rejected:
        result: AlertsView | Rejected = await self._call(ipc.GetAlerts(project, customer_id))
        return result

    async def read(self, project: str, customer_id: str, view: Callable[[LedgerState, int], Any]) -> Any:
        """Only named reads (engine/core/reads.py) cross to the ledger process."""
        if not isinstance(view, NamedRead) or (view.project, view.customer_id) != (project, customer_id):
            raise TypeError(f"a front can only send a named read of ({project!r}, {customer_id!r}), not {view!r}")
        return await self._call(ipc.Read(view))  # type: ignore[arg-type]  # a NamedRead of AnyRead

    async def list_projects(self) -> ProjectList:
        result: ProjectList = await self._call(ipc.ListProjects())
        return result

    async def list_keys(self, project: str | None) -> KeyList | Rejected:
        result: KeyList | Rejected = await self._call(ipc.ListKeys(project))
        return result

    async def list_webhooks(self, project: str | None) -> WebhookList | Rejected:
        result: WebhookList | Rejected = await self._call(ipc.ListWebhooks(project))
        return result

    async def list_deliveries(self, webhook_id: str, *, limit: int, cursor: str | None) -> AttemptPage | Rejected:
        result: AttemptPage | Rejected = await self._call(ipc.ListDeliveries(webhook_id, limit, cursor))
        return result

    async def metrics_text(self) -> bytes:
        """The Prometheus text of the ledger and every front (GET /metrics on a front)."""
        result: msgspec.Raw = await self._call(ipc.Metrics())
        return bytes(result)


def _applied_raw(body: bytes) -> Applied:
    """A write's OK body as the handlers take it: Applied(the JSON, verbatim; durable)."""
    return Applied(msgspec.Raw(body), True)


def _applied_of(kind: type[Any]) -> Callable[[bytes], Applied]:
    decode = msgspec.json.Decoder(kind).decode

    def applied(body: bytes) -> Applied:
        return Applied(decode(body), True)

    return applied


_KEY_VIEW: Final = _applied_of(KeyView)  # net/admin.py reads the created key's fields
_REVOKED_KEY: Final = _applied_of(RevokedKey)


def _resolve(future: asyncio.Future[Any], decode: Callable[[bytes], Any], reply: ipc.Reply) -> None:
    kind = reply.kind
    if kind == ipc.OK:
        future.set_result(decode(reply.body))
    elif kind == ipc.REJECTED:
        future.set_result(Rejected(reply.code, reply.message, reply.details))
    elif kind == ipc.UNAVAILABLE:
        future.set_exception(Unavailable(reply.code, reply.message))
    else:
        future.set_exception(RuntimeError(f"the ledger process failed on this call: {reply.message}"))
