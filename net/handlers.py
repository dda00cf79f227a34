"""One small handler per endpoint: bytes -> Command -> Runtime -> response bytes (CONTRACT §2).

Every /v1 handler: auth (401) -> read body -> parse (400) -> runtime (404/400/409 or 200). Errors
are raised as HttpError and become the envelope in net.errors.exception_response; Unavailable from
the runtime passes through to it too (503). Success is always 200 with the msgspec-encoded body.

GET /v1/customers/{customer_id}[/ledger] is one catch-all route handled on the RAW path, because a
customer id may hold any character, `/` included (the SDK sends it as %2F): the raw path is split
on literal `/`, then the id segment is percent-decoded exactly once. GET /v1/customers (nothing
after it) is the customer list (CONTRACT §9.3), a route of its own.
"""

from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec
from aiohttp import web
from aiohttp.streams import StreamReader

from engine.core.commands import Command
from engine.core.queries import LedgerFilters
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
    WebhookList,
)
from engine.core.state import LedgerState
from engine.runtime import Admin
from engine.runtime.errors import Unavailable
from net.admin import AdminRuntime
from net.answer import JsonAnswer
from net import freezes_api, schemas
from net.auth import authenticate
from net.errors import ClientError, HttpError


class Runtime(AdminRuntime, Protocol):
    """What net needs from engine.runtime.Runtime (the lead's); tests pass a fake."""

    @property
    def ready(self) -> bool: ...

    async def submit(self, command: Command) -> Applied | Rejected: ...

    async def get_customer(self, project: str, customer_id: str) -> CustomerResponse | Rejected: ...

    async def get_ledger(
        self,
        project: str,
        customer_id: str,
        *,
        limit: int,
        cursor: str | None,
        filters: LedgerFilters,
    ) -> LedgerPage | Rejected: ...

    async def list_customers(
        self, project: str, *, limit: int, cursor: str | None, prefix: str | None
    ) -> CustomerPage | Rejected: ...

    async def get_alerts(self, project: str, customer_id: str) -> AlertsView | Rejected: ...

    async def read(self, project: str, customer_id: str, view: Callable[[LedgerState, int], Any]) -> Any:
        """A pure view of one customer's state (slots and entitlements, CONTRACT §8)."""


class _NotReady:
    """The runtime stand-in while the server recovers (CONTRACT §9.5): net/observe.py's gate
    answers every request before a handler runs, so this is a second line only."""

    @property
    def ready(self) -> bool:
        return False

    def _refuse(self) -> Unavailable:
        return Unavailable("not_ready", "the server is recovering its ledger; retry shortly")

    def authenticate(self, api_key: str) -> str | Admin | Rejected:
        raise self._refuse()

    def has_project(self, project: str) -> bool:
        raise self._refuse()

    def find_key(self, key_id: str) -> KeyView | None:
        raise self._refuse()

    async def submit(self, command: Command) -> Applied | Rejected:
        raise self._refuse()

    async def list_projects(self) -> ProjectList:
        raise self._refuse()

    async def list_keys(self, project: str | None) -> KeyList | Rejected:
        raise self._refuse()

    async def list_customers(
        self, project: str, *, limit: int, cursor: str | None, prefix: str | None
    ) -> CustomerPage | Rejected:
        raise self._refuse()

    async def get_customer(self, project: str, customer_id: str) -> CustomerResponse | Rejected:
        raise self._refuse()

    async def get_ledger(
        self, project: str, customer_id: str, *, limit: int, cursor: str | None, filters: LedgerFilters
    ) -> LedgerPage | Rejected:
        raise self._refuse()

    async def list_webhooks(self, project: str | None) -> WebhookList | Rejected:
        raise self._refuse()

    async def list_deliveries(self, webhook_id: str, *, limit: int, cursor: str | None) -> AttemptPage | Rejected:
        raise self._refuse()

    async def get_alerts(self, project: str, customer_id: str) -> AlertsView | Rejected:
        raise self._refuse()

    async def read(self, project: str, customer_id: str, view: Callable[[LedgerState, int], Any]) -> Any:
        raise self._refuse()


NOT_READY: Final[Runtime] = _NotReady()

CUSTOMERS_PREFIX: Final = "/v1/customers/"
ALERTS_PREFIX: Final = "/v1/alerts/"
_LEDGER_SUFFIX: Final = "/ledger"
_HEALTH_OK: Final = b'{"status":"ok"}'

_encoder = msgspec.json.Encoder()



def _ok(body: Any) -> web.Response:
    return JsonAnswer(_encoder.encode(body))


def _rejected(result: Rejected) -> HttpError:
    return HttpError(result.code, result.message, result.details)


def _not_found() -> ClientError:
    return ClientError("not_found", "no such route")


def _answer(result: Applied | Rejected) -> web.Response:
    """A write's result: 200 with its body, or the Rejected's error (raised as HttpError)."""
    if type(result) is Applied:
        return _ok(result.body)
    raise _rejected(result)  # type: ignore[arg-type]  # mypy does not narrow on `type(x) is`


def body_received(request: web.Request) -> bytes:
    """The request's whole body if it has all arrived and fits the size limit (the usual case
    of a small JSON body: one packet with the headers), else b"": then `await request.read()`,
    which waits for the rest, raises 413 or the body's error as before. Issue 14: the same bytes
    without read()'s two readany coroutines and bytearray copy; read() returns them after."""
    content = request._payload
    if request._read_bytes is not None or not 0 < content.total_bytes <= request._client_max_size:
        return b""  # taken already, nothing (read() answers b"" too) or over the limit (413)
    if not content.is_eof() or content.exception() is not None:
        return b""
    body = _one_chunk(content) if type(content) is StreamReader else None
    if body is None:
        body = content.read_nowait()
    body = bytes(body)  # bytes already (the parser feeds bytes): no copy
    request._read_bytes = body
    return body


def _one_chunk(content: StreamReader) -> bytes | None:
    """The body of a finished StreamReader holding it as one chunk, taken as read_nowait() takes
    it, or None (several chunks, chunked framing, a paused connection: read_nowait then).

    What it leaves out: read_nowait's three calls and its protocol.resume_reading(), which parses
    b"" through the connection's data_received and resumes the transport; with neither reading
    nor the message queue paused, that finds nothing to parse and nothing to resume (issue 14)."""
    buffer = content._buffer
    protocol = content._protocol
    if (
        len(buffer) != 1
        or content._buffer_offset
        or content._http_chunk_splits is not None
        or content._waiter is not None
        or protocol._reading_paused
        or protocol._buffer_paused
    ):
        return None
    body = buffer.popleft()
    content._size -= len(body)  # what _read_nowait_chunk leaves behind
    content._cursor += len(body)
    return body


class Handlers:
    """The endpoint handlers, bound to one runtime (no per-request app lookups)."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def bind(self, runtime: Runtime) -> None:
        """Serve from `runtime` from the next request on (net/app.py open_app, after recovery)."""
        self._runtime = runtime

    # Each write is one coroutine (issue 14: a coroutine per layer is ~1.5k instructions):
    # auth (401) -> body -> parse (400) -> runtime -> _answer.

    async def deposit(self, request: web.Request) -> web.Response:
        runtime = self._runtime
        project = authenticate(request, runtime)
        body = body_received(request) or await request.read()
        idempotency_headers = request.headers.getall("Idempotency-Key", ())
        if len(idempotency_headers) > 1:  # two keys for one deposit: refuse rather than guess
            raise ClientError("idempotency_key_mismatch", "more than one Idempotency-Key header")
        idempotency_header = idempotency_headers[0] if idempotency_headers else None
        return _answer(await runtime.submit(schemas.parse_deposit(body, project, idempotency_header)))

    async def freeze(self, request: web.Request) -> web.Response:
        runtime = self._runtime
        project = authenticate(request, runtime)
        body = body_received(request) or await request.read()
        return _answer(await runtime.submit(schemas.parse_freeze(body, project)))

    async def consume(self, request: web.Request) -> web.Response:
        runtime = self._runtime
        project = authenticate(request, runtime)
        body = body_received(request) or await request.read()
        return _answer(await runtime.submit(schemas.parse_consume(body, project)))

    async def unfreeze(self, request: web.Request) -> web.Response:
        runtime = self._runtime
        project = authenticate(request, runtime)
        body = body_received(request) or await request.read()
        return _answer(await runtime.submit(schemas.parse_unfreeze(body, project)))

    async def deduct(self, request: web.Request) -> web.Response:
        runtime = self._runtime
        project = authenticate(request, runtime)
        body = body_received(request) or await request.read()
        return _answer(await runtime.submit(schemas.parse_deduct(body, project)))

    async def refund(self, request: web.Request) -> web.Response:
        """POST /v1/billing/refund (CONTRACT §10.1)."""
        runtime = self._runtime
        project = authenticate(request, runtime)
        body = body_received(request) or await request.read()
        return _answer(await runtime.submit(schemas.parse_refund(body, project)))

    async def void(self, request: web.Request) -> web.Response:
        """POST /v1/billing/void (CONTRACT §10.2)."""
        runtime = self._runtime
        project = authenticate(request, runtime)
        body = body_received(request) or await request.read()
        return _answer(await runtime.submit(schemas.parse_void(body, project)))

    async def customer(self, request: web.Request) -> web.Response:
        """GET /v1/customers/{id}, .../{id}/ledger and .../{id}/freezes, routed on the raw path."""
        runtime = self._runtime
        project = authenticate(request, runtime)
        path, _, raw_query = request.raw_path.partition("?")
        if not path.startswith(CUSTOMERS_PREFIX):  # e.g. a prefix spelled with %-escapes
            raise _not_found()
        tail = path[len(CUSTOMERS_PREFIX) :]
        is_ledger = tail.endswith(_LEDGER_SUFFIX)
        is_freezes = tail.endswith(freezes_api.SUFFIX)  # issue 13, beyond the record
        raw_id = tail[: -len(_LEDGER_SUFFIX)] if is_ledger else tail[: -len(freezes_api.SUFFIX)] if is_freezes else tail
        if "/" in raw_id:
            raise _not_found()
        customer_id = schemas.decode_path_id(raw_id)
        if is_freezes:
            result: Any = await freezes_api.get_freezes(runtime, project, customer_id, raw_query)
        elif not is_ledger:
            result = await runtime.get_customer(project, customer_id)
        else:
            query = schemas.parse_ledger_query(raw_query)
            result = await runtime.get_ledger(
                project,
                customer_id,
                limit=query.limit,
                cursor=query.cursor,
                filters=LedgerFilters(
                    operation_type=query.operation_type, transaction_id=query.transaction_id, wallet=query.wallet,
                    business_type=query.business_type, from_ms=query.from_ms, to_ms=query.to_ms,
                ),  # fmt: skip
            )
        if type(result) is Rejected:
            raise _rejected(result)
        return _ok(result)

    async def customers(self, request: web.Request) -> web.Response:
        """GET /v1/customers?limit=&cursor=&prefix= (CONTRACT §9.3)."""
        runtime = self._runtime
        project = authenticate(request, runtime)
        query = schemas.parse_customers_query(request.raw_path.partition("?")[2])
        result = await runtime.list_customers(project, limit=query.limit, cursor=query.cursor, prefix=query.prefix)
        if type(result) is Rejected:
            raise _rejected(result)
        return _ok(result)

    async def put_alerts(self, request: web.Request) -> web.Response:
        """PUT /v1/alerts/{customer_id} {thresholds, wallet?} -> AlertsView once durable (CONTRACT
        §11.1); 400 invalid_thresholds, invalid_identifier, too_many_alert_rules; 404
        customer_not_found."""
        project = authenticate(request, self._runtime)
        customer_id = _alerts_customer_of(request)
        return _answer(await self._runtime.submit(schemas.parse_set_alerts(await request.read(), project, customer_id)))

    async def get_alerts(self, request: web.Request) -> web.Response:
        """GET /v1/alerts/{customer_id} -> AlertsView; 404 customer_not_found."""
        project = authenticate(request, self._runtime)
        if request.raw_path.partition("?")[2]:
            raise ClientError("unknown_field", "this route takes no query parameters")
        result = await self._runtime.get_alerts(project, _alerts_customer_of(request))
        if type(result) is Rejected:
            raise _rejected(result)
        return _ok(result)

    async def health(self, request: web.Request) -> web.Response:
        """200 {"status": "ok"} once recovery is done and writes are accepted; no auth."""
        if self._runtime.ready:
            return JsonAnswer(_HEALTH_OK)
        raise HttpError("not_ready", "not ready: recovering, shutting down or storage failed")


def _alerts_customer_of(request: web.Request) -> str:
    """The {customer_id} of /v1/alerts/{customer_id}, from the raw path, decoded once."""
    path = request.raw_path.partition("?")[0]
    if not path.startswith(ALERTS_PREFIX) or "/" in path[len(ALERTS_PREFIX) :]:
        raise _not_found()
    return schemas.decode_path_id(path[len(ALERTS_PREFIX) :])
