"""The in-memory layout of a customer (engine/core/state.py, issue 14: an idle customer with one
bucket near 1 KiB): what one holds, how it grows, and that the layout never reaches the
snapshot bytes, the digest or the derived indexes.

- A customer funded once holds its bucket, entry and live bucket in tuples of one and its keyed
  deposit as the record itself; `extras` stays None. A second deposit turns them into lists.
- The fields folded into CustomerExtras read as None until set; setting None creates nothing.
- A state decoded from a snapshot, and one replayed command by command, encode to the same bytes
  and digest; check_invariants (now also the deposit idempotency index) is clean, and it names a
  damaged deposit index.
- The bytes one idle customer owns stay within IDLE_CUSTOMER_BYTES_MAX (sys.getsizeof of the
  objects reachable only from it: deterministic for one CPython; the server's RSS adds dict slots
  and allocator rounding, see bench/memory_probe.py and the bench's Memory table).
"""

from __future__ import annotations

import msgspec

from bench.memory_probe import owned_sizes
from engine.core.codec import decode_state, encode_state
from engine.core.commands import (
    Deduct,
    Deposit,
    EntitlementSet,
    Refund,
    SetAlerts,
    SlotClaim,
    SlotGrant,
    Void,
)
from engine.core.digest import digest
from engine.core.invariants import check_invariants
from engine.core.ledger import apply
from engine.core.results import Applied
from engine.core.state import Bucket, CustomerExtras, CustomerState, DepositRecord, LedgerState, RefundRecord
from tests.engine.helpers import P, T0_MS, Driver

# CustomerState 144 + three tuples of one 144 + LedgerEntry 104 + Bucket 96 + DepositRecord 80
# + id and key strings 111 + three ints 88 = 767 with this layout (a list of one instead of a
# tuple costs 24 more; each CustomerState field 8 more).
IDLE_CUSTOMER_BYTES_MAX = 800


def _fund(d: Driver, n: int, *, key: str | None = None, amount: int = 1000) -> None:
    d.ok(Deposit(at_ms=T0_MS + d.state.last_lsn, project=P, customer_id=f"m-{n}", amount=amount,
                 idempotency_key=key if key is not None else f"fund-0-m-{n}"))  # fmt: skip


def test_a_customer_funded_once_holds_tuples_of_one_and_the_record_itself() -> None:
    d = Driver()
    _fund(d, 1)
    customer = d.state.projects[P].customers["m-1"]
    assert type(customer.buckets) is tuple and len(customer.buckets) == 1
    assert type(customer.entries) is tuple and len(customer.entries) == 1
    assert type(customer.live) is tuple and customer.live[0] is customer.buckets[0]
    assert type(customer.keyed_deposits) is DepositRecord
    assert customer.deposits == (customer.keyed_deposits,)
    assert d.state.projects[P].deposit_records["fund-0-m-1"] is customer.keyed_deposits
    assert customer.extras is None and customer.refunds is None and customer.slot_pools is None


def test_a_second_deposit_and_a_deduct_turn_them_into_lists_in_order() -> None:
    d = Driver()
    _fund(d, 1)
    _fund(d, 1, key="second", amount=5)
    d.ok(Deduct(at_ms=T0_MS + 9, project=P, customer_id="m-1", amount=1005, transaction_id="all"))
    customer = d.state.projects[P].customers["m-1"]
    assert [b.lsn for b in customer.buckets] == [1, 2] and type(customer.buckets) is list
    assert [(e.lsn, e.op) for e in customer.entries] == [(1, "GRANT"), (2, "GRANT"), (3, "CONSUME"), (3, "CONSUME")]
    assert type(customer.entries) is list
    assert customer.live == [] and customer.spent is not None  # both spent: out of `live` (§7.11)
    assert [r.idempotency_key for r in customer.deposits] == ["fund-0-m-1", "second"]
    assert type(customer.keyed_deposits) is list
    assert check_invariants(d.state) == []


def test_a_deposit_without_a_key_keeps_no_record() -> None:
    d = Driver()
    d.ok(Deposit(at_ms=T0_MS, project=P, customer_id="c", amount=7))
    customer = d.state.projects[P].customers["c"]
    assert customer.keyed_deposits is None and customer.deposits == ()
    assert d.state.projects[P].deposit_records == {}


def test_extras_are_created_on_the_first_value_and_read_as_none_before() -> None:
    customer = CustomerState(customer_id="c", created_at_ms=T0_MS)
    customer.voided = None  # None creates nothing
    assert customer.extras is None and customer.voided is None
    record = RefundRecord("r1", "t1", 5, T0_MS, 3, None, 0, ())
    customer.refunds = {"r1": record}
    assert customer.extras == CustomerExtras(refunds={"r1": record})
    assert customer.refunds == {"r1": record} and customer.voids is None
    customer.refunds = None
    assert customer.extras == CustomerExtras() and customer.refunds is None
    assert CustomerState.refunds.name == "refunds"  # the class attribute is the descriptor


def _varied_history(d: Driver) -> None:
    """Idle customers, a two-deposit customer with a refund and a void, slots, an entitlement
    and alert rules: every field CustomerExtras folds in, and both deposit shapes."""
    for n in range(3):
        _fund(d, n)
    _fund(d, 0, key="again", amount=50)
    d.ok(Deduct(at_ms=T0_MS + 10, project=P, customer_id="m-0", amount=30, transaction_id="t1"))
    d.ok(Refund(at_ms=T0_MS + 11, project=P, customer_id="m-0", refund_id="r1", transaction_id="t1", amount=10))
    d.ok(Void(at_ms=T0_MS + 12, project=P, customer_id="m-1", void_id="v1", account_id="acc_2"))
    d.ok(SlotGrant(at_ms=T0_MS + 13, project=P, customer_id="s", wallet="seats", source="plan", amount=2,
                   idempotency_key="g1"))  # fmt: skip
    d.ok(SlotClaim(at_ms=T0_MS + 14, project=P, customer_id="s", wallet="seats", source="plan", resource_id="u1",
                   ttl_s=60))  # fmt: skip
    d.ok(EntitlementSet(at_ms=T0_MS + 15, project=P, customer_id="m-2", feature_key="tier", value="pro"))
    d.ok(SetAlerts(at_ms=T0_MS + 16, project=P, customer_id="m-2", wallet=None, thresholds=(500,)))


def test_snapshot_and_replay_agree_byte_for_byte() -> None:
    d = Driver()
    _varied_history(d)
    state = d.state
    customers = state.projects[P].customers
    assert customers["m-0"].extras is not None and customers["m-0"].refunded == {"t1": 10}
    assert customers["m-1"].voided == {2: "v1"} and customers["s"].holding_index is not None
    assert customers["m-2"].extras is not None and customers["m-2"].alerts is not None
    assert check_invariants(state) == []
    data = encode_state(state)
    restored = decode_state(data)
    assert encode_state(restored) == data and digest(restored) == digest(state)
    assert check_invariants(restored) == []
    replayed = LedgerState()
    for lsn, command in d.history:
        result = apply(replayed, lsn, msgspec.msgpack.decode(msgspec.msgpack.encode(command), type=type(command)))
        assert type(result) is Applied and result.logged
    assert encode_state(replayed) == data
    restored_customers = restored.projects[P].customers
    assert restored_customers["m-0"].refunded == {"t1": 10} and restored_customers["m-1"].voided == {2: "v1"}
    assert restored_customers["s"].holding_index == customers["s"].holding_index
    assert [r.idempotency_key for r in restored_customers["m-0"].deposits] == ["fund-0-m-0", "again"]
    assert type(restored_customers["m-1"].keyed_deposits) is DepositRecord
    assert restored_customers["m-1"].extras is not None and restored_customers["m-1"].refunds is None


def test_check_invariants_names_a_damaged_deposit_index() -> None:
    d = Driver()
    _varied_history(d)
    project = d.state.projects[P]
    record = project.deposit_records.pop("again")
    assert check_invariants(d.state) == [
        f"project={P!r} deposit index lacks the key 'again'",
        f"project={P!r} deposit index holds 3 keys, the customers 4",
    ]
    project.deposit_records["again"] = msgspec.structs.replace(record, amount=record.amount + 1)
    assert check_invariants(d.state) == [f"project={P!r} deposit index lacks the key 'again'"]
    customer = project.customers["m-0"]
    customer.keyed_deposits = [msgspec.structs.replace(record, amount=record.amount + 1), *customer.deposits[:1]]
    project.deposit_records["again"] = customer.deposits[0]
    assert check_invariants(d.state) == [
        f"project={P!r} customer='m-0' keyed deposits out of lsn order",
        f"project={P!r} deposit 'again' does not match its bucket acc_4",
    ]


def test_an_idle_customer_owns_at_most_its_byte_budget() -> None:
    d = Driver()
    for n in range(3):
        _fund(d, n)
    customers = d.state.projects[P].customers
    shared: set[int] = set()
    owned_sizes(customers["m-0"], shared)  # what every customer shares: wallet, source, op strings...
    sizes = owned_sizes(customers["m-1"], shared)
    assert set(sizes) == {"CustomerState", "tuple", "Bucket", "LedgerEntry", "DepositRecord", "str", "int"}
    assert sizes["CustomerState"] == 16 + 8 * len(CustomerState.__struct_fields__) == 144
    assert sizes["Bucket"] == 16 + 8 * len(Bucket.__struct_fields__)
    assert sum(sizes.values()) <= IDLE_CUSTOMER_BYTES_MAX, sizes
