"""net/ through real HTTP on 127.0.0.1 with a FakeRuntime: routing, auth, envelope, request ids.

Method: aiohttp TestServer/TestClient around create_app(config, FakeRuntime); assert exact status,
code and details, the Command the fake received, and that refused requests reached nothing. Fails
if auth runs after validation, if a route or a percent-encoded id goes to the wrong place, if any
response lacks X-Request-Id, or if an input produces a 500.
"""

from typing import Any

import msgspec
import multidict
import pytest
from aiohttp.test_utils import TestClient

from engine.core.codes import status_of
from engine.core.commands import Consume, Deduct, Deposit, Freeze, Unfreeze
from engine.core.results import Applied, Rejected
from engine.runtime.errors import Unavailable
from net.handlers import Handlers
from tests.net.conftest import (
    AUTH,
    GOOD_KEY,
    PROJECT,
    REVOKED_KEY,
    FakeRuntime,
    expect_error,
)

POSTS = ["/v1/customers/deposit", "/v1/billing/deposit", "/v1/billing/freeze", "/v1/billing/consume",
         "/v1/billing/unfreeze", "/v1/billing/deduct"]
GETS = ["/v1/customers/c1", "/v1/customers/c1/ledger"]


def j(**fields: Any) -> bytes:
    return msgspec.json.encode(fields)


# -- success: the exact Command each endpoint builds ----------------------------------------------


@pytest.mark.parametrize("path", ["/v1/customers/deposit", "/v1/billing/deposit"])
async def test_deposit_both_paths(client: TestClient, fake: FakeRuntime, path: str) -> None:
    resp = await client.post(path, data=j(customer_id="c1", amount=1000, idempotency_key="k"),
                             headers={**AUTH, "Idempotency-Key": "k"})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert resp.headers["X-Request-Id"].startswith("req_")
    body = await resp.json()
    assert body["customer_id"] == "c1" and body["added_amount"] == 1000 and body["is_idempotent_replay"] is False
    assert fake.commands == [Deposit(at_ms=0, project=PROJECT, customer_id="c1", amount=1000,
                                     idempotency_key="k")]


async def test_billing_commands(client: TestClient, fake: FakeRuntime) -> None:
    calls = [
        ("/v1/billing/freeze", j(customer_id="c1", amount=100, transaction_id="t1", credit_types=["default"],
                                 business_type="TASK", description="d", unfreeze_after_seconds=60)),
        ("/v1/billing/consume", j(transaction_id="t1", actual_amount=40)),
        ("/v1/billing/unfreeze", j(transaction_id="t2")),
        ("/v1/billing/deduct", j(customer_id="c1", amount=5, transaction_id="t3", wallet="w")),
    ]
    for path, body in calls:
        resp = await client.post(path, data=body, headers=AUTH)
        assert resp.status == 200, await resp.text()
    assert fake.commands == [
        Freeze(at_ms=0, project=PROJECT, customer_id="c1", amount=100, transaction_id="t1",
               credit_types=("default",), business_type="TASK", description="d", unfreeze_after_s=60),
        Consume(at_ms=0, project=PROJECT, customer_id=None, transaction_id="t1", actual_amount=40),
        Unfreeze(at_ms=0, project=PROJECT, customer_id=None, transaction_id="t2"),
        Deduct(at_ms=0, project=PROJECT, customer_id="c1", amount=5, transaction_id="t3", wallet="w"),
    ]


async def test_consume_response_omits_none_amounts(client: TestClient) -> None:
    resp = await client.post("/v1/billing/consume", data=j(transaction_id="t1"), headers=AUTH)
    body = await resp.json()
    assert "returned_amount" not in body and "overage_amount" not in body


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8"])
async def test_any_content_type_is_parsed_as_json(client: TestClient, fake: FakeRuntime, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    resp = await client.post("/v1/billing/unfreeze", data=b'{"transaction_id":"t"}', headers=headers)
    assert resp.status == 200
    assert len(fake.commands) == 1


# -- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, code",
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Bearer", "missing_api_key"),
        ("Bearer ", "missing_api_key"),
        ("Basic dXNlcjpwYXNz", "missing_api_key"),
        (GOOD_KEY, "missing_api_key"),
        ("Bearer wrong", "invalid_api_key"),
        ("Bearer " + "k" * 600, "invalid_api_key"),
        ("Bearer vb_\u00e9", "invalid_api_key"),
        (f"Bearer {REVOKED_KEY}", "api_key_revoked"),
    ],
)
async def test_auth_codes(client: TestClient, fake: FakeRuntime, header: str | None, code: str) -> None:
    headers = {} if header is None else {"Authorization": header}
    for path in POSTS:
        resp = await client.post(path, data=b"{}", headers=headers)
        error = await expect_error(resp, 401, code)
        assert error["type"] == "auth_error"
    for path in GETS:
        await expect_error(await client.get(path, headers=headers), 401, code)
    assert not fake.touched()


async def test_auth_scheme_is_case_insensitive(client: TestClient, fake: FakeRuntime) -> None:
    resp = await client.get("/v1/customers/c1", headers={"Authorization": f"bearer {GOOD_KEY}"})
    assert resp.status == 200
    assert fake.reads == [("customer", PROJECT, "c1")]


@pytest.mark.parametrize("path", POSTS)
async def test_auth_before_validation(client: TestClient, fake: FakeRuntime, path: str) -> None:
    for body in [b"not json", b'{"bogus":1}', b'{"amount":-5}']:
        resp = await client.post(path, data=body, headers={"Authorization": "Bearer vb_live_fake"})
        await expect_error(resp, 401, "invalid_api_key")
    resp = await client.get("/v1/customers/%00/ledger?limit=0", headers={"Authorization": "Bearer garbage"})
    await expect_error(resp, 401, "invalid_api_key")
    assert not fake.touched()


# -- validation through HTTP: rejected requests reach nothing -----------------------------------


@pytest.mark.parametrize(
    "path, body, code, details",
    [
        ("/v1/billing/freeze", b"[]", "invalid_json", None),
        ("/v1/billing/freeze", b"", "invalid_json", None),
        ("/v1/billing/consume", b'{"transaction_id":"t","actual_amout":1}', "unknown_field", {"field": "actual_amout"}),
        ("/v1/billing/freeze", b'{"customer_id":"","amount":1,"transaction_id":"t"}', "customer_id_required",
         {"field": "customer_id"}),
        ("/v1/billing/deduct", b'{"customer_id":"c","amount":1}', "transaction_id_required", {"field": "transaction_id"}),
        ("/v1/billing/freeze", b'{"customer_id":"c","amount":0,"transaction_id":"t"}', "amount_must_be_positive",
         {"field": "amount"}),
        ("/v1/billing/deduct", b'{"customer_id":"c","amount":9007199254740992,"transaction_id":"t"}',
         "amount_too_large", {"field": "amount"}),
        ("/v1/billing/consume", b'{"transaction_id":"t","actual_amount":-1}', "actual_amount_must_be_non_negative",
         {"field": "actual_amount"}),
        ("/v1/customers/deposit", b'{"customer_id":"c","amount":1,"starts_at":"2026-01-01T00:00:00"}',
         "invalid_starts_at", {"field": "starts_at"}),
        ("/v1/customers/deposit", b'{"customer_id":"c","amount":1,"expires_at":"x"}', "invalid_expires_at",
         {"field": "expires_at"}),
        ("/v1/customers/deposit",
         b'{"customer_id":"c","amount":1,"starts_at":"2026-01-02T00:00:00Z","expires_at":"2026-01-01T00:00:00Z"}',
         "invalid_datetime_range", {"field": "expires_at"}),
        ("/v1/billing/freeze", b'{"customer_id":"c","amount":1,"transaction_id":"t","business_type":"X"}',
         "invalid_business_type", {"field": "business_type"}),
        ("/v1/billing/freeze", b'{"customer_id":"c","amount":1,"transaction_id":"t","credit_types":[]}',
         "invalid_credit_types", {"field": "credit_types"}),
        ("/v1/billing/deduct", b'{"customer_id":"c","amount":1,"transaction_id":"t","credit_types":["a"],"wallet":"a"}',
         "invalid_wallet_selection", {"fields": ["credit_types", "wallet"]}),
        ("/v1/billing/freeze",
         b'{"customer_id":"c","amount":1,"transaction_id":"t","unfreeze_after_seconds":1,"consume_after_seconds":1}',
         "invalid_auto_settlement", None),
        ("/v1/billing/freeze", b'{"customer_id":"c","amount":1,"transaction_id":"t","consume_after_seconds":604801}',
         "invalid_auto_settlement_ttl", {"field": "consume_after_seconds"}),
        ("/v1/billing/unfreeze", b'{"transaction_id":"a\\u0000b"}', "invalid_identifier", {"field": "transaction_id"}),
        ("/v1/billing/deduct", j(customer_id="c" * 256, amount=1, transaction_id="t"), "invalid_identifier",
         {"field": "customer_id"}),
        ("/v1/customers/deposit", j(customer_id="c", amount=1, description="d" * 2001), "invalid_description",
         {"field": "description"}),
        ("/v1/customers/deposit", b'{"customer_id":"c","amount":1,"metadata":' + b"[" * 5000 + b"]" * 5000 + b"}",
         "invalid_json", None),
        ("/v1/customers/deposit", b'{"customer_id":"c","amount":1,"metadata":{"a":' + b"[" * 200 + b"]" * 200 + b"}}",
         "invalid_metadata", {"field": "metadata"}),
        ("/v1/customers/deposit", b'{"customer_id":"c","amount":1,"metadata":[1]}', "invalid_metadata",
         {"field": "metadata"}),
    ],
)
async def test_shape_errors(client: TestClient, fake: FakeRuntime, path: str, body: bytes, code: str,
                            details: dict[str, Any] | None) -> None:
    error = await expect_error(await client.post(path, data=body, headers=AUTH), 400, code, details)
    assert error["type"] == "bad_request"
    assert not fake.touched()


async def test_idempotency_key_header(client: TestClient, fake: FakeRuntime) -> None:
    resp = await client.post("/v1/customers/deposit", data=j(customer_id="c", amount=1, idempotency_key="a"),
                             headers={**AUTH, "Idempotency-Key": "b"})
    await expect_error(resp, 400, "idempotency_key_mismatch")
    assert not fake.touched()
    resp = await client.post("/v1/customers/deposit", data=j(customer_id="c", amount=1),
                             headers={**AUTH, "Idempotency-Key": "hdr"})
    assert resp.status == 200
    assert fake.commands[0].idempotency_key == "hdr"


async def test_two_idempotency_key_headers_are_refused(client: TestClient, fake: FakeRuntime) -> None:
    headers = multidict.CIMultiDict(AUTH)
    headers.add("Idempotency-Key", "a")
    headers.add("Idempotency-Key", "b")
    resp = await client.post("/v1/customers/deposit", data=j(customer_id="c", amount=1), headers=headers)
    await expect_error(resp, 400, "idempotency_key_mismatch")
    assert not fake.touched()


async def test_body_over_limit_is_413(client: TestClient, fake: FakeRuntime) -> None:
    body = j(customer_id="c", amount=1, description="x" * (70 * 1024))
    resp = await client.post("/v1/customers/deposit", data=body, headers=AUTH)
    error = await expect_error(resp, 413, "request_too_large")
    assert error["type"] == "bad_request"
    assert not fake.touched()


# -- engine answers and runtime failures --------------------------------------------------------


@pytest.mark.parametrize(
    "rejected, type_",
    [
        (Rejected("customer_not_found", "customer not found"), "not_found"),
        (Rejected("insufficient_balance", "insufficient balance",
                  {"wallet": "default", "requested": 5, "available": 1}), "bad_request"),
        (Rejected("transaction_conflict", "conflict", {"field": "amount"}), "conflict"),
    ],
)
async def test_rejected_becomes_envelope(client: TestClient, fake: FakeRuntime, rejected: Rejected, type_: str) -> None:
    fake.next_result = rejected
    resp = await client.post("/v1/billing/deduct", data=j(customer_id="c", amount=5, transaction_id="t"), headers=AUTH)
    error = await expect_error(resp, status_of(rejected.code), rejected.code, rejected.details or {})
    assert error["type"] == type_ and error["message"] == rejected.message


@pytest.mark.parametrize("code", ["overloaded", "storage_unavailable"])
async def test_unavailable_is_503_retryable(client: TestClient, fake: FakeRuntime, code: str) -> None:
    fake.raise_next = Unavailable(code, "try again")
    resp = await client.post("/v1/billing/unfreeze", data=j(transaction_id="t"), headers=AUTH)
    error = await expect_error(resp, 503, code)
    assert error["retryable"] is True and error["type"] == "server_error"
    fake.raise_next = Unavailable(code, "try again")
    await expect_error(await client.get("/v1/customers/c", headers=AUTH), 503, code)


async def test_unexpected_exception_is_500_with_envelope(client: TestClient, fake: FakeRuntime) -> None:
    fake.raise_next = RuntimeError("bug")
    resp = await client.post("/v1/billing/unfreeze", data=j(transaction_id="t"), headers=AUTH)
    await expect_error(resp, 500, "server_error")


async def test_replay_body_passes_through(client: TestClient, fake: FakeRuntime) -> None:
    fake.next_result = Applied({"transaction_id": "t", "is_idempotent_replay": True}, logged=False)
    resp = await client.post("/v1/billing/unfreeze", data=j(transaction_id="t"), headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"transaction_id": "t", "is_idempotent_replay": True}


# -- GET customer / ledger: raw-path routing ----------------------------------------------------


@pytest.mark.parametrize(
    "raw, customer_id",
    [
        ("c1", "c1"),
        ("a%2Fb", "a/b"),
        ("a%2Fledger", "a/ledger"),
        ("100%25", "100%"),
        ("%2541", "%41"),
        ("user%2B1%40example.com", "user+1@example.com"),
        ("user+1@example.com", "user+1@example.com"),
        ("%C3%A9t%C3%A9", "été"),
        ("e%CC%81", "e\u0301"),
        ("a%20b", "a b"),
        ("ledger", "ledger"),
        ("deposit", "deposit"),
        ("%3Fq%3D1%23x", "?q=1#x"),
    ],
)
async def test_customer_ids_route_and_decode_once(client: TestClient, fake: FakeRuntime, raw: str, customer_id: str) -> None:
    resp = await client.get(f"/v1/customers/{raw}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["id"] == customer_id
    resp = await client.get(f"/v1/customers/{raw}/ledger?limit=5&operation_type=GRANT", headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert fake.reads == [
        ("customer", PROJECT, customer_id),
        ("ledger", PROJECT, customer_id, 5, None, "GRANT", None),
    ]


async def test_sdk_quoted_ids_round_trip(client: TestClient, fake: FakeRuntime) -> None:
    from urllib.parse import quote

    for customer_id in ["a/b/ledger", "x%2Fy", "100% sure+", "日本語/ü", "ledger", "..x", "a?b=c&d"]:
        fake.reads.clear()
        resp = await client.get(f"/v1/customers/{quote(customer_id, safe='')}/ledger", headers=AUTH)
        assert resp.status == 200, (customer_id, await resp.text())
        assert fake.reads[0][2] == customer_id


async def test_ledger_query_passed_through(client: TestClient, fake: FakeRuntime) -> None:
    resp = await client.get("/v1/customers/c1/ledger?limit=100&cursor=abc&transaction_id=t+1%2B", headers=AUTH)
    assert resp.status == 200
    assert fake.reads == [("ledger", PROJECT, "c1", 100, "abc", None, "t 1+")]
    resp = await client.get("/v1/customers/c1/ledger", headers=AUTH)
    assert fake.reads[-1] == ("ledger", PROJECT, "c1", 20, None, None, None)


@pytest.mark.parametrize(
    "url, status, code, details",
    [
        ("/v1/customers/%00", 400, "invalid_identifier", {"field": "customer_id"}),
        ("/v1/customers/%00/ledger", 400, "invalid_identifier", {"field": "customer_id"}),
        ("/v1/customers/%FF", 400, "invalid_identifier", {"field": "customer_id"}),
        ("/v1/customers/%C3", 400, "invalid_identifier", {"field": "customer_id"}),
        ("/v1/customers/" + "x" * 256, 400, "invalid_identifier", {"field": "customer_id"}),
        ("/v1/customers/%20", 400, "customer_id_required", {"field": "customer_id"}),
        ("/v1/customers//ledger", 400, "customer_id_required", {"field": "customer_id"}),
        ("/v1/customers/c1/ledger?limit=0", 400, "invalid_limit", {"field": "limit"}),
        ("/v1/customers/c1/ledger?limit=101", 400, "invalid_limit", {"field": "limit"}),
        ("/v1/customers/c1/ledger?limit=ten", 400, "invalid_limit", {"field": "limit"}),
        ("/v1/customers/c1/ledger?operation_type=DEPOSIT", 400, "invalid_operation_type", {"field": "operation_type"}),
        ("/v1/customers/c1/ledger?cursor=" + "c" * 513, 400, "invalid_cursor", {"field": "cursor"}),
        ("/v1/customers/c1/ledger?transaction_id=%00", 400, "invalid_identifier", {"field": "transaction_id"}),
        ("/v1/customers/c1/ledger?limits=5", 400, "unknown_field", {"field": "limits"}),
        ("/v1/customers/a/b", 404, "not_found", None),
        ("/v1/customers/a/ledger/x", 404, "not_found", None),
        ("/v1/customers/a/ledger/", 404, "not_found", None),
    ],
)
async def test_get_errors(client: TestClient, fake: FakeRuntime, url: str, status: int, code: str,
                          details: dict[str, Any] | None) -> None:
    await expect_error(await client.get(url, headers=AUTH), status, code, details)
    assert not fake.touched()


async def test_customer_not_found_from_runtime(client: TestClient, fake: FakeRuntime) -> None:
    fake.next_result = Rejected("customer_not_found", "customer not found")
    await expect_error(await client.get("/v1/customers/nonexistent_ghost_user", headers=AUTH), 404,
                       "customer_not_found")


# -- routes, methods, request ids, health -------------------------------------------------------


@pytest.mark.parametrize(
    "method, url, status, code",
    [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/v1/billing/nope", 404, "not_found"),
        ("POST", "/v1/billing/freeze/", 404, "not_found"),
        ("GET", "/v1/customers", 404, "not_found"),
        ("GET", "/v1/customers/", 404, "not_found"),
        ("GET", "/v1/billing/freeze", 405, "method_not_allowed"),
        ("PUT", "/v1/customers/deposit", 405, "method_not_allowed"),
        ("DELETE", "/v1/customers/c1", 405, "method_not_allowed"),
        ("POST", "/v1/customers/c1", 405, "method_not_allowed"),
        ("POST", "/health", 405, "method_not_allowed"),
    ],
)
async def test_unknown_routes_and_methods(client: TestClient, fake: FakeRuntime, method: str, url: str, status: int,
                                          code: str) -> None:
    resp = await client.request(method, url, headers=AUTH, data=b"{}")
    await expect_error(resp, status, code)
    if status == 405:
        assert resp.headers["Allow"]
    assert not fake.touched()


async def test_request_ids_unique_on_every_response(client: TestClient) -> None:
    responses = [
        await client.get("/health"),
        await client.get("/nope"),
        await client.get("/v1/billing/freeze"),
        await client.get("/v1/customers/c1", headers=AUTH),
        await client.post("/v1/billing/unfreeze", data=b"{}", headers=AUTH),
        await client.post("/v1/billing/unfreeze", data=b"{}"),
    ]
    ids = [r.headers["X-Request-Id"] for r in responses]
    assert all(i.startswith("req_") and len(i) == 24 for i in ids), ids
    assert len(set(ids)) == len(ids)


async def test_health(client: TestClient, fake: FakeRuntime) -> None:
    resp = await client.get("/health")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    assert fake.auth_calls == []
    fake.ready = False
    error = await expect_error(await client.get("/health"), 503, "not_ready")
    assert error["retryable"] is True


def test_handlers_cover_the_route_table() -> None:
    from net.app import routes

    table = [(r.method, r.path) for r in routes(Handlers(FakeRuntime()))]  # type: ignore[attr-defined]
    assert table == [
        ("POST", "/v1/customers/deposit"),
        ("POST", "/v1/billing/deposit"),
        ("GET", "/v1/customers/{tail:.+}"),
        ("POST", "/v1/billing/freeze"),
        ("POST", "/v1/billing/consume"),
        ("POST", "/v1/billing/unfreeze"),
        ("POST", "/v1/billing/deduct"),
        ("GET", "/health"),
        ("GET", "/openapi.json"),
    ]


async def test_fuzzed_requests_never_500(client: TestClient, fake: FakeRuntime) -> None:
    """Seeded random bodies, paths and queries: every answer is 200 or a 4xx envelope."""
    import random

    rng = random.Random(20260407)
    atoms: list[Any] = [None, True, 0, -1, 1, 2**53, 1.5, 1e308, "", " ", "x", "\x00", "é" * 300, [], [1], {}, {"a": []},
                        "2026-04-07T12:00:00Z", "GRANT", "TASK", ["default"], 10**30]
    fields = ["customer_id", "amount", "transaction_id", "wallet", "credit_type", "credit_types", "source", "starts_at",
              "expires_at", "idempotency_key", "name", "email", "metadata", "description", "business_type",
              "unfreeze_after_seconds", "consume_after_seconds", "actual_amount", "zzz"]
    segments = ["c1", "%00", "%FF", "%2F", "a%2Fb", "ledger", "", "%", "%2", "%%", "+", "..", "é", "x" * 300]
    queries = ["", "limit=5", "limit=%FF", "cursor=%00", "operation_type=GRANT", "transaction_id=", "=", "&&", "a=b",
               "limit", "cursor=" + "c" * 600, "%FF=1"]
    for _ in range(300):
        if rng.random() < 0.6:
            body = {rng.choice(fields): rng.choice(atoms) for _ in range(rng.randrange(6))}
            raw = msgspec.json.encode(body) if rng.random() < 0.9 else bytes(rng.randrange(256) for _ in range(20))
            resp = await client.post(rng.choice(POSTS), data=raw, headers=AUTH)
        else:
            path = "/v1/customers/" + "/".join(rng.choice(segments) for _ in range(rng.randrange(1, 3)))
            if rng.random() < 0.5:
                path += "/ledger"
            resp = await client.get(path + "?" + rng.choice(queries), headers=AUTH)
        assert resp.status in (200, 400, 404, 405), (resp.status, await resp.text())
        assert resp.headers["X-Request-Id"]
        if resp.status != 200:
            await expect_error(resp, resp.status, (await resp.json())["error"]["code"])
