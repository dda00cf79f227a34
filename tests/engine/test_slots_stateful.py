"""Stateful property test of slots and entitlements (CONTRACT §8) against a small model.

What: random grants, revokes, claims (some with ttl), releases, time jumps (timers fired as the
runtime fires them), grant/revoke replays and conflicting keys, entitlement sets and removes.
How: the model keeps each pool's capacity and holdings and each entitlement's value; it
predicts every outcome code. After every step: capacity is conserved (sum of holdings = in_use
<= capacity, and capacity/in_use agree with the events: engine/core/invariants.py), each
entitlement's value is the `new_value` of its last event (and absent after a REMOVE), a replay
or a rejection changes nothing (Driver), replaying the logged history into a fresh state and a
codec round trip give the same digest.
How it could fail: capacity leaking or overbooked, a ttl firing twice or never, a wrong code, a
replay that writes, a non-determinism between live apply, replay and snapshot.
"""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine.core.codec import decode_state, encode_state
from engine.core.commands import (
    Deposit,
    EntitlementRemove,
    EntitlementSet,
    SlotClaim,
    SlotGrant,
    SlotRelease,
    SlotRevoke,
)
from engine.core.digest import digest
from engine.core.invariants import check_invariants
from engine.core.ledger import apply
from engine.core.results import Applied, Rejected
from engine.core.state import LedgerState
from engine.core.timers import pop_due_customers
from tests.engine.helpers import T0_MS, Driver, P

CUSTOMERS = ("c0", "c1")
WALLETS = ("gpu", "cpu")
RESOURCES = tuple(f"r{k}" for k in range(4))
KEYS = ("k0", "k1", "k2")
FEATURES = ("f0", "f1")


class SlotMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.d = Driver()
        self.now = T0_MS
        self.pools: dict[tuple[str, str], dict[str, object]] = {}  # (customer, wallet) -> capacity, holdings
        self.keys: dict[str, tuple[SlotGrant | SlotRevoke, object]] = {}
        self.d.ok(Deposit(at_ms=self.now, project=P, customer_id="c0", amount=1))

    def fire(self) -> None:
        for _, customer_id in pop_due_customers(self.d.state, self.now):
            for timer in self.d.tick(customer_id, self.now):
                holdings = self._holdings_of(customer_id)
                lost = [(w, r) for (w, r), lsn in holdings.items() if lsn == timer.holding_lsn]  # type: ignore[attr-defined]
                assert len(lost) == 1
                for (wallet, resource) in list(holdings):
                    if (wallet, resource) == lost[0]:
                        self.pools[(customer_id, wallet)]["holdings"].pop(resource)  # type: ignore[attr-defined]

    def _holdings_of(self, customer_id: str) -> dict[tuple[str, str], int]:
        out = {}
        for (cid, wallet), pool in self.pools.items():
            if cid == customer_id:
                for resource, (_, lsn, _) in pool["holdings"].items():  # type: ignore[attr-defined]
                    out[(wallet, resource)] = lsn
        return out

    @rule(delta_ms=st.sampled_from([0, 1, 999, 1000, 5000]))
    def advance_time(self, delta_ms: int) -> None:
        self.now += delta_ms
        self.fire()

    @rule(cid=st.sampled_from(CUSTOMERS), wallet=st.sampled_from(WALLETS), amount=st.sampled_from([1, 2, 3]),
          key=st.sampled_from((None,) + KEYS), revoke=st.booleans())  # fmt: skip
    def capacity(self, cid, wallet, amount, key, revoke) -> None:
        self.fire()
        kind = SlotRevoke if revoke else SlotGrant
        cmd = kind(at_ms=self.now, project=P, customer_id=cid, wallet=wallet, source="default", amount=amount,
                   idempotency_key=key)  # fmt: skip
        result = self.d.run(cmd)
        pool = self.pools.get((cid, wallet))
        if revoke and pool is None:
            assert isinstance(result, Rejected) and result.code == "slot_pool_not_found"
            return
        if key in self.keys:
            original, body = self.keys[key]
            if type(original) is kind and (original.customer_id, original.wallet, original.amount) == (cid, wallet, amount):
                assert result == Applied(msgspec.structs.replace(body, is_idempotent_replay=True), False)
            else:
                assert isinstance(result, Rejected) and result.code == "transaction_conflict", result
            return
        if pool is None:
            pool = self.pools[(cid, wallet)] = {"capacity": 0, "holdings": {}}
        in_use = sum(a for a, _, _ in pool["holdings"].values())  # type: ignore[attr-defined]
        if revoke and pool["capacity"] - amount < in_use:  # type: ignore[operator]
            assert isinstance(result, Rejected) and result.code == "slot_capacity_below_in_use"
            return
        assert isinstance(result, Applied) and result.logged, result
        pool["capacity"] += -amount if revoke else amount  # type: ignore[operator]
        assert (result.body.capacity, result.body.in_use) == (pool["capacity"], in_use)
        if key is not None:
            self.keys[key] = (cmd, result.body)

    @rule(cid=st.sampled_from(CUSTOMERS), wallet=st.sampled_from(WALLETS), resource=st.sampled_from(RESOURCES),
          amount=st.sampled_from([1, 2]), ttl=st.sampled_from([None, 1, 3]), release=st.booleans())  # fmt: skip
    def hold(self, cid, wallet, resource, amount, ttl, release) -> None:
        self.fire()
        pool = self.pools.get((cid, wallet))
        if release:
            cmd = SlotRelease(at_ms=self.now, project=P, customer_id=cid, wallet=wallet, source="default", resource_id=resource)
        else:
            cmd = SlotClaim(at_ms=self.now, project=P, customer_id=cid, wallet=wallet, source="default",
                            resource_id=resource, amount=amount, ttl_s=ttl)  # fmt: skip
        result = self.d.run(cmd)
        held = None if pool is None else pool["holdings"].get(resource)  # type: ignore[attr-defined]
        if release:
            if held is None:
                assert isinstance(result, Rejected) and result.code == "slot_holding_not_found"
                return
            assert isinstance(result, Applied) and result.logged and result.body.holding_id == f"hold_{held[1]}"
            del pool["holdings"][resource]  # type: ignore[index]
            return
        if pool is None:
            assert isinstance(result, Rejected) and result.code == "slot_pool_not_found"
            return
        if held is not None:
            assert isinstance(result, Applied) and not result.logged and result.body.holding_id == f"hold_{held[1]}"
            return
        available = pool["capacity"] - sum(a for a, _, _ in pool["holdings"].values())  # type: ignore[attr-defined, operator]
        if amount > available:
            assert isinstance(result, Rejected) and result.code == "slot_insufficient_capacity"
            assert result.details == {"requested": amount, "available": available}
            return
        assert isinstance(result, Applied) and result.logged, result
        pool["holdings"][resource] = (amount, self.d.state.last_lsn, ttl)  # type: ignore[index]

    @rule(cid=st.sampled_from(CUSTOMERS), feature=st.sampled_from(FEATURES), value=st.sampled_from(["a", "b", ""]),
          remove=st.booleans())  # fmt: skip
    def entitle(self, cid, feature, value, remove) -> None:
        if remove:
            cmd = EntitlementRemove(at_ms=self.now, project=P, customer_id=cid, feature_key=feature)
        else:
            cmd = EntitlementSet(at_ms=self.now, project=P, customer_id=cid, feature_key=feature, value=value)
        result = self.d.run(cmd)
        if cid not in self.d.state.projects[P].customers:
            assert isinstance(result, Rejected) and result.code == "entitlement_customer_not_found"
            return
        assert isinstance(result, Applied)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def capacity_is_conserved(self) -> None:
        assert check_invariants(self.d.state) == []
        for (cid, wallet), model in self.pools.items():
            customer = self.d.state.projects[P].customers[cid]
            pool = next(p for p in customer.slot_pools if p.wallet == wallet)
            held = {r: h.amount for r, h in (pool.holdings or {}).items()}
            assert held == {r: a for r, (a, _, _) in model["holdings"].items()}  # type: ignore[attr-defined]
            assert 0 <= pool.in_use == sum(held.values()) <= pool.capacity == model["capacity"]

    @invariant()
    def entitlements_are_their_event_history(self) -> None:
        for customer in self.d.state.projects[P].customers.values():
            last: dict[str, str | None] = {}
            for event in customer.entitlement_events or ():
                assert event.old_value == last.get(event.feature_key)
                last[event.feature_key] = event.new_value
            current = {k: e.value for k, e in (customer.entitlements or {}).items()}
            assert current == {k: v for k, v in last.items() if v is not None}

    @invariant()
    def replay_and_snapshot_reproduce_the_digest(self) -> None:
        expected = digest(self.d.state)
        fresh = LedgerState()
        for lsn, cmd in self.d.history:
            result = apply(fresh, lsn, cmd)
            assert isinstance(result, Applied) and result.logged
        assert digest(fresh) == expected
        assert digest(decode_state(encode_state(self.d.state))) == expected


SlotMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
TestSlotsStateful = SlotMachine.TestCase
