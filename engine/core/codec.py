"""Snapshots: `encode_state(state) -> bytes`, `decode_state(bytes) -> LedgerState` (msgpack).

Only persistent fields are written (see engine/state.py); derived indexes and heaps are rebuilt
on decode, so `digest(decode_state(encode_state(s))) == digest(s)`. The snapshot Structs are
`array_like`: fields are only ever appended, with defaults (msgspec schema evolution), and
`version`, the first element, tells the layouts apart: 1 (STATE_VERSION: StateSnap below, also
the digest's form; `encode_state_v1`) and 2 (engine/core/codec_v2.py, laid out for restart speed,
issue 14) and 3 (engine/core/codec_v3.py: quiet customers stay encoded until first use, issue
14), which `encode_state` writes (`encode_state_v2` the previous one). `decode_state` reads all three.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast

import msgspec

from engine.core import codec_v2, codec_v3
from engine.core.codec_v2 import _OPS, SNAPSHOT_LAYOUT, ProjectSnap2, share_strings
from engine.core.codec_v3 import SNAPSHOT_LAYOUT_V3, ProjectSnap3
from engine.core.hooks import add_webhook
from engine.core.hooks_state import AlertRule, Attempt, Event, HooksState, Queue, Webhook, WebhookState
from engine.core.limits import WEBHOOK_ATTEMPTS_KEPT_MAX
from engine.core.state import (
    STATE_VERSION,
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
    LedgerState,
    ProjectState,
    RefundRecord,
    VoidRecord,
    SlotEvent,
    SlotKeyRecord,
    SlotPool,
    rebuild_derived,
)


class CustomerCoreSnap(msgspec.Struct, array_like=True):
    """A customer that never used slots or entitlements is written in this, the original
    layout, so old histories keep their digest byte for byte (this msgspec does not omit
    trailing defaults of array_like Structs)."""

    customer_id: str
    created_at_ms: int
    name: str | None
    email: str | None
    metadata: dict[str, Any] | None
    last_lsn: int
    buckets: list[Bucket]  # lsn order
    entries: list[LedgerEntry]  # (lsn, i) order
    # first-use order: freezes and deducts, then refunds, then voids (CONTRACT §10). Refunds and
    # voids ride in this tagged union so a history without them encodes byte for byte as before.
    txns: list[FreezeRecord | DeductRecord | RefundRecord | VoidRecord]
    deposits: list[DepositRecord]  # first-use order


class CustomerSnap(CustomerCoreSnap, array_like=True):
    """The decode type of every customer: the core layout plus the CONTRACT §8 fields, appended
    with defaults so a core-layout array (old snapshot or quiet customer) decodes too."""

    slot_pools: list[SlotPool] | None = None  # creation order
    slot_events: list[SlotEvent] | None = None  # lsn order
    slot_keys: list[SlotKeyRecord] | None = None  # first-use order
    entitlements: list[Entitlement] | None = None  # the customer's dict order
    entitlement_events: list[EntitlementEvent] | None = None  # lsn order


class ProjectSnap(msgspec.Struct, array_like=True):
    name: str
    customers: list[CustomerSnap]


class StateSnap(msgspec.Struct, array_like=True):
    version: int
    last_lsn: int
    api_keys: list[ApiKey]
    projects: list[ProjectSnap]
    # Appended: snapshots written before it decode as 0. Always written (msgspec writes every field
    # of an array_like Struct), so older servers cannot read newer snapshots; digest() hashes
    # only the four fields before it.
    stamp_ms_last: int = 0


# -- webhooks and alert rules (CONTRACT §11): a section appended only when the state has them ------


class QueueSnap(msgspec.Struct, array_like=True):
    customer_id: str
    events: list[Event]  # oldest first
    failures: int
    next_at_ms: int


class WebhookSnap(msgspec.Struct, array_like=True):
    webhook: Webhook
    queues: list[QueueSnap]
    attempts: list[Attempt]  # oldest first


class RulesSnap(msgspec.Struct, array_like=True):
    project: str
    customer_id: str
    rules: list[AlertRule]


class HooksSnap(msgspec.Struct, array_like=True):
    webhooks: list[WebhookSnap]
    rules: list[RulesSnap]


class StateSnapHooks(StateSnap):
    """StateSnap with the hooks section appended. Written only when `state.hooks` is not None, so a
    history without webhooks or rules keeps its snapshot bytes; read for every snapshot (an older
    one decodes with `hooks` None)."""

    hooks: HooksSnap | None = None


class StateSnap2(msgspec.Struct, array_like=True):
    """Layout 2 (engine/core/codec_v2.py): `version` is SNAPSHOT_LAYOUT."""

    version: int
    last_lsn: int
    api_keys: list[ApiKey]
    projects: list[ProjectSnap2]
    stamp_ms_last: int
    hooks: HooksSnap | None = None


ENCODE_LAYOUT: Final = SNAPSHOT_LAYOUT_V3  # the layout `encode_state` writes (the snapshot header's version)


class StateSnap3(msgspec.Struct, array_like=True):
    """Layout 3 (engine/core/codec_v3.py): `version` is SNAPSHOT_LAYOUT_V3."""

    version: int
    last_lsn: int
    api_keys: list[ApiKey]
    projects: list[ProjectSnap3]
    stamp_ms_last: int
    hooks: HooksSnap | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StateSnapHooks)
_decoder_v2 = msgspec.msgpack.Decoder(StateSnap2)
_decoder_v3 = msgspec.msgpack.Decoder(StateSnap3)


def hooks_snap(state: LedgerState, *, canonical: bool = False) -> HooksSnap | None:
    """The hooks section of `state`, or None when it has none. `canonical` sorts queues by
    customer and rules by (project, customer) (webhooks are always in registration order)."""
    hooks = state.hooks
    if hooks is None:
        return None
    webhooks = []
    for entry in sorted(hooks.webhooks.values(), key=lambda e: e.webhook.lsn):
        queues = [QueueSnap(c, list(q.events), q.failures, q.next_at_ms) for c, q in entry.queues.items()]
        if canonical:
            queues.sort(key=lambda q: q.customer_id)
        webhooks.append(WebhookSnap(entry.webhook, queues, list(entry.attempts)))
    rules = [
        RulesSnap(project.name, customer.customer_id, customer.extras.alerts)
        for project in state.projects.values()
        for customer in project.customers.warm_values()  # a cold customer has no extras (codec_v3)
        if customer.extras is not None and customer.extras.alerts is not None
    ]
    if canonical:
        rules.sort(key=lambda r: (r.project, r.customer_id))
    return HooksSnap(webhooks, rules)


def to_snap(state: LedgerState, *, canonical: bool = False) -> StateSnap:
    """The persistent part of `state` as plain data. `canonical` sorts projects, customers and
    keys by name (the digest's form: independent of how shards interleaved first uses)."""
    projects = list(state.projects.values())
    keys = list(state.api_keys.values())
    if canonical:
        projects.sort(key=lambda p: p.name)
        keys.sort(key=lambda k: k.key_id)
    return StateSnap(
        version=STATE_VERSION,
        last_lsn=state.last_lsn,
        api_keys=keys,
        projects=[_project_snap(p, canonical) for p in projects],
        stamp_ms_last=0 if canonical else state.stamp_ms_last,
    )


def _project_snap(project: ProjectState, canonical: bool) -> ProjectSnap:
    customers = list(project.customers.values())
    if canonical:
        customers.sort(key=lambda c: c.customer_id)
    return ProjectSnap(name=project.name, customers=[_customer_snap(c) for c in customers])


def _customer_snap(c: CustomerState) -> CustomerSnap:
    x = c.extras  # None for most customers: one test instead of seven (CustomerExtras)
    txns: list[FreezeRecord | DeductRecord | RefundRecord | VoidRecord] = [*(c.txns or {}).values()]
    if x is not None:
        txns += [*(x.refunds or {}).values(), *(x.voids or {}).values()]
    keyed = c.keyed_deposits
    core = (
        c.customer_id, c.created_at_ms, c.name, c.email, c.metadata, c.last_lsn,
        cast("list[Bucket]", c.buckets), cast("list[LedgerEntry]", c.entries),  # a tuple encodes as a list
        txns,
        [] if keyed is None else [keyed] if isinstance(keyed, DepositRecord) else keyed,
    )  # fmt: skip
    if x is None or not (x.slot_pools or x.slot_events or x.slot_keys or x.entitlements or x.entitlement_events):
        return CustomerCoreSnap(*core)  # type: ignore[return-value]  # encodes as the original layout
    return CustomerSnap(
        *core,
        slot_pools=x.slot_pools or None,
        slot_events=x.slot_events or None,
        slot_keys=list(x.slot_keys.values()) if x.slot_keys else None,
        entitlements=list(x.entitlements.values()) if x.entitlements else None,
        entitlement_events=x.entitlement_events or None,
    )


def encode_state(state: LedgerState) -> bytes:
    """`state` in snapshot layout 3 (engine/core/codec_v3.py); SNAPSHOT_LAYOUT_V3 is its version."""
    projects = [codec_v3.project_snap(project) for project in state.projects.values()]
    return _encoder.encode(StateSnap3(SNAPSHOT_LAYOUT_V3, *_state_fields(state, projects)))


def encode_state_v2(state: LedgerState) -> bytes:
    """`state` in snapshot layout 2 (engine/core/codec_v2.py; written before layout 3, still read)."""
    projects = [codec_v2.project_snap(project) for project in state.projects.values()]
    return _encoder.encode(StateSnap2(SNAPSHOT_LAYOUT, *_state_fields(state, projects)))


def _state_fields(state: LedgerState, projects: list[Any]) -> tuple[Any, ...]:
    """The fields layouts 2 and 3 share after `version`, in their order (StateSnap2, StateSnap3)."""
    return state.last_lsn, list(state.api_keys.values()), projects, state.stamp_ms_last, hooks_snap(state)


def encode_state_v1(state: LedgerState) -> bytes:
    """`state` in snapshot layout 1 (what Tally wrote before layout 2; still read)."""
    snap = to_snap(state)
    hooks = hooks_snap(state)
    if hooks is None:
        return _encoder.encode(snap)  # the layout of a history without webhooks, byte for byte
    fields = {name: getattr(snap, name) for name in snap.__struct_fields__}
    return _encoder.encode(StateSnapHooks(**fields, hooks=hooks))


def snapshot_layout(data: bytes | memoryview) -> int | None:
    """The layout `version` of encoded state `data`: the first element of its top-level msgpack
    array when that is a small non-negative int, else None (not a snapshot of either layout)."""
    head = bytes(data[:6])
    if not head:
        return None
    if head[0] >> 4 == 0x9:  # fixarray
        offset = 1
    elif head[0] in _ARRAY_HEADER:  # array 16, array 32
        offset = _ARRAY_HEADER[head[0]]
    else:
        return None
    if len(head) <= offset or head[offset] > 0x7F:  # not a positive fixint
        return None
    return head[offset]


_ARRAY_HEADER = {0xDC: 3, 0xDD: 5}  # msgpack array header byte -> offset of the first element


def decode_state(data: bytes | memoryview) -> LedgerState:
    """Any layout. Raises msgspec.DecodeError / ValidationError on bad bytes, ValueError on an
    unknown version or (layouts 2, 3) counts that do not add up."""
    layout = snapshot_layout(data)
    if layout == SNAPSHOT_LAYOUT_V3:
        return _decode_v3(data)
    if layout == SNAPSHOT_LAYOUT:
        return _decode_v2(data)
    snap = _decoder.decode(data)
    if snap.version != STATE_VERSION:
        raise ValueError(f"unknown snapshot version {snap.version}")
    state = LedgerState(last_lsn=snap.last_lsn, stamp_ms_last=snap.stamp_ms_last)
    for key in snap.api_keys:
        state.api_keys[key.key_hash] = key
    strings: dict[str, str] = {}  # one object per distinct wallet / source / op string
    for project_snap in snap.projects:
        project = state.projects[project_snap.name] = ProjectState(name=project_snap.name)
        for cs in project_snap.customers:
            project.customers[cs.customer_id] = _customer_from_snap(cs, strings)
    if snap.hooks is not None:
        _restore_hooks(state, snap.hooks)
    rebuild_derived(state)
    return state


def _decode_v2(data: bytes | memoryview) -> LedgerState:
    return _restore_layout(_decoder_v2.decode(data), codec_v2.restore_project)


def _decode_v3(data: bytes | memoryview) -> LedgerState:
    snap = _decoder_v3.decode(data)
    state = _restore_layout(snap, codec_v3.restore_project)
    for project_snap in snap.projects:
        codec_v3.restore_cold_owners(state.projects[project_snap.name], project_snap)
    return state


def _restore_layout(snap: Any, restore_project: Callable[[Any, dict[str, str]], ProjectState]) -> LedgerState:
    """Layouts 2 and 3 (StateSnap2 / StateSnap3): keys, projects by `restore_project` (which
    builds the owner indexes itself), hooks, then the other derived fields."""
    state = LedgerState(last_lsn=snap.last_lsn, stamp_ms_last=snap.stamp_ms_last)
    for key in snap.api_keys:
        state.api_keys[key.key_hash] = key
    strings = dict(_OPS)  # one object per distinct wallet / source / op string (cold customers' too)
    for project_snap in snap.projects:
        state.projects[project_snap.name] = restore_project(project_snap, strings)
    if snap.hooks is not None:
        _restore_hooks(state, snap.hooks)
    rebuild_derived(state, owner_indexes=False)
    return state


def _restore_hooks(state: LedgerState, snap: HooksSnap) -> None:
    hooks = state.hooks = HooksState()
    for ws in snap.webhooks:
        queues = {q.customer_id: Queue(deque(q.events), q.failures, q.next_at_ms) for q in ws.queues}
        add_webhook(hooks, WebhookState(ws.webhook, queues, deque(ws.attempts, maxlen=WEBHOOK_ATTEMPTS_KEPT_MAX)))
    for rules in snap.rules:
        state.projects[rules.project].customers[rules.customer_id].alerts = rules.rules


def _customer_from_snap(cs: CustomerSnap, strings: dict[str, str]) -> CustomerState:
    txns = cs.txns
    customer = CustomerState(
        customer_id=cs.customer_id,
        created_at_ms=cs.created_at_ms,
        name=cs.name,
        email=cs.email,
        metadata=cs.metadata,
        last_lsn=cs.last_lsn,
        buckets=cs.buckets,
        entries=cs.entries,
        txns={r.transaction_id: r for r in txns if isinstance(r, (FreezeRecord, DeductRecord))} or None if txns else None,
        keyed_deposits=(cs.deposits[0] if len(cs.deposits) == 1 else cs.deposits) if cs.deposits else None,
    )
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
    share_strings(customer, cs.deposits, strings)
    return customer
