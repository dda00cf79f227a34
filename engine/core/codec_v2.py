"""Snapshot layout 2: the state in a form msgspec decodes in C almost straight into the live
containers (issue 14: restart with 10^7 ledger entries in < 30 s). `engine.core.codec` writes this
layout and reads both (layout 1: engine/core/codec.py's StateSnap).

What differs from layout 1 (same records, same Structs; the digest is of the state, not of the
file, so it does not change):

- `version` is SNAPSHOT_LAYOUT (2), the first element of the top-level array, as in layout 1
  (where it is STATE_VERSION, 1): `codec.decode_state` tells the two apart by it.
- A project holds its keyed deposits as one msgpack map, idempotency key -> DepositRecord, in
  customer order and each customer's first-use order: msgspec decodes it into the final
  `ProjectState.deposit_records` dict; a customer holds only how many of them are its own
  (`deposit_count`) and takes them from that map in order.
- A project holds its bucket-owner index (`bucket_lsns`, `bucket_customers`) as two packed
  little-endian arrays: the bucket LSNs (int64) and, for each, its owner's position in
  `customers` (uint32). Restoring it is two C-level passes instead of gathering and sorting 10^7
  buckets.
- Buckets and entries decode as tuples: one of one is the live layout as is (CustomerState), more
  become the list the live layout holds.

Strings are shared after decoding (one object per distinct wallet, source and op) in bulk passes
over the whole project, not record by record.
"""

from __future__ import annotations

import sys
from array import array
from collections import deque
from itertools import islice, repeat
from operator import attrgetter
from typing import Any, Final, cast

import msgspec

from engine.core.state import (
    ApiKey,
    Bucket,
    CustomerExtras,
    CustomerState,
    DeductRecord,
    DepositRecord,
    Entitlement,
    EntitlementEvent,
    FreezeRecord,
    LedgerEntry,
    ProjectState,
    RefundRecord,
    SlotEvent,
    SlotKeyRecord,
    SlotPool,
    VoidRecord,
)

SNAPSHOT_LAYOUT: Final = 2
_LITTLE: Final = sys.byteorder == "little"

Txn = FreezeRecord | DeductRecord | RefundRecord | VoidRecord


class CustomerCoreSnap2(msgspec.Struct, array_like=True, gc=False):
    """A customer that never used slots or entitlements is written in this layout (five fewer
    nils than CustomerSnap2: this msgspec writes every field of an array_like Struct)."""

    customer_id: str
    created_at_ms: int
    name: str | None
    email: str | None
    metadata: dict[str, Any] | None
    last_lsn: int
    buckets: tuple[Bucket, ...]  # lsn order
    entries: tuple[LedgerEntry, ...]  # (lsn, i) order
    txns: list[Txn]  # as in layout 1: freezes and deducts, then refunds, then voids
    deposit_count: int  # its keyed deposits: the next this many of the project's `deposits`


class CustomerSnap2(CustomerCoreSnap2, array_like=True, gc=False):
    """The decode type of every customer: the core layout plus the CONTRACT §8 fields."""

    slot_pools: list[SlotPool] | None = None  # creation order
    slot_events: list[SlotEvent] | None = None  # lsn order
    slot_keys: list[SlotKeyRecord] | None = None  # first-use order
    entitlements: list[Entitlement] | None = None  # the customer's dict order
    entitlement_events: list[EntitlementEvent] | None = None  # lsn order


class ProjectSnap2(msgspec.Struct, array_like=True):
    name: str
    customers: list[CustomerSnap2]  # the project's dict order
    deposits: dict[str, DepositRecord]  # every keyed deposit, customer order then first use
    bucket_lsns: bytes  # int64 little-endian, ascending: ProjectState.bucket_lsns
    bucket_owners: bytes  # uint32 little-endian: the position in `customers` of each one's owner


def project_snap(project: ProjectState) -> ProjectSnap2:
    """`project` in layout 2 (customers in the project's dict order)."""
    customers = list(project.customers.values())
    position = {customer.customer_id: i for i, customer in enumerate(customers)}
    deposits = {record.idempotency_key: record for customer in customers for record in customer.deposits}
    owners = array("I", map(position.__getitem__, project.bucket_customers))
    lsns = array("q", project.bucket_lsns)
    if not _LITTLE:  # pragma: no cover - this project runs on little-endian machines
        owners.byteswap()
        lsns.byteswap()
    snaps = [_customer_snap(c) for c in customers]  # the core layout encodes as a prefix of CustomerSnap2
    return ProjectSnap2(project.name, cast("list[CustomerSnap2]", snaps), deposits, lsns.tobytes(), owners.tobytes())


def _customer_snap(c: CustomerState) -> CustomerCoreSnap2:
    x = c.extras
    txns: list[Txn] = [*(c.txns or {}).values()]
    if x is not None:
        txns += [*(x.refunds or {}).values(), *(x.voids or {}).values()]
    core = (
        c.customer_id, c.created_at_ms, c.name, c.email, c.metadata, c.last_lsn,
        tuple(c.buckets), tuple(c.entries), txns, len(c.deposits),
    )  # fmt: skip
    if x is None or not (x.slot_pools or x.slot_events or x.slot_keys or x.entitlements or x.entitlement_events):
        return CustomerCoreSnap2(*core)
    return CustomerSnap2(
        *core,
        slot_pools=x.slot_pools or None,
        slot_events=x.slot_events or None,
        slot_keys=list(x.slot_keys.values()) if x.slot_keys else None,
        entitlements=list(x.entitlements.values()) if x.entitlements else None,
        entitlement_events=x.entitlement_events or None,
    )


def restore_project(snap: ProjectSnap2, strings: dict[str, str]) -> ProjectState:
    """The project with its customers, deposit index and bucket-owner index; the other derived
    fields are left to `rebuild_derived(..., owner_indexes=False)`. `strings` is the one-object-
    per-distinct-string table shared across projects. Raises ValueError on inconsistent counts."""
    project = ProjectState(name=snap.name, deposit_records=snap.deposits)
    customers = project.customers
    records = iter(snap.deposits.values())
    ids: list[str] = []
    for cs in snap.customers:
        customers[cs.customer_id] = _customer_from_snap(cs, records)
        ids.append(cs.customer_id)
    if next(records, None) is not None:
        raise ValueError(f"project {snap.name!r}: more keyed deposits than its customers count")
    lsns = array("q", snap.bucket_lsns)
    owners = array("I", snap.bucket_owners)
    if not _LITTLE:  # pragma: no cover
        lsns.byteswap()
        owners.byteswap()
    if len(lsns) != len(owners):
        raise ValueError(f"project {snap.name!r}: {len(lsns)} bucket lsns, {len(owners)} owners")
    project.bucket_lsns = lsns
    project.bucket_customers = list(map(ids.__getitem__, owners))
    share_strings(project, strings)
    return project


def _customer_from_snap(cs: CustomerSnap2, records: Any) -> CustomerState:
    txns = cs.txns
    count = cs.deposit_count
    buckets, entries = cs.buckets, cs.entries
    customer = CustomerState(
        customer_id=cs.customer_id, created_at_ms=cs.created_at_ms, name=cs.name, email=cs.email,
        metadata=cs.metadata, last_lsn=cs.last_lsn,
        buckets=buckets if len(buckets) == 1 else list(buckets),  # a tuple of one, else a list
        entries=entries if len(entries) == 1 else list(entries),
        txns={r.transaction_id: r for r in txns if isinstance(r, (FreezeRecord, DeductRecord))} or None if txns else None,
        keyed_deposits=None if count == 0 else next(records, None) if count == 1 else list(islice(records, count)),
    )  # fmt: skip
    keyed = customer.keyed_deposits
    if (keyed is None) != (count == 0) or (isinstance(keyed, list) and len(keyed) != count):
        raise ValueError(f"customer {cs.customer_id!r}: fewer keyed deposits left than it counts")
    refunds = {r.refund_id: r for r in txns if isinstance(r, RefundRecord)} or None if txns else None
    voids = {r.void_id: r for r in txns if isinstance(r, VoidRecord)} or None if txns else None
    if refunds or voids or cs.slot_pools or cs.slot_events or cs.slot_keys or cs.entitlements or cs.entitlement_events:
        customer.extras = CustomerExtras(
            refunds=refunds,
            voids=voids,
            slot_pools=cs.slot_pools,
            slot_events=cs.slot_events,
            slot_keys=None if cs.slot_keys is None else {r.idempotency_key: r for r in cs.slot_keys},
            entitlements=None if cs.entitlements is None else {e.feature_key: e for e in cs.entitlements},
            entitlement_events=cs.entitlement_events,
        )
    return customer


def share_strings(project: ProjectState, strings: dict[str, str]) -> None:
    """Decoding made a fresh copy of every string: make every bucket, entry and keyed deposit
    of `project` hold one object per distinct wallet, source, op and business type (ops: the
    module constants of engine/core/state.py when `strings` was seeded with them), so a restored
    customer costs what a live one does. C-level passes over the whole project (map, setattr)."""
    buckets: list[Bucket] = []
    entries: list[LedgerEntry] = []
    for customer in project.customers.values():
        buckets += customer.buckets
        entries += customer.entries
    deposits = list(project.deposit_records.values())
    # the map's key and the record's own copy of it: one object (the key)
    deque(map(setattr, deposits, repeat("idempotency_key"), project.deposit_records), maxlen=0)
    for records, names in ((buckets, ("wallet", "source")), (entries, ("wallet", "source", "op", "business_type")),
                           (deposits, ("wallet", "source"))):  # fmt: skip
        for name in names:
            texts = list(map(attrgetter(name), records))
            shared = map(strings.setdefault, texts, texts)
            deque(map(setattr, records, repeat(name), shared), maxlen=0)
    # A keyed deposit's GRANT entry carries its idempotency key as transaction_id: the key object.
    by_key = project.deposit_records
    ids = list(map(attrgetter("transaction_id"), entries))
    keys = map(getattr, map(by_key.get, ids), repeat("idempotency_key"), ids)  # no record: the id itself
    deque(map(setattr, entries, repeat("transaction_id"), keys), maxlen=0)
