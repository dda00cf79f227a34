"""Hand-picked bad input against a real `tally serve` on 127.0.0.1: exact status, code, no trace.

What: malformed JSON, bodies that are not UTF-8, wrong/missing Content-Type, bodies over the limit,
deep nesting, 256-character ids, odd amounts (0, -0, 2^53, 1e308, NaN/Infinity, strings, booleans,
arrays), `%2F` / `%00` / non-ASCII ids in the path, unknown fields and query parameters, wrong
methods and routes, and missing, malformed, unknown and revoked API keys.
How: raw HTTP/1.1 over a socket (tests/api/harness.py) so any byte can be sent; each case checks
the exact status, the contract code (CONTRACT §3, §7.9), the envelope (type by status,
retryable, request_id == X-Request-Id) and that every seeded customer (GET + full ledger) is
unchanged; the module ends by comparing the `tally replay` digest with the one after seeding.
How it could fail: a 500 on odd input, a wrong code or status, an envelope without the request id,
or a refused request that still wrote something.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.core.codes import TYPE_BY_STATUS
from tests.api.harness import (
    API_KEY,
    Reply,
    Server,
    create_key,
    customer_path,
    deposit,
    replay,
    request,
    revoke_key,
    state_of,
)

AMOUNT_MAX = 2**53 - 1
SEEDED = ["bad_c", "a/b", "ü", "bad_empty"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("bad") / "data").start()
    try:
        port = server.port
        deposit(port, "bad_c", 1000)
        deposit(port, "a/b", 7)
        deposit(port, "ü", 9)
        reply = request(port, "POST", "/v1/billing/freeze", body={"customer_id": "bad_c", "amount": 10, "transaction_id": "bad_t"})
        assert reply.status == 200
        server.seeded_digest = replay(server.data_dir)["digest"]  # type: ignore[attr-defined]
        yield server
    finally:
        server.kill()


def assert_error(reply: Reply, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body)
    body = reply.json()
    error = body["error"]
    assert set(body) == {"error"}
    assert set(error) == {"code", "type", "message", "details", "retryable", "request_id"}
    assert error["code"] == code, error
    assert error["type"] == TYPE_BY_STATUS[status]
    assert error["retryable"] is False
    assert error["request_id"] and error["request_id"] == reply.headers["x-request-id"]
    assert isinstance(error["message"], str) and error["message"]
    if field is not None:
        assert error["details"].get("field") == field, error
    return error


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def deposit_with_amount(literal: str) -> bytes:
    return b'{"customer_id": "bad_c", "amount": ' + literal.encode() + b"}"


NEST = 30_000  # deep, yet under the 64 KiB body limit
DEPOSIT = "/v1/customers/deposit"
FREEZE = "/v1/billing/freeze"
CONSUME = "/v1/billing/consume"

# (id, method, target, body, content_type, status, code, details.field)
CASES: list[tuple[str, str, str | bytes, bytes | None, str | None, int, str, str | None]] = [
    # malformed JSON / not an object
    ("truncated", "POST", DEPOSIT, b'{"customer_id": "bad_c", "amount": 5', "application/json", 400, "invalid_json", None),
    ("trailing comma", "POST", DEPOSIT, b'{"customer_id": "bad_c", "amount": 5,}', "application/json", 400, "invalid_json", None),
    ("trailing garbage", "POST", DEPOSIT, b'{"customer_id": "bad_c", "amount": 5} x', "application/json", 400, "invalid_json", None),
    ("empty body", "POST", DEPOSIT, b"", "application/json", 400, "invalid_json", None),
    ("array body", "POST", DEPOSIT, b"[]", "application/json", 400, "invalid_json", None),
    ("string body", "POST", DEPOSIT, b'"bad_c"', "application/json", 400, "invalid_json", None),
    ("null body", "POST", FREEZE, b"null", "application/json", 400, "invalid_json", None),
    ("single quotes", "POST", DEPOSIT, b"{'customer_id': 'bad_c', 'amount': 5}", "application/json", 400, "invalid_json", None),
    ("malformed wins over bad field", "POST", DEPOSIT, b'{"amount": "x", "customer_id": ', "application/json", 400, "invalid_json", None),
    # not UTF-8
    ("latin-1 string", "POST", DEPOSIT, b'{"customer_id": "caf\xe9", "amount": 5}', "application/json", 400, "invalid_json", None),
    ("invalid byte", "POST", DEPOSIT, b'{"customer_id": "bad_c\xff", "amount": 5}', "application/json", 400, "invalid_json", None),
    ("utf-16 body", "POST", DEPOSIT, '{"customer_id": "bad_c", "amount": 5}'.encode("utf-16"), "application/json", 400, "invalid_json", None),
    ("lone surrogate escape", "POST", DEPOSIT, b'{"customer_id": "\\ud800", "amount": 5}', "application/json", 400, "invalid_json", None),
    # content type: any is read as JSON; a form body is not JSON
    ("form body", "POST", DEPOSIT, b"customer_id=bad_c&amount=5", "application/x-www-form-urlencoded", 400, "invalid_json", None),
    ("no content type, bad json", "POST", DEPOSIT, b"customer_id=bad_c", None, 400, "invalid_json", None),
    # size and depth
    ("over the size limit", "POST", DEPOSIT, body(customer_id="bad_c", amount=5, description="a" * 70_000), "application/json", 413, "request_too_large", None),
    ("100k nested arrays in metadata", "POST", DEPOSIT, b'{"customer_id": "bad_c", "amount": 5, "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}", "application/json", 413, "request_too_large", None),
    ("30k nested arrays in metadata", "POST", DEPOSIT, b'{"customer_id": "bad_c", "amount": 5, "metadata": {"a": ' + b"[" * NEST + b"]" * NEST + b"}}", "application/json", 400, "invalid_json", None),
    ("30k nested arrays as amount", "POST", DEPOSIT, deposit_with_amount("[" * NEST + "]" * NEST), "application/json", 400, "invalid_json", None),
    ("30k nested arrays as id", "POST", DEPOSIT, b'{"customer_id": ' + b"[" * NEST + b"]" * NEST + b', "amount": 5}', "application/json", 400, "invalid_json", None),
    ("metadata 33 levels", "POST", DEPOSIT, b'{"customer_id": "bad_c", "amount": 5, "metadata": ' + b'{"a": ' * 33 + b"1" + b"}" * 33 + b"}", "application/json", 400, "invalid_metadata", "metadata"),
    ("metadata over 16 KiB", "POST", DEPOSIT, body(customer_id="bad_c", amount=5, metadata={"a": "x" * 17_000}), "application/json", 400, "invalid_metadata", "metadata"),
    ("metadata not an object", "POST", DEPOSIT, body(customer_id="bad_c", amount=5, metadata=[1]), "application/json", 400, "invalid_metadata", "metadata"),
    ("metadata int past 2^64", "POST", DEPOSIT, b'{"customer_id": "bad_c", "amount": 5, "metadata": {"n": 18446744073709551616}}', "application/json", 400, "invalid_metadata", "metadata"),
    # 256-character ids
    ("customer_id 256", "POST", DEPOSIT, body(customer_id="c" * 256, amount=5), "application/json", 400, "invalid_identifier", "customer_id"),
    ("transaction_id 256", "POST", FREEZE, body(customer_id="bad_c", amount=5, transaction_id="t" * 256), "application/json", 400, "invalid_identifier", "transaction_id"),
    ("wallet 256", "POST", DEPOSIT, body(customer_id="bad_c", amount=5, wallet="w" * 256), "application/json", 400, "invalid_identifier", "wallet"),
    ("idempotency_key 256", "POST", DEPOSIT, body(customer_id="bad_c", amount=5, idempotency_key="k" * 256), "application/json", 400, "invalid_identifier", "idempotency_key"),
    ("path id 256", "GET", customer_path("p" * 256), None, None, 400, "invalid_identifier", "customer_id"),
    ("ledger path id 256", "GET", customer_path("p" * 256, ledger=True), None, None, 400, "invalid_identifier", "customer_id"),
    ("empty customer_id", "POST", DEPOSIT, body(customer_id="", amount=5), "application/json", 400, "customer_id_required", "customer_id"),
    ("blank customer_id", "POST", FREEZE, body(customer_id="   ", amount=5, transaction_id="x"), "application/json", 400, "customer_id_required", "customer_id"),
    ("control char in id", "POST", DEPOSIT, body(customer_id="bad\x00c", amount=5), "application/json", 400, "invalid_identifier", "customer_id"),
    ("DEL in id", "POST", FREEZE, body(customer_id="bad_c", amount=5, transaction_id="t\x7f"), "application/json", 400, "invalid_identifier", "transaction_id"),
    ("numeric id", "POST", DEPOSIT, b'{"customer_id": 5, "amount": 5}', "application/json", 400, "invalid_identifier", "customer_id"),
    ("missing transaction_id", "POST", CONSUME, body(actual_amount=1), "application/json", 400, "transaction_id_required", "transaction_id"),
    # amounts
    ("amount 0", "POST", DEPOSIT, deposit_with_amount("0"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount -0", "POST", DEPOSIT, deposit_with_amount("-0"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount -0.0", "POST", DEPOSIT, deposit_with_amount("-0.0"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount -1", "POST", DEPOSIT, deposit_with_amount("-1"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount 2^53", "POST", DEPOSIT, deposit_with_amount(str(2**53)), "application/json", 400, "amount_too_large", "amount"),
    ("amount 2^64", "POST", DEPOSIT, deposit_with_amount(str(2**64)), "application/json", 400, "amount_too_large", "amount"),
    ("amount 1e308", "POST", DEPOSIT, deposit_with_amount("1e308"), "application/json", 400, "amount_too_large", "amount"),
    ("amount 1e999999999", "POST", DEPOSIT, deposit_with_amount("1e999999999"), "application/json", 400, "amount_too_large", "amount"),
    ("amount NaN", "POST", DEPOSIT, deposit_with_amount("NaN"), "application/json", 400, "invalid_json", None),
    ("amount Infinity", "POST", DEPOSIT, deposit_with_amount("Infinity"), "application/json", 400, "invalid_json", None),
    ("amount -Infinity", "POST", DEPOSIT, deposit_with_amount("-Infinity"), "application/json", 400, "invalid_json", None),
    ("amount 1.5", "POST", DEPOSIT, deposit_with_amount("1.5"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount 99.99999999999999999", "POST", DEPOSIT, deposit_with_amount("99.99999999999999999"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount 1e-300", "POST", DEPOSIT, deposit_with_amount("1e-300"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount string", "POST", DEPOSIT, deposit_with_amount('"5"'), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount true", "POST", DEPOSIT, deposit_with_amount("true"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount false", "POST", FREEZE, body(customer_id="bad_c", amount=False, transaction_id="x"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount array", "POST", DEPOSIT, deposit_with_amount("[5]"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount object", "POST", DEPOSIT, deposit_with_amount('{"v": 5}'), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount null", "POST", DEPOSIT, deposit_with_amount("null"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("amount missing", "POST", DEPOSIT, body(customer_id="bad_c"), "application/json", 400, "amount_must_be_positive", "amount"),
    ("deposit past 2^53-1 in total", "POST", DEPOSIT, deposit_with_amount(str(AMOUNT_MAX)), "application/json", 400, "amount_too_large", None),
    ("actual_amount -1", "POST", CONSUME, body(transaction_id="bad_t", actual_amount=-1), "application/json", 400, "actual_amount_must_be_non_negative", "actual_amount"),
    ("actual_amount 0.5", "POST", CONSUME, body(transaction_id="bad_t", actual_amount=0.5), "application/json", 400, "actual_amount_must_be_non_negative", "actual_amount"),
    ("actual_amount string", "POST", CONSUME, body(transaction_id="bad_t", actual_amount="1"), "application/json", 400, "actual_amount_must_be_non_negative", "actual_amount"),
    ("actual_amount null (not 'all', CONTRACT §3.1)", "POST", CONSUME, b'{"transaction_id": "bad_t", "actual_amount": null}', "application/json", 400, "actual_amount_must_be_non_negative", "actual_amount"),
    ("actual_amount 1e308", "POST", CONSUME, body(transaction_id="bad_t", actual_amount=1e308), "application/json", 400, "amount_too_large", "actual_amount"),
    ("actual_amount 4301 digits", "POST", CONSUME, b'{"transaction_id": "bad_t", "actual_amount": ' + b"9" * 4301 + b"}", "application/json", 400, "amount_too_large", "actual_amount"),
    ("amount 4301 digits", "POST", FREEZE, b'{"customer_id": "bad_c", "transaction_id": "n", "amount": ' + b"9" * 4301 + b"}", "application/json", 400, "amount_too_large", "amount"),
    ("actual_amount 2^53", "POST", CONSUME, body(transaction_id="bad_t", actual_amount=2**53), "application/json", 400, "amount_too_large", "actual_amount"),
    ("freeze amount 2^53", "POST", FREEZE, body(customer_id="bad_c", amount=2**53, transaction_id="n"), "application/json", 400, "amount_too_large", "amount"),
    # ids in the path
    ("raw slash in path id", "GET", "/v1/customers/a/b", None, None, 404, "not_found", None),
    ("%00 in path id", "GET", "/v1/customers/bad%00c", None, None, 400, "invalid_identifier", "customer_id"),
    ("%00 in ledger path id", "GET", "/v1/customers/%00/ledger", None, None, 400, "invalid_identifier", "customer_id"),
    ("%FF (not UTF-8) in path id", "GET", "/v1/customers/%FF", None, None, 400, "invalid_identifier", "customer_id"),
    ("%20 blank path id", "GET", "/v1/customers/%20", None, None, 400, "customer_id_required", "customer_id"),
    ("%2F id never deposited", "GET", "/v1/customers/a%2Fc", None, None, 404, "customer_not_found", None),
    ("double-encoded %2F is another id", "GET", "/v1/customers/a%252Fb", None, None, 404, "customer_not_found", None),
    ("NFD spelling is another id", "GET", customer_path("u\u0308"), None, None, 404, "customer_not_found", None),
    # query parameters
    ("limit 0", "GET", customer_path("bad_c", ledger=True) + "?limit=0", None, None, 400, "invalid_limit", "limit"),
    ("limit 101", "GET", customer_path("bad_c", ledger=True) + "?limit=101", None, None, 400, "invalid_limit", "limit"),
    ("limit -1", "GET", customer_path("bad_c", ledger=True) + "?limit=-1", None, None, 400, "invalid_limit", "limit"),
    ("limit 1e1", "GET", customer_path("bad_c", ledger=True) + "?limit=1e1", None, None, 400, "invalid_limit", "limit"),
    ("limit twice", "GET", customer_path("bad_c", ledger=True) + "?limit=1&limit=2", None, None, 400, "invalid_limit", "limit"),
    ("bad operation_type", "GET", customer_path("bad_c", ledger=True) + "?operation_type=DEPOSIT", None, None, 400, "invalid_operation_type", "operation_type"),
    ("lower-case operation_type", "GET", customer_path("bad_c", ledger=True) + "?operation_type=grant", None, None, 400, "invalid_operation_type", "operation_type"),
    ("garbage cursor", "GET", customer_path("bad_c", ledger=True) + "?cursor=garbage", None, None, 400, "invalid_cursor", None),
    ("unknown query parameter", "GET", customer_path("bad_c", ledger=True) + "?offset=5", None, None, 400, "unknown_field", "offset"),
    ("%00 transaction_id filter", "GET", customer_path("bad_c", ledger=True) + "?transaction_id=%00", None, None, 400, "invalid_identifier", "transaction_id"),
    # unknown fields
    ("unknown field amount_usd", "POST", DEPOSIT, body(customer_id="bad_c", amount=5, amount_usd=5), "application/json", 400, "unknown_field", "amount_usd"),
    ("field in wrong case", "POST", FREEZE, body(Customer_id="bad_c", amount=5, transaction_id="x"), "application/json", 400, "unknown_field", "Customer_id"),
    ("customer_id on consume", "POST", CONSUME, body(transaction_id="bad_t", customer_id="bad_c"), "application/json", 400, "unknown_field", "customer_id"),
    # other field values
    ("business_type lower case", "POST", FREEZE, body(customer_id="bad_c", amount=5, transaction_id="x", business_type="task"), "application/json", 400, "invalid_business_type", "business_type"),
    ("empty credit_types", "POST", FREEZE, body(customer_id="bad_c", amount=5, transaction_id="x", credit_types=[]), "application/json", 400, "invalid_credit_types", "credit_types"),
    ("credit_types and wallet", "POST", FREEZE, body(customer_id="bad_c", amount=5, transaction_id="x", credit_types=["default"], wallet="default"), "application/json", 400, "invalid_wallet_selection", None),
    ("both TTLs", "POST", FREEZE, body(customer_id="bad_c", amount=5, transaction_id="x", unfreeze_after_seconds=5, consume_after_seconds=5), "application/json", 400, "invalid_auto_settlement", None),
    ("TTL 0", "POST", FREEZE, body(customer_id="bad_c", amount=5, transaction_id="x", unfreeze_after_seconds=0), "application/json", 400, "invalid_auto_settlement_ttl", "unfreeze_after_seconds"),
    ("TTL past 7 days", "POST", FREEZE, body(customer_id="bad_c", amount=5, transaction_id="x", consume_after_seconds=604_801), "application/json", 400, "invalid_auto_settlement_ttl", "consume_after_seconds"),
    ("expires_at without offset", "POST", DEPOSIT, body(customer_id="bad_c", amount=5, expires_at="2030-01-01T00:00:00"), "application/json", 400, "invalid_expires_at", "expires_at"),
    ("starts_at leap second", "POST", DEPOSIT, body(customer_id="bad_c", amount=5, starts_at="2016-12-31T23:59:60Z"), "application/json", 400, "invalid_starts_at", "starts_at"),
    ("expires_at before starts_at", "POST", DEPOSIT, body(customer_id="bad_c", amount=5, starts_at="2030-01-02T00:00:00Z", expires_at="2030-01-01T00:00:00Z"), "application/json", 400, "invalid_datetime_range", None),
    ("description 2001", "POST", DEPOSIT, body(customer_id="bad_c", amount=5, description="d" * 2001), "application/json", 400, "invalid_description", "description"),
    # routes and methods
    ("unknown route", "GET", "/v1/nope", None, None, 404, "not_found", None),
    ("no trailing id", "GET", "/v1/customers/", None, None, 404, "not_found", None),
    ("PUT on freeze", "PUT", FREEZE, b"{}", "application/json", 405, "method_not_allowed", None),
    ("DELETE on customer", "DELETE", customer_path("bad_c"), None, None, 405, "method_not_allowed", None),
    ("GET on consume", "GET", CONSUME, None, None, 405, "method_not_allowed", None),
]


@pytest.mark.parametrize(
    ("method", "target", "payload", "content_type", "status", "code", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input(srv, method, target, payload, content_type, status, code, field):
    before = state_of(srv.port, SEEDED)
    reply = request(srv.port, method, target, body=payload, content_type=content_type)
    error = assert_error(reply, status, code, field)
    if status == 405:
        assert reply.headers["allow"] == ",".join(error["details"]["allowed"])
    assert state_of(srv.port, SEEDED) == before


def test_raw_non_ascii_path_is_refused_by_the_http_parser(srv):
    """Unencoded UTF-8 bytes in the request line are not HTTP: aiohttp's parser refuses them before
    the app runs, still with our envelope (CONTRACT §7.12: 400 invalid_request, X-Request-Id).
    The percent-encoded spelling reaches the customer."""
    before = state_of(srv.port, SEEDED)
    reply = request(srv.port, "GET", "/v1/customers/ü".encode())
    assert reply.headers["content-type"].startswith("application/json")
    assert_error(reply, 400, "invalid_request")
    reply = request(srv.port, "GET", customer_path("ü"))
    assert reply.status == 200 and reply.json()["id"] == "ü" and reply.json()["balance"]["total"] == 9
    reply = request(srv.port, "GET", "/v1/customers/a%2Fb")
    assert reply.status == 200 and reply.json()["id"] == "a/b"
    assert state_of(srv.port, SEEDED) == before


def test_chunked_body_over_the_limit(srv):
    """No Content-Length: the limit still holds for a chunked body."""
    import socket

    before = state_of(srv.port, SEEDED)
    payload = body(customer_id="bad_c", amount=5, description="a" * 70_000)
    chunk = hex(len(payload))[2:].encode() + b"\r\n" + payload + b"\r\n0\r\n\r\n"
    head = (
        b"POST /v1/customers/deposit HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as sock:
        sock.sendall(head + chunk)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            data += more
    assert data.startswith(b"HTTP/1.1 413 "), data[:200]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"
    assert state_of(srv.port, SEEDED) == before


AUTH_CASES = [
    ("no header", None, [], "missing_api_key"),
    ("empty bearer", None, [("Authorization", "Bearer ")], "missing_api_key"),
    ("basic scheme", None, [("Authorization", "Basic dXNlcjpwYXNz")], "missing_api_key"),
    ("bare key", None, [("Authorization", API_KEY)], "missing_api_key"),
    ("unknown key", "vb_live_unknown", [], "invalid_api_key"),
    ("key with a space", None, [("Authorization", f"Bearer {API_KEY} x")], "invalid_api_key"),
    ("key too long", "k" * 600, [], "invalid_api_key"),
    ("non-ASCII key", "tly_é", [], "invalid_api_key"),
    ("key prefix", API_KEY[:-1], [], "invalid_api_key"),
]


@pytest.mark.parametrize(("key", "headers", "code"), [pytest.param(*c[1:], id=c[0]) for c in AUTH_CASES])
@pytest.mark.parametrize(
    ("method", "target", "payload"),
    [
        pytest.param("POST", DEPOSIT, body(customer_id="bad_c", amount=5), id="deposit"),
        pytest.param("POST", FREEZE, b"{not json", id="freeze-malformed"),  # auth is checked first
        pytest.param("POST", CONSUME, body(transaction_id="bad_t"), id="consume"),
        pytest.param("GET", customer_path("bad_c"), None, id="get"),
        pytest.param("GET", customer_path("nobody", ledger=True) + "?limit=0", None, id="ledger"),
    ],
)
def test_bad_keys(srv, method, target, payload, key, headers, code):
    before = state_of(srv.port, SEEDED)
    reply = request(srv.port, method, target, key=key, body=payload, headers=headers)
    assert_error(reply, 401, code)
    assert state_of(srv.port, SEEDED) == before


def test_health_and_openapi_need_no_key(srv):
    assert request(srv.port, "GET", "/health", key=None).json() == {"status": "ok"}
    assert request(srv.port, "GET", "/openapi.json", key=None).status == 200


def test_zz_digest_unchanged_by_every_refused_request(srv):
    """Runs last in this module: the full state is what the seeding left."""
    assert replay(srv.data_dir)["digest"] == srv.seeded_digest


def test_revoked_key(tmp_path: Path):
    """Keys are created and revoked with the server stopped; a revoked key gets 401
    api_key_revoked everywhere, and the project's other key still works."""
    data_dir = tmp_path / "data"
    server = Server(data_dir).start()
    try:
        deposit(server.port, "rk_c", 50)
        assert server.stop() == 0
        key, key_id = create_key(data_dir, "p2")
        other, _ = create_key(data_dir, "p2")
        server.start()
        assert request(server.port, "POST", DEPOSIT, key=key, body={"customer_id": "p2_c", "amount": 3}).status == 200
        assert server.stop() == 0
        revoke_key(data_dir, key_id)
        digest = replay(data_dir)["digest"]
        server.start()
        for method, target, payload in (
            ("POST", DEPOSIT, {"customer_id": "p2_c", "amount": 3}),
            ("POST", FREEZE, {"customer_id": "p2_c", "amount": 1, "transaction_id": "t"}),
            ("POST", "/v1/billing/deduct", {"customer_id": "p2_c", "amount": 1, "transaction_id": "d"}),
            ("GET", customer_path("p2_c"), None),
            ("GET", customer_path("p2_c", ledger=True), None),
        ):
            assert_error(request(server.port, method, target, key=key, body=payload), 401, "api_key_revoked")
        reply = request(server.port, "GET", customer_path("p2_c"), key=other)
        assert reply.status == 200 and reply.json()["balance"]["total"] == 3
        assert server.stop() == 0
        assert replay(data_dir)["digest"] == digest
        done = create_key_while_running_refused(server, data_dir)
        assert done
    finally:
        server.kill()


def create_key_while_running_refused(server: Server, data_dir: Path) -> bool:
    """`tally keys create` refuses (exit 2) while a server holds the data directory."""
    from tests.api.harness import tally

    server.start()
    done = tally("keys", "create", "--data-dir", str(data_dir), "--project", "p3")
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    return True
