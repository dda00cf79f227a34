"""Every error code of CONTRACT §3 and §7.9 reached at least once through a real `tally serve`.

What: one table row per code: how to provoke it, the exact status, and the envelope (type by
status, retryable only for 503, request_id == X-Request-Id). Each observed (operation, status,
code) must also be listed by the served OpenAPI document. A final test checks the table covers
every code of the §7.9 table (read from docs/spec/CONTRACT.md, the repository's copy) and of §3.
How: a seeded server for most rows; `overloaded` from a burst on one shard with the smallest
queue; `storage_unavailable` from a server whose file size limit (RLIMIT_FSIZE) makes the WAL
write fail; `api_key_revoked` from a key revoked while the server was stopped.
How it could fail: a code that is never produced, produced with another status or type, or
missing from the document.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest

from engine.core.codes import TYPE_BY_STATUS
from net import openapi
from tests.api.harness import (
    API_KEY,
    Reply,
    Server,
    create_key,
    customer_path,
    deposit,
    request,
    revoke_key,
)

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "spec" / "CONTRACT.md"  # inside the repository: CI has it
POLL_S = 5.0

# Codes named by CONTRACT §3 (and the registry codes §3 relies on for its 400s).
SECTION_3_CODES = {
    "amount_must_be_positive", "actual_amount_must_be_non_negative", "customer_id_required",
    "transaction_id_required", "insufficient_balance", "insufficient_balance_in_selected_credit_types",
    "freeze_records_already_consumed", "no_consumable_freeze_records", "freeze_auto_unfrozen",
    "no_unfreezable_records", "transaction_conflict", "invalid_auto_settlement",
    "invalid_auto_settlement_ttl", "customer_not_found", "missing_api_key", "invalid_api_key",
    "api_key_revoked", "invalid_starts_at", "invalid_expires_at", "invalid_datetime_range",
}  # fmt: skip
SECTION_7_9_CODES = {
    "invalid_json", "unknown_field", "invalid_identifier", "idempotency_key_mismatch", "invalid_cursor",
    "amount_too_large", "invalid_business_type", "request_too_large", "not_found", "method_not_allowed",
    "overloaded", "storage_unavailable",
}  # fmt: skip

DEPOSIT, FREEZE, CONSUME, UNFREEZE, DEDUCT = (
    "/v1/customers/deposit", "/v1/billing/freeze", "/v1/billing/consume", "/v1/billing/unfreeze", "/v1/billing/deduct",
)  # fmt: skip


def _post(path: str, payload: Any = None, **kw: Any) -> Callable[[Server], Reply]:
    return lambda s: request(s.port, "POST", path, body=payload, **kw)


def _get(target: str, **kw: Any) -> Callable[[Server], Reply]:
    return lambda s: request(s.port, "GET", target, **kw)


def _after_ttl(server: Server) -> Reply:
    body = {"customer_id": "ec_c", "amount": 5, "transaction_id": "ec_ttl", "unfreeze_after_seconds": 1}
    assert request(server.port, "POST", FREEZE, body=body).status == 200
    target = customer_path("ec_c", ledger=True) + "?transaction_id=ec_ttl&operation_type=UNFREEZE"
    deadline = time.monotonic() + POLL_S
    while request(server.port, "GET", target).json()["total_count"] != 1:  # bounded poll: the TTL fired
        if time.monotonic() >= deadline:  # a bounded wait, not a timing assertion
            pytest.fail("the 1 s TTL did not fire")
        time.sleep(0.05)
    return request(server.port, "POST", CONSUME, body={"transaction_id": "ec_ttl"})


# (code, status, operation as "METHOD /doc/path", provoke)
ROWS: list[tuple[str, int, str, Callable[[Server], Reply]]] = [
    ("invalid_json", 400, f"POST {DEPOSIT}", _post(DEPOSIT, b'{"customer_id": ')),
    ("unknown_field", 400, f"POST {FREEZE}", _post(FREEZE, {"customer_id": "ec_c", "amount": 1, "transaction_id": "x", "memo": 1})),
    ("invalid_identifier", 400, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "c" * 256, "amount": 1})),
    ("idempotency_key_mismatch", 400, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "ec_c", "amount": 1, "idempotency_key": "k1"}, headers={"Idempotency-Key": "k2"})),
    ("invalid_cursor", 400, "GET /v1/customers/{customer_id}/ledger", _get(customer_path("ec_c", ledger=True) + "?cursor=not-a-cursor")),
    ("amount_too_large", 400, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "ec_c", "amount": 2**53})),
    ("invalid_business_type", 400, f"POST {DEDUCT}", _post(DEDUCT, {"customer_id": "ec_c", "amount": 1, "transaction_id": "x", "business_type": "GIFT"})),
    ("request_too_large", 413, f"POST {UNFREEZE}", _post(UNFREEZE, b'{"transaction_id": "' + b"x" * 70_000 + b'"}')),
    ("not_found", 404, "GET /v1/customers/{customer_id}", _get("/v1/customers/a/b/c")),
    ("method_not_allowed", 405, "", lambda s: request(s.port, "DELETE", FREEZE)),
    ("amount_must_be_positive", 400, f"POST {FREEZE}", _post(FREEZE, {"customer_id": "ec_c", "amount": 0, "transaction_id": "x"})),
    ("actual_amount_must_be_non_negative", 400, f"POST {CONSUME}", _post(CONSUME, {"transaction_id": "ec_f1", "actual_amount": -5})),
    ("customer_id_required", 400, f"POST {DEDUCT}", _post(DEDUCT, {"amount": 1, "transaction_id": "x"})),
    ("transaction_id_required", 400, f"POST {UNFREEZE}", _post(UNFREEZE, {"transaction_id": ""})),
    ("insufficient_balance", 400, f"POST {DEDUCT}", _post(DEDUCT, {"customer_id": "ec_c", "amount": 10**6, "transaction_id": "x"})),
    ("insufficient_balance_in_selected_credit_types", 400, f"POST {FREEZE}", _post(FREEZE, {"customer_id": "ec_c", "amount": 60, "transaction_id": "x", "credit_types": ["promo"]})),
    ("freeze_records_already_consumed", 400, f"POST {CONSUME}", _post(CONSUME, {"transaction_id": "ec_consumed", "actual_amount": 1})),
    ("no_consumable_freeze_records", 400, f"POST {CONSUME}", _post(CONSUME, {"transaction_id": "ec_unknown"})),
    ("freeze_auto_unfrozen", 400, f"POST {CONSUME}", _after_ttl),
    ("no_unfreezable_records", 400, f"POST {UNFREEZE}", _post(UNFREEZE, {"transaction_id": "ec_consumed"})),
    ("transaction_conflict", 409, f"POST {DEDUCT}", _post(DEDUCT, {"customer_id": "ec_c", "amount": 1, "transaction_id": "ec_f1"})),
    ("invalid_auto_settlement", 400, f"POST {FREEZE}", _post(FREEZE, {"customer_id": "ec_c", "amount": 1, "transaction_id": "x", "unfreeze_after_seconds": 9, "consume_after_seconds": 9})),
    ("invalid_auto_settlement_ttl", 400, f"POST {FREEZE}", _post(FREEZE, {"customer_id": "ec_c", "amount": 1, "transaction_id": "x", "unfreeze_after_seconds": 2_592_001})),
    ("customer_not_found", 404, f"POST {FREEZE}", _post(FREEZE, {"customer_id": "ec_nobody", "amount": 1, "transaction_id": "x"})),
    ("missing_api_key", 401, "GET /v1/customers/{customer_id}", _get(customer_path("ec_c"), key=None)),
    ("invalid_api_key", 401, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "ec_c", "amount": 1}, key="tly_not_a_key")),
    ("invalid_starts_at", 400, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "ec_c", "amount": 1, "starts_at": "tomorrow"})),
    ("invalid_expires_at", 400, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "ec_c", "amount": 1, "expires_at": "2030-02-30T00:00:00Z"})),
    ("invalid_datetime_range", 400, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "ec_c", "amount": 1, "starts_at": "2030-01-01T00:00:00Z", "expires_at": "2030-01-01T00:00:00Z"})),
    # codes net/ adds for cases the contract leaves open (net/schemas.py)
    ("invalid_credit_types", 400, f"POST {FREEZE}", _post(FREEZE, {"customer_id": "ec_c", "amount": 1, "transaction_id": "x", "credit_types": ["ok", ""]})),
    ("invalid_wallet_selection", 400, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "ec_c", "amount": 1, "wallet": "a", "credit_type": "b"})),
    ("invalid_limit", 400, "GET /v1/customers/{customer_id}/ledger", _get(customer_path("ec_c", ledger=True) + "?limit=500")),
    ("invalid_operation_type", 400, "GET /v1/customers/{customer_id}/ledger", _get(customer_path("ec_c", ledger=True) + "?operation_type=DEDUCT")),
    ("invalid_description", 400, f"POST {FREEZE}", _post(FREEZE, {"customer_id": "ec_c", "amount": 1, "transaction_id": "x", "description": "d" * 2001})),
    ("invalid_metadata", 400, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "ec_c", "amount": 1, "metadata": "not an object"})),
    ("invalid_name", 400, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "ec_c", "amount": 1, "name": "n" * 256})),
    ("invalid_email", 400, f"POST {DEPOSIT}", _post(DEPOSIT, {"customer_id": "ec_c", "amount": 1, "email": "e" * 321})),
]
# Rows that need a server of their own (tests below).
OWN_SERVER_CODES = {"overloaded", "storage_unavailable", "api_key_revoked"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("codes") / "data").start()
    try:
        port = server.port
        deposit(port, "ec_c", 100)
        deposit(port, "ec_c", 50, wallet="promo")
        for tid in ("ec_f1", "ec_consumed"):
            assert request(port, "POST", FREEZE, body={"customer_id": "ec_c", "amount": 10, "transaction_id": tid, "wallet": "default"}).status == 200
        assert request(port, "POST", CONSUME, body={"transaction_id": "ec_consumed"}).status == 200
        assert request(port, "POST", FREEZE, body={"customer_id": "ec_c", "amount": 10, "transaction_id": "ec_f2"}).status == 200
        yield server
    finally:
        server.kill()


def check(reply: Reply, status: int, code: str, operation: str) -> dict[str, Any]:
    assert reply.status == status, (code, reply.status, reply.body[:300])
    error = reply.json()["error"]
    assert error["code"] == code, error
    assert error["type"] == TYPE_BY_STATUS[status]
    assert error["retryable"] is (status == 503)
    assert error["request_id"] == reply.headers["x-request-id"]
    if operation:  # the document lists this code for this operation and status
        method, path = operation.split(" ", 1)
        responses = openapi.document()["paths"][path][method.lower()]["responses"]
        schema = responses[str(status)]["content"]["application/json"]["schema"]
        assert code in schema["properties"]["error"]["properties"]["code"]["enum"], (operation, status, code)
    return error


@pytest.mark.parametrize(("code", "status", "operation", "provoke"), [pytest.param(*row, id=row[0]) for row in ROWS])
def test_code(srv, code, status, operation, provoke):
    error = check(provoke(srv), status, code, operation)
    if code == "insufficient_balance":
        assert error["details"] == {"wallet": None, "requested": 10**6, "available": 120}
    if code == "transaction_conflict":
        assert error["details"] == {"field": "transaction_id"}  # a freeze id reused by a deduct


def test_deposit_key_with_another_customer_is_a_conflict(srv):
    assert request(srv.port, "POST", DEPOSIT, body={"customer_id": "ec_c", "amount": 1, "idempotency_key": "ec_k"}).status == 200
    reply = request(srv.port, "POST", DEPOSIT, body={"customer_id": "ec_other", "amount": 1, "idempotency_key": "ec_k"})
    assert check(reply, 409, "transaction_conflict", f"POST {DEPOSIT}")["details"] == {"field": "customer_id"}


def test_api_key_revoked(tmp_path):
    data_dir = tmp_path / "data"
    server = Server(data_dir).start()
    try:
        assert server.stop() == 0
        key, key_id = create_key(data_dir, "r")
        revoke_key(data_dir, key_id)
        server.start()
        check(request(server.port, "GET", customer_path("x"), key=key), 401, "api_key_revoked", "GET /v1/customers/{customer_id}")
    finally:
        server.kill()


def test_overloaded(tmp_path):
    """One shard with the smallest queue the config allows (its batch size, 256) and a burst of
    far more concurrent deposits: some must be refused 503 `overloaded` (retryable), and every
    deposit that got 200 is in the balance; none that got 503 is."""
    server = Server(tmp_path / "data", extra_args=("--shard-count", "1", "--shard-queue-depth-max", "256")).start()

    async def burst(round_: int) -> list[tuple[int, dict[str, Any]]]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        connector = aiohttp.TCPConnector(limit=2000)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def one(i: int) -> tuple[int, dict[str, Any]]:
                payload = {"customer_id": "ov_c", "amount": 1, "idempotency_key": f"r{round_}_{i}"}
                async with session.post(server.base_url + DEPOSIT, json=payload, headers=headers) as response:
                    return response.status, await response.json()

            return await asyncio.gather(*(one(i) for i in range(2000)))

    try:
        accepted = 0
        overloaded: dict[str, Any] | None = None
        for round_ in range(3):  # bounded: stop at the first round that overflowed the queue
            results = asyncio.run(burst(round_))
            assert {status for status, _ in results} <= {200, 503}
            accepted += sum(1 for status, _ in results if status == 200)
            refused = [body for status, body in results if status == 503]
            if refused:
                overloaded = refused[0]
                assert all(body["error"]["code"] == "overloaded" for body in refused)
                break
        assert overloaded is not None, "no burst overflowed a 256-deep queue"
        error = overloaded["error"]
        assert (error["type"], error["retryable"]) == ("server_error", True)
        view = request(server.port, "GET", customer_path("ov_c")).json()
        assert view["balance"]["total"] == accepted
    finally:
        server.kill()


def test_storage_unavailable(tmp_path):
    """A file size limit makes a WAL write fail (EFBIG): the server stops writing (fail-stop) and
    answers 503 `storage_unavailable` (retryable); /health turns 503."""
    server = Server(tmp_path / "data", fsize_limit=256 * 1024).start()
    try:
        seen = None
        for i in range(100):  # bounded: ~16 KiB a record, the limit is 256 KiB
            reply = request(server.port, "POST", DEPOSIT, body={"customer_id": "su_c", "amount": 1, "metadata": {"pad": "x" * 15_000}})
            if reply.status != 200:
                seen = reply
                break
        assert seen is not None, "the WAL never hit the file size limit"
        check(seen, 503, "storage_unavailable", f"POST {DEPOSIT}")
        check(request(server.port, "POST", DEPOSIT, body={"customer_id": "su_c", "amount": 1}), 503, "storage_unavailable", f"POST {DEPOSIT}")
        health = request(server.port, "GET", "/health", key=None)
        assert health.status == 503 and health.json()["error"]["code"] == "not_ready"
    finally:
        server.kill()


def test_the_table_covers_the_contract():
    covered = {row[0] for row in ROWS} | OWN_SERVER_CODES | {"transaction_conflict"}
    required = SECTION_3_CODES | SECTION_7_9_CODES
    text = CONTRACT.read_text()  # the §7.9 table as written in the contract; never skipped
    table = text[text.index("9. **Codes the API record leaves unnamed**") :]
    from_contract = set(re.findall(r"^\s*\|[^|\n]*\|\s*\d{3}\s*\|\s*`([a-z_]+)`", table, re.M))
    assert len(from_contract) == 12, from_contract
    required |= from_contract
    assert required <= covered, sorted(required - covered)
