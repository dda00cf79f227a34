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

Bodies are decoded by net/schemas.py's `decode_request` with this module's `CODES` (units: amounts
in slots, `ttl_seconds` in seconds 1..86,400). Shape errors, 400 with details.field:
invalid_json, unknown_field; customer_id_required, wallet_required, resource_id_required (missing,
null, empty or blank); invalid_identifier; amount_must_be_positive, amount_too_large (> 2^53-1);
invalid_ttl_seconds; invalid_description. Queries: unknown_field, invalid_identifier,
invalid_limit, invalid_cursor, invalid_event_type, invalid_from_at, invalid_to_at.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from aiohttp import web

from engine.core.reads import SlotEvents, SlotPools
from engine.core.commands import Command, SlotClaim, SlotGrant, SlotRelease, SlotRevoke
from engine.core.limits import SLOT_TTL_S_MAX
from engine.core.results import Applied, Rejected
from engine.core.state import SLOT_EVENT_TYPES
from net import hosted_parse as hp
from net.auth import authenticate
from net.errors import ClientError, HttpError
from net.handlers import Runtime
from net.schemas import BILLING_CODES, ID, Amount, Description, FieldCodes, decode_path_id, decode_request, query_values

_NUMBER_TEXT: Final = " An integral JSON number (2, 2.0 and 2e0 are all 2)."
Ttl = Annotated[int, msgspec.Meta(ge=1, le=SLOT_TTL_S_MAX, description="Release the holding automatically after "
                                  "this many seconds (beyond the record, CONTRACT §8.3)." + _NUMBER_TEXT)]  # fmt: skip
_CUSTOMER_ID = Annotated[str, ID, hp.about("The customer.")]
_WALLET = Annotated[str, ID, hp.about("The pool's wallet.")]
_SOURCE = Annotated[str, ID, hp.about("The pool's source inside the wallet, default `default`.")]
_RESOURCE = Annotated[str, ID, hp.about("What holds the capacity (e.g. a job id).")]


class SlotGrantRequest(hp.Request):
    """POST /v1/slot/grant and /v1/slot/revoke (CONTRACT §8.2). `amount` in slots."""

    customer_id: _CUSTOMER_ID
    wallet: _WALLET
    amount: Amount
    source: _SOURCE | None = None
    idempotency_key: Annotated[str, ID, hp.about("Grant/revoke identity, one namespace per project.")] | None = None
    description: Description | None = None


class SlotClaimRequest(hp.Request):
    """POST /v1/slot/claim (CONTRACT §8.3): `amount` slots, default 1."""

    customer_id: _CUSTOMER_ID
    wallet: _WALLET
    resource_id: _RESOURCE
    source: _SOURCE | None = None
    amount: Amount | None = None
    description: Description | None = None
    ttl_seconds: Ttl | None = None


class SlotReleaseRequest(hp.Request):
    """POST /v1/slot/release (CONTRACT §8.3)."""

    customer_id: _CUSTOMER_ID
    wallet: _WALLET
    resource_id: _RESOURCE
    source: _SOURCE | None = None


REQUEST_STRUCTS: Final = (SlotGrantRequest, SlotClaimRequest, SlotReleaseRequest)
# The billing table (customer_id, wallet, source, idempotency_key, amount, description) plus the
# slot fields; here `wallet` and `resource_id` are required.
CODES: Final = FieldCodes(
    fields={**BILLING_CODES.fields, "resource_id": "invalid_identifier", "ttl_seconds": "invalid_ttl_seconds"},
    required={"customer_id": "customer_id_required", "wallet": "wallet_required", "resource_id": "resource_id_required"},
    lenient=frozenset({"amount", "ttl_seconds"}),
)
_grant_decoder = msgspec.json.Decoder(SlotGrantRequest)
_claim_decoder = msgspec.json.Decoder(SlotClaimRequest)
_release_decoder = msgspec.json.Decoder(SlotReleaseRequest)


def parse_capacity(body: bytes, project: str, revoke: bool) -> SlotGrant | SlotRevoke:
    """POST /v1/slot/grant (revoke=False) or /v1/slot/revoke (revoke=True) -> the command
    (at_ms=0: the runtime stamps it on its shard). Raises ClientError (400)."""
    req: SlotGrantRequest = decode_request(_grant_decoder, body, CODES)
    kind = SlotRevoke if revoke else SlotGrant
    return kind(
        at_ms=0, project=project, customer_id=req.customer_id, wallet=req.wallet,
        source=req.source or "default", amount=req.amount, idempotency_key=req.idempotency_key,
        description=req.description,
    )  # fmt: skip


def parse_claim(body: bytes, project: str) -> SlotClaim:
    """POST /v1/slot/claim -> SlotClaim (at_ms=0). Raises ClientError (400)."""
    req: SlotClaimRequest = decode_request(_claim_decoder, body, CODES)
    return SlotClaim(
        at_ms=0, project=project, customer_id=req.customer_id, wallet=req.wallet,
        source=req.source or "default", resource_id=req.resource_id, amount=req.amount or 1,
        description=req.description, ttl_s=req.ttl_seconds,
    )  # fmt: skip


def parse_release(body: bytes, project: str) -> SlotRelease:
    """POST /v1/slot/release -> SlotRelease (at_ms=0). Raises ClientError (400)."""
    req: SlotReleaseRequest = decode_request(_release_decoder, body, CODES)
    return SlotRelease(
        at_ms=0, project=project, customer_id=req.customer_id, wallet=req.wallet,
        source=req.source or "default", resource_id=req.resource_id,
    )  # fmt: skip


# -- GET queries ----------------------------------------------------------------------------------

POOLS_PARAMS: Final = {"wallet": "invalid_identifier"}
EVENTS_PARAMS: Final = {
    **hp.EVENT_PAGE_CODES,
    "wallet": "invalid_identifier",
    "resource_id": "invalid_identifier",
    "sources": "invalid_identifier",
}


class SlotEventsQuery(msgspec.Struct, frozen=True, gc=False):
    """The filters of GET /v1/slot/events/{customer_id} (CONTRACT §8.4); times UTC ms."""

    page: hp.EventPage
    wallet: str | None
    resource_id: str | None
    types: frozenset[str] | None
    sources: frozenset[str] | None


def parse_events_query(raw_query: str) -> SlotEventsQuery:
    """The raw query of the slot events page. Raises ClientError (unknown_field, invalid_limit,
    invalid_cursor, invalid_identifier, invalid_event_type, invalid_from_at, invalid_to_at)."""
    values = query_values(raw_query, EVENTS_PARAMS)
    return SlotEventsQuery(
        page=hp.event_page(values),
        wallet=hp.optional_id(values.get("wallet"), "wallet"),
        resource_id=hp.optional_id(values.get("resource_id"), "resource_id"),
        types=hp.comma_list(values.get("types"), "types", "invalid_event_type", SLOT_EVENT_TYPES),
        sources=hp.comma_list(values.get("sources"), "sources", "invalid_identifier"),
    )


# -- handlers -------------------------------------------------------------------------------------


_encoder = msgspec.json.Encoder()


def ok(body: Any) -> web.Response:
    """200 with the msgspec-encoded body."""
    return web.Response(body=_encoder.encode(body), content_type="application/json")


def raise_if_rejected(value: Any) -> None:
    """An engine Rejected (404/400/409) -> the HttpError net.errors.exception_response turns into the envelope."""
    if type(value) is Rejected:
        raise HttpError(value.code, value.message, value.details)


def path_id(request: web.Request, prefix: str) -> tuple[str, str]:
    """(customer_id decoded once, raw query) of GET `prefix{customer_id}`; 404 when the raw tail
    holds a literal `/` (an id with `/` arrives as %2F). Raises ClientError."""
    path, _, raw_query = request.raw_path.partition("?")
    if not path.startswith(prefix) or "/" in path[len(prefix) :]:
        raise ClientError("not_found", "no such route")
    return decode_path_id(path[len(prefix) :]), raw_query


async def submit(runtime: Runtime, command: Command) -> web.Response:
    """Apply `command`: 200 with its body, or the engine's refusal raised."""
    result = await runtime.submit(command)
    raise_if_rejected(result)
    assert type(result) is Applied
    return ok(result.body)


class SlotHandlers:
    """The slot endpoints: auth (401) -> parse (400) -> runtime (404/400/409 or 200)."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def bind(self, runtime: Runtime) -> None:
        """Serve from `runtime` from the next request on (net/app.py open_app, after recovery)."""
        self._runtime = runtime

    async def grant(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        return await submit(self._runtime, parse_capacity(await request.read(), project, False))

    async def revoke(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        return await submit(self._runtime, parse_capacity(await request.read(), project, True))

    async def claim(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        return await submit(self._runtime, parse_claim(await request.read(), project))

    async def release(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        return await submit(self._runtime, parse_release(await request.read(), project))

    async def pools(self, request: web.Request) -> web.Response:
        """GET /v1/slot/customer/{customer_id}[?wallet=] -> SlotPoolsResponse (pools in creation
        order; an unknown customer has none)."""
        project = authenticate(request, self._runtime)
        customer_id, raw_query = path_id(request, CUSTOMER_PREFIX)
        wallet = hp.optional_id(query_values(raw_query, POOLS_PARAMS).get("wallet"), "wallet")

        return ok(await self._runtime.read(project, customer_id, SlotPools(project, customer_id, wallet=wallet)))

    async def events(self, request: web.Request) -> web.Response:
        """GET /v1/slot/events/{customer_id} -> SlotEventPage, newest first (CONTRACT §8.4)."""
        project = authenticate(request, self._runtime)
        customer_id, raw_query = path_id(request, EVENTS_PREFIX)
        q = parse_events_query(raw_query)

        view = SlotEvents(
            project, customer_id, limit=q.page.limit, cursor=q.page.cursor, wallet=q.wallet,
            resource_id=q.resource_id, types=q.types, sources=q.sources, from_ms=q.page.from_ms,
            to_ms=q.page.to_ms,
        )  # fmt: skip
        result = await self._runtime.read(project, customer_id, view)
        raise_if_rejected(result)
        return ok(result)


CUSTOMER_PREFIX: Final = "/v1/slot/customer/"
EVENTS_PREFIX: Final = "/v1/slot/events/"


def slot_routes(h: SlotHandlers) -> list[web.RouteDef]:
    """The slot block of the route table (net/app.py)."""
    return [
        web.post("/v1/slot/grant", h.grant),
        web.post("/v1/slot/revoke", h.revoke),
        web.post("/v1/slot/claim", h.claim),
        web.post("/v1/slot/release", h.release),
        web.get(CUSTOMER_PREFIX + "{tail:.+}", h.pools),
        web.get(EVENTS_PREFIX + "{tail:.+}", h.events),
    ]
