"""API keys (CONTRACT §3.15), snapshots and digest (CONTRACT §5), lookups, timer order.

Each test pins one promise with exact values; a codec or digest that drops a field, keeps a
derived index in the hash, or depends on insertion order fails here.
"""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from engine.core.cold import CustomerMap
from engine.core.codec import decode_state, encode_state
from engine.core.codes import status_of
from engine.core.commands import (
    AutoSettle,
    CreateApiKey,
    Deposit,
    ExpireBuckets,
    Freeze,
    RevokeApiKey,
)
from engine.core.digest import digest
from engine.core.keys import BoundedMemo, KeyHashMemo, hash_api_key, keys_match
from engine.core.ledger import apply
from engine.core.queries import (
    customer_count,
    customer_last_lsn,
    customer_view,
    find_api_key,
    ledger_page,
    list_api_keys,
    transaction_owner,
)
from engine.core.results import Rejected
from engine.core.state import ApiKey, LedgerState
from engine.core.timers import due_commands
from tests.engine.helpers import T0_MS, Driver, P

T = T0_MS


def test_3_15_key_hash_is_sha256_hex_and_compare_is_exact():
    assert hash_api_key("secret") == hashlib.sha256(b"secret").hexdigest()
    assert keys_match(hash_api_key("a"), hash_api_key("a"))
    assert not keys_match(hash_api_key("a"), hash_api_key("b"))


def test_3_15_key_hash_memo_is_hash_api_key_and_bounded():
    memo = KeyHashMemo(size=3)
    keys = [f"vb_key_{i}" for i in range(7)]
    for key in keys + keys[:2] + ["ключ"]:  # repeats, and a non-ASCII key
        assert memo[key] == hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()
        assert 1 <= len(memo) <= 3
    memo = KeyHashMemo(size=2)
    memo["a"], memo["b"]
    assert len(memo) == 2
    memo["c"]  # full: emptied, then holds the new key only
    assert len(memo) == 1 and memo["c"] == hash_api_key("c") and len(memo) == 1


def test_bounded_memo_starts_again_empty_when_full():
    memo: BoundedMemo[str, int] = BoundedMemo(size=2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("b", 3)  # full: even a key it holds empties it first
    assert memo == {"b": 3}
    memo.put("c", 4)
    assert memo == {"b": 3, "c": 4}
    memo.put("d", 5)
    assert memo == {"d": 5}


def test_3_15_create_and_revoke_api_key():
    d = Driver()
    d.ok(CreateApiKey(at_ms=T, project="default", key_id="key_1", key_hash="h1"))
    assert "default" in d.state.projects and customer_count(d.state) == 0
    assert find_api_key(d.state, "h1") == ApiKey("key_1", "h1", "default", False, created_at_ms=T)
    assert d.rejected(CreateApiKey(at_ms=T, project="x", key_id="key_1", key_hash="h2")).code == "api_key_exists"
    d.ok(RevokeApiKey(at_ms=T, key_id="key_1"))
    assert find_api_key(d.state, "h1").revoked is True
    assert d.run(RevokeApiKey(at_ms=T, key_id="key_1")).logged is False
    assert d.rejected(RevokeApiKey(at_ms=T, key_id="nope")).code == "key_not_found"
    assert find_api_key(d.state, "zz") is None
    assert list_api_keys(d.state) == [ApiKey("key_1", "h1", "default", True, created_at_ms=T, revoked_at_ms=T)]
    assert d.state.last_lsn == 2


def test_3_15_projects_are_isolated():
    d = Driver()
    d.ok(Deposit(at_ms=T, project="a", customer_id="c", amount=5))
    d.ok(Freeze(at_ms=T, project="a", customer_id="c", amount=1, transaction_id="t"))
    assert customer_view(d.state, "b", "c", T).code == "customer_not_found"
    assert transaction_owner(d.state, "a", "t") == "c"
    assert transaction_owner(d.state, "b", "t") is None
    page = ledger_page(d.state, "a", "c", limit=1, cursor=None, operation_type=None, transaction_id=None)
    d.ok(Deposit(at_ms=T, project="b", customer_id="c", amount=5))
    d.ok(Deposit(at_ms=T, project="b", customer_id="c", amount=5))
    other = ledger_page(d.state, "b", "c", limit=1, cursor=page.next_cursor, operation_type=None, transaction_id=None)
    assert isinstance(other, Rejected) and other.code == "invalid_cursor"
    assert customer_last_lsn(d.state, "a", "c") == 2 and customer_last_lsn(d.state, "b", "c") == 4
    assert customer_last_lsn(d.state, "b", "nobody") == 0


def _busy_history() -> Driver:
    d = Driver()
    d.ok(CreateApiKey(at_ms=T, project=P, key_id="k", key_hash="h"))
    for n in range(30):  # more than INDEX_ENTRIES_MIN entries for c0
        cid = f"c{n % 3}"
        d.ok(Deposit(at_ms=T + n, project=P, customer_id=cid, amount=100, expires_at_ms=T + 50_000 + n,
                     idempotency_key=f"k{n}", metadata={"z": 1, "a": [n]}))  # fmt: skip
        d.ok(Freeze(at_ms=T + n, project=P, customer_id=cid, amount=7, transaction_id=f"t{n}", unfreeze_after_s=60))
    return d


def test_5_codec_round_trip_keeps_digest_and_rebuilds_derived_indexes():
    d = _busy_history()
    restored = decode_state(encode_state(d.state))
    assert digest(restored) == digest(d.state)
    assert restored.key_hash_by_id == {"k": "h"}
    assert transaction_owner(restored, P, "t4") == "c1"
    assert due_commands(restored, P, "c0", T + 10**9) == due_commands(d.state, P, "c0", T + 10**9)
    args = dict(limit=5, cursor=None, operation_type="FREEZE", transaction_id=None)
    assert ledger_page(restored, P, "c0", **args) == ledger_page(d.state, P, "c0", **args)
    # The restored state keeps working exactly like the original.
    cmd = ExpireBuckets(at_ms=T + 50_010, project=P, customer_id="c0")
    apply(restored, restored.last_lsn + 1, cmd)
    apply(d.state, d.state.last_lsn + 1, cmd)
    assert digest(restored) == digest(d.state)


def test_5_digest_ignores_derived_state_and_customer_insertion_order():
    a, b = LedgerState(), LedgerState()
    apply(a, 1, Deposit(at_ms=T, project=P, customer_id="x", amount=1))
    apply(a, 2, Deposit(at_ms=T, project=P, customer_id="y", amount=1))
    apply(b, 1, Deposit(at_ms=T, project=P, customer_id="x", amount=1))
    apply(b, 2, Deposit(at_ms=T, project=P, customer_id="y", amount=1))
    b.projects[P].customers = CustomerMap(dict(reversed(list(b.projects[P].customers.items()))))
    b.due_heap.append((1, "junk", "junk"))
    assert digest(a) == digest(b)
    apply(b, 3, Deposit(at_ms=T, project=P, customer_id="y", amount=1))
    assert digest(a) != digest(b)


def test_5_decode_rejects_garbage():
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_state(b"\x93garbage")


def test_6_timers_at_the_same_ms_come_expiry_first_in_due_order():
    d = Driver()
    d.ok(Deposit(at_ms=T, project=P, customer_id="c", amount=100, expires_at_ms=T + 5000))
    d.ok(Deposit(at_ms=T, project=P, customer_id="c", amount=100, expires_at_ms=T + 5000))
    d.ok(Deposit(at_ms=T, project=P, customer_id="c", amount=100, expires_at_ms=T + 3000))
    d.ok(Freeze(at_ms=T, project=P, customer_id="c", amount=150, transaction_id="f", unfreeze_after_s=5))
    assert due_commands(d.state, P, "c", T + 5000) == [
        ExpireBuckets(at_ms=T + 3000, project=P, customer_id="c"),
        ExpireBuckets(at_ms=T + 5000, project=P, customer_id="c"),
        AutoSettle(at_ms=T + 5000, project=P, customer_id="c", transaction_id="f"),
    ]
    d.tick("c", T + 5000)
    bucket_states = [(b.used, b.frozen, b.expired) for b in d.state.projects[P].customers["c"].buckets]
    assert bucket_states == [(0, 0, 100), (0, 0, 100), (0, 0, 100)]  # all returned credit written off


def test_7_9_bad_limit_or_operation_type_is_400_not_a_crash():
    d = Driver()
    d.ok(Deposit(at_ms=T, project=P, customer_id="c", amount=1))
    for limit, op, code in ((0, None, "invalid_limit"), (101, None, "invalid_limit"), (5, "DEPOSIT", "invalid_operation_type")):
        r = ledger_page(d.state, P, "c", limit=limit, cursor=None, operation_type=op, transaction_id=None)
        assert isinstance(r, Rejected) and (status_of(r.code), r.code) == (400, code)


def test_restored_state_rebuilds_owners_and_shares_strings() -> None:
    """decode_state (issue 14, restart time): the bucket-owner index is rebuilt in lsn order from
    customers whose buckets interleave, a keyed deposit replays (and conflicts) as before, and
    equal wallet / source strings are one object across customers after a restore."""
    state = LedgerState()
    owners = {}
    for round_ in range(3):
        for name in ("b", "a", "c"):  # customers interleave: owners are not in customer order
            lsn = state.last_lsn + 1
            command = Deposit(at_ms=T0_MS + lsn, project=P, customer_id=name, amount=5 + round_,
                              wallet="credits", source="promo", idempotency_key=f"{name}-{round_}")
            assert apply(state, lsn, command).logged
            owners[lsn] = name
    restored = decode_state(encode_state(state))
    assert digest(restored) == digest(state)
    project = restored.projects[P]
    assert list(project.bucket_lsns) == sorted(owners)
    assert project.bucket_customers == [owners[lsn] for lsn in sorted(owners)]
    assert [project.bucket_owner(lsn) for lsn in sorted(owners)] == [owners[lsn] for lsn in sorted(owners)]
    wallets = {id(b.wallet) for c in project.customers.values() for b in c.buckets}
    wallets |= {id(e.wallet) for c in project.customers.values() for e in c.entries}
    assert len(wallets) == 1
    replay = Deposit(at_ms=T0_MS + 100, project=P, customer_id="a", amount=6, wallet="credits", source="promo",
                     idempotency_key="a-1")
    assert apply(restored, restored.last_lsn + 1, replay).logged is False
    stolen = msgspec.structs.replace(replay, customer_id="b")
    result = apply(restored, restored.last_lsn + 1, stolen)
    assert isinstance(result, Rejected) and result.details["field"] == "customer_id", result
