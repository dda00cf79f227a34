"""The official SDK (velobase-billing 0.2.2), unchanged, against a real `tally serve` process.

What: every step and check of the SDK's integration flow (velobase-api §8.6), re-implemented
here with exact expected values, then a SIGTERM stop and a restart that must find every balance
and ledger entry again. How: a subprocess on a free 127.0.0.1 port, the SDK pointed at it with
only `base_url`. How it could fail: any wire-shape difference makes the SDK's pydantic models
raise; any lost write changes a balance after the restart.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import velobase_billing as vb
from velobase_billing import AsyncVelobase, Velobase

from tests.system.conftest import API_KEY

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def balance(client: Velobase, customer: str) -> tuple[float, float, float, float]:
    b = client.customers.get(customer).balance
    return (b.total, b.used, b.frozen, b.available)


@pytest.fixture
def sdk():
    """Makes sync SDK clients and closes them after the test (their pooled sockets otherwise
    leak: ResourceWarning, an error under filterwarnings = error)."""
    clients: list[Velobase] = []

    def make(**options) -> Velobase:
        client = Velobase(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_8_6_auth_failures(tally, sdk):
    with pytest.raises(ValueError, match="api_key is required"):
        Velobase(api_key="")
    with pytest.raises(vb.AuthenticationError) as error:
        sdk(api_key="vb_live_fake", base_url=tally.base_url).customers.get("anyone")
    assert error.value.status == 401 and error.value.type == "auth_error"
    assert isinstance(error.value, vb.VelobaseError)
    with pytest.raises(vb.AuthenticationError) as error:
        sdk(api_key="garbage", base_url=tally.base_url).billing.freeze(customer_id="x", amount=1, transaction_id="b")
    assert error.value.status == 401


def test_8_6_full_flow_then_restart(tally, sdk):
    run = f"py_{int(time.time()):x}"
    customer = run + "_user"
    client = sdk(api_key=API_KEY, base_url=tally.base_url, max_retries=0)

    # 2. customers
    with pytest.raises(vb.NotFoundError) as missing:
        client.customers.get("nonexistent_ghost_user")
    assert missing.value.status == 404
    first = client.customers.deposit(customer_id=customer, amount=1000, description="Initial deposit")
    assert (first.customer_id, first.added_amount, first.total_amount) == (customer, 1000, 1000)
    assert first.is_idempotent_replay is False and first.account_id and first.record_id
    assert (first.wallet, first.source, first.credit_type) == ("default", "default", "default")
    got = client.customers.get(customer)
    assert got.id == customer and isinstance(got.created_at, str)
    assert balance(client, customer) == (1000, 0, 0, 1000)
    assert got.accounts[0].account_type == "CREDIT" and got.accounts[0].credit_type == "default"
    d1 = client.customers.deposit(customer_id=customer, amount=500, idempotency_key=run + "_idem")
    d2 = client.customers.deposit(customer_id=customer, amount=500, idempotency_key=run + "_idem")
    assert (d1.is_idempotent_replay, d2.is_idempotent_replay) == (False, True)
    assert (d2.account_id, d2.record_id, d2.total_amount) == (d1.account_id, d1.record_id, d1.total_amount)
    assert balance(client, customer) == (1500, 0, 0, 1500)

    # 3. freeze / consume / unfreeze
    txn1, txn2, txn3 = run + "_txn1", run + "_txn2", run + "_txn3"
    frozen = client.billing.freeze(customer_id=customer, amount=600, transaction_id=txn1, description="Video generation job")
    assert (frozen.transaction_id, frozen.frozen_amount, frozen.is_idempotent_replay) == (txn1, 600, False)
    assert len(frozen.freeze_details) == 1
    assert balance(client, customer) == (1500, 0, 600, 900)
    again = client.billing.freeze(customer_id=customer, amount=600, transaction_id=txn1)
    assert again.is_idempotent_replay is True and again.freeze_details == frozen.freeze_details
    consumed = client.billing.consume(transaction_id=txn1, actual_amount=400)
    assert (consumed.consumed_amount, consumed.returned_amount, consumed.is_idempotent_replay) == (400, 200, False)
    assert isinstance(consumed.consumed_at, str) and isinstance(consumed.consume_details, list)
    assert balance(client, customer) == (1500, 400, 0, 1100)
    client.billing.freeze(customer_id=customer, amount=300, transaction_id=txn2)
    assert balance(client, customer) == (1500, 400, 300, 800)
    unfrozen = client.billing.unfreeze(transaction_id=txn2)
    assert (unfrozen.unfrozen_amount, unfrozen.is_idempotent_replay) == (300, False)
    assert isinstance(unfrozen.unfrozen_at, str) and isinstance(unfrozen.unfreeze_details, list)
    assert balance(client, customer) == (1500, 400, 0, 1100)
    client.billing.freeze(customer_id=customer, amount=200, transaction_id=txn3)
    full = client.billing.consume(transaction_id=txn3)
    assert full.consumed_amount == 200 and full.returned_amount in (None, 0)
    assert balance(client, customer) == (1500, 600, 0, 900)

    # 3B. deduct
    deducted = client.billing.deduct(customer_id=customer, amount=50, transaction_id=run + "_deduct1",
                                     business_type="TASK", description="API call charge")
    assert (deducted.deducted_amount, deducted.is_idempotent_replay) == (50, False)
    assert isinstance(deducted.deducted_at, str) and len(deducted.deduct_details) >= 1
    assert balance(client, customer) == (1500, 650, 0, 850)
    replay = client.billing.deduct(customer_id=customer, amount=50, transaction_id=run + "_deduct1")
    assert replay.is_idempotent_replay is True and replay.deducted_at == deducted.deducted_at
    assert balance(client, customer) == (1500, 650, 0, 850)
    with pytest.raises(vb.ValidationError) as poor:
        client.billing.deduct(customer_id=customer, amount=999999, transaction_id=run + "_deduct_fail")
    assert poor.value.status == 400

    # 3C. ledger
    ledger = client.customers.ledger(customer)
    # GRANT 1000, GRANT 500, FREEZE 600, CONSUME 400, UNFREEZE 200, FREEZE 300, UNFREEZE 300,
    # FREEZE 200, CONSUME 200, CONSUME 50 (all from one bucket each: FEFO takes the older first)
    assert ledger.total_count == 10 and ledger.has_more is False
    top = ledger.items[0]
    assert (top.operation_type, top.amount, top.transaction_id, top.business_type) == ("CONSUME", 50, run + "_deduct1", "TASK")
    assert top.id and top.credit_type == "default" and top.account_id and top.status == "COMPLETED"
    grants = client.customers.ledger(customer, operation_type="GRANT")
    assert [item.amount for item in grants.items] == [500, 1000]
    assert grants.items[0].transaction_id == run + "_idem" and grants.items[1].transaction_id is None
    by_txn = client.customers.ledger(customer, transaction_id=txn1)
    assert [(i.operation_type, i.amount) for i in by_txn.items] == [("UNFREEZE", 200), ("CONSUME", 400), ("FREEZE", 600)]
    page1 = client.customers.ledger(customer, limit=2)
    assert len(page1.items) == 2 and page1.has_more and page1.next_cursor
    page2 = client.customers.ledger(customer, limit=2, cursor=page1.next_cursor)
    assert page2.items and page2.items[0].id != page1.items[0].id
    seen, cursor = [], None
    while True:
        page = client.customers.ledger(customer, limit=3, cursor=cursor)
        seen += [item.id for item in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == [item.id for item in ledger.items]
    with pytest.raises(vb.NotFoundError):
        client.customers.ledger("nonexistent_ghost_user")

    # 4. error handling
    with pytest.raises(vb.ValidationError):
        client.billing.freeze(customer_id=customer, amount=999999, transaction_id=run + "_big")
    with pytest.raises(vb.VelobaseError) as unknown:
        client.billing.consume(transaction_id="nonexistent_txn_id")
    assert unknown.value.status >= 400
    for bad in (0, -1):
        with pytest.raises(vb.ValidationError):
            client.customers.deposit(customer_id=customer, amount=bad)
    with pytest.raises(vb.ValidationError):
        client.billing.freeze(customer_id="", amount=100, transaction_id="x")
    with pytest.raises(vb.VelobaseError) as unknown:
        client.billing.unfreeze(transaction_id="nonexistent_txn_id")
    assert unknown.value.status >= 400

    # 5. async client, shared state with the sync one
    async def async_flow() -> float:
        async_customer = run + "_async"
        async with AsyncVelobase(api_key=API_KEY, base_url=tally.base_url) as aclient:
            assert (await aclient.customers.deposit(customer_id=async_customer, amount=100)).added_amount == 100
            assert (await aclient.customers.get(async_customer)).balance.available == 100
            await aclient.billing.freeze(customer_id=async_customer, amount=50, transaction_id=run + "_async_txn")
            done = await aclient.billing.consume(transaction_id=run + "_async_txn", actual_amount=30)
            assert done.consumed_amount == 30
        async with AsyncVelobase(api_key=API_KEY, base_url=tally.base_url) as other:
            return (await other.customers.get(async_customer)).balance.available

    assert asyncio.run(async_flow()) == 70
    with Velobase(api_key=API_KEY, base_url=tally.base_url) as scoped:
        assert scoped.customers.get(customer).balance.available == 850

    # stop -> start: every balance and ledger entry is still there
    before = [item.id for item in client.customers.ledger(customer, limit=100).items]
    assert tally.stop() == 0
    tally.proc = None
    tally.start()
    assert balance(client, customer) == (1500, 650, 0, 850)
    assert [item.id for item in client.customers.ledger(customer, limit=100).items] == before
    assert client.billing.deduct(customer_id=customer, amount=50, transaction_id=run + "_deduct1").is_idempotent_replay
    assert client.customers.get(run + "_async").balance.available == 70
