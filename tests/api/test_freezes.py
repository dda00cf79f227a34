"""GET /v1/customers/{customer_id}/freezes (beyond the record, issue 13) through a real `tally serve`.

What: an open freeze is listed with its amount, allocations and TTL (settle_action + settle_at,
the same instant the freeze answered); consume and unfreeze (by request and by TTL) take it off
the list; 25 freezes page 10/10/5 newest first with cursors bound to the listing; unknown
customer 404 as GET /v1/customers/{id}; bad limit / cursor / parameters 400 with the codes the
ledger route gives; the list survives a restart (recovered from the log).
How: raw HTTP (tests/api/harness.py) on 127.0.0.1; the TTL case is a bounded poll, no timing assertion.
How it could fail: a settled freeze still listed, a wrong due time or allocation, a page that
skips or repeats a freeze, a 500 or a wrong code for bad input.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest

from tests.api.harness import Server, customer_path, deposit, request

POLL_S = 10.0


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("freezes") / "data").start()
    try:
        yield server
    finally:
        server.kill()


def freezes_path(customer_id: str, query: str = "") -> str:
    return "/v1/customers/" + quote(customer_id, safe="") + "/freezes" + (f"?{query}" if query else "")


def get_page(server: Server, customer_id: str, query: str = "") -> dict[str, Any]:
    reply = request(server.port, "GET", freezes_path(customer_id, query))
    assert reply.status == 200, (reply.status, reply.body)
    return reply.json()  # type: ignore[no-any-return]


def post(server: Server, path: str, **fields: Any) -> dict[str, Any]:
    reply = request(server.port, "POST", path, body=fields)
    assert reply.status == 200, (reply.status, reply.body)
    return reply.json()  # type: ignore[no-any-return]


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def test_open_freezes_show_amount_allocations_and_ttl(srv: Server) -> None:
    cid = "frz/one é"  # any character, `/` included (CONTRACT §3.2)
    deposit(srv.port, cid, 30, wallet="credits", source="promo", expires_at="2099-01-01T00:00:00Z")
    deposit(srv.port, cid, 100, wallet="credits", source="paid")
    ttl = post(srv, "/v1/billing/freeze", customer_id=cid, amount=50, transaction_id="frz_ttl",
               unfreeze_after_seconds=600, business_type="TASK", description="chat 42")  # fmt: skip
    auto = post(srv, "/v1/billing/freeze", customer_id=cid, amount=5, transaction_id="frz_auto", consume_after_seconds=90)
    plain = post(srv, "/v1/billing/freeze", customer_id=cid, amount=7, transaction_id="frz_plain", wallet="credits")
    page = get_page(srv, cid)
    assert [i["transaction_id"] for i in page["items"]] == ["frz_plain", "frz_auto", "frz_ttl"]
    assert (page["total_count"], page["has_more"], page["next_cursor"]) == (3, False, None)
    first = page["items"][2]
    assert first["amount"] == 50
    assert first["settle_action"] == "unfreeze"
    assert first["settle_at"] == ttl["unfreeze_after"]
    assert ms(first["settle_at"]) - ms(first["frozen_at"]) == 600_000
    # soonest expiry first (CONTRACT §3.6): 30 from the promo bucket, then 20 from paid
    assert first["allocations"] == ttl["freeze_details"]
    assert [(a["source"], a["amount"]) for a in first["allocations"]] == [("promo", 30), ("paid", 20)]
    assert (first["business_type"], first["description"], first["wallet"], first["credit_types"]) == ("TASK", "chat 42", None, None)
    assert page["items"][1]["settle_action"] == "consume"
    assert page["items"][1]["settle_at"] == auto["consume_after"]
    assert ms(page["items"][1]["settle_at"]) - ms(page["items"][1]["frozen_at"]) == 90_000
    assert (page["items"][0]["settle_action"], page["items"][0]["settle_at"]) == (None, None)
    assert page["items"][0]["wallet"] == "credits" and page["items"][0]["allocations"] == plain["freeze_details"]
    frozen = request(srv.port, "GET", customer_path(cid)).json()["balance"]["frozen"]
    assert frozen == sum(i["amount"] for i in page["items"]) == 62


def test_consume_and_unfreeze_take_a_freeze_off_the_list(srv: Server) -> None:
    cid = "frz_settle"
    deposit(srv.port, cid, 100)
    for n in range(3):
        post(srv, "/v1/billing/freeze", customer_id=cid, amount=10, transaction_id=f"frz_s{n}", unfreeze_after_seconds=3600)
    post(srv, "/v1/billing/consume", transaction_id="frz_s0", actual_amount=4)
    assert [i["transaction_id"] for i in get_page(srv, cid)["items"]] == ["frz_s2", "frz_s1"]
    post(srv, "/v1/billing/unfreeze", transaction_id="frz_s2")
    page = get_page(srv, cid)
    assert [i["transaction_id"] for i in page["items"]] == ["frz_s1"] and page["total_count"] == 1
    post(srv, "/v1/billing/consume", transaction_id="frz_s1")
    assert get_page(srv, cid) == {"items": [], "total_count": 0, "has_more": False, "next_cursor": None}


def test_a_due_ttl_settles_before_the_list_is_read(srv: Server) -> None:
    cid = "frz_due"
    deposit(srv.port, cid, 100)
    post(srv, "/v1/billing/freeze", customer_id=cid, amount=10, transaction_id="frz_due1", unfreeze_after_seconds=1)
    post(srv, "/v1/billing/freeze", customer_id=cid, amount=10, transaction_id="frz_keep")
    deadline = time.monotonic() + POLL_S
    while [i["transaction_id"] for i in get_page(srv, cid)["items"]] != ["frz_keep"]:
        if time.monotonic() >= deadline:  # a bounded wait, not a timing assertion
            pytest.fail("the 1 s TTL freeze is still listed")
        time.sleep(0.1)
    ledger = request(srv.port, "GET", customer_path(cid, ledger=True) + "?transaction_id=frz_due1").json()
    assert [e["operation_type"] for e in ledger["items"]] == ["UNFREEZE", "FREEZE"]


def test_25_freezes_page_10_10_5_newest_first(srv: Server) -> None:
    cid = "frz_many"
    deposit(srv.port, cid, 1000)
    ids = [f"frz_m{n:02d}" for n in range(25)]
    for n, txn in enumerate(ids):
        post(srv, "/v1/billing/freeze", customer_id=cid, amount=n + 1, transaction_id=txn)
    pages, cursor = [], None
    for _ in range(3):
        page = get_page(srv, cid, "limit=10" + (f"&cursor={quote(cursor)}" if cursor else ""))
        pages.append(page)
        cursor = page["next_cursor"]
    assert [len(p["items"]) for p in pages] == [10, 10, 5]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert pages[2]["next_cursor"] is None and all(p["total_count"] == 25 for p in pages)
    seen = [i["transaction_id"] for p in pages for i in p["items"]]
    assert seen == ids[::-1]
    assert [i["amount"] for i in pages[2]["items"]] == [5, 4, 3, 2, 1]
    # a freeze settled between two pages never makes the next page skip or repeat one
    second = pages[0]["next_cursor"]
    post(srv, "/v1/billing/unfreeze", transaction_id="frz_m15")  # the last one on page 1
    again = get_page(srv, cid, f"limit=10&cursor={quote(second)}")
    assert [i["transaction_id"] for i in again["items"]] == ids[14:4:-1] and again["total_count"] == 24
    # default limit 20, maximum 100
    assert len(get_page(srv, cid)["items"]) == 20
    assert len(get_page(srv, cid, "limit=100")["items"]) == 24


def test_unknown_customer_is_404_as_the_customer_route(srv: Server) -> None:
    for cid in ("frz_nobody", "frz/nobody"):
        mine = request(srv.port, "GET", freezes_path(cid))
        theirs = request(srv.port, "GET", customer_path(cid))
        assert (mine.status, mine.code) == (theirs.status, theirs.code) == (404, "customer_not_found")
        assert mine.json()["error"]["details"] == {"customer_id": cid}


def test_bad_limit_cursor_and_parameters_are_400_like_the_ledger(srv: Server) -> None:
    cid = "frz_bad"
    deposit(srv.port, cid, 10)
    post(srv, "/v1/billing/freeze", customer_id=cid, amount=1, transaction_id="frz_bad1")
    ledger_cursor = request(srv.port, "GET", customer_path(cid, ledger=True) + "?limit=1").json()["next_cursor"]
    other = "frz_many"  # a cursor of another customer's freezes list
    other_cursor = get_page(srv, other, "limit=1")["next_cursor"]
    cases = {
        "limit=0": "invalid_limit", "limit=101": "invalid_limit", "limit=x": "invalid_limit", "limit=": "invalid_limit",
        "limit=1&limit=2": "invalid_limit", "limit=-1": "invalid_limit", "cursor=": "invalid_cursor",
        "cursor=%21%21": "invalid_cursor", "cursor=AAAA": "invalid_cursor", f"cursor={quote(ledger_cursor)}": "invalid_cursor",
        f"cursor={quote(other_cursor)}": "invalid_cursor", "colour=red": "unknown_field",
    }  # fmt: skip
    for query, expected in cases.items():
        reply = request(srv.port, "GET", freezes_path(cid, query))
        assert (reply.status, reply.code) == (400, expected), (query, reply.body)
        if "cursor=" not in query:  # the ledger refuses the same limits and names with the same codes
            ledger = request(srv.port, "GET", customer_path(cid, ledger=True) + "?" + query)
            assert (ledger.status, ledger.code) == (400, expected), query
    assert request(srv.port, "GET", freezes_path(cid), key=None).status == 401
    assert request(srv.port, "GET", "/v1/customers/frz_bad/freezes/x").status == 404


def test_the_list_survives_a_restart(srv: Server) -> None:
    cid = "frz_restart"
    deposit(srv.port, cid, 100)
    post(srv, "/v1/billing/freeze", customer_id=cid, amount=9, transaction_id="frz_r1", consume_after_seconds=3600)
    post(srv, "/v1/billing/freeze", customer_id=cid, amount=8, transaction_id="frz_r2")
    post(srv, "/v1/billing/unfreeze", transaction_id="frz_r2")
    before = get_page(srv, cid)
    assert [i["transaction_id"] for i in before["items"]] == ["frz_r1"]
    srv.restart()
    assert get_page(srv, cid) == before
