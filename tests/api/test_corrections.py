"""CONTRACT §10 through a real `tally serve` on 127.0.0.1: refund, void, ledger filters, codes,
conflicts, replays, and the same answers and digest after a SIGKILL.

How: raw HTTP (tests/api/harness.py) against one server per test (its own data dir); exact
bodies, balances and ledger entries. How it could fail: credit returned to the wrong bucket or in
the wrong order, a write-off missing, a code or details field wrong, a replay that is not the
original, a conflict decided before a business rule, or state lost or changed across a crash.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.api.harness import API_KEY, Server, customer_path, deposit, full_ledger, replay, request


@pytest.fixture
def srv(tmp_path):
    server = Server(tmp_path / "data").start()
    try:
        yield server
    finally:
        server.kill()


def post(server: Server, path: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    reply = request(server.port, "POST", path, key=API_KEY, body=fields)
    return reply.status, reply.json()


def ok(server: Server, path: str, **fields: Any) -> dict[str, Any]:
    status, body = post(server, path, **fields)
    assert status == 200, body
    return body


def error(server: Server, path: str, status: int, code: str, **fields: Any) -> dict[str, Any]:
    got, body = post(server, path, **fields)
    assert (got, body["error"]["code"]) == (status, code), body
    return body["error"]


def balance(server: Server, customer_id: str) -> dict[str, int]:
    reply = request(server.port, "GET", customer_path(customer_id), key=API_KEY)
    assert reply.status == 200, reply.body
    return reply.json()["balance"]


def lines(server: Server, customer_id: str, query: str = "") -> list[tuple[Any, ...]]:
    """(operation_type, amount, account_id, transaction_id, refund_id), newest first, one page."""
    reply = request(server.port, "GET", customer_path(customer_id, ledger=True) + "?limit=100" + query, key=API_KEY)
    assert reply.status == 200, reply.body
    return [(e["operation_type"], e["amount"], e["account_id"], e["transaction_id"], e.get("refund_id"))
            for e in reply.json()["items"]]  # fmt: skip


def setup(server: Server) -> tuple[str, str]:
    """c1: acc_a 30 (expires soonest: allocated first), acc_b 100; deduct d1 50 = a 30 + b 20."""
    a = deposit(server.port, "c1", 30, expires_at="2999-01-01T00:00:00Z")["account_id"]
    b = deposit(server.port, "c1", 100)["account_id"]
    ok(server, "/v1/billing/deduct", customer_id="c1", amount=50, transaction_id="d1", business_type="TASK")
    return a, b


def test_refund_flow_exact_balances_entries_and_replays(srv):
    a, b = setup(srv)
    body = ok(srv, "/v1/billing/refund", refund_id="r1", transaction_id="d1", amount=25, reason="bad output")
    assert {k: v for k, v in body.items() if k != "refunded_at"} == {
        "refund_id": "r1", "transaction_id": "d1", "customer_id": "c1", "refunded_amount": 25,
        "refundable_amount": 25, "is_idempotent_replay": False,
        "refund_details": [
            {"account_id": b, "wallet": "default", "source": "default", "amount": 20},
            {"account_id": a, "wallet": "default", "source": "default", "amount": 5},
        ],
    }  # fmt: skip
    assert balance(srv, "c1") == {"total": 130, "used": 25, "frozen": 0, "available": 105}
    assert lines(srv, "c1", "&transaction_id=d1") == [
        ("REFUND", 5, a, "d1", "r1"), ("REFUND", 20, b, "d1", "r1"), ("CONSUME", 20, b, "d1", None),
        ("CONSUME", 30, a, "d1", None),
    ]  # fmt: skip
    # replays: same amount, omitted amount, another reason: the original, flagged
    for fields in ({"amount": 25}, {}, {"amount": 25, "reason": "x"}):
        again = ok(srv, "/v1/billing/refund", refund_id="r1", transaction_id="d1", **fields)
        assert again == {**body, "is_idempotent_replay": True}
    rest = ok(srv, "/v1/billing/refund", refund_id="r2", transaction_id="d1")
    assert (rest["refunded_amount"], rest["refundable_amount"]) == (25, 0)
    assert balance(srv, "c1") == {"total": 130, "used": 0, "frozen": 0, "available": 130}


def test_refund_codes_and_conflicts(srv):
    setup(srv)
    ok(srv, "/v1/billing/freeze", customer_id="c1", amount=5, transaction_id="f1")
    R = "/v1/billing/refund"
    assert error(srv, R, 400, "no_refundable_charge", refund_id="r", transaction_id="nope")
    error(srv, R, 400, "no_refundable_charge", refund_id="r", transaction_id="f1")  # not consumed
    e = error(srv, R, 400, "refund_exceeds_refundable", refund_id="r", transaction_id="d1", amount=51)
    assert e["details"] == {"requested": 51, "refundable": 50}
    error(srv, R, 400, "refund_id_required", transaction_id="d1")
    error(srv, R, 400, "refund_id_required", refund_id="  ", transaction_id="d1")
    error(srv, R, 400, "transaction_id_required", refund_id="r")
    error(srv, R, 400, "amount_must_be_positive", refund_id="r", transaction_id="d1", amount=0)
    error(srv, R, 400, "amount_must_be_positive", refund_id="r", transaction_id="d1", amount=None)
    error(srv, R, 400, "amount_too_large", refund_id="r", transaction_id="d1", amount=2**53)
    error(srv, R, 400, "invalid_reason", refund_id="r", transaction_id="d1", reason=5)
    error(srv, R, 400, "unknown_field", refund_id="r", transaction_id="d1", customer_id="c1")
    ok(srv, R, refund_id="r1", transaction_id="d1", amount=10)
    ok(srv, "/v1/billing/deduct", customer_id="c1", amount=5, transaction_id="d2")
    e = error(srv, R, 409, "transaction_conflict", refund_id="r1", transaction_id="d1", amount=11)
    assert e["details"] == {"field": "amount"}
    e = error(srv, R, 409, "transaction_conflict", refund_id="r1", transaction_id="d2")
    assert e["details"] == {"field": "transaction_id"}
    # business rules before conflicts (§3.3, §10.4)
    error(srv, R, 400, "refund_exceeds_refundable", refund_id="r1", transaction_id="d1", amount=41)
    error(srv, R, 400, "no_refundable_charge", refund_id="r1", transaction_id="nope")
    assert balance(srv, "c1")["used"] == 45  # 50 - 10 + 5: no failed request left a trace


def test_void_flow_codes_and_write_offs(srv):
    a, b = setup(srv)
    ok(srv, "/v1/billing/freeze", customer_id="c1", amount=30, transaction_id="f1")  # b 30
    V = "/v1/billing/void"
    body = ok(srv, V, void_id="v1", account_id=b, reason="chargeback")
    assert {k: v for k, v in body.items() if k != "voided_at"} == {
        "void_id": "v1", "account_id": b, "customer_id": "c1", "voided_amount": 50, "is_idempotent_replay": False
    }  # fmt: skip
    assert ok(srv, V, void_id="v1", account_id=b) == {**body, "is_idempotent_replay": True}
    assert balance(srv, "c1") == {"total": 30, "used": 30, "frozen": 0, "available": 0}  # b left the view
    # frozen credit stays consumable; the unused tail is written off
    ok(srv, "/v1/billing/consume", transaction_id="f1", actual_amount=20)
    ok(srv, "/v1/billing/refund", refund_id="r1", transaction_id="d1", amount=25)  # b 20 (written off), a 5
    assert lines(srv, "c1")[:7] == [
        ("EXPIRE", 20, b, None, None), ("REFUND", 5, a, "d1", "r1"), ("REFUND", 20, b, "d1", "r1"),
        ("EXPIRE", 10, b, None, None), ("UNFREEZE", 10, b, "f1", None), ("CONSUME", 20, b, "f1", None),
        ("VOID", 50, b, "v1", None),
    ]  # fmt: skip
    assert balance(srv, "c1") == {"total": 30, "used": 25, "frozen": 0, "available": 5}
    e = error(srv, V, 400, "account_already_voided", void_id="v2", account_id=b)
    assert e["details"] == {"account_id": b}
    e = error(srv, V, 409, "transaction_conflict", void_id="v1", account_id=a)
    assert e["details"] == {"field": "account_id"}
    error(srv, V, 404, "account_not_found", void_id="v3", account_id="acc_999999")
    error(srv, V, 404, "account_not_found", void_id="v3", account_id="nope")
    error(srv, V, 400, "void_id_required", account_id=a)
    error(srv, V, 400, "account_id_required", void_id="v3")
    error(srv, V, 400, "account_id_required", void_id="v3", account_id="")


def test_ledger_filters_and_cursor_binding(srv):
    deposit(srv.port, "c1", 100, wallet="w1")
    deposit(srv.port, "c1", 100, wallet="w2")
    for k in range(6):
        ok(srv, "/v1/billing/deduct", customer_id="c1", amount=1, transaction_id=f"d{k}", wallet="w1" if k % 2 else "w2",
           business_type="TASK" if k < 3 else "ORDER")  # fmt: skip
    ok(srv, "/v1/billing/refund", refund_id="r1", transaction_id="d1")
    assert [x[3] for x in lines(srv, "c1", "&wallet=w1&operation_type=CONSUME")] == ["d5", "d3", "d1"]
    assert [x[3] for x in lines(srv, "c1", "&business_type=TASK")] == ["d1", "d2", "d1", "d0"]
    assert [x[0] for x in lines(srv, "c1", "&operation_type=REFUND")] == ["REFUND"]
    everything = full_ledger(srv.port, "c1")
    middle = everything[3]["created_at"]
    got = lines(srv, "c1", "&to=" + quote(middle))
    assert all(e["created_at"] < middle for e in everything[len(everything) - len(got):])
    assert lines(srv, "c1", "&from=2999-01-01T00:00:00%2B01:00") == []
    assert lines(srv, "c1", f"&from={quote(middle)}&to={quote(middle)}") == []
    path = customer_path("c1", ledger=True)
    for query, code in (("from=2026-01-01T00:00:00", "invalid_from"), ("to=yesterday", "invalid_to"),
                        ("business_type=NOPE", "invalid_business_type"), ("operation_type=REFUNDS", "invalid_operation_type")):  # fmt: skip
        reply = request(srv.port, "GET", f"{path}?{query}", key=API_KEY)
        assert (reply.status, reply.code) == (400, code), query
    page = request(srv.port, "GET", f"{path}?limit=2&wallet=w1", key=API_KEY).json()
    assert page["has_more"] and page["total_count"] == 5  # GRANT, 3 CONSUME, 1 REFUND
    cursor = quote(page["next_cursor"])
    reply = request(srv.port, "GET", f"{path}?limit=2&wallet=w2&cursor={cursor}", key=API_KEY)
    assert (reply.status, reply.code) == (400, "invalid_cursor")
    reply = request(srv.port, "GET", f"{path}?limit=2&wallet=w1&cursor={cursor}", key=API_KEY)
    assert reply.status == 200 and len(reply.json()["items"]) == 2


def test_same_answers_and_digest_after_sigkill(srv):
    a, b = setup(srv)
    r1 = ok(srv, "/v1/billing/refund", refund_id="r1", transaction_id="d1", amount=7)
    v1 = ok(srv, "/v1/billing/void", void_id="v1", account_id=a)
    before = (balance(srv, "c1"), full_ledger(srv.port, "c1"))
    assert srv.kill() == -9
    first = replay(srv.data_dir)
    srv.start()
    assert (balance(srv, "c1"), full_ledger(srv.port, "c1")) == before
    assert ok(srv, "/v1/billing/refund", refund_id="r1", transaction_id="d1") == {**r1, "is_idempotent_replay": True}
    assert ok(srv, "/v1/billing/void", void_id="v1", account_id=a) == {**v1, "is_idempotent_replay": True}
    error(srv, "/v1/billing/void", 400, "account_already_voided", void_id="v2", account_id=a)
    assert srv.kill() == -9
    assert replay(srv.data_dir)["digest"] == first["digest"]
