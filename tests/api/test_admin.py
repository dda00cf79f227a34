"""The operator's side of a live server (CONTRACT §9.1-§9.3), through a real `tally serve`.

What: the admin key made at first start (0600 file, printed once, TALLY_ADMIN_KEY honoured, not
replaced by later starts); key create -> used by the very next request -> revoke -> refused by the
very next request; key listings with labels and times and never a key or its hash; X-Tally-Project
for admin keys on /v1; 403 admin_required; 404 key_not_found; project counts; the customer list
with prefixes, paging through every page, and its error codes; and all of it after SIGKILL.
How: tests/api/harness.Server on 127.0.0.1 (a free port), raw HTTP requests, exact bodies and
codes; the server is stopped or killed by its own PID only.
How it could fail: a key usable before its create answered or after its revoke answered, a
listing that leaks a key hash, an admin key reaching /v1 without naming a project, a project key
reaching /admin, a page that skips or repeats a customer, a change lost on a crash.
"""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.api.harness import ADMIN_KEY, API_KEY, Reply, Server, request

TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$")
ADMIN_ROUTES = [
    ("GET", "/admin/v1/projects", None),
    ("GET", "/admin/v1/keys", None),
    ("POST", "/admin/v1/keys", {"project": "x"}),
    ("POST", "/admin/v1/keys/key_0123456789abcdef/revoke", None),
]


def admin(port: int, method: str, target: str, body: Any = None, key: str = ADMIN_KEY) -> Reply:
    return request(port, method, target, key=key, body=body)


def expect(reply: Reply, status: int, code: str | None = None) -> Any:
    assert reply.status == status, (reply.status, reply.body)
    if code is not None:
        assert reply.code == code, reply.body
    return reply.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    process = Server(tmp_path_factory.mktemp("admin") / "data").start()
    try:
        yield process
    finally:
        process.kill()


# -- §9.1 the admin key at first start ---------------------------------------------------------------


def test_9_1_generated_admin_key_is_written_0600_printed_once_and_kept(tmp_path: Path):
    process = Server(tmp_path / "data", admin_key=None).start()
    try:
        key_file = tmp_path / "data" / "admin-key"
        key = key_file.read_text().strip()
        assert key.startswith("tly_") and len(key) == 52
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert process.log_path.read_text().count(key) == 1
        expect(admin(process.port, "GET", "/admin/v1/projects"), 401, "invalid_api_key")
        projects = expect(admin(process.port, "GET", "/admin/v1/projects", key=key), 200)
        assert [(p["name"], p["customers"], p["keys_active"]) for p in projects["items"]] == [("default", 0, 1)]
        process.restart()
        assert process.log_path.read_text().count(key) == 1  # a later start neither prints nor replaces it
        assert key_file.read_text().strip() == key
        expect(admin(process.port, "GET", "/admin/v1/projects", key=key), 200)
    finally:
        process.kill()


def test_9_1_tally_admin_key_is_honoured_and_no_file_is_written(server: Server):
    assert not (server.data_dir / "admin-key").exists()
    assert ADMIN_KEY not in server.log()  # a given key is never echoed
    expect(admin(server.port, "GET", "/admin/v1/keys"), 200)


# -- §9.2 keys: create -> use -> revoke -> refused -------------------------------------------------


def test_9_2_created_key_works_on_the_next_request_and_revoked_key_is_refused_on_the_next(server: Server):
    port = server.port
    created = expect(admin(port, "POST", "/admin/v1/keys", {"project": "acme", "label": "billing app"}), 200)
    assert set(created) == {"key_id", "project", "label", "created_at", "key"}
    assert (created["project"], created["label"]) == ("acme", "billing app") and TIME.match(created["created_at"])
    key = created["key"]
    deposited = request(port, "POST", "/v1/customers/deposit", key=key, body={"customer_id": "acme_1", "amount": 7})
    assert expect(deposited, 200)["added_amount"] == 7
    revoked = expect(admin(port, "POST", f"/admin/v1/keys/{created['key_id']}/revoke"), 200)
    assert revoked["key_id"] == created["key_id"] and TIME.match(revoked["revoked_at"])
    expect(request(port, "GET", "/v1/customers/acme_1", key=key), 401, "api_key_revoked")
    again = expect(admin(port, "POST", f"/admin/v1/keys/{created['key_id']}/revoke"), 200)
    assert again == revoked  # idempotent: the first revocation's time
    # the project and its data stay, reachable with another key of it
    other = expect(admin(port, "POST", "/admin/v1/keys", {"project": "acme"}), 200)
    assert other["label"] is None
    assert expect(request(port, "GET", "/v1/customers/acme_1", key=other["key"]), 200)["balance"]["total"] == 7
    expect(request(port, "GET", "/v1/customers/acme_1"), 404, "customer_not_found")  # not from project default


def test_9_2_keys_are_listed_with_labels_and_times_never_the_key_or_its_hash(server: Server):
    port = server.port
    created = expect(admin(port, "POST", "/admin/v1/keys", {"project": "listed", "label": "cron"}), 200)
    listing = admin(port, "GET", "/admin/v1/keys?project=listed")
    items = expect(listing, 200)["items"]
    assert items == [{"key_id": created["key_id"], "project": "listed", "label": "cron",
                      "created_at": created["created_at"], "revoked_at": None}]  # fmt: skip
    everything = admin(port, "GET", "/admin/v1/keys")
    for secret in (created["key"], API_KEY, ADMIN_KEY):
        for reply in (listing, everything):
            assert secret.encode() not in reply.body
            assert hashlib.sha256(secret.encode()).hexdigest().encode() not in reply.body
    projects = {item["project"] for item in expect(everything, 200)["items"]}
    assert {"default", "listed"} <= projects and "" not in projects  # admin keys are not listed
    expect(admin(port, "GET", "/admin/v1/keys?project=nope"), 404, "project_not_found")
    expect(admin(port, "GET", "/admin/v1/keys?projekt=x"), 400, "unknown_field")


@pytest.mark.parametrize(("body", "code"), [
    ({}, "project_required"), ({"project": "  "}, "project_required"), ({"project": 5}, "invalid_identifier"),
    ({"project": "a\x01"}, "invalid_identifier"), ({"project": "p", "label": "x" * 256}, "invalid_label"),
    ({"project": "p", "label": "a\nb"}, "invalid_label"), ({"project": "p", "extra": 1}, "unknown_field"),
    (b"{", "invalid_json"),
])  # fmt: skip
def test_9_2_bad_create_bodies(server: Server, body: Any, code: str):
    expect(admin(server.port, "POST", "/admin/v1/keys", body), 400, code)


def test_9_2_project_key_on_admin_routes_is_403_admin_required(server: Server):
    for method, target, body in ADMIN_ROUTES:
        expect(request(server.port, method, target, body=body), 403, "admin_required")
        expect(request(server.port, method, target, key=None, body=body), 401, "missing_api_key")
        expect(request(server.port, method, target, key="tly_wrong", body=body), 401, "invalid_api_key")


def test_9_2_unknown_key_id_and_admin_key_id_are_404_key_not_found(server: Server):
    expect(admin(server.port, "POST", "/admin/v1/keys/key_0123456789abcdef/revoke"), 404, "key_not_found")
    expect(admin(server.port, "POST", "/admin/v1/keys/%00/revoke"), 404, "key_not_found")
    expect(admin(server.port, "POST", "/admin/v1/keys/a/b/revoke"), 404, "not_found")
    whole_log = server.log_path.read_text(errors="replace")  # log() is only the tail; requests follow
    admin_ids = [line.split("(", 1)[1].split(")", 1)[0] for line in whole_log.splitlines() if "created an admin key" in line]
    assert len(admin_ids) == 1 and admin_ids[0].startswith("key_")
    expect(admin(server.port, "POST", f"/admin/v1/keys/{admin_ids[0]}/revoke"), 404, "key_not_found")
    expect(admin(server.port, "GET", "/admin/v1/projects"), 200)  # and it still works


def test_9_2_projects_list_counts_customers_and_active_keys(server: Server):
    port = server.port
    first = expect(admin(port, "POST", "/admin/v1/keys", {"project": "counted"}), 200)
    second = expect(admin(port, "POST", "/admin/v1/keys", {"project": "counted"}), 200)
    for customer_id in ("c1", "c2", "c3"):
        deposited = request(port, "POST", "/v1/billing/deposit", key=first["key"], body={"customer_id": customer_id, "amount": 1})
        expect(deposited, 200)
    expect(admin(port, "POST", f"/admin/v1/keys/{second['key_id']}/revoke"), 200)
    items = {p["name"]: p for p in expect(admin(port, "GET", "/admin/v1/projects"), 200)["items"]}
    assert items["counted"] == {"name": "counted", "created_at": first["created_at"], "customers": 3, "keys_active": 1}
    assert list(items) == sorted(items)


# -- §9.1 X-Tally-Project ---------------------------------------------------------------------------


def test_9_1_admin_key_on_v1_names_its_project(server: Server):
    port = server.port
    expect(admin(port, "POST", "/admin/v1/keys", {"project": "named"}), 200)
    body = {"customer_id": "via_admin", "amount": 11}
    expect(request(port, "POST", "/v1/customers/deposit", key=ADMIN_KEY, body=body), 400, "project_required")
    expect(request(port, "GET", "/v1/customers", key=ADMIN_KEY), 400, "project_required")
    headers = {"X-Tally-Project": "nope"}
    expect(request(port, "POST", "/v1/customers/deposit", key=ADMIN_KEY, body=body, headers=headers), 404, "project_not_found")
    expect(request(port, "GET", "/v1/customers/x", key=ADMIN_KEY, headers={"X-Tally-Project": ""}), 400, "project_required")
    named = {"X-Tally-Project": "named"}
    expect(request(port, "POST", "/v1/customers/deposit", key=ADMIN_KEY, body=body, headers=named), 200)
    assert expect(request(port, "GET", "/v1/customers/via_admin", key=ADMIN_KEY, headers=named), 200)["balance"]["total"] == 11
    # the customer is project "named"'s: project default's key does not see it, even naming "named"
    expect(request(port, "GET", "/v1/customers/via_admin", headers=named), 404, "customer_not_found")


# -- §9.3 the customer list ------------------------------------------------------------------------


def _page_through(port: int, key: str, headers: dict[str, str], query: str, limit: int) -> tuple[list[str], int, int]:
    """(every customer_id shown, total_count, pages)."""
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        target = f"/v1/customers?limit={limit}{query}" + ("" if cursor is None else f"&cursor={cursor}")
        page = expect(request(port, "GET", target, key=key, headers=headers), 200)
        pages += 1
        seen += [item["customer_id"] for item in page["items"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return seen, page["total_count"], pages
        cursor = page["next_cursor"]


def test_9_3_customer_list_pages_prefixes_and_codes(server: Server):
    port = server.port
    key = expect(admin(port, "POST", "/admin/v1/keys", {"project": "listing"}), 200)["key"]
    ids = [f"user_{i:02d}" for i in range(37)] + ["user/slash", "üser", "team_a", "team_b", "user"]
    for n, customer_id in enumerate(reversed(ids)):
        deposit = {"customer_id": customer_id, "amount": n + 1, "name": f"N{n}", "email": f"{n}@example.com"}
        expect(request(port, "POST", "/v1/customers/deposit", key=key, body=deposit), 200)
    expect(request(port, "POST", "/v1/billing/deduct", key=key,
                   body={"customer_id": "team_a", "amount": 2, "transaction_id": "t1"}), 200)  # fmt: skip
    seen, total, pages = _page_through(port, key, {}, "", 7)
    assert seen == sorted(ids) and total == len(ids) and pages == 6
    seen, total, _ = _page_through(port, key, {}, "&prefix=user", 5)
    assert seen == sorted(i for i in ids if i.startswith("user")) and total == 39
    seen, total, _ = _page_through(port, ADMIN_KEY, {"X-Tally-Project": "listing"}, f"&prefix={quote('user/')}", 20)
    assert (seen, total) == (["user/slash"], 1)
    page = expect(request(port, "GET", "/v1/customers?prefix=team", key=key), 200)
    team_a = next(i for i in page["items"] if i["customer_id"] == "team_a")
    assert team_a["balance"] == {"total": 3, "used": 2, "frozen": 0, "available": 1}  # deposit n=2 is 3
    assert (team_a["name"], team_a["email"]) == ("N2", "2@example.com") and TIME.match(team_a["created_at"])
    assert page["total_count"] == 2 and page["has_more"] is False
    first = expect(request(port, "GET", "/v1/customers?limit=1&prefix=user", key=key), 200)
    assert first["has_more"] and first["total_count"] == 39
    cursor = first["next_cursor"]
    for target, code in [
        (f"/v1/customers?prefix=use&cursor={cursor}", "invalid_cursor"),  # another prefix
        (f"/v1/customers?cursor={cursor}", "invalid_cursor"),
        ("/v1/customers?cursor=bm90LWEtY3Vyc29y", "invalid_cursor"),
        ("/v1/customers?limit=0", "invalid_limit"), ("/v1/customers?limit=101", "invalid_limit"),
        ("/v1/customers?limit=x", "invalid_limit"), ("/v1/customers?limit=5&limit=6", "invalid_limit"),
        ("/v1/customers?prefix=%01", "invalid_prefix"), (f"/v1/customers?prefix={'a' * 256}", "invalid_prefix"),
        ("/v1/customers?sort=name", "unknown_field"),
    ]:  # fmt: skip
        expect(request(port, "GET", target, key=key), 400, code)
    # a cursor of project "listing" means nothing in project default
    expect(request(port, "GET", f"/v1/customers?limit=1&prefix=user&cursor={cursor}"), 400, "invalid_cursor")
    assert expect(request(port, "GET", f"/v1/customers?limit=100&prefix=user&cursor={cursor}", key=key), 200)["items"][0][
        "customer_id"] == sorted(ids)[sorted(ids).index("user") + 1]  # fmt: skip


def test_9_3_default_limit_and_unknown_customer_route_unchanged(server: Server):
    key = expect(admin(server.port, "POST", "/admin/v1/keys", {"project": "defaults"}), 200)["key"]
    for i in range(23):
        expect(request(server.port, "POST", "/v1/customers/deposit", key=key, body={"customer_id": f"d{i:02d}", "amount": 1}), 200)
    page = expect(request(server.port, "GET", "/v1/customers", key=key), 200)
    assert len(page["items"]) == 20 and page["has_more"] and page["total_count"] == 23
    expect(request(server.port, "GET", "/v1/customers/", key=key), 404, "not_found")
    assert expect(request(server.port, "GET", "/v1/customers/d00", key=key), 200)["id"] == "d00"


# -- everything survives a crash -----------------------------------------------------------------------


def test_9_2_9_3_lists_and_key_states_survive_sigkill(tmp_path: Path):
    process = Server(tmp_path / "data").start()
    try:
        port = process.port
        kept = expect(admin(port, "POST", "/admin/v1/keys", {"project": "crash", "label": "kept"}), 200)
        gone = expect(admin(port, "POST", "/admin/v1/keys", {"project": "crash", "label": "gone"}), 200)
        for i in range(12):
            expect(request(port, "POST", "/v1/customers/deposit", key=kept["key"], body={"customer_id": f"k{i:02d}", "amount": i + 1}), 200)
        expect(admin(port, "POST", f"/admin/v1/keys/{gone['key_id']}/revoke"), 200)
        before = [admin(port, "GET", t).body for t in ("/admin/v1/projects", "/admin/v1/keys")]
        pages_before = _page_through(port, kept["key"], {}, "&prefix=k", 5)
        assert process.kill() == -9
        process.start()
        port = process.port
        assert [admin(port, "GET", t).body for t in ("/admin/v1/projects", "/admin/v1/keys")] == before
        assert _page_through(port, kept["key"], {}, "&prefix=k", 5) == pages_before
        assert pages_before[0] == [f"k{i:02d}" for i in range(12)]
        expect(request(port, "GET", "/v1/customers/k00", key=gone["key"]), 401, "api_key_revoked")
        expect(request(port, "GET", "/v1/customers/k00", key=kept["key"]), 200)
    finally:
        process.kill()
