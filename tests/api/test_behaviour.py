"""End-to-end API behaviour through a real `tally serve` on 127.0.0.1, with exact bodies.

What: overage on consume; freeze TTLs (auto-unfreeze, auto-consume) and what a later consume or
unfreeze gets; bucket expiry (one EXPIRE for the remainder; an expires_at in the past writes GRANT
+ EXPIRE); two projects that cannot see each other's customers or transaction ids; a burst of
hundreds of concurrent freezes on one customer with duplicated transaction ids.
How: raw HTTP (tests/api/harness.py) and an aiohttp session for the burst; waits are bounded
polls (at most POLL_S), never sleeps that assume a speed; no timing is asserted.
How it could fail: a wrong amount, field, code or entry; a timer that never fires or fires twice;
data leaking across projects; a negative balance, two winners for one transaction id, or a final
balance that is not the sum of the winners.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import aiohttp
import pytest

from tests.api.harness import (
    API_KEY,
    Server,
    create_key,
    customer_path,
    deposit,
    full_ledger,
    request,
)
from tests.waiting import wait_for

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
POLL_S = 5.0


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("behaviour") / "data").start()
    try:
        yield server
    finally:
        server.kill()


def post(server: Server, path: str, key: str = API_KEY, **fields: Any) -> tuple[int, dict[str, Any]]:
    reply = request(server.port, "POST", path, key=key, body=fields)
    return reply.status, reply.json()


def get(server: Server, customer_id: str, key: str = API_KEY) -> tuple[int, dict[str, Any]]:
    reply = request(server.port, "GET", customer_path(customer_id), key=key)
    return reply.status, reply.json()


def times_of(body: dict[str, Any], *fields: str) -> dict[str, Any]:
    """Check the time fields' format and return the body without them."""
    for name in fields:
        assert TIME.match(body[name]), (name, body[name])
    return {k: v for k, v in body.items() if k not in fields}


def poll(condition: Callable[[], Any]) -> Any:
    return wait_for(condition, what="the polled condition", within_s=POLL_S)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def detail(account_id: str, amount: int, wallet: str = "default", source: str = "default") -> dict[str, Any]:
    return {"account_id": account_id, "wallet": wallet, "source": source, "credit_type": wallet, "amount": amount}


def balance(server: Server, customer_id: str, key: str = API_KEY) -> dict[str, int]:
    status, body = get(server, customer_id, key)
    assert status == 200, body
    return body["balance"]


def entries(server: Server, customer_id: str, key: str = API_KEY) -> list[tuple[str, int, str | None, str]]:
    """(operation_type, amount, transaction_id, account_id), oldest first."""
    return [(e["operation_type"], e["amount"], e["transaction_id"], e["account_id"]) for e in reversed(full_ledger(server.port, customer_id, key))]


# -- overage ---------------------------------------------------------------------------------------


def test_overage(srv):
    account = deposit(srv.port, "ov_c", 1000)["account_id"]
    status, body = post(srv, "/v1/billing/freeze", customer_id="ov_c", amount=100, transaction_id="ov_t")
    assert status == 200
    assert body == {
        "transaction_id": "ov_t",
        "frozen_amount": 100,
        "freeze_details": [detail(account, 100)],
        "unfreeze_after": None,
        "consume_after": None,
        "is_idempotent_replay": False,
    }
    status, body = post(srv, "/v1/billing/consume", transaction_id="ov_t", actual_amount=150)
    assert status == 200
    assert times_of(body, "consumed_at") == {
        "transaction_id": "ov_t",
        "consumed_amount": 150,
        "overage_amount": 50,
        "consume_details": [detail(account, 150)],
        "is_idempotent_replay": False,
    }
    assert "returned_amount" not in body
    assert balance(srv, "ov_c") == {"total": 1000, "used": 150, "frozen": 0, "available": 850}
    assert entries(srv, "ov_c") == [("GRANT", 1000, None, account), ("FREEZE", 100, "ov_t", account), ("CONSUME", 150, "ov_t", account)]
    # replay: same body, flag set; another amount: refused
    status, replayed = post(srv, "/v1/billing/consume", transaction_id="ov_t", actual_amount=150)
    assert status == 200 and replayed == {**body, "is_idempotent_replay": True}
    status, error = post(srv, "/v1/billing/consume", transaction_id="ov_t", actual_amount=151)
    assert status == 400 and error["error"]["code"] == "freeze_records_already_consumed"


def test_overage_not_coverable_changes_nothing(srv):
    account = deposit(srv.port, "ov2_c", 120)["account_id"]
    assert post(srv, "/v1/billing/freeze", customer_id="ov2_c", amount=100, transaction_id="ov2_t")[0] == 200
    status, error = post(srv, "/v1/billing/consume", transaction_id="ov2_t", actual_amount=150)
    assert status == 400
    assert error["error"]["code"] == "insufficient_balance"
    assert error["error"]["details"] == {"wallet": None, "requested": 50, "available": 20}
    assert balance(srv, "ov2_c") == {"total": 120, "used": 0, "frozen": 100, "available": 20}
    status, body = post(srv, "/v1/billing/consume", transaction_id="ov2_t", actual_amount=40)
    assert status == 200
    assert times_of(body, "consumed_at") == {
        "transaction_id": "ov2_t", "consumed_amount": 40, "returned_amount": 60,
        "consume_details": [detail(account, 40)], "is_idempotent_replay": False,
    }  # fmt: skip
    assert balance(srv, "ov2_c") == {"total": 120, "used": 40, "frozen": 0, "available": 80}


# -- TTL auto-settlement ---------------------------------------------------------------------------


def test_auto_unfreeze(srv):
    account = deposit(srv.port, "ttl_u", 500)["account_id"]
    status, freeze = post(srv, "/v1/billing/freeze", customer_id="ttl_u", amount=200, transaction_id="ttl_u_t", unfreeze_after_seconds=1)
    assert status == 200
    assert freeze["consume_after"] is None and TIME.match(freeze["unfreeze_after"])
    poll(lambda: balance(srv, "ttl_u")["frozen"] == 0)
    assert balance(srv, "ttl_u") == {"total": 500, "used": 0, "frozen": 0, "available": 500}
    status, error = post(srv, "/v1/billing/consume", transaction_id="ttl_u_t")
    assert (status, error["error"]["code"]) == (400, "freeze_auto_unfrozen")
    status, error = post(srv, "/v1/billing/consume", transaction_id="ttl_u_t", actual_amount=10)
    assert (status, error["error"]["code"]) == (400, "freeze_auto_unfrozen")
    # unfreeze again replays the automatic unfreeze, stamped at the due time
    status, body = post(srv, "/v1/billing/unfreeze", transaction_id="ttl_u_t")
    assert status == 200
    assert body == {
        "transaction_id": "ttl_u_t", "unfrozen_amount": 200, "unfreeze_details": [detail(account, 200)],
        "unfrozen_at": freeze["unfreeze_after"],
        "is_idempotent_replay": True,
    }  # fmt: skip
    assert entries(srv, "ttl_u") == [("GRANT", 500, None, account), ("FREEZE", 200, "ttl_u_t", account), ("UNFREEZE", 200, "ttl_u_t", account)]


def test_auto_consume(srv):
    account = deposit(srv.port, "ttl_c", 500)["account_id"]
    status, freeze = post(srv, "/v1/billing/freeze", customer_id="ttl_c", amount=120, transaction_id="ttl_c_t", consume_after_seconds=1)
    assert status == 200 and freeze["unfreeze_after"] is None
    poll(lambda: balance(srv, "ttl_c")["used"] == 120)
    assert balance(srv, "ttl_c") == {"total": 500, "used": 120, "frozen": 0, "available": 380}
    expected = {
        "transaction_id": "ttl_c_t", "consumed_amount": 120, "consume_details": [detail(account, 120)],
        "consumed_at": freeze["consume_after"], "is_idempotent_replay": True,
    }  # fmt: skip
    assert post(srv, "/v1/billing/consume", transaction_id="ttl_c_t") == (200, expected)
    assert post(srv, "/v1/billing/consume", transaction_id="ttl_c_t", actual_amount=120) == (200, expected)
    status, error = post(srv, "/v1/billing/consume", transaction_id="ttl_c_t", actual_amount=100)
    assert (status, error["error"]["code"]) == (400, "freeze_records_already_consumed")
    status, error = post(srv, "/v1/billing/unfreeze", transaction_id="ttl_c_t")
    assert (status, error["error"]["code"]) == (400, "no_unfreezable_records")
    assert entries(srv, "ttl_c") == [("GRANT", 500, None, account), ("FREEZE", 120, "ttl_c_t", account), ("CONSUME", 120, "ttl_c_t", account)]


# -- expiry ----------------------------------------------------------------------------------------


def test_expiry_writes_off_the_remainder_once(srv):
    expires = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    expiring = deposit(srv.port, "exp_c", 100, expires_at=iso(expires))
    assert expiring["expires_at"] == iso(expires)
    lasting = deposit(srv.port, "exp_c", 50)["account_id"]
    # soonest expiry is drawn first
    status, body = post(srv, "/v1/billing/deduct", customer_id="exp_c", amount=30, transaction_id="exp_d")
    assert status == 200 and body["deduct_details"] == [detail(expiring["account_id"], 30)]
    poll(lambda: balance(srv, "exp_c")["total"] == 50)
    assert balance(srv, "exp_c") == {"total": 50, "used": 0, "frozen": 0, "available": 50}
    status, view = get(srv, "exp_c")
    assert [a["account_id"] for a in view["accounts"]] == [lasting]
    acc = expiring["account_id"]
    assert entries(srv, "exp_c") == [
        ("GRANT", 100, None, acc), ("GRANT", 50, None, lasting), ("CONSUME", 30, "exp_d", acc), ("EXPIRE", 70, None, acc),
    ]  # fmt: skip
    assert get(srv, "exp_c")[1]["balance"] == balance(srv, "exp_c")  # reads do not expire it again
    assert [e[0] for e in entries(srv, "exp_c")].count("EXPIRE") == 1


def test_expires_at_in_the_past_writes_grant_and_expire(srv):
    deposit(srv.port, "past_c", 10)
    body = deposit(srv.port, "past_c", 40, expires_at="2001-01-01T00:00:00Z", idempotency_key="past_k")
    account = body["account_id"]
    assert {k: body[k] for k in ("total_amount", "added_amount", "expires_at", "starts_at", "is_idempotent_replay")} == {
        "total_amount": 10, "added_amount": 40, "expires_at": "2001-01-01T00:00:00.000Z", "starts_at": None, "is_idempotent_replay": False,
    }  # fmt: skip
    assert entries(srv, "past_c")[1:] == [("GRANT", 40, "past_k", account), ("EXPIRE", 40, None, account)]
    assert balance(srv, "past_c") == {"total": 10, "used": 0, "frozen": 0, "available": 10}


# -- projects --------------------------------------------------------------------------------------


def test_two_projects_are_isolated(tmp_path):
    data_dir = tmp_path / "data"
    server = Server(data_dir).start()
    try:
        assert server.stop() == 0
        key_a, _ = create_key(data_dir, "A")
        key_b, _ = create_key(data_dir, "B")
        server.start()
        a = deposit(server.port, "same", 100, key=key_a, idempotency_key="dep_k")
        b = deposit(server.port, "same", 7, key=key_b, idempotency_key="dep_k")
        assert a["is_idempotent_replay"] is False and b["is_idempotent_replay"] is False
        deposit(server.port, "only_a", 5, key=key_a)
        assert post(server, "/v1/billing/freeze", key=key_a, customer_id="same", amount=60, transaction_id="tx")[0] == 200
        status, body = post(server, "/v1/billing/freeze", key=key_b, customer_id="same", amount=5, transaction_id="tx")
        assert status == 200 and body["frozen_amount"] == 5 and body["is_idempotent_replay"] is False
        # the other project's customer does not exist here
        for key in (key_b, API_KEY):
            status, error = get(server, "only_a", key)
            assert (status, error["error"]["code"]) == (404, "customer_not_found")
            reply = request(server.port, "GET", customer_path("only_a", ledger=True), key=key)
            assert (reply.status, reply.code) == (404, "customer_not_found")
            status, error = post(server, "/v1/billing/deduct", key=key, customer_id="only_a", amount=1, transaction_id="x")
            assert (status, error["error"]["code"]) == (404, "customer_not_found")
        # nor its transaction ids: the default project has no "tx"
        status, error = post(server, "/v1/billing/consume", key=API_KEY, transaction_id="tx")
        assert (status, error["error"]["code"]) == (400, "no_consumable_freeze_records")
        status, error = post(server, "/v1/billing/unfreeze", key=API_KEY, transaction_id="tx")
        assert (status, error["error"]["code"]) == (400, "no_unfreezable_records")
        # each project's "tx" settles its own freeze
        status, body = post(server, "/v1/billing/consume", key=key_b, transaction_id="tx")
        assert status == 200 and body["consumed_amount"] == 5
        assert balance(server, "same", key_a) == {"total": 100, "used": 0, "frozen": 60, "available": 40}
        assert balance(server, "same", key_b) == {"total": 7, "used": 5, "frozen": 0, "available": 2}
        status, body = post(server, "/v1/billing/unfreeze", key=key_a, transaction_id="tx")
        assert status == 200 and body["unfrozen_amount"] == 60
        # a deduct id in B that is a freeze id in A is free in B
        status, body = post(server, "/v1/billing/deduct", key=key_b, customer_id="same", amount=1, transaction_id="only_in_a")
        assert post(server, "/v1/billing/freeze", key=key_a, customer_id="same", amount=1, transaction_id="only_in_a")[0] == 200
        assert status == 200
        assert [e[:3] for e in entries(server, "same", key_a)] == [
            ("GRANT", 100, "dep_k"), ("FREEZE", 60, "tx"), ("UNFREEZE", 60, "tx"), ("FREEZE", 1, "only_in_a"),
        ]  # fmt: skip
        assert [e[:3] for e in entries(server, "same", key_b)] == [
            ("GRANT", 7, "dep_k"), ("FREEZE", 5, "tx"), ("CONSUME", 5, "tx"), ("CONSUME", 1, "only_in_a"),
        ]  # fmt: skip
        # survives a restart exactly
        before = (entries(server, "same", key_a), entries(server, "same", key_b))
        server.restart()
        assert (entries(server, "same", key_a), entries(server, "same", key_b)) == before
    finally:
        server.kill()


# -- a concurrent burst ----------------------------------------------------------------------------

BURST_IDS = 200  # distinct transaction ids, each 10 credits: twice what the balance covers
BURST_COPIES = 3  # identical requests per id, sent together
BURST_BALANCE = 1000


async def test_concurrent_freeze_burst(srv):
    account = deposit(srv.port, "burst_c", BURST_BALANCE)["account_id"]
    ids = [f"burst_{i}" for i in range(BURST_IDS)]
    # per id: BURST_COPIES identical freezes, and (for every 4th id) a variant naming a wallet
    plan: list[tuple[str, dict[str, Any]]] = []
    for tid in ids:
        plan += [(tid, {"customer_id": "burst_c", "amount": 10, "transaction_id": tid})] * BURST_COPIES
        if int(tid.split("_")[1]) % 4 == 0:
            plan.append((tid, {"customer_id": "burst_c", "amount": 10, "transaction_id": tid, "wallet": "default"}))
    plan = plan[::2] + plan[1::2]  # interleave so copies of one id are not adjacent
    headers = {"Authorization": f"Bearer {API_KEY}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(plan)), timeout=timeout) as session:

        async def one(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with session.post(srv.base_url + "/v1/billing/freeze", json=payload, headers=headers) as response:
                return response.status, await response.json()

        results = await asyncio.gather(*(one(payload) for _, payload in plan))

    by_id: dict[str, list[tuple[dict[str, Any], int, dict[str, Any]]]] = defaultdict(list)
    for (tid, payload), (status, body) in zip(plan, results, strict=True):
        by_id[tid].append((payload, status, body))
    assert all(status < 500 for status, _ in results), Counter(status for status, _ in results)
    winners: dict[str, dict[str, Any]] = {}
    for tid, answers in by_id.items():
        first = [(p, b) for p, s, b in answers if s == 200 and b["is_idempotent_replay"] is False]
        refused = [b for _, s, b in answers if s == 400]
        assert len(first) <= 1, (tid, answers)  # never two winners
        for body in refused:
            assert body["error"]["code"] == "insufficient_balance", body
            assert body["error"]["details"] in ({"wallet": None, "requested": 10, "available": 0},
                                                {"wallet": "default", "requested": 10, "available": 0})  # fmt: skip
        if not first:  # no winner: every attempt was refused for want of credit
            assert len(refused) == len(answers), (tid, answers)
            continue
        payload, win = first[0]
        winners[tid] = win
        assert win == {
            "transaction_id": tid, "frozen_amount": 10, "freeze_details": [detail(account, 10)],
            "unfreeze_after": None, "consume_after": None, "is_idempotent_replay": False,
        }  # fmt: skip
        for other, status, body in answers:
            if body is win:
                continue
            if status == 200:  # a replay: the original response, flag set, and the same selection
                assert body == {**win, "is_idempotent_replay": True}
                assert other.get("wallet") == payload.get("wallet")
            elif status == 409:  # the other wallet selection than the winner's
                assert body["error"]["code"] == "transaction_conflict" and body["error"]["details"] == {"field": "wallet"}
                assert other.get("wallet") != payload.get("wallet")
            else:  # refused before the winner came: no credit left then, so none for the winner either
                raise AssertionError((tid, "refused and won", answers))
    statuses = Counter(status for status, _ in results)
    assert statuses[409] >= 1 and statuses[200] >= len(winners) * BURST_COPIES - statuses[409], statuses
    assert len(winners) == BURST_BALANCE // 10  # exactly as many as the balance covers
    assert balance(srv, "burst_c") == {"total": BURST_BALANCE, "used": 0, "frozen": 10 * len(winners), "available": 0}
    ledger = entries(srv, "burst_c")
    assert ledger[0] == ("GRANT", BURST_BALANCE, None, account)
    freezes = ledger[1:]
    assert sorted(e[2] for e in freezes) == sorted(winners)  # one FREEZE per winner, none for the rest
    assert all(e[0] == "FREEZE" and e[1] == 10 for e in freezes)
    # a loser's id is free: no record was left by its refusals
    loser = next(tid for tid in ids if tid not in winners)
    status, error = post(srv, "/v1/billing/freeze", customer_id="burst_c", amount=10, transaction_id=loser)
    assert (status, error["error"]["code"]) == (400, "insufficient_balance")
    some_winner = next(iter(winners))
    assert post(srv, "/v1/billing/unfreeze", transaction_id=some_winner)[0] == 200
    status, body = post(srv, "/v1/billing/freeze", customer_id="burst_c", amount=10, transaction_id=loser)
    assert status == 200 and body["is_idempotent_replay"] is False


def test_early_years_are_zero_padded(srv):
    """RFC 3339 needs four year digits: years before 1000 echo as 0431, 0001 (found by the fuzzer:
    strftime("%Y") gives "431" on glibc)."""
    body = deposit(srv.port, "y_c", 5, starts_at="0001-01-01T00:00:00Z", expires_at="0431-06-28T00:42:43.5+00:00")
    assert (body["starts_at"], body["expires_at"]) == ("0001-01-01T00:00:00.000Z", "0431-06-28T00:42:43.500Z")
    deposit(srv.port, "y_c", 5, starts_at="0999-12-31T23:59:59.999-01:00")
    status, view = get(srv, "y_c")
    assert status == 200
    assert [a["starts_at"] for a in view["accounts"]] == ["1000-01-01T00:59:59.999Z"]


def test_7_10_later_deposit_metadata_is_merged_not_dropped(srv: Server) -> None:
    """Regression: metadata on a later deposit was silently dropped (CONTRACT §7.10)."""
    status, _ = post(srv, "/v1/customers/deposit", customer_id="meta_1", amount=5, name="First",
                     metadata={"plan": "free", "seats": 1})  # fmt: skip
    assert status == 200
    status, _ = post(srv, "/v1/customers/deposit", customer_id="meta_1", amount=5, name="Second",
                     metadata={"plan": "pro", "team": "core"}, idempotency_key="meta_1_k2")  # fmt: skip
    assert status == 200
    status, replay = post(srv, "/v1/customers/deposit", customer_id="meta_1", amount=5,
                          metadata={"plan": "ignored"}, idempotency_key="meta_1_k2")  # fmt: skip
    assert status == 200 and replay["is_idempotent_replay"] is True
    status, body = get(srv, "meta_1")
    assert status == 200
    assert body["name"] == "First"
    assert body["metadata"] == {"plan": "pro", "seats": 1, "team": "core"}
    assert body["balance"]["total"] == 10
