"""Rules of engine/core/slots.py and engine/core/entitlements.py (CONTRACT §8), one case each.

What: grant/revoke/claim/release with their codes, idempotency (§8.2, §8.3), the ttl release as
a timer (§8.3), entitlement set/remove/list/get and both event pages (§8.4, §8.5), and that the
snapshot codec and the digest carry all of it while old histories keep their digest.
How: the engine Driver (tests/engine/helpers.py) checks after every command that a rejection or a
replay changed nothing; bodies are compared whole.
How it could fail: a wrong code or figure, a replay that writes, a timer firing twice or not at
all, a codec that drops a field.
"""

from __future__ import annotations

import msgspec

from engine.core.codec import decode_state, encode_state
from engine.core.commands import (
    Deposit,
    EntitlementRemove,
    EntitlementSet,
    SlotAutoRelease,
    SlotClaim,
    SlotGrant,
    SlotRelease,
    SlotRevoke,
)
from engine.core.digest import digest
from engine.core.entitlement_queries import entitlement_events, entitlement_get, entitlement_list
from engine.core.invariants import check_invariants
from engine.core.results import (
    Applied,
    EntitlementRemoveResponse,
    SlotHoldingResponse,
    SlotPoolResponse,
)
from engine.core.slot_queries import slot_events, slot_pools
from engine.core.timers import due_commands
from tests.engine.helpers import T0_MS, Driver, P


def grant(amount: int, key: str | None = None, customer: str = "c", wallet: str = "gpu", at: int = T0_MS) -> SlotGrant:
    return SlotGrant(at_ms=at, project=P, customer_id=customer, wallet=wallet, source="default", amount=amount,
                     idempotency_key=key)  # fmt: skip


def claim(resource: str, amount: int = 1, ttl_s: int | None = None, at: int = T0_MS, wallet: str = "gpu") -> SlotClaim:
    return SlotClaim(at_ms=at, project=P, customer_id="c", wallet=wallet, source="default", resource_id=resource,
                     amount=amount, ttl_s=ttl_s)  # fmt: skip


def release(resource: str, at: int = T0_MS) -> SlotRelease:
    return SlotRelease(at_ms=at, project=P, customer_id="c", wallet="gpu", source="default", resource_id=resource)


def pool(capacity: int, in_use: int, replay: bool = False) -> SlotPoolResponse:
    return SlotPoolResponse(pool_id="pool_1", wallet="gpu", source="default", capacity=capacity, in_use=in_use,
                            available=capacity - in_use, status="ACTIVE", is_idempotent_replay=replay)  # fmt: skip


def holding(capacity: int, in_use: int, lsn: int, replay: bool = False) -> SlotHoldingResponse:
    return SlotHoldingResponse(pool_id="pool_1", wallet="gpu", source="default", capacity=capacity, in_use=in_use,
                               available=capacity - in_use, status="ACTIVE", holding_id=f"hold_{lsn}",
                               is_idempotent_replay=replay)  # fmt: skip


def test_grant_claim_release_revoke_with_exact_bodies() -> None:
    d = Driver()
    assert d.ok(grant(3, key="g1")) == pool(3, 0)
    assert d.ok(claim("r1", 2)) == holding(3, 2, 2)
    rejected = d.rejected(claim("r2", 2))
    assert (rejected.code, rejected.details) == ("slot_insufficient_capacity", {"requested": 2, "available": 1})
    assert d.ok(claim("r1", 2)) == holding(3, 2, 2, replay=True)  # same holding, nothing changes
    assert d.rejected(SlotRevoke(at_ms=T0_MS, project=P, customer_id="c", wallet="gpu", source="default",
                                 amount=2)).code == "slot_capacity_below_in_use"  # fmt: skip
    assert d.ok(release("r1")) == holding(3, 0, 2)
    assert d.rejected(release("r1")).code == "slot_holding_not_found"
    assert d.ok(claim("r1", 1)) == holding(3, 1, 4)  # claimed again: a new holding id
    revoke = SlotRevoke(at_ms=T0_MS, project=P, customer_id="c", wallet="gpu", source="default", amount=2)
    assert d.ok(revoke) == pool(1, 1)
    assert check_invariants(d.state) == []


def test_missing_pool_and_customer() -> None:
    d = Driver()
    assert d.rejected(claim("r")).code == "slot_pool_not_found"
    d.ok(grant(1))
    assert d.rejected(claim("r", wallet="other")).code == "slot_pool_not_found"
    assert d.rejected(release("r")).code == "slot_holding_not_found"
    assert slot_pools(d.state, P, "nobody", None).pools == []


def test_grant_revoke_idempotency_keys() -> None:
    d = Driver()
    first = d.ok(grant(5, key="k"))
    d.ok(claim("r", 2))
    assert d.ok(grant(5, key="k")) == msgspec.structs.replace(first, is_idempotent_replay=True)  # the original figures
    for command, field in ((grant(6, key="k"), "amount"), (grant(5, key="k", customer="x"), "customer_id"),
                           (grant(5, key="k", wallet="w"), "wallet")):  # fmt: skip
        rejected = d.rejected(command)
        assert (rejected.code, rejected.details) == ("transaction_conflict", {"field": field})
    revoke = SlotRevoke(at_ms=T0_MS, project=P, customer_id="c", wallet="gpu", source="default", amount=5,
                        idempotency_key="k")  # fmt: skip
    assert d.rejected(revoke).details == {"field": "idempotency_key"}  # a grant's key reused for a revoke
    assert d.ok(grant(5)).capacity == 10  # no key: never deduplicated


def test_ttl_release_fires_once_at_its_due_time_and_survives_a_snapshot() -> None:
    d = Driver()
    d.ok(grant(2))
    d.ok(claim("r", 1, ttl_s=5))
    assert due_commands(d.state, P, "c", T0_MS + 4999) == []
    restored = decode_state(encode_state(d.state))
    timers = due_commands(restored, P, "c", T0_MS + 5000)
    assert timers == [SlotAutoRelease(at_ms=T0_MS + 5000, project=P, customer_id="c", holding_lsn=2)]
    assert d.tick("c", T0_MS + 6000) == timers
    assert slot_pools(d.state, P, "c", None).pools[0].in_use == 0
    assert d.run(timers[0]) == Applied(None, False)  # exactly once
    page = slot_events(d.state, P, "c", limit=10, cursor=None, wallet=None, resource_id=None, types=None,
                       sources=None, from_ms=None, to_ms=None)  # fmt: skip
    assert [(e.type, e.amount, e.created_at) for e in page.items] == [
        ("RELEASE", 1, "2026-04-07T12:00:05.000Z"), ("CLAIM", 1, "2026-04-07T12:00:00.000Z"),
        ("GRANT_CAPACITY", 2, "2026-04-07T12:00:00.000Z"),
    ]  # fmt: skip


def test_a_released_then_reclaimed_resource_keeps_its_new_holding() -> None:
    d = Driver()
    d.ok(grant(1))
    d.ok(claim("r", ttl_s=5))
    d.ok(release("r", at=T0_MS + 1))
    d.ok(claim("r", at=T0_MS + 2))  # no ttl this time
    assert due_commands(d.state, P, "c", T0_MS + 10_000) == []
    assert d.run(SlotAutoRelease(at_ms=T0_MS + 10_000, project=P, customer_id="c", holding_lsn=2)) == Applied(None, False)


def test_slot_event_pages_filter_and_page_without_gaps() -> None:
    d = Driver()
    d.ok(grant(100))
    for k in range(7):
        d.ok(claim(f"r{k}", at=T0_MS + k))
    seen, cursor = [], None
    for _ in range(10):
        page = slot_events(d.state, P, "c", limit=3, cursor=cursor, wallet="gpu", resource_id=None,
                           types=frozenset({"CLAIM"}), sources=None, from_ms=None, to_ms=None)  # fmt: skip
        assert page.total_count == 7
        seen += [e.resource_id for e in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == [f"r{k}" for k in range(6, -1, -1)]
    other = slot_events(d.state, P, "c", limit=3, cursor=cursor, wallet=None, resource_id=None, types=None,
                        sources=None, from_ms=None, to_ms=None)  # fmt: skip
    assert other.code == "invalid_cursor"  # a cursor made for another filter
    windowed = slot_events(d.state, P, "c", limit=10, cursor=None, wallet=None, resource_id=None, types=None,
                           sources=None, from_ms=T0_MS + 2, to_ms=T0_MS + 3)  # fmt: skip
    assert [e.resource_id for e in windowed.items] == ["r3", "r2"]


def test_entitlements_set_get_list_remove_and_events() -> None:
    d = Driver()
    setting = EntitlementSet(at_ms=T0_MS, project=P, customer_id="c", feature_key="seats", value="5")
    assert d.rejected(setting).code == "entitlement_customer_not_found"
    d.ok(Deposit(at_ms=T0_MS, project=P, customer_id="c", amount=1))
    first = d.ok(setting)
    assert (first.entitlement_id, first.is_created, first.old_value, first.value) == ("ent_2", True, None, "5")
    second = d.ok(msgspec.structs.replace(setting, value="7", valid_until_ms=T0_MS + 1000))
    assert (second.entitlement_id, second.is_created, second.old_value) == ("ent_2", False, "5")
    assert second.valid_until == "2026-04-07T12:00:01.000Z"
    assert entitlement_get(d.state, P, "c", "seats").entitlement.value == "7"
    assert entitlement_get(d.state, P, "nobody", "seats").entitlement is None
    assert [i.is_active for i in entitlement_list(d.state, P, "c", T0_MS, feature_keys=None, include_expired=False).items] == [True]
    assert entitlement_list(d.state, P, "c", T0_MS + 1000, feature_keys=None, include_expired=False).items == []
    expired = entitlement_list(d.state, P, "c", T0_MS + 1000, feature_keys=frozenset({"seats"}), include_expired=True)
    assert [(i.feature_key, i.is_active) for i in expired.items] == [("seats", False)]
    remove = EntitlementRemove(at_ms=T0_MS, project=P, customer_id="c", feature_key="seats")
    assert d.ok(remove) == EntitlementRemoveResponse(removed=True, old_value="7")
    assert d.run(remove) == Applied(EntitlementRemoveResponse(removed=False, old_value=None), False)
    events = entitlement_events(d.state, P, "c", limit=10, cursor=None, feature_key="seats", types=None,
                                from_ms=None, to_ms=None)  # fmt: skip
    assert [(e.type, e.old_value, e.new_value) for e in events.items] == [
        ("REMOVE", "7", None), ("SET", "5", "7"), ("SET", None, "5")]  # fmt: skip
    assert d.ok(setting).entitlement_id == "ent_5"  # set again after remove: a new entitlement


def test_codec_round_trip_and_old_histories_keep_their_digest() -> None:
    d = Driver()
    d.ok(Deposit(at_ms=T0_MS, project=P, customer_id="c", amount=100, idempotency_key="k", metadata={"b": 1}))
    quiet = digest(d.state)
    # The layout of a customer without §8 data is the original one: its snapshot bytes decode
    # into the new Structs and give the same digest.
    assert digest(decode_state(encode_state(d.state))) == quiet
    d.ok(grant(3, key="g"))
    d.ok(claim("r", ttl_s=60))
    d.ok(EntitlementSet(at_ms=T0_MS, project=P, customer_id="c", feature_key="f", value="v", metadata={"x": [1]}))
    restored = decode_state(encode_state(d.state))
    assert digest(restored) == digest(d.state) != quiet
    assert restored.projects[P].slot_key_owner == {"g": "c"}
    assert due_commands(restored, P, "c", T0_MS + 60_000)[0].holding_lsn == 3
