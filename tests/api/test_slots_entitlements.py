"""Slots and entitlements (velobase-api §1A.8-§1A.9, CONTRACT §8) through a real `tally serve`.

What: every route with the exact bodies §1A.8-9 give (snake_case, as the JS SDK sends them),
every error code of §8 and the shape codes with the §3.14 envelope, the idempotency rules of
§8.2-§8.3, a burst of concurrent claims on one pool (exactly `capacity` winners), the claim TTL
(released once while serving, and at start-up when it fell due while the server was down), and
a SIGKILL: restart and `tally replay` give the same state and digest.
How: raw HTTP (tests/api/harness.py) on 127.0.0.1; an aiohttp session for the burst; waits are
bounded polls that pytest.fail when they run out, never timing assertions.
How it could fail: a wrong field or code, a replay that writes, in_use above capacity or below
zero, a timer firing twice or never, a lost acknowledged write.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any, Callable
from urllib.parse import quote

import aiohttp
import pytest

from tests.api.harness import API_KEY, Server, deposit, replay, request, tally
from tests.waiting import wait_for

POLL_S = 10.0
CID = "slot/cust é"  # any character, `/` included (CONTRACT §3.2)
ENC = quote(CID, safe="")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("slots") / "data").start()
    try:
        yield server
    finally:
        server.kill()


def post(server: Server, path: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    reply = request(server.port, "POST", path, body=fields)
    return reply.status, reply.json()


def get(server: Server, target: str) -> tuple[int, dict[str, Any]]:
    reply = request(server.port, "GET", target)
    return reply.status, reply.json()


def code(result: tuple[int, dict[str, Any]]) -> tuple[int, str, dict[str, Any]]:
    status, body = result
    error = body["error"]
    assert set(error) == {"code", "type", "message", "details", "retryable", "request_id"}, body
    assert error["request_id"] and error["retryable"] is False
    return status, error["code"], error["details"]


def poll(condition: Callable[[], Any]) -> Any:
    return wait_for(condition, what="the polled condition", within_s=POLL_S)


def pool(pool_id: str, capacity: int, in_use: int, wallet: str = "gpu", source: str = "default", **extra: Any) -> dict[str, Any]:
    return {"pool_id": pool_id, "wallet": wallet, "source": source, "capacity": capacity, "in_use": in_use,
            "available": capacity - in_use, "status": "ACTIVE", **extra}  # fmt: skip


def without_time(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        assert item.pop("created_at").endswith("Z")
    return items


# -- slots -------------------------------------------------------------------------------------


def test_slot_lifecycle_with_exact_bodies(srv):
    status, grant = post(srv, "/v1/slot/grant", customer_id=CID, wallet="gpu", amount=2, idempotency_key="sg1",
                         description="plan")  # fmt: skip
    assert status == 200
    pid = grant["pool_id"]
    assert grant == pool(pid, 2, 0, is_idempotent_replay=False)
    assert post(srv, "/v1/slot/grant", customer_id=CID, wallet="gpu", amount=2, idempotency_key="sg1",
                description="ignored on replay") == (200, pool(pid, 2, 0, is_idempotent_replay=True))  # fmt: skip
    status, claim = post(srv, "/v1/slot/claim", customer_id=CID, wallet="gpu", resource_id="job-1")
    hid = claim["holding_id"]
    assert (status, claim) == (200, pool(pid, 2, 1, holding_id=hid, is_idempotent_replay=False))
    # idempotent while held: the same holding id, nothing changes
    assert post(srv, "/v1/slot/claim", customer_id=CID, wallet="gpu", resource_id="job-1") == (
        200, pool(pid, 2, 1, holding_id=hid, is_idempotent_replay=True))  # fmt: skip
    assert code(post(srv, "/v1/slot/claim", customer_id=CID, wallet="gpu", resource_id="job-2", amount=2)) == (
        400, "slot_insufficient_capacity", {"requested": 2, "available": 1})  # fmt: skip
    assert code(post(srv, "/v1/slot/revoke", customer_id=CID, wallet="gpu", amount=2)) == (
        400, "slot_capacity_below_in_use", {"requested": 2, "capacity": 2, "in_use": 1})  # fmt: skip
    assert post(srv, "/v1/slot/release", customer_id=CID, wallet="gpu", resource_id="job-1") == (
        200, pool(pid, 2, 0, holding_id=hid, is_idempotent_replay=False))  # fmt: skip
    assert code(post(srv, "/v1/slot/release", customer_id=CID, wallet="gpu", resource_id="job-1"))[:2] == (
        404, "slot_holding_not_found")  # fmt: skip
    status, again = post(srv, "/v1/slot/claim", customer_id=CID, wallet="gpu", resource_id="job-1")
    assert status == 200 and again["holding_id"] != hid and again["in_use"] == 1  # claimed again: a new holding
    assert post(srv, "/v1/slot/revoke", customer_id=CID, wallet="gpu", amount=1, idempotency_key="sr1") == (
        200, pool(pid, 1, 1, is_idempotent_replay=False))  # fmt: skip
    assert get(srv, f"/v1/slot/customer/{ENC}") == (200, {"pools": [pool(pid, 1, 1)]})
    assert get(srv, f"/v1/slot/customer/{ENC}?wallet=cpu") == (200, {"pools": []})
    assert get(srv, "/v1/slot/customer/nobody") == (200, {"pools": []})
    # the grant created the customer, as a deposit does
    assert request(srv.port, "GET", f"/v1/customers/{ENC}").status == 200


def test_slot_idempotency_conflicts_and_missing_pools(srv):
    assert post(srv, "/v1/slot/grant", customer_id="sc1", wallet="w", source="s", amount=3, idempotency_key="k1")[0] == 200
    for fields, field in (({"customer_id": "sc2"}, "customer_id"), ({"amount": 4}, "amount"), ({"wallet": "x"}, "wallet"),
                          ({"source": "default"}, "source")):  # fmt: skip
        body = {"customer_id": "sc1", "wallet": "w", "source": "s", "amount": 3, "idempotency_key": "k1", **fields}
        assert code(post(srv, "/v1/slot/grant", **body)) == (409, "transaction_conflict", {"field": field})
    assert code(post(srv, "/v1/slot/revoke", customer_id="sc1", wallet="w", source="s", amount=3,
                     idempotency_key="k1")) == (409, "transaction_conflict", {"field": "idempotency_key"})  # fmt: skip
    # no key: never deduplicated
    assert post(srv, "/v1/slot/grant", customer_id="sc1", wallet="w", source="s", amount=3)[1]["capacity"] == 6
    missing = {"customer_id": "sc1", "wallet": "w", "source": "default"}
    assert code(post(srv, "/v1/slot/claim", **missing, resource_id="r")) == (404, "slot_pool_not_found", missing)
    assert code(post(srv, "/v1/slot/revoke", **missing, amount=1)) == (404, "slot_pool_not_found", missing)
    assert code(post(srv, "/v1/slot/release", customer_id="nobody", wallet="w", resource_id="r"))[:2] == (
        404, "slot_holding_not_found")  # fmt: skip


@pytest.mark.parametrize(
    ("path", "fields", "expected"),
    [
        ("/v1/slot/grant", {"wallet": "w", "amount": 1}, "customer_id_required"),
        ("/v1/slot/grant", {"customer_id": "c", "amount": 1}, "wallet_required"),
        ("/v1/slot/grant", {"customer_id": "c", "wallet": "  ", "amount": 1}, "wallet_required"),
        ("/v1/slot/grant", {"customer_id": "c", "wallet": "w"}, "amount_must_be_positive"),
        ("/v1/slot/grant", {"customer_id": "c", "wallet": "w", "amount": 0}, "amount_must_be_positive"),
        ("/v1/slot/grant", {"customer_id": "c", "wallet": "w", "amount": 1.5}, "amount_must_be_positive"),
        ("/v1/slot/grant", {"customer_id": "c", "wallet": "w", "amount": 2**53}, "amount_too_large"),
        ("/v1/slot/grant", {"customer_id": "c", "wallet": "w\x01", "amount": 1}, "invalid_identifier"),
        ("/v1/slot/grant", {"customer_id": "c", "wallet": "w", "amount": 1, "extra": 1}, "unknown_field"),
        ("/v1/slot/revoke", {"customer_id": "c", "wallet": "w" * 256, "amount": 1}, "invalid_identifier"),
        ("/v1/slot/claim", {"customer_id": "c", "wallet": "w"}, "resource_id_required"),
        ("/v1/slot/claim", {"customer_id": "c", "resource_id": "r"}, "wallet_required"),
        ("/v1/slot/claim", {"customer_id": "c", "wallet": "w", "resource_id": "r", "ttl_seconds": 0}, "invalid_ttl_seconds"),
        ("/v1/slot/claim", {"customer_id": "c", "wallet": "w", "resource_id": "r", "ttl_seconds": 86_401}, "invalid_ttl_seconds"),
        ("/v1/slot/claim", {"customer_id": "c", "wallet": "w", "resource_id": "r", "amount": -1}, "amount_must_be_positive"),
        ("/v1/slot/release", {"customer_id": "c", "wallet": "w", "resource_id": ""}, "resource_id_required"),
        ("/v1/entitlement/set", {"feature_key": "f", "value": "v"}, "customer_id_required"),
        ("/v1/entitlement/set", {"customer_id": "c", "value": "v"}, "feature_key_required"),
        ("/v1/entitlement/set", {"customer_id": "c", "feature_key": "f"}, "value_required"),
        ("/v1/entitlement/set", {"customer_id": "c", "feature_key": "f", "value": 5}, "entitlement_validation_error"),
        ("/v1/entitlement/set", {"customer_id": "c", "feature_key": "f", "value": "v" * 4097}, "entitlement_validation_error"),
        ("/v1/entitlement/set", {"customer_id": "c", "feature_key": "f", "value": "v", "valid_from": "tomorrow"}, "invalid_valid_from"),
        ("/v1/entitlement/set", {"customer_id": "c", "feature_key": "f", "value": "v", "valid_until": "2026-01-01T00:00:00"}, "invalid_valid_until"),
        ("/v1/entitlement/set", {"customer_id": "c", "feature_key": "f", "value": "v", "valid_from": "2026-01-02T00:00:00Z",
                                 "valid_until": "2026-01-01T00:00:00Z"}, "invalid_datetime_range"),
        ("/v1/entitlement/set", {"customer_id": "c", "feature_key": "f", "value": "v", "metadata": [1]}, "invalid_metadata"),
        ("/v1/entitlement/remove", {"customer_id": "c"}, "feature_key_required"),
    ],
)  # fmt: skip
def test_request_shape_codes(srv, path, fields, expected):
    reply = request(srv.port, "POST", path, body=fields)
    assert (reply.status, reply.code) == (400, expected), reply.body
    assert reply.json()["error"]["type"] == "bad_request" and "x-request-id" in reply.headers


def test_malformed_json_and_auth(srv):
    assert request(srv.port, "POST", "/v1/slot/claim", body=b"{nope").code == "invalid_json"
    for method, target in (("POST", "/v1/slot/grant"), ("POST", "/v1/slot/claim"), ("POST", "/v1/slot/release"),
                           ("POST", "/v1/slot/revoke"), ("GET", "/v1/slot/customer/x"), ("GET", "/v1/slot/events/x"),
                           ("POST", "/v1/entitlement/set"), ("POST", "/v1/entitlement/remove"),
                           ("GET", "/v1/entitlement/x"), ("GET", "/v1/entitlement/x/events"), ("GET", "/v1/entitlement/x/f")):  # fmt: skip
        reply = request(srv.port, method, target, key="vb_wrong", body={} if method == "POST" else None)
        assert (reply.status, reply.code) == (401, "invalid_api_key"), (method, target)


def test_slot_events_pages_filters_and_cursor_rules(srv):
    cid = "events/cust"
    enc = quote(cid, safe="")
    post(srv, "/v1/slot/grant", customer_id=cid, wallet="a", amount=10, idempotency_key="ev-g")
    post(srv, "/v1/slot/grant", customer_id=cid, wallet="b", source="s2", amount=10)
    for k in range(5):
        assert post(srv, "/v1/slot/claim", customer_id=cid, wallet="a", resource_id=f"r{k}", description=f"d{k}")[0] == 200
    post(srv, "/v1/slot/release", customer_id=cid, wallet="a", resource_id="r0")
    status, first = get(srv, f"/v1/slot/events/{enc}?limit=1")
    assert status == 200 and first["total_count"] == 8 and first["has_more"] is True
    assert without_time(first["items"]) == [{"id": first["items"][0]["id"], "type": "RELEASE", "wallet": "a",
        "source": "default", "amount": 1, "resource_id": "r0", "description": None, "idempotency_key": None}]  # fmt: skip
    seen, cursor = [], None
    for _ in range(10):
        target = f"/v1/slot/events/{enc}?types=CLAIM%2CRELEASE&wallet=a&limit=2" + (f"&cursor={quote(cursor)}" if cursor else "")
        status, page = get(srv, target)
        assert status == 200 and page["total_count"] == 6
        seen += [(e["type"], e["resource_id"]) for e in page["items"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == [("RELEASE", "r0")] + [("CLAIM", f"r{k}") for k in range(4, -1, -1)]
    status, grants = get(srv, f"/v1/slot/events/{enc}?types=GRANT_CAPACITY&sources=s2,default")
    assert [(e["wallet"], e["idempotency_key"]) for e in grants["items"]] == [("b", None), ("a", "ev-g")]
    assert get(srv, f"/v1/slot/events/{enc}?resource_id=r3")[1]["total_count"] == 1
    assert get(srv, f"/v1/slot/events/{enc}?to_at=2000-01-01T00:00:00Z")[1] == {
        "items": [], "total_count": 0, "has_more": False, "next_cursor": None}  # fmt: skip
    assert get(srv, f"/v1/slot/events/{enc}?from_at=2000-01-01T00:00:00Z")[1]["total_count"] == 8
    # a cursor made for another filter, a malformed one, and bad parameters
    assert code(get(srv, f"/v1/slot/events/{enc}?cursor={quote(cursor)}"))[:2] == (400, "invalid_cursor")
    assert code(get(srv, f"/v1/slot/events/{enc}?cursor=zzz"))[:2] == (400, "invalid_cursor")
    for query, expected in (("limit=0", "invalid_limit"), ("limit=101", "invalid_limit"), ("types=CLAIM,NOPE", "invalid_event_type"),
                            ("from_at=yesterday", "invalid_from_at"), ("to_at=1", "invalid_to_at"), ("colour=red", "unknown_field")):  # fmt: skip
        assert code(get(srv, f"/v1/slot/events/{enc}?{query}"))[:2] == (400, expected), query
    assert get(srv, "/v1/slot/events/nobody")[1]["items"] == []


async def test_concurrent_claims_on_one_pool_have_exactly_capacity_winners(srv):
    capacity, attempts = 7, 300
    post(srv, "/v1/slot/grant", customer_id="burst", wallet="gpu", amount=capacity)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=attempts), timeout=timeout) as session:

        async def one(k: int) -> tuple[int, dict[str, Any]]:
            payload = {"customer_id": "burst", "wallet": "gpu", "resource_id": f"r{k % 150}"}  # each resource twice
            async with session.post(srv.base_url + "/v1/slot/claim", json=payload, headers=headers) as response:
                return response.status, await response.json()

        results = await asyncio.gather(*(one(k) for k in range(attempts)))
    assert Counter(s for s, _ in results).keys() <= {200, 400}
    winners = {b["holding_id"] for s, b in results if s == 200}
    assert len(winners) == capacity  # a resource claimed twice may replay its holding, never add one
    for status, body in results:
        if status == 200:
            assert 1 <= body["in_use"] <= capacity and body["available"] == capacity - body["in_use"]
        else:
            assert body["error"]["code"] == "slot_insufficient_capacity"
            assert body["error"]["details"] == {"requested": 1, "available": 0}
    assert get(srv, "/v1/slot/customer/burst")[1]["pools"][0]["in_use"] == capacity


def test_claim_ttl_releases_exactly_once(srv):
    post(srv, "/v1/slot/grant", customer_id="ttl", wallet="gpu", amount=1)
    assert post(srv, "/v1/slot/claim", customer_id="ttl", wallet="gpu", resource_id="r", ttl_seconds=1)[0] == 200
    poll(lambda: get(srv, "/v1/slot/customer/ttl")[1]["pools"][0]["in_use"] == 0)
    types = [e["type"] for e in get(srv, "/v1/slot/events/ttl")[1]["items"]]
    assert types == ["RELEASE", "CLAIM", "GRANT_CAPACITY"]
    assert post(srv, "/v1/slot/claim", customer_id="ttl", wallet="gpu", resource_id="r")[1]["in_use"] == 1


# -- entitlements ------------------------------------------------------------------------------


def test_entitlement_set_get_list_remove_and_events(srv):
    cid = "ent/cust"
    enc = quote(cid, safe="")
    assert code(post(srv, "/v1/entitlement/set", customer_id=cid, feature_key="f", value="v")) == (
        404, "entitlement_customer_not_found", {"customer_id": cid})  # fmt: skip
    deposit(srv.port, cid, 1)
    reply = request(srv.port, "POST", "/v1/entitlement/set", body={"customer_id": cid, "feature_key": "seats", "value": "5",
                    "source": "plan", "description": "pro", "metadata": {"tier": "pro"}})  # fmt: skip
    assert b'"old_value":null' in reply.body  # an explicit null, not an omitted field
    created = reply.json()
    eid = created["entitlement_id"]
    view = {"entitlement_id": eid, "feature_key": "seats", "value": "5", "valid_from": None, "valid_until": None,
            "source": "plan", "description": "pro", "metadata": {"tier": "pro"}}  # fmt: skip
    assert created == {**view, "is_created": True, "old_value": None}
    status, updated = post(srv, "/v1/entitlement/set", customer_id=cid, feature_key="seats", value="9",
                           valid_from="2020-01-01T00:00:00+02:00")  # fmt: skip
    view = {**view, "value": "9", "valid_from": "2019-12-31T22:00:00.000Z", "source": None, "description": None, "metadata": None}
    assert (status, updated) == (200, {**view, "is_created": False, "old_value": "5"})
    expired = {"entitlement_id": None, "feature_key": "events", "value": "x", "valid_from": None,
               "valid_until": "2001-01-01T00:00:00.000Z", "source": None, "description": None, "metadata": None}  # fmt: skip
    status, body = post(srv, "/v1/entitlement/set", customer_id=cid, feature_key="events", value="x",
                        valid_until="2001-01-01T00:00:00Z")  # a past valid_until is accepted: inactive  # fmt: skip
    expired["entitlement_id"] = body["entitlement_id"]
    assert get(srv, f"/v1/entitlement/{enc}/seats") == (200, {"entitlement": view})
    assert get(srv, f"/v1/entitlement/{enc}/%65vents") == (200, {"entitlement": expired})  # the feature named events
    assert get(srv, f"/v1/entitlement/{enc}/unset") == (200, {"entitlement": None})
    assert get(srv, "/v1/entitlement/nobody/seats") == (200, {"entitlement": None})
    assert get(srv, f"/v1/entitlement/{enc}") == (200, {"items": [{**view, "is_active": True}]})
    both = [{**expired, "is_active": False}, {**view, "is_active": True}]
    assert get(srv, f"/v1/entitlement/{enc}?include_expired=true") == (200, {"items": both})
    assert get(srv, f"/v1/entitlement/{enc}?include_expired=true&feature_keys=events%2Cother") == (200, {"items": both[:1]})
    assert code(get(srv, f"/v1/entitlement/{enc}?include_expired=yes"))[:2] == (400, "invalid_include_expired")
    assert post(srv, "/v1/entitlement/remove", customer_id=cid, feature_key="seats") == (200, {"removed": True, "old_value": "9"})
    assert post(srv, "/v1/entitlement/remove", customer_id=cid, feature_key="seats") == (200, {"removed": False, "old_value": None})
    assert code(post(srv, "/v1/entitlement/remove", customer_id="nobody", feature_key="seats"))[:2] == (
        404, "entitlement_customer_not_found")  # fmt: skip
    status, events = get(srv, f"/v1/entitlement/{enc}/events")  # wins over the feature named events
    assert status == 200 and events["total_count"] == 4 and events["has_more"] is False
    assert [(e["type"], e["feature_key"], e["old_value"], e["new_value"]) for e in events["items"]] == [
        ("REMOVE", "seats", "9", None), ("SET", "events", None, "x"), ("SET", "seats", "5", "9"), ("SET", "seats", None, "5")]  # fmt: skip
    assert set(events["items"][0]) == {"id", "feature_key", "type", "old_value", "new_value", "source", "description", "created_at"}
    status, page = get(srv, f"/v1/entitlement/{enc}/events?feature_key=seats&types=SET&limit=1")
    assert (page["total_count"], page["has_more"], page["items"][0]["new_value"]) == (2, True, "9")
    status, page2 = get(srv, f"/v1/entitlement/{enc}/events?feature_key=seats&types=SET&limit=1&cursor={page['next_cursor']}")
    assert (page2["has_more"], page2["items"][0]["new_value"], page2["next_cursor"]) == (False, "5", None)
    assert code(get(srv, f"/v1/entitlement/{enc}/events?types=SET&cursor={page['next_cursor']}"))[:2] == (400, "invalid_cursor")
    assert code(get(srv, f"/v1/entitlement/{enc}/events?types=UPSERT"))[:2] == (400, "invalid_event_type")
    assert get(srv, f"/v1/entitlement/{enc}/a/b")[0] == 404  # feature keys holding `/` arrive as %2F


# -- restarts ------------------------------------------------------------------------------------


def test_ttl_due_while_down_fires_at_start_up(tmp_path):
    server = Server(tmp_path / "data").start()
    try:
        post(server, "/v1/slot/grant", customer_id="down", wallet="gpu", amount=1)
        status, claim = post(server, "/v1/slot/claim", customer_id="down", wallet="gpu", resource_id="r", ttl_seconds=1)
        assert status == 200
        assert server.stop() == 0
        claimed_at = time.time()
        poll(lambda: time.time() > claimed_at + 1.5)  # let the deadline pass while no server runs
        server.start()
        server.stop()  # no request reached it: only the start-up can have fired the timer
        lines = [json.loads(line) for line in tally("inspect", "--data-dir", str(tmp_path / "data")).stdout.splitlines()]
        fired = [line["command"] for line in lines if line["command"].get("op") == "slot_auto_release"]
        assert len(fired) == 1 and fired[0]["customer_id"] == "down"
        assert f"hold_{fired[0]['holding_lsn']}" == claim["holding_id"]
        server.start()
        assert get(server, "/v1/slot/customer/down")[1]["pools"][0]["in_use"] == 0
    finally:
        server.kill()


def test_sigkill_then_replay_and_restart_keep_every_acknowledged_change(tmp_path):
    data = tmp_path / "data"
    server = Server(data).start()
    try:
        post(server, "/v1/slot/grant", customer_id="k/1", wallet="gpu", amount=3, idempotency_key="kg")
        for k in range(3):
            post(server, "/v1/slot/claim", customer_id="k/1", wallet="gpu", resource_id=f"r{k}", ttl_seconds=3600)
        post(server, "/v1/slot/release", customer_id="k/1", wallet="gpu", resource_id="r1")
        post(server, "/v1/entitlement/set", customer_id="k/1", feature_key="f", value="v", metadata={"a": [1, 2]})
        targets = ["/v1/slot/customer/k%2F1", "/v1/slot/events/k%2F1", "/v1/entitlement/k%2F1?include_expired=true",
                   "/v1/entitlement/k%2F1/events", "/v1/customers/k%2F1"]  # fmt: skip
        before = [get(server, t) for t in targets]
        assert server.kill() != 0
        first = replay(data)
        server.start()
        assert [get(server, t) for t in targets] == before
        assert post(server, "/v1/slot/grant", customer_id="k/1", wallet="gpu", amount=3, idempotency_key="kg")[1][
            "is_idempotent_replay"] is True  # fmt: skip
        assert server.stop() == 0
        second = replay(data)
        assert (second["digest"], second["last_lsn"]) == (first["digest"], first["last_lsn"])
        ops = [json.loads(line)["command"]["op"] for line in tally("inspect", "--data-dir", str(data)).stdout.splitlines()]
        assert Counter(ops)["slot_claim"] == 3 and "entitlement_set" in ops and "slot_release" in ops
    finally:
        server.kill()
