"""net/ over the real engine.runtime.Runtime (tmp_path data dir), and the official SDK against it.

Method: Runtime.open on a fresh data dir, one API key, create_app, real HTTP on 127.0.0.1; then the
same through velobase-billing 0.2.2's AsyncVelobase pointed at the test server. Fails if the
Commands net builds are not what the engine expects, if the response shapes do not satisfy the
SDK's models, or if percent-encoded ids do not reach the same customer the deposit created.
"""

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from engine.runtime import Runtime, RuntimeConfig
from net.app import create_app
from net.config import ServerConfig
from tests.app_server import TallyTestServer
from tests.net.conftest import expect_error

KEY = "vb_test_real_runtime_key"
OTHER_KEY = "vb_test_real_runtime_other"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[TestClient]:
    runtime = await Runtime.open(RuntimeConfig(data_dir=tmp_path, shard_count=2))
    try:
        await runtime.create_api_key("proj_a", KEY, "key_a")
        await runtime.create_api_key("proj_b", OTHER_KEY, "key_b")
        app = create_app(ServerConfig(port=0), runtime)
        async with TestClient(TallyTestServer(app, host="127.0.0.1")) as client:
            yield client
    finally:
        await runtime.close()


def j(**fields: object) -> bytes:
    return msgspec.json.encode(fields)


async def test_lifecycle_over_http(real: TestClient) -> None:
    resp = await real.post("/v1/customers/deposit", data=j(customer_id="a/b c", amount=1000, idempotency_key="d1"),
                           headers=AUTH)
    assert resp.status == 200, await resp.text()
    deposit = await resp.json()
    assert deposit["customer_id"] == "a/b c" and deposit["added_amount"] == 1000

    resp = await real.post("/v1/billing/freeze", data=b'{"customer_id":"a/b c","amount":3e2,"transaction_id":"t1"}',
                           headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["frozen_amount"] == 300

    resp = await real.post("/v1/billing/consume", data=b'{"transaction_id":"t1","actual_amount":100.0}', headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["consumed_amount"] == 100

    resp = await real.get(f"/v1/customers/{quote('a/b c', safe='')}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["balance"] == {"total": 1000, "used": 100, "frozen": 0, "available": 900}

    resp = await real.get(f"/v1/customers/{quote('a/b c', safe='')}/ledger?limit=2", headers=AUTH)
    page = await resp.json()
    assert resp.status == 200 and len(page["items"]) == 2 and page["has_more"] is True


async def test_engine_rejections_over_http(real: TestClient) -> None:
    await expect_error(await real.get("/v1/customers/nonexistent_ghost_user", headers=AUTH), 404, "customer_not_found")
    await expect_error(await real.get("/v1/customers/ghost/ledger", headers=AUTH), 404, "customer_not_found")
    resp = await real.post("/v1/billing/deduct", data=j(customer_id="ghost", amount=1, transaction_id="t"), headers=AUTH)
    await expect_error(resp, 404, "customer_not_found")
    await real.post("/v1/customers/deposit", data=j(customer_id="c", amount=10), headers=AUTH)
    resp = await real.post("/v1/billing/deduct", data=j(customer_id="c", amount=11, transaction_id="t"), headers=AUTH)
    error = await expect_error(resp, 400, "insufficient_balance")
    assert set(error["details"]) >= {"wallet", "requested", "available"}
    resp = await real.post("/v1/billing/consume", data=j(transaction_id="nonexistent_txn_id"), headers=AUTH)
    await expect_error(resp, 400, "no_consumable_freeze_records")
    resp = await real.post("/v1/billing/unfreeze", data=j(transaction_id="nonexistent_txn_id"), headers=AUTH)
    await expect_error(resp, 400, "no_unfreezable_records")
    # projects are isolated: the other key sees no customer "c"
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    await expect_error(await real.get("/v1/customers/c", headers=other), 404, "customer_not_found")
    await expect_error(await real.get("/v1/customers/c", headers={"Authorization": "Bearer nope"}), 401,
                       "invalid_api_key")


async def test_health_real(real: TestClient) -> None:
    resp = await real.get("/health")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_official_sdk_against_app(real: TestClient) -> None:
    velobase = pytest.importorskip("velobase_billing")
    base_url = f"http://127.0.0.1:{real.server.port}"
    async with velobase.AsyncVelobase(api_key=KEY, base_url=base_url, max_retries=0) as vb:
        customer = "py_user+1@example.com/x"
        dep = await vb.customers.deposit(customer_id=customer, amount=1000, idempotency_key="dep_1", name="A")
        assert dep.added_amount == 1000 and dep.account_id and dep.record_id
        replay = await vb.customers.deposit(customer_id=customer, amount=1000, idempotency_key="dep_1")
        assert replay.is_idempotent_replay is True
        got = await vb.customers.get(customer)
        assert got.id == customer and got.balance.available == 1000
        frz = await vb.billing.freeze(customer_id=customer, amount=100, transaction_id="job_1", business_type="TASK",
                                      unfreeze_after_seconds=600)
        assert frz.frozen_amount == 100 and frz.freeze_details
        con = await vb.billing.consume(transaction_id="job_1", actual_amount=60)
        assert con.consumed_amount == 60 and con.returned_amount == 40
        ded = await vb.billing.deduct(customer_id=customer, amount=5, transaction_id="img_1")
        assert ded.deducted_amount == 5
        ledger = await vb.customers.ledger(customer, limit=100, transaction_id="job_1")
        assert ledger.items and all(item.transaction_id == "job_1" for item in ledger.items)
        with pytest.raises(velobase.ValidationError):
            await vb.billing.freeze(customer_id="", amount=1, transaction_id="b", unfreeze_after_seconds=1)
        with pytest.raises(velobase.ValidationError):
            await vb.billing.deduct(customer_id=customer, amount=10**6, transaction_id="img_2")
        with pytest.raises(velobase.NotFoundError):
            await vb.customers.get("nonexistent_ghost_user")
        with pytest.raises(velobase.ConflictError):
            await vb.billing.freeze(customer_id=customer, amount=1, transaction_id="img_1", unfreeze_after_seconds=1)
    async with velobase.AsyncVelobase(api_key="vb_live_fake", base_url=base_url, max_retries=0) as bad:
        with pytest.raises(velobase.AuthenticationError):
            await bad.customers.get("anyone")
        with pytest.raises(velobase.AuthenticationError):
            await bad.billing.freeze(customer_id="x", amount=1, transaction_id="b", unfreeze_after_seconds=1)
