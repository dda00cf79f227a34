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
"""

from __future__ import annotations

from typing import Annotated, Any, Final
from urllib.parse import unquote

import msgspec
from aiohttp import web

from engine.core import entitlement_queries
from engine.core.commands import EntitlementRemove, EntitlementSet
from engine.core.limits import (
    DESCRIPTION_LENGTH_MAX,
    ENTITLEMENT_VALUE_LENGTH_MAX,
    FEATURE_KEYS_COUNT_MAX,
    ID_LENGTH_MAX,
)
from engine.core.state import ENTITLEMENT_EVENT_TYPES, LedgerState
from net import hosted_parse as hp
from net.auth import authenticate
from net.errors import ClientError
from net.schemas import decode_path_id
from net.slots_api import Runtime, ok, raise_if_error, submit

Id = Annotated[str, msgspec.Meta(max_length=ID_LENGTH_MAX)]
Description = Annotated[str, msgspec.Meta(max_length=DESCRIPTION_LENGTH_MAX)]
Value = Annotated[str, msgspec.Meta(max_length=ENTITLEMENT_VALUE_LENGTH_MAX)]
Instant = Annotated[str, msgspec.Meta(max_length=64)]


class EntitlementSetRequest(hp.Request):
    customer_id: Id | None = None
    feature_key: Id | None = None
    value: Value | None = None
    valid_from: Instant | None = None
    valid_until: Instant | None = None
    source: Id | None = None
    description: Description | None = None
    metadata: msgspec.Raw = hp.RAW_ABSENT


class EntitlementRemoveRequest(hp.Request):
    customer_id: Id | None = None
    feature_key: Id | None = None


_CODES: Final = {
    "customer_id": "invalid_identifier",
    "feature_key": "invalid_identifier",
    "source": "invalid_identifier",
    "value": "entitlement_validation_error",
    "valid_from": "invalid_valid_from",
    "valid_until": "invalid_valid_until",
    "description": "invalid_description",
}
_set_decoder = msgspec.json.Decoder(EntitlementSetRequest)
_remove_decoder = msgspec.json.Decoder(EntitlementRemoveRequest)


def parse_set(body: bytes, project: str, at_ms: int) -> EntitlementSet | ClientError:
    """POST /v1/entitlement/set. valid_until <= valid_from -> 400 invalid_datetime_range."""
    req = hp.decode(_set_decoder, body, _CODES)
    if type(req) is ClientError:
        return req
    error = (
        hp.required_id(req.customer_id, "customer_id", "customer_id_required")
        or hp.required_id(req.feature_key, "feature_key", "feature_key_required")
        or hp.optional_id(req.source, "source")
    )
    if error is not None:
        return error
    if req.value is None:
        return ClientError("value_required", "value is required (a string)", {"field": "value"})
    valid_from, valid_until = hp.instant(req.valid_from, "valid_from"), hp.instant(req.valid_until, "valid_until")
    for part in (valid_from, valid_until):
        if type(part) is ClientError:
            return part
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:  # type: ignore[operator]
        return ClientError("invalid_datetime_range", "valid_until must be after valid_from", {"field": "valid_until"})
    metadata = hp.metadata(req.metadata)
    if type(metadata) is ClientError:
        return metadata
    return EntitlementSet(
        at_ms=at_ms, project=project, customer_id=req.customer_id, feature_key=req.feature_key,  # type: ignore[arg-type]
        value=req.value, valid_from_ms=valid_from, valid_until_ms=valid_until, source=req.source,  # type: ignore[arg-type]
        description=req.description, metadata=metadata,  # type: ignore[arg-type]
    )  # fmt: skip


def parse_remove(body: bytes, project: str, at_ms: int) -> EntitlementRemove | ClientError:
    req = hp.decode(_remove_decoder, body, _CODES)
    if type(req) is ClientError:
        return req
    error = hp.required_id(req.customer_id, "customer_id", "customer_id_required") or hp.required_id(
        req.feature_key, "feature_key", "feature_key_required"
    )
    if error is not None:
        return error
    return EntitlementRemove(at_ms=at_ms, project=project, customer_id=req.customer_id, feature_key=req.feature_key)  # type: ignore[arg-type]


# -- GET queries ----------------------------------------------------------------------------------

_LIST_PARAMS: Final = {"feature_keys": "invalid_identifier", "include_expired": "invalid_include_expired"}
_EVENTS_PARAMS: Final = {
    "limit": "invalid_limit",
    "cursor": "invalid_cursor",
    "feature_key": "invalid_identifier",
    "types": "invalid_event_type",
    "from_at": "invalid_from_at",
    "to_at": "invalid_to_at",
}


def parse_list_query(raw_query: str) -> tuple[frozenset[str] | None, bool] | ClientError:
    """(feature_keys, include_expired). include_expired: `true` or `false` only."""
    values = hp.query_values(raw_query, _LIST_PARAMS)
    if type(values) is ClientError:
        return values
    assert isinstance(values, dict)
    text = values.get("feature_keys")
    keys = hp.comma_list(text, "feature_keys", "invalid_identifier")
    if type(keys) is ClientError:
        return keys
    if keys is not None and len(keys) > FEATURE_KEYS_COUNT_MAX:  # type: ignore[arg-type]
        return ClientError("invalid_identifier", f"at most {FEATURE_KEYS_COUNT_MAX} feature_keys", {"field": "feature_keys"})
    flag = values.get("include_expired", "false")
    if flag not in ("true", "false"):
        return ClientError("invalid_include_expired", "include_expired must be true or false", {"field": "include_expired"})
    return keys, flag == "true"  # type: ignore[return-value]


def parse_events_query(raw_query: str) -> tuple[Any, ...] | ClientError:
    """(limit, cursor, feature_key, types, from_ms, to_ms)."""
    values = hp.query_values(raw_query, _EVENTS_PARAMS)
    if type(values) is ClientError:
        return values
    assert isinstance(values, dict)
    parts = (
        hp.page_limit(values.get("limit")),
        hp.cursor(values.get("cursor")),
        hp.optional_id(values.get("feature_key"), "feature_key") or values.get("feature_key"),
        hp.comma_list(values.get("types"), "types", "invalid_event_type", ENTITLEMENT_EVENT_TYPES),
        hp.instant(values.get("from_at"), "from_at"),
        hp.instant(values.get("to_at"), "to_at"),
    )
    for part in parts:
        if type(part) is ClientError:
            return part
    return parts


# -- handlers -------------------------------------------------------------------------------------

PREFIX: Final = "/v1/entitlement/"
_EVENTS: Final = "events"


class EntitlementHandlers:
    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def set(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        body = await request.read()
        return await submit(self._runtime, parse_set(body, project, self._runtime.clock_ms()))

    async def remove(self, request: web.Request) -> web.Response:
        project = authenticate(request, self._runtime)
        body = await request.read()
        return await submit(self._runtime, parse_remove(body, project, self._runtime.clock_ms()))

    async def get(self, request: web.Request) -> web.Response:
        """GET /v1/entitlement/{customer_id}[/events | /{feature_key}], on the raw path."""
        project = authenticate(request, self._runtime)
        path, _, raw_query = request.raw_path.partition("?")
        if not path.startswith(PREFIX):
            raise ClientError("not_found", "no such route")
        segments = path[len(PREFIX) :].split("/")
        if len(segments) > 2:
            raise ClientError("not_found", "no such route")
        customer_id = decode_path_id(segments[0])
        raise_if_error(customer_id)
        assert isinstance(customer_id, str)
        if len(segments) == 1:
            view = self._list_view(project, customer_id, raw_query)
        elif segments[1] == _EVENTS:
            view = self._events_view(project, customer_id, raw_query)
        else:
            view = self._get_view(project, customer_id, segments[1], raw_query)
        result = await self._runtime.read(project, customer_id, view)
        raise_if_error(result)
        return ok(result)

    def _list_view(self, project: str, customer_id: str, raw_query: str) -> Any:
        parsed = parse_list_query(raw_query)
        raise_if_error(parsed)
        feature_keys, include_expired = parsed  # type: ignore[misc]

        def view(state: LedgerState, now_ms: int) -> Any:
            return entitlement_queries.entitlement_list(
                state, project, customer_id, now_ms, feature_keys=feature_keys, include_expired=include_expired
            )

        return view

    def _events_view(self, project: str, customer_id: str, raw_query: str) -> Any:
        parsed = parse_events_query(raw_query)
        raise_if_error(parsed)
        limit, cursor, feature_key, types, from_ms, to_ms = parsed  # type: ignore[misc]

        def view(state: LedgerState, now_ms: int) -> Any:
            return entitlement_queries.entitlement_events(
                state, project, customer_id, limit=limit, cursor=cursor, feature_key=feature_key, types=types,
                from_ms=from_ms, to_ms=to_ms,
            )  # fmt: skip

        return view

    def _get_view(self, project: str, customer_id: str, raw_key: str, raw_query: str) -> Any:
        raise_if_error(hp.query_values(raw_query, {}))  # no parameters: a typo is unknown_field
        try:
            feature_key = unquote(raw_key, errors="strict")
        except UnicodeDecodeError:
            raise hp.invalid_id("feature_key") from None
        raise_if_error(hp.required_id(feature_key, "feature_key", "feature_key_required"))

        def view(state: LedgerState, now_ms: int) -> Any:
            return entitlement_queries.entitlement_get(state, project, customer_id, feature_key)

        return view


def entitlement_routes(runtime: Runtime) -> list[web.RouteDef]:
    """The entitlement block of the route table (net/app.py). The static POSTs come first."""
    h = EntitlementHandlers(runtime)
    return [
        web.post(PREFIX + "set", h.set),
        web.post(PREFIX + "remove", h.remove),
        web.get(PREFIX + "{tail:.+}", h.get),
    ]
