"""One small handler per endpoint: bytes -> Command -> Runtime -> response bytes (CONTRACT §2).

Every /v1 handler: auth (401) -> read body -> parse (400) -> runtime (404/400/409 or 200). Errors
are raised as HttpError and become the envelope in net.errors.error_middleware; Unavailable from
the runtime passes through to it too (503). Success is always 200 with the msgspec-encoded body.

GET /v1/customers/{customer_id}[/ledger] is one catch-all route handled on the RAW path, because a
customer id may hold any character, `/` included (the SDK sends it as %2F): the raw path is split
on literal `/`, then the id segment is percent-decoded exactly once.
"""

from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec
from aiohttp import web

from engine.core.commands import Command
from engine.core.results import Applied, CustomerResponse, LedgerPage, Rejected
from engine.core.state import LedgerState
from net import schemas
from net.auth import authenticate
from net.errors import ClientError, HttpError


class Runtime(Protocol):
    """What net needs from engine.runtime.Runtime (the lead's); tests pass a fake."""

    @property
    def ready(self) -> bool: ...

    def authenticate(self, api_key: str) -> str | Rejected: ...

    async def submit(self, command: Command) -> Applied | Rejected: ...

    async def get_customer(self, project: str, customer_id: str) -> CustomerResponse | Rejected: ...

    async def get_ledger(
        self,
        project: str,
        customer_id: str,
        *,
        limit: int,
        cursor: str | None,
        operation_type: str | None,
        transaction_id: str | None,
    ) -> LedgerPage | Rejected: ...

    async def read(self, project: str, customer_id: str, view: Callable[[LedgerState, int], Any]) -> Any:
        """A pure view of one customer's state (slots and entitlements, CONTRACT §8)."""


CUSTOMERS_PREFIX: Final = "/v1/customers/"
_LEDGER_SUFFIX: Final = "/ledger"
_JSON: Final = "application/json"
_HEALTH_OK: Final = b'{"status":"ok"}'

_encoder = msgspec.json.Encoder()

# net.schemas.parse_<op>(body, project) -> the command; raises ClientError (400) for a bad body.
Parser = Callable[[bytes, str], Command]


def _ok(body: Any) -> web.Response:
    return web.Response(body=_encoder.encode(body), content_type=_JSON)


def _rejected(result: Rejected) -> HttpError:
    return HttpError(result.code, result.message, result.details)


def _not_found() -> ClientError:
    return ClientError("not_found", "no such route")


class Handlers:
    """The endpoint handlers, bound to one runtime (no per-request app lookups)."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def _submit(self, command: Command) -> web.Response:
        result = await self._runtime.submit(command)
        if type(result) is Applied:
            return _ok(result.body)
        raise _rejected(result)  # type: ignore[arg-type]  # mypy does not narrow on `type(x) is`

    async def deposit(self, request: web.Request) -> web.Response:
        runtime = self._runtime
        project = authenticate(request, runtime)
        body = await request.read()
        idempotency_headers = request.headers.getall("Idempotency-Key", ())
        if len(idempotency_headers) > 1:  # two keys for one deposit: refuse rather than guess
            raise ClientError("idempotency_key_mismatch", "more than one Idempotency-Key header")
        idempotency_header = idempotency_headers[0] if idempotency_headers else None
        return await self._submit(schemas.parse_deposit(body, project, idempotency_header))

    async def freeze(self, request: web.Request) -> web.Response:
        return await self._write(request, schemas.parse_freeze)

    async def consume(self, request: web.Request) -> web.Response:
        return await self._write(request, schemas.parse_consume)

    async def unfreeze(self, request: web.Request) -> web.Response:
        return await self._write(request, schemas.parse_unfreeze)

    async def deduct(self, request: web.Request) -> web.Response:
        return await self._write(request, schemas.parse_deduct)

    async def _write(self, request: web.Request, parse: Parser) -> web.Response:
        """Auth (401) -> body -> parse (400) -> runtime; the shared shape of the billing writes."""
        runtime = self._runtime
        project = authenticate(request, runtime)
        body = await request.read()
        return await self._submit(parse(body, project))

    async def customer(self, request: web.Request) -> web.Response:
        """GET /v1/customers/{id} and GET /v1/customers/{id}/ledger, routed on the raw path."""
        runtime = self._runtime
        project = authenticate(request, runtime)
        path, _, raw_query = request.raw_path.partition("?")
        if not path.startswith(CUSTOMERS_PREFIX):  # e.g. a prefix spelled with %-escapes
            raise _not_found()
        tail = path[len(CUSTOMERS_PREFIX) :]
        is_ledger = tail.endswith(_LEDGER_SUFFIX)
        raw_id = tail[: -len(_LEDGER_SUFFIX)] if is_ledger else tail
        if "/" in raw_id:
            raise _not_found()
        customer_id = schemas.decode_path_id(raw_id)
        if not is_ledger:
            result: Any = await runtime.get_customer(project, customer_id)
        else:
            query = schemas.parse_ledger_query(raw_query)
            result = await runtime.get_ledger(
                project,
                customer_id,
                limit=query.limit,
                cursor=query.cursor,
                operation_type=query.operation_type,
                transaction_id=query.transaction_id,
            )
        if type(result) is Rejected:
            raise _rejected(result)
        return _ok(result)

    async def health(self, request: web.Request) -> web.Response:
        """200 {"status": "ok"} once recovery is done and writes are accepted; no auth."""
        if self._runtime.ready:
            return web.Response(body=_HEALTH_OK, content_type=_JSON)
        raise HttpError("not_ready", "not ready: recovering, shutting down or storage failed")
