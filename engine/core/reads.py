"""Named reads of one customer (CONTRACT §8.2-§8.5): the pure views net/ asks Runtime.read for.

Each read is a frozen msgspec Struct holding its arguments and callable as `read(state, now_ms)`,
so `engine.runtime.Runtime.read(project, customer_id, read)` runs it as any view, and, being data,
it can cross a process boundary (net/ipc.py: a front asks the ledger process for it by name).

    SlotPools          GET /v1/slot/customer/{id}         -> SlotPoolsResponse
    SlotEvents         GET /v1/slot/events/{id}           -> SlotEventPage | Rejected
    EntitlementList    GET /v1/entitlement/{id}           -> EntitlementListResponse
    EntitlementEvents  GET /v1/entitlement/{id}/events    -> EntitlementEventPage | Rejected
    EntitlementGet     GET /v1/entitlement/{id}/{key}     -> EntitlementGetResponse
    OpenFreezes        GET /v1/customers/{id}/freezes     -> FreezePage | Rejected (beyond the record)
Times are UTC ms; `limit` / `cursor` as the query modules take them.
"""

from typing import Any

import msgspec

from engine.core import entitlement_queries, freeze_queries, slot_queries
from engine.core.state import LedgerState


class NamedRead(msgspec.Struct, tag_field="read", array_like=True, frozen=True, forbid_unknown_fields=True):
    """Base of every named read: `project` and `customer_id` say whose state it shows."""

    project: str
    customer_id: str

    def __call__(self, state: LedgerState, now_ms: int) -> Any:
        raise NotImplementedError


class SlotPools(NamedRead, tag="slot_pools", frozen=True):
    wallet: str | None

    def __call__(self, state: LedgerState, now_ms: int) -> Any:
        return slot_queries.slot_pools(state, self.project, self.customer_id, self.wallet)


class SlotEvents(NamedRead, tag="slot_events", frozen=True):
    limit: int
    cursor: str | None
    wallet: str | None
    resource_id: str | None
    types: frozenset[str] | None
    sources: frozenset[str] | None
    from_ms: int | None
    to_ms: int | None

    def __call__(self, state: LedgerState, now_ms: int) -> Any:
        return slot_queries.slot_events(
            state, self.project, self.customer_id, limit=self.limit, cursor=self.cursor, wallet=self.wallet,
            resource_id=self.resource_id, types=self.types, sources=self.sources, from_ms=self.from_ms,
            to_ms=self.to_ms,
        )  # fmt: skip


class EntitlementList(NamedRead, tag="entitlement_list", frozen=True):
    feature_keys: frozenset[str] | None
    include_expired: bool

    def __call__(self, state: LedgerState, now_ms: int) -> Any:
        return entitlement_queries.entitlement_list(
            state, self.project, self.customer_id, now_ms, feature_keys=self.feature_keys,
            include_expired=self.include_expired,
        )  # fmt: skip


class EntitlementEvents(NamedRead, tag="entitlement_events", frozen=True):
    limit: int
    cursor: str | None
    feature_key: str | None
    types: frozenset[str] | None
    from_ms: int | None
    to_ms: int | None

    def __call__(self, state: LedgerState, now_ms: int) -> Any:
        return entitlement_queries.entitlement_events(
            state, self.project, self.customer_id, limit=self.limit, cursor=self.cursor,
            feature_key=self.feature_key, types=self.types, from_ms=self.from_ms, to_ms=self.to_ms,
        )  # fmt: skip


class EntitlementGet(NamedRead, tag="entitlement_get", frozen=True):
    feature_key: str

    def __call__(self, state: LedgerState, now_ms: int) -> Any:
        return entitlement_queries.entitlement_get(state, self.project, self.customer_id, self.feature_key)


class OpenFreezes(NamedRead, tag="open_freezes", frozen=True):
    limit: int
    cursor: str | None

    def __call__(self, state: LedgerState, now_ms: int) -> Any:
        return freeze_queries.open_freezes(state, self.project, self.customer_id, limit=self.limit, cursor=self.cursor)


AnyRead = SlotPools | SlotEvents | EntitlementList | EntitlementEvents | EntitlementGet | OpenFreezes
