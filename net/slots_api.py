"""The slot routes (velobase-api §1A.8, CONTRACT §8.2-§8.4): typed request Structs, parsing, handlers.

    POST /v1/slot/grant | /revoke   SlotGrantRequest  -> SlotPoolResponse
    POST /v1/slot/claim             SlotClaimRequest  -> SlotHoldingResponse
    POST /v1/slot/release           SlotReleaseRequest -> SlotHoldingResponse
    GET  /v1/slot/customer/{customer_id}?wallet=          -> SlotPoolsResponse
    GET  /v1/slot/events/{customer_id}?limit&cursor&wallet&resource_id&types&sources&from_at&to_at
                                                          -> SlotEventPage

Every handler: auth (401) -> parse (400) -> runtime (404/400/409 from the engine, or 200).
`source` defaults to "default" on every write (release included: a pool is (wallet, source)).
The customer id in a GET path is routed on the raw path and percent-decoded once (CONTRACT §3.2).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Protocol

import msgspec
from aiohttp import web

from engine.core import slot_queries
from engine.core.commands import Command, SlotClaim, SlotGrant, SlotRelease, SlotRevoke
from engine.core.limits import (
    AMOUNT_MAX,
    DESCRIPTION_LENGTH_MAX,
    ID_LENGTH_MAX,
    SLOT_TTL_S_MAX,
)
from engine.core.results import Applied, Rejected
from engine.core.state import SLOT_EVENT_TYPES, LedgerState
from net import hosted_parse as hp
from net.auth import authenticate
from net.errors import ClientError, HttpError
from net.schemas import decode_path_id

Id = Annotated[str, msgspec.Meta(max_length=ID_LENGTH_MAX)]  # emptiness: `*_required` codes, checked after
Description = Annotated[str, msgspec.Meta(max_length=DESCRIPTION_LENGTH_MAX)]
Amount = Annotated[int, msgspec.Meta(ge=1, le=AMOUNT_MAX)]


class SlotGrantRequest(hp.Request):
    """POST /v1/slot/grant and /v1/slot/revoke. `amount` is Any on the wire so `2.0` counts as 2
    (CONTRACT §7.6); the OpenAPI document shows it as the integer it must be."""

    customer_id: Id | None = None
    wallet: Id | None = None
    amount: Any = None
    source: Id | None = None
    idempotency_key: Id | None = None
    description: Description | None = None


class SlotClaimRequest(hp.Request):
    customer_id: Id | None = None
    wallet: Id | None = None
    resource_id: Id | None = None
    source: Id | None = None
    amount: Any = None  # default 1
    description: Description | None = None
    ttl_seconds: Any = None  # 1..86,400, beyond the record (CONTRACT §8.3)


class SlotReleaseRequest(hp.Request):
    customer_id: Id | None = None
    wallet: Id | None = None
    resource_id: Id | None = None
    source: Id | None = None


_CODES: Final = {
    "customer_id": "invalid_identifier",
    "wallet": "invalid_identifier",
    "resource_id": "invalid_identifier",
    "source": "invalid_identifier",
    "idempotency_key": "invalid_identifier",
    "description": "invalid_description",
}
_grant_decoder = msgspec.json.Decoder(SlotGrantRequest, float_hook=hp.Decimal)
_claim_decoder = msgspec.json.Decoder(SlotClaimRequest, float_hook=hp.Decimal)
_release_decoder = msgspec.json.Decoder(SlotReleaseRequest, float_hook=hp.Decimal)


def _pool_key(req: SlotGrantRequest | SlotClaimRequest | SlotReleaseRequest) -> ClientError | None:
    return (
        hp.required_id(req.customer_id, "customer_id", "customer_id_required")
        or hp.required_id(req.wallet, "wallet", "wallet_required")
        or hp.optional_id(req.source, "source")
    )


def parse_capacity(body: bytes, project: str, at_ms: int, revoke: bool) -> SlotGrant | SlotRevoke | ClientError:
    """POST /v1/slot/grant (revoke=False) or /v1/slot/revoke (revoke=True)."""
    req = hp.decode(_grant_decoder, body, _CODES)
    if type(req) is ClientError:
        return req
    error = _pool_key(req) or hp.optional_id(req.idempotency_key, "idempotency_key")
    if error is not None:
        return error
    amount = hp.integer(req.amount, "amount", AMOUNT_MAX, "amount_must_be_positive")
    if not isinstance(amount, int):
        return amount
    kind = SlotRevoke if revoke else SlotGrant
    return kind(
        at_ms=at_ms, project=project, customer_id=req.customer_id, wallet=req.wallet,
        source=req.source or "default", amount=amount, idempotency_key=req.idempotency_key,
        description=req.description,
    )  # fmt: skip


def parse_claim(body: bytes, project: str, at_ms: int) -> SlotClaim | ClientError:
    req = hp.decode(_claim_decoder, body, _CODES)
    if type(req) is ClientError:
        return req
    error = _pool_key(req) or hp.required_id(req.resource_id, "resource_id", "resource_id_required")
    if error is not None:
        return error
    amount = 1 if req.amount is None else hp.integer(req.amount, "amount", AMOUNT_MAX, "amount_must_be_positive")
    if type(amount) is ClientError:
        return amount
    ttl_s = None
    if req.ttl_seconds is not None:
        ttl_s = hp.integer(req.ttl_seconds, "ttl_seconds", SLOT_TTL_S_MAX, "invalid_ttl_seconds")
        if type(ttl_s) is ClientError:
            return ClientError("invalid_ttl_seconds", f"ttl_seconds must be an integer from 1 to {SLOT_TTL_S_MAX}",
                {"field": "ttl_seconds"},
            )  # fmt: skip
    return SlotClaim(
        at_ms=at_ms, project=project, customer_id=req.customer_id, wallet=req.wallet,  # type: ignore[arg-type]
        source=req.source or "default", resource_id=req.resource_id, amount=amount,  # type: ignore[arg-type]
        description=req.description, ttl_s=ttl_s,  # type: ignore[arg-type]
    )  # fmt: skip


def parse_release(body: bytes, project: str, at_ms: int) -> SlotRelease | ClientError:
    req = hp.decode(_release_decoder, body, _CODES)
    if type(req) is ClientError:
        return req
    error = _pool_key(req) or hp.required_id(req.resource_id, "resource_id", "resource_id_required")
    if error is not None:
        return error
    return SlotRelease(
        at_ms=at_ms, project=project, customer_id=req.customer_id, wallet=req.wallet,  # type: ignore[arg-type]
        source=req.source or "default", resource_id=req.resource_id,  # type: ignore[arg-type]
    )  # fmt: skip


# -- GET queries ----------------------------------------------------------------------------------

_POOLS_PARAMS: Final = {"wallet": "invalid_identifier"}
_EVENTS_PARAMS: Final = {
    "limit": "invalid_limit",
    "cursor": "invalid_cursor",
    "wallet": "invalid_identifier",
    "resource_id": "invalid_identifier",
    "types": "invalid_event_type",
    "sources": "invalid_identifier",
    "from_at": "invalid_from_at",
    "to_at": "invalid_to_at",
}


class SlotEventsQuery(msgspec.Struct, frozen=True, gc=False):
    limit: int
    cursor: str | None
    wallet: str | None
    resource_id: str | None
    types: frozenset[str] | None
    sources: frozenset[str] | None
    from_ms: int | None
    to_ms: int | None


def parse_events_query(raw_query: str) -> SlotEventsQuery | ClientError:
    values = hp.query_values(raw_query, _EVENTS_PARAMS)
    if type(values) is ClientError:
        return values
    assert isinstance(values, dict)
    parts = (
        hp.page_limit(values.get("limit")),
        hp.cursor(values.get("cursor")),
        hp.optional_id(values.get("wallet"), "wallet") or values.get("wallet"),
        hp.optional_id(values.get("resource_id"), "resource_id") or values.get("resource_id"),
        hp.comma_list(values.get("types"), "types", "invalid_event_type", SLOT_EVENT_TYPES),
        hp.comma_list(values.get("sources"), "sources", "invalid_identifier"),
        hp.instant(values.get("from_at"), "from_at"),
        hp.instant(values.get("to_at"), "to_at"),
    )
    for part in parts:
        if type(part) is ClientError:
            return part
    return SlotEventsQuery(*parts)  # type: ignore[arg-type]


# -- handlers -------------------------------------------------------------------------------------


class Runtime(Protocol):
    """What these routes need from engine.runtime.Runtime."""

    def clock_ms(self) -> int: ...

    def authenticate(self, api_key: str) -> str | Rejected: ...

    async def submit(self, command: Command) -> Applied | Rejected: ...

    async def read(self, project: str, customer_id: str, view: Any) -> Any: ...


_encoder = msgspec.json.Encoder()


def ok(body: Any) -> web.Response:
    return web.Response(body=_encoder.encode(body), content_type="application/json")


def raise_if_error(value: Any) -> None:
    if type(value) is ClientError:
        raise value
    if type(value) is Rejected:
        raise HttpError(value.code, value.message, value.details)


def path_id(request: web.Request, prefix: str) -> tuple[str, str]:
    """(customer_id decoded once, raw query) of GET `prefix{customer_id}`; 404 when the raw tail
    holds a literal `/` (an id with `/` arrives as %2F)."""
    path, _, raw_query = request.raw_path.partition("?")
    if not path.startswith(prefix) or "/" in path[len(prefix) :]:
        raise ClientError("not_found", "no such route")
    customer_id = decode_path_id(path[len(prefix) :])
    raise_if_error(customer_id)
    return customer_id, raw_query  # type: ignore[return-value]


async def submit(runtime: Runtime, command: Any) -> web.Response:
    raise_if_error(command)
    result = await runtime.submit(command)
    raise_if_error(result)
    assert type(result) is Applied
    return ok(result.body)


class SlotHandlers:
    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def grant(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        body = await request.read()
        return await submit(self._runtime, parse_capacity(body, project, self._runtime.clock_ms(), False))

    async def revoke(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        body = await request.read()
        return await submit(self._runtime, parse_capacity(body, project, self._runtime.clock_ms(), True))

    async def claim(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        body = await request.read()
        return await submit(self._runtime, parse_claim(body, project, self._runtime.clock_ms()))

    async def release(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        body = await request.read()
        return await submit(self._runtime, parse_release(body, project, self._runtime.clock_ms()))

    async def pools(self, request: web.Request) -> web.Response:
        """GET /v1/slot/customer/{customer_id}[?wallet=]"""
        project = authenticate(request, self._runtime)
        customer_id, raw_query = path_id(request, CUSTOMER_PREFIX)
        values = hp.query_values(raw_query, _POOLS_PARAMS)
        raise_if_error(values)
        wallet = values.get("wallet")  # type: ignore[union-attr]
        raise_if_error(hp.optional_id(wallet, "wallet"))

        def view(state: LedgerState, now_ms: int) -> Any:
            return slot_queries.slot_pools(state, project, customer_id, wallet)

        return ok(await self._runtime.read(project, customer_id, view))

    async def events(self, request: web.Request) -> web.Response:
        """GET /v1/slot/events/{customer_id}"""
        project = authenticate(request, self._runtime)
        customer_id, raw_query = path_id(request, EVENTS_PREFIX)
        q = parse_events_query(raw_query)
        raise_if_error(q)
        assert isinstance(q, SlotEventsQuery)

        def view(state: LedgerState, now_ms: int) -> Any:
            return slot_queries.slot_events(
                state, project, customer_id, limit=q.limit, cursor=q.cursor, wallet=q.wallet,
                resource_id=q.resource_id, types=q.types, sources=q.sources, from_ms=q.from_ms, to_ms=q.to_ms,
            )  # fmt: skip

        result = await self._runtime.read(project, customer_id, view)
        raise_if_error(result)
        return ok(result)


CUSTOMER_PREFIX: Final = "/v1/slot/customer/"
EVENTS_PREFIX: Final = "/v1/slot/events/"


def slot_routes(runtime: Runtime) -> list[web.RouteDef]:
    """The slot block of the route table (net/app.py)."""
    h = SlotHandlers(runtime)
    return [
        web.post("/v1/slot/grant", h.grant),
        web.post("/v1/slot/revoke", h.revoke),
        web.post("/v1/slot/claim", h.claim),
        web.post("/v1/slot/release", h.release),
        web.get(CUSTOMER_PREFIX + "{tail:.+}", h.pools),
        web.get(EVENTS_PREFIX + "{tail:.+}", h.events),
    ]
