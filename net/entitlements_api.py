"""The entitlement routes (velobase-api §1A.9, CONTRACT §8.5): typed request Structs, parsing, handlers.

    POST /v1/entitlement/set      EntitlementSetRequest    -> EntitlementSetResponse
    POST /v1/entitlement/remove   EntitlementRemoveRequest -> EntitlementRemoveResponse
    GET  /v1/entitlement/{customer_id}?feature_keys=a,b&include_expired=true -> EntitlementListResponse
    GET  /v1/entitlement/{customer_id}/events?feature_key&types&from_at&to_at&cursor&limit
                                                            -> EntitlementEventPage
    GET  /v1/entitlement/{customer_id}/{feature_key}        -> EntitlementGetResponse

The GETs share one catch-all route on the raw path: split on literal `/` (ids holding `/` arrive
as %2F), each segment percent-decoded once. A second segment spelled literally `events` is the
events list; a feature named "events" is still reachable as `%65vents` (decoded: "events"), since
the route decision is made on the raw segment (CONTRACT §8.5: /events wins).

Bodies are decoded by net/schemas.py's `decode_request` with this module's `CODES`. Shape errors,
400 with details.field: invalid_json, unknown_field; customer_id_required, feature_key_required
(missing, null, empty or blank); value_required (missing or null); invalid_identifier;
entitlement_validation_error (value not a string or over 4,096 characters); invalid_valid_from,
invalid_valid_until (RFC 3339 with an offset), invalid_datetime_range; invalid_description;
invalid_metadata. Queries: unknown_field, invalid_identifier, invalid_include_expired,
invalid_limit, invalid_cursor, invalid_event_type, invalid_from_at, invalid_to_at.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from engine.core.reads import AnyRead, EntitlementEvents, EntitlementGet, EntitlementList
from engine.core.commands import EntitlementRemove, EntitlementSet
from engine.core.limits import ENTITLEMENT_VALUE_LENGTH_MAX, FEATURE_KEYS_COUNT_MAX
from engine.core.state import ENTITLEMENT_EVENT_TYPES
from net import hosted_parse as hp
from net.auth import authenticate
from net.errors import ClientError
from net.handlers import Runtime
from net.schemas import (
    BILLING_CODES,
    ID,
    Description,
    FieldCodes,
    Metadata,
    TimeText,
    decode_metadata,
    decode_path_id,
    decode_request,
    parse_time_ms,
    query_values,
)
from net.slots_api import ok, raise_if_rejected, submit

_CUSTOMER_ID = Annotated[str, ID, hp.about("The customer (must exist for set and remove).")]
_FEATURE_KEY = Annotated[str, ID, hp.about("The feature.")]
Value = Annotated[str, msgspec.Meta(max_length=ENTITLEMENT_VALUE_LENGTH_MAX, description="Any string (CONTRACT §8.1).")]


class EntitlementSetRequest(hp.Request):
    """POST /v1/entitlement/set (CONTRACT §8.5): upsert; valid_until must be after valid_from."""

    customer_id: _CUSTOMER_ID
    feature_key: _FEATURE_KEY
    value: Value
    valid_from: TimeText | None = None
    valid_until: TimeText | None = None
    source: Annotated[str, ID, hp.about("Who set it.")] | None = None
    description: Description | None = None
    metadata: Metadata | UnsetType = UNSET


class EntitlementRemoveRequest(hp.Request):
    """POST /v1/entitlement/remove (CONTRACT §8.5)."""

    customer_id: _CUSTOMER_ID
    feature_key: _FEATURE_KEY


REQUEST_STRUCTS: Final = (EntitlementSetRequest, EntitlementRemoveRequest)
CODES: Final = FieldCodes(
    fields={
        **BILLING_CODES.fields,
        "feature_key": "invalid_identifier",
        "value": "entitlement_validation_error",
        "valid_from": "invalid_valid_from",
        "valid_until": "invalid_valid_until",
    },
    required={"customer_id": "customer_id_required", "feature_key": "feature_key_required", "value": "value_required"},
    lenient=frozenset(),
)
_set_decoder = msgspec.json.Decoder(EntitlementSetRequest)
_remove_decoder = msgspec.json.Decoder(EntitlementRemoveRequest)


def parse_set(body: bytes, project: str) -> EntitlementSet:
    """POST /v1/entitlement/set -> EntitlementSet (at_ms=0; times UTC ms). Raises ClientError (400);
    valid_until <= valid_from -> invalid_datetime_range."""
    req: EntitlementSetRequest = decode_request(_set_decoder, body, CODES)
    valid_from = parse_time_ms(req.valid_from, "valid_from")
    valid_until = parse_time_ms(req.valid_until, "valid_until")
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise ClientError("invalid_datetime_range", "valid_until must be after valid_from", {"field": "valid_until"})
    return EntitlementSet(
        at_ms=0, project=project, customer_id=req.customer_id, feature_key=req.feature_key, value=req.value,
        valid_from_ms=valid_from, valid_until_ms=valid_until, source=req.source, description=req.description,
        metadata=decode_metadata(req.metadata),
    )  # fmt: skip


def parse_remove(body: bytes, project: str) -> EntitlementRemove:
    """POST /v1/entitlement/remove -> EntitlementRemove (at_ms=0). Raises ClientError (400)."""
    req: EntitlementRemoveRequest = decode_request(_remove_decoder, body, CODES)
    return EntitlementRemove(at_ms=0, project=project, customer_id=req.customer_id, feature_key=req.feature_key)


# -- GET queries ----------------------------------------------------------------------------------

LIST_PARAMS: Final = {"feature_keys": "invalid_identifier", "include_expired": "invalid_include_expired"}
EVENTS_PARAMS: Final = {**hp.EVENT_PAGE_CODES, "feature_key": "invalid_identifier"}


def parse_list_query(raw_query: str) -> tuple[frozenset[str] | None, bool]:
    """(feature_keys, include_expired) of the list. `feature_keys`: 1..FEATURE_KEYS_COUNT_MAX
    identifiers, comma-separated (the comma may be %2C); include_expired: `true` or `false`.
    Raises ClientError (unknown_field, invalid_identifier, invalid_include_expired)."""
    values = query_values(raw_query, LIST_PARAMS)
    keys = hp.comma_list(values.get("feature_keys"), "feature_keys", "invalid_identifier")
    if keys is not None and len(keys) > FEATURE_KEYS_COUNT_MAX:
        raise ClientError("invalid_identifier", f"at most {FEATURE_KEYS_COUNT_MAX} feature_keys", {"field": "feature_keys"})
    flag = values.get("include_expired", "false")
    if flag not in ("true", "false"):
        raise ClientError("invalid_include_expired", "include_expired must be true or false", {"field": "include_expired"})
    return keys, flag == "true"


class EntitlementEventsQuery(msgspec.Struct, frozen=True, gc=False):
    """The filters of GET /v1/entitlement/{customer_id}/events (CONTRACT §8.5); times UTC ms."""

    page: hp.EventPage
    feature_key: str | None
    types: frozenset[str] | None


def parse_events_query(raw_query: str) -> EntitlementEventsQuery:
    """Raises ClientError (unknown_field, invalid_limit, invalid_cursor, invalid_identifier,
    invalid_event_type, invalid_from_at, invalid_to_at)."""
    values = query_values(raw_query, EVENTS_PARAMS)
    return EntitlementEventsQuery(
        page=hp.event_page(values),
        feature_key=hp.optional_id(values.get("feature_key"), "feature_key"),
        types=hp.comma_list(values.get("types"), "types", "invalid_event_type", ENTITLEMENT_EVENT_TYPES),
    )


# -- handlers -------------------------------------------------------------------------------------

PREFIX: Final = "/v1/entitlement/"
_EVENTS: Final = "events"


class EntitlementHandlers:
    """The entitlement endpoints: auth (401) -> parse (400) -> runtime (404 or 200)."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def bind(self, runtime: Runtime) -> None:
        """Serve from `runtime` from the next request on (net/app.py open_app, after recovery)."""
        self._runtime = runtime

    async def set(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        return await submit(self._runtime, parse_set(await request.read(), project))

    async def remove(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        return await submit(self._runtime, parse_remove(await request.read(), project))

    async def get(self, request: web.Request) -> web.Response:
        """GET /v1/entitlement/{customer_id}[/events | /{feature_key}], on the raw path: the
        list, the events page, or one entitlement (`{"entitlement": null}` when none is set)."""
        project = authenticate(request, self._runtime)
        path, _, raw_query = request.raw_path.partition("?")
        if not path.startswith(PREFIX):
            raise ClientError("not_found", "no such route")
        segments = path[len(PREFIX) :].split("/")
        if len(segments) > 2:
            raise ClientError("not_found", "no such route")
        customer_id = decode_path_id(segments[0])
        if len(segments) == 1:
            view = self._list_view(project, customer_id, raw_query)
        elif segments[1] == _EVENTS:
            view = self._events_view(project, customer_id, raw_query)
        else:
            view = self._get_view(project, customer_id, segments[1], raw_query)
        result = await self._runtime.read(project, customer_id, view)
        raise_if_rejected(result)
        return ok(result)

    def _list_view(self, project: str, customer_id: str, raw_query: str) -> AnyRead:
        feature_keys, include_expired = parse_list_query(raw_query)
        return EntitlementList(project, customer_id, feature_keys=feature_keys, include_expired=include_expired)

    def _events_view(self, project: str, customer_id: str, raw_query: str) -> AnyRead:
        q = parse_events_query(raw_query)
        return EntitlementEvents(
            project, customer_id, limit=q.page.limit, cursor=q.page.cursor, feature_key=q.feature_key,
            types=q.types, from_ms=q.page.from_ms, to_ms=q.page.to_ms,
        )  # fmt: skip

    def _get_view(self, project: str, customer_id: str, raw_key: str, raw_query: str) -> AnyRead:
        query_values(raw_query, {})  # no parameters: a typo is unknown_field
        feature_key = decode_path_id(raw_key, "feature_key", "feature_key_required")
        return EntitlementGet(project, customer_id, feature_key=feature_key)


def entitlement_routes(h: EntitlementHandlers) -> list[web.RouteDef]:
    """The entitlement block of the route table (net/app.py). The static POSTs come first."""
    return [
        web.post(PREFIX + "set", h.set),
        web.post(PREFIX + "remove", h.remove),
        web.get(PREFIX + "{tail:.+}", h.get),
    ]
