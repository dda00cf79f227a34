"""Snapshot layout 2: the state in a form msgspec decodes in C almost straight into the live
containers (issue 14: restart with 10^7 ledger entries in < 30 s). `engine.core.codec` writes this
layout and reads both (layout 1: engine/core/codec.py's StateSnap).

What differs from layout 1 (same records, same Structs; the digest is of the state, not of the
file, so it does not change):

- `version` is SNAPSHOT_LAYOUT (2), the first element of the top-level array, as in layout 1
  (where it is STATE_VERSION, 1): `codec.decode_state` tells the two apart by it.
- A project holds its keyed deposits as one flat list, in customer order and each customer's
  first-use order: the `ProjectState.deposit_records` index is one C-level dict(zip(...)) of it
  (measured: a msgpack map decoded into the dict is slower, msgspec hashes each key as it
  inserts, and the keys are written twice); a customer holds only how many of them are its own
  (`deposit_count`), not a list of its own.
- A project holds its bucket-owner index (`bucket_lsns`, `bucket_customers`) as two packed
  little-endian arrays: the bucket LSNs (int64) and, for each, its owner's position in
  `customers` (uint32). Restoring it is two C-level passes instead of gathering and sorting 10^7
  buckets.
- Buckets and entries decode as tuples: one of one is the live layout as is (CustomerState), more
  become the list the live layout holds.

Strings are shared after decoding (one object per distinct wallet, source and op) customer by
customer (`share_strings`, comparing with the previous record first: measured faster than bulk
map/setattr passes over the whole project).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from itertools import islice
from operator import attrgetter
from typing import Any, Final, cast

import msgspec

from engine.core.state import (
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
_LITTLE: Final = array("H", [1]).tobytes()[0] == 1  # the machine's byte order (engine/core reads no `sys`)

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
    deposits: list[DepositRecord]  # every keyed deposit, customer order then first use
    bucket_lsns: bytes  # int64 little-endian, ascending: ProjectState.bucket_lsns
    bucket_owners: bytes  # uint32 little-endian: the position in `customers` of each one's owner


def project_snap(project: ProjectState) -> ProjectSnap2:
    """`project` in layout 2 (customers in the project's dict order)."""
    customers = list(project.customers.values())
    position = {customer.customer_id: i for i, customer in enumerate(customers)}
    deposits = [record for customer in customers for record in customer.deposits]
    owners = array("I", map(position.__getitem__, project.bucket_customers))
    lsns = array("q", project.bucket_lsns)
    if not _LITTLE:  # pragma: no cover - this project runs on little-endian machines
        owners.byteswap()
        lsns.byteswap()
    snaps = [customer_snap(c) for c in customers]  # the core layout encodes as a prefix of CustomerSnap2
    return ProjectSnap2(project.name, cast("list[CustomerSnap2]", snaps), deposits, lsns.tobytes(), owners.tobytes())


def customer_snap(c: CustomerState) -> CustomerCoreSnap2:
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
    deposits = snap.deposits
    project = ProjectState(name=snap.name, deposit_records=dict(zip(map(_DEPOSIT_KEY, deposits), deposits)))
    customers = project.customers
    records = iter(deposits)
    ids: list[str] = []
    for cs in snap.customers:
        customer = customers[cs.customer_id] = customer_from_snap(cs, records)
        share_strings(customer, customer.deposits, strings)
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
    return project


_DEPOSIT_KEY: Final = attrgetter("idempotency_key")


def customer_from_snap(cs: CustomerSnap2, records: Iterator[DepositRecord]) -> CustomerState:
    """One customer; its keyed deposits are the next `deposit_count` of `records`. The common
    customer (deposits only) takes one constructor call and no comprehension (issue 14)."""
    count = cs.deposit_count
    keyed: DepositRecord | list[DepositRecord] | None
    if count == 1:
        keyed = next(records, None)
    elif count == 0:
        keyed = None
    else:
        keyed = list(islice(records, count))
        if len(keyed) != count:
            keyed = None
    if (keyed is None) != (count == 0):
        raise ValueError(f"customer {cs.customer_id!r}: fewer keyed deposits left than it counts")
    buckets, entries, txns = cs.buckets, cs.entries, cs.txns
    customer = CustomerState(
        cs.customer_id, cs.created_at_ms, cs.name, cs.email, cs.metadata, cs.last_lsn,
        buckets if len(buckets) == 1 else list(buckets),  # a tuple of one, else a list (the live layout)
        entries if len(entries) == 1 else list(entries),
        {r.transaction_id: r for r in txns if isinstance(r, (FreezeRecord, DeductRecord))} or None if txns else None,
        keyed,
    )  # fmt: skip
    if txns or not (cs.slot_pools is None and cs.slot_events is None and cs.slot_keys is None
                    and cs.entitlements is None and cs.entitlement_events is None):  # fmt: skip
        _restore_extras(customer, cs)
    return customer


def _restore_extras(customer: CustomerState, cs: CustomerSnap2) -> None:
    txns = cs.txns
    refunds = {r.refund_id: r for r in txns if isinstance(r, RefundRecord)} or None
    voids = {r.void_id: r for r in txns if isinstance(r, VoidRecord)} or None
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


def share_strings(customer: CustomerState, deposits: Sequence[DepositRecord], strings: dict[str, str]) -> None:
    """Decoding made a fresh copy of every string; share one object per distinct wallet, source
    and op, so a restored customer costs what a live one does, or less. A customer's records
    mostly repeat one wallet and one source: comparing with the previous one first skips most
    dict lookups (a third less time for this pass; issue 14, restart time)."""
    intern = strings.setdefault
    wallet = source = op = ""
    for bucket in customer.buckets:
        if (text := bucket.wallet) != wallet:
            wallet = intern(text, text)
        bucket.wallet = wallet
        if (text := bucket.source) != source:
            source = intern(text, text)
        bucket.source = source
    for entry in customer.entries:
        if (text := entry.wallet) != wallet:
            wallet = intern(text, text)
        entry.wallet = wallet
        if (text := entry.source) != source:
            source = intern(text, text)
        entry.source = source
        if (text := entry.op) != op:
            op = _OPS.get(text) or intern(text, text)
        entry.op = op
    for record in deposits:
        if (text := record.wallet) != wallet:
            wallet = intern(text, text)
        record.wallet = wallet
        if (text := record.source) != source:
            source = intern(text, text)
        record.source = source


_OPS = {op: op for op in ("GRANT", "FREEZE", "CONSUME", "UNFREEZE", "EXPIRE", "REFUND", "VOID")}
