"""Snapshot layout 3: quiet customers stay encoded until first use (issue 14: restart with 10^7
ledger entries from a snapshot in < 30 s). `engine.core.codec` writes this layout and reads
layouts 1, 2 and 3; the digest is of the state, not of the file, so it does not change.

Layout 2 (engine/core/codec_v2.py) decodes every customer into live objects on restart: at 10^7
entries that was ~50 CPU-s, ~90 % of a restart, for customers most of whom nobody touches for a
while. Layout 3 splits a project's customers in two:

- **warm** customers, written and restored exactly as in layout 2 (`customers`, `deposits`):
  those with an open freeze, a timer, or refunds, voids, alert rules, slots or entitlements
  (CustomerExtras). They feed project-wide indexes a restore must rebuild from their records.
- **cold** customers (all the others): each is one msgpack array in `cold_customers`, layout 1's
  customer layout (codec.CustomerCoreSnap; its keyed deposits inline), kept as its bytes in the
  project's `CustomerMap` (engine/core/cold.py) until a lookup decodes it. What project-wide
  indexes need of them is written beside: their deposit idempotency keys and transaction ids,
  each with its owner's position in `customer_ids`; the bucket-owner index is layout 2's.

A restore decodes ids, keys and packed arrays (C-level passes) and copies each cold customer's
bytes out of the snapshot; a snapshot re-emits a still-cold customer's bytes as they are.
`customer_ids` is every customer in the project's dict order; `cold` says, one byte per
customer, in which of the two lists it is (the order is kept: bucket owners are positions).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from operator import attrgetter
from typing import Any, Final, cast

import msgspec

from engine.core import codec_v2
from engine.core.cold import CustomerMap
from engine.core.codec_v2 import _LITTLE, CustomerSnap2, Txn, share_strings
from engine.core.state import (
    Bucket,
    CustomerState,
    DeductRecord,
    DepositRecord,
    FreezeRecord,
    LedgerEntry,
    ProjectState,
    rebuild_customer,
)

SNAPSHOT_LAYOUT_V3: Final = 3


class ColdSnap3(msgspec.Struct, array_like=True, gc=False):
    """A cold customer: layout 1's core customer layout (no txns but deducts and settled
    freezes, no CustomerExtras), decoded on first use."""

    customer_id: str
    created_at_ms: int
    name: str | None
    email: str | None
    metadata: dict[str, Any] | None
    last_lsn: int
    buckets: tuple[Bucket, ...]  # lsn order
    entries: tuple[LedgerEntry, ...]  # (lsn, i) order
    txns: tuple[Txn, ...]  # first-use order; only freezes and deducts (a cold customer has no refunds, voids)
    deposits: tuple[DepositRecord, ...]  # keyed, first-use order


class ProjectSnap3(msgspec.Struct, array_like=True):
    name: str
    customer_ids: list[str]  # every customer, the project's dict order
    cold: bytes  # one byte per customer: 1 if in `cold_customers`, 0 if in `customers`
    customers: list[CustomerSnap2]  # the warm ones, in order (layout 2)
    deposits: list[DepositRecord]  # the warm ones' keyed deposits (layout 2)
    cold_customers: list[msgspec.Raw]  # the cold ones, in order: each an encoded ColdSnap3
    cold_deposit_keys: list[str]  # every keyed deposit of a cold customer
    cold_deposit_owners: bytes  # uint32 little-endian: its owner's position in customer_ids
    cold_txn_ids: list[str]  # every transaction id of a cold customer
    cold_txn_owners: bytes  # uint32 little-endian: its owner's position in customer_ids
    bucket_lsns: bytes  # as layout 2: int64 little-endian, ascending
    bucket_owners: bytes  # as layout 2: uint32, positions in customer_ids


def can_be_cold(project: ProjectState, customer: CustomerState) -> bool:
    """Whether a snapshot may write `customer` cold: it adds nothing to the project's derived
    state but its keyed deposits, transaction ids and buckets (no timer, no open freeze, no
    CustomerExtras)."""
    return customer.extras is None and not customer.due and customer.customer_id not in project.open_freezes


def project_snap(project: ProjectState) -> ProjectSnap3:
    """`project` in layout 3 (customers in the project's dict order)."""
    customers = project.customers
    ids = list(customers)
    position = {customer_id: i for i, customer_id in enumerate(ids)}
    cold = bytearray(len(ids))
    warm: list[codec_v2.CustomerCoreSnap2] = []
    deposits: list[DepositRecord] = []
    encoded: list[ColdSnap3 | msgspec.Raw] = []
    keys = [key for key, owner in project.deposit_records.items() if type(owner) is str]  # still-cold owners
    key_owners = array("I", [position[cast(str, project.deposit_records[key])] for key in keys])
    txns = [txn for txn, owner in project.txn_owner.items() if customers.is_cold(owner)]
    txn_owners = array("I", [position[project.txn_owner[txn]] for txn in txns])
    for i, (customer_id, value) in enumerate(customers.raw_items()):
        if type(value) is bytes:
            cold[i] = 1
            encoded.append(msgspec.Raw(value))
            continue
        customer = cast(CustomerState, value)
        if can_be_cold(project, customer):
            cold[i] = 1
            encoded.append(_cold_snap(customer))
            keys += [record.idempotency_key for record in customer.deposits]
            key_owners.extend([i] * len(customer.deposits))
            txns += customer.txns or ()
            txn_owners.extend([i] * len(customer.txns or ()))
        else:
            warm.append(codec_v2.customer_snap(customer))
            deposits += customer.deposits
    owners = array("I", map(position.__getitem__, project.bucket_customers))
    lsns = array("q", project.bucket_lsns)
    if not _LITTLE:  # pragma: no cover - this project runs on little-endian machines
        for packed in (owners, lsns, key_owners, txn_owners):
            packed.byteswap()
    return ProjectSnap3(
        project.name, ids, bytes(cold), cast("list[CustomerSnap2]", warm), deposits,
        cast("list[msgspec.Raw]", encoded), keys, key_owners.tobytes(), txns, txn_owners.tobytes(),
        lsns.tobytes(), owners.tobytes(),
    )  # fmt: skip


def _cold_snap(c: CustomerState) -> ColdSnap3:
    return ColdSnap3(
        c.customer_id, c.created_at_ms, c.name, c.email, c.metadata, c.last_lsn,
        tuple(c.buckets), tuple(c.entries), tuple((c.txns or {}).values()), tuple(c.deposits),
    )  # fmt: skip


_cold_decoder: Final = msgspec.msgpack.Decoder(ColdSnap3)


def cold_customer(data: bytes, strings: dict[str, str]) -> CustomerState:
    """A cold customer's bytes decoded into the live layout, its derived fields rebuilt, its
    strings shared through `strings`. Raises msgspec.DecodeError / ValidationError on bad bytes."""
    cs = _cold_decoder.decode(data)
    buckets, entries, txns, deposits = cs.buckets, cs.entries, cs.txns, cs.deposits
    customer = CustomerState(
        cs.customer_id, cs.created_at_ms, cs.name, cs.email, cs.metadata, cs.last_lsn,
        buckets if len(buckets) == 1 else list(buckets),  # a tuple of one, else a list (the live layout)
        entries if len(entries) == 1 else list(entries),
        {r.transaction_id: r for r in txns if isinstance(r, (FreezeRecord, DeductRecord))} or None,
        None if not deposits else deposits[0] if len(deposits) == 1 else list(deposits),
    )  # fmt: skip
    if len(customer.txns or ()) != len(txns):
        raise ValueError(f"customer {cs.customer_id!r}: a cold customer holds only freezes and deducts")
    share_strings(customer, deposits, strings)
    rebuild_customer(customer)
    return customer


def restore_project(snap: ProjectSnap3, strings: dict[str, str]) -> ProjectState:
    """The project with its customers (cold ones as their bytes), its deposit index and its
    bucket-owner index; the cold customers' transaction ids go into `txn_owner` by
    `restore_cold_owners` after `rebuild_derived(..., owner_indexes=False)`. Raises ValueError
    on inconsistent counts."""
    ids = snap.customer_ids
    if len(snap.cold) != len(ids) or snap.cold.count(1) != len(snap.cold_customers):
        raise ValueError(f"project {snap.name!r}: cold flags do not match the customers")
    if len(ids) - len(snap.cold_customers) != len(snap.customers):
        raise ValueError(f"project {snap.name!r}: warm customers do not match the customers")
    deposits = snap.deposits
    project = ProjectState(name=snap.name, deposit_records=dict(zip(map(_DEPOSIT_KEY, deposits), deposits)))
    project.deposit_records.update(zip(snap.cold_deposit_keys, _owners(snap.name, ids, snap.cold_deposit_keys, snap.cold_deposit_owners)))
    warm = list(_warm_customers(snap, strings))
    cold = map(bytes, snap.cold_customers)  # copied out of the snapshot (which is then freed)
    entries: dict[str, CustomerState | bytes]
    if warm:
        others = iter(warm)
        entries = dict(zip(ids, [next(cold) if flag else next(others) for flag in snap.cold]))
    else:  # every customer cold (a project of quiet customers): one C-level pass
        entries = dict(zip(ids, cold))

    def warm_one(customer_id: str, data: bytes) -> CustomerState:
        customer = cold_customer(data, strings)
        records = project.deposit_records
        for record in customer.deposits:
            assert records[record.idempotency_key] == customer_id
            records[record.idempotency_key] = record
        return customer

    project.customers = CustomerMap(entries, warm_one, lambda data: cold_customer(data, strings), len(snap.cold_customers))
    lsns = array("q", snap.bucket_lsns)
    if not _LITTLE:  # pragma: no cover
        lsns.byteswap()
    project.bucket_lsns = lsns
    project.bucket_customers = _owners(snap.name, ids, lsns, snap.bucket_owners)
    return project


def restore_cold_owners(project: ProjectState, snap: ProjectSnap3) -> None:
    """The cold customers' transaction ids into `project.txn_owner` (after rebuild_derived)."""
    ids = snap.customer_ids
    project.txn_owner.update(zip(snap.cold_txn_ids, _owners(snap.name, ids, snap.cold_txn_ids, snap.cold_txn_owners)))


def _warm_customers(snap: ProjectSnap3, strings: dict[str, str]) -> Iterator[CustomerState]:
    records = iter(snap.deposits)
    for cs in snap.customers:
        customer = codec_v2.customer_from_snap(cs, records)
        share_strings(customer, customer.deposits, strings)
        yield customer
    if next(records, None) is not None:
        raise ValueError(f"project {snap.name!r}: more keyed deposits than its customers count")


def _owners(name: str, ids: list[str], items: Any, packed: bytes) -> list[str]:
    """The customer ids at the uint32 positions `packed`, one per item of `items`."""
    positions = array("I", packed)
    if not _LITTLE:  # pragma: no cover
        positions.byteswap()
    if len(positions) != len(items) or (positions and max(positions) >= len(ids)):
        raise ValueError(f"project {name!r}: {len(items)} items, {len(positions)} owner positions")
    return list(map(ids.__getitem__, positions))


_DEPOSIT_KEY: Final = attrgetter("idempotency_key")
