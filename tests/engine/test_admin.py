"""Admin keys, key records, the operator listings and the customer index (CONTRACT §9.1-§9.3).

What: the core rules with exact values (admin keys create no project; labels and times; revoke
is idempotent and keeps its first time; unknown ids -> key_not_found), the listings (project
counts, key filters, the customer list's order, prefix, cursor binding and limits), that the sorted
customer index is derived (rebuilt on load, outside the digest), that histories made before this
change keep their digest (golden data dirs written by the code of main before §9, replayed from
the log alone and from a snapshot), and the runtime's key durability window (a created key is
refused until its record is fsync'd; a revoked key is refused as soon as the revocation is applied).
How: the core through tests/engine/helpers.Driver; the runtime on a tmp data dir whose log file
can hold its fsync. How it could fail: a key usable before it is durable, a revoked key accepted,
a page that skips or repeats a customer, a prefix bound that misses ids ending in U+10FFFF, a
digest that moves for an old history, a field lost in a snapshot round trip.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import msgspec
import pytest

from engine.core.codec import decode_state, encode_state
from engine.core.commands import CreateApiKey, Deposit, RevokeApiKey, decode_command, encode_command
from engine.core.digest import digest
from engine.core.listings import customer_page, list_keys, list_projects, prefix_upper_bound
from engine.core.results import KeyView, RevokedKey
from engine.core.state import ApiKey
from engine.core.timefmt import format_ms
from engine.runtime import ADMIN, Runtime, RuntimeConfig
from engine.runtime.recovery import recover
from tests.engine.helpers import T0_MS, Driver
from wal import OsLogFile

T = T0_MS
GOLDEN = Path(__file__).parent / "golden"
# `tally replay` of these dirs by the released digest form (70cbf04; the interim main that made them
# printed b9429d72..., which also hashed the appended stamp_ms_last: the one difference, checked).
GOLDEN_DIGEST = "3d861381cf14efa96d2b2b7d48eec9e3eafc8b1ccad40858a192ca143eca8086"


def _keys(d: Driver) -> None:
    d.ok(CreateApiKey(at_ms=T, project="acme", key_id="key_a", key_hash="ha", label="web app"))
    d.ok(CreateApiKey(at_ms=T + 5, project="acme", key_id="key_b", key_hash="hb"))
    d.ok(CreateApiKey(at_ms=T + 9, project="zeta", key_id="key_z", key_hash="hz"))
    d.ok(CreateApiKey(at_ms=T + 10, project="", key_id="key_admin", key_hash="hadm", admin=True))


# -- key records (CONTRACT §9.1, §9.2) -------------------------------------------------------------


def test_9_1_admin_key_belongs_to_no_project_and_creates_none():
    d = Driver()
    view = d.ok(CreateApiKey(at_ms=T, project="", key_id="key_adm", key_hash="h", label="ops", admin=True))
    assert view == KeyView(key_id="key_adm", project="", label="ops", created_at=format_ms(T), revoked_at=None)
    assert d.state.projects == {}
    assert d.state.api_keys["h"] == ApiKey("key_adm", "h", "", False, label="ops", admin=True, created_at_ms=T)
    assert d.rejected(CreateApiKey(at_ms=T, project="acme", key_id="key_x", key_hash="hx", admin=True)).code == "invalid_request"
    assert d.rejected(CreateApiKey(at_ms=T, project="", key_id="key_y", key_hash="hy")).code == "invalid_request"


def test_9_2_revoke_keeps_its_first_time_and_unknown_id_is_key_not_found():
    d = Driver()
    _keys(d)
    assert d.ok(RevokeApiKey(at_ms=T + 100, key_id="key_a")) == RevokedKey(key_id="key_a", revoked_at=format_ms(T + 100))
    replay = d.run(RevokeApiKey(at_ms=T + 200, key_id="key_a"))
    assert replay.logged is False and replay.body == RevokedKey(key_id="key_a", revoked_at=format_ms(T + 100))
    assert d.state.api_keys["ha"].revoked_at_ms == T + 100
    rejected = d.rejected(RevokeApiKey(at_ms=T + 300, key_id="key_nope"))
    assert (rejected.code, rejected.details) == ("key_not_found", {"key_id": "key_nope"})


def test_9_2_list_keys_shows_project_keys_with_labels_and_times_never_hashes():
    d = Driver()
    _keys(d)
    d.ok(RevokeApiKey(at_ms=T + 50, key_id="key_b"))
    listed = list_keys(d.state, None)
    assert [msgspec.structs.asdict(k) for k in listed.items] == [
        {"key_id": "key_a", "project": "acme", "label": "web app", "created_at": format_ms(T), "revoked_at": None},
        {"key_id": "key_b", "project": "acme", "label": None, "created_at": format_ms(T + 5), "revoked_at": format_ms(T + 50)},
        {"key_id": "key_z", "project": "zeta", "label": None, "created_at": format_ms(T + 9), "revoked_at": None},
    ]
    assert [k.key_id for k in list_keys(d.state, "zeta").items] == ["key_z"]
    assert list_keys(d.state, "nope").code == "project_not_found"
    assert b"ha" not in msgspec.json.encode(listed) and b"hadm" not in msgspec.json.encode(listed)


def test_9_2_list_projects_counts_customers_and_active_keys():
    d = Driver()
    _keys(d)
    d.ok(RevokeApiKey(at_ms=T + 50, key_id="key_b"))
    for customer_id in ("c1", "c2", "c3"):
        d.ok(Deposit(at_ms=T + 60, project="acme", customer_id=customer_id, amount=1))
    projects = [msgspec.structs.asdict(p) for p in list_projects(d.state).items]
    assert projects == [
        {"name": "acme", "created_at": format_ms(T), "customers": 3, "keys_active": 1},
        {"name": "zeta", "created_at": format_ms(T + 9), "customers": 0, "keys_active": 1},
    ]


def test_9_2_new_command_fields_round_trip_and_old_records_decode():
    command = CreateApiKey(at_ms=T, project="", key_id="k", key_hash="h", label="l", admin=True)
    assert decode_command(encode_command(command)) == command
    # a record as main wrote it before §9: five fields, no label, no admin flag
    old = msgspec.msgpack.encode(["create_api_key", T, "default", "k", "h"])
    assert decode_command(old) == CreateApiKey(at_ms=T, project="default", key_id="k", key_hash="h")


# -- digest and snapshots ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pre-admin-log", "pre-admin-snapshot"])
def test_5_history_written_before_admin_keys_keeps_its_digest(name: str, tmp_path: Path):
    data = tmp_path / name
    shutil.copytree(GOLDEN / name, data)
    recovered = recover(data, truncate_torn_tail=False)
    assert recovered.state.last_lsn == 14
    assert digest(recovered.state) == GOLDEN_DIGEST
    assert sorted(recovered.state.projects["default"].customer_ids) == ["alice", "bob", "carol/x", "dave@e", "émile"]
    keys = list(recovered.state.api_keys.values())
    assert [(k.project, k.revoked, k.admin, k.label) for k in keys] == [("default", False, False, None), ("second", True, False, None)]
    if name == "pre-admin-log":  # the log holds the stamps; that snapshot predates key times
        assert all(k.created_at_ms is not None for k in keys) and keys[1].revoked_at_ms is not None
    else:
        assert all(k.created_at_ms is None and k.revoked_at_ms is None for k in keys)


def test_5_labels_and_admin_flags_are_in_the_digest_times_are_not():
    a, b = Driver(), Driver()
    a.ok(CreateApiKey(at_ms=T, project="p", key_id="k", key_hash="h"))
    b.ok(CreateApiKey(at_ms=T + 1, project="p", key_id="k", key_hash="h"))
    assert digest(a.state) == digest(b.state)
    c = Driver()
    c.ok(CreateApiKey(at_ms=T, project="p", key_id="k", key_hash="h", label="x"))
    assert digest(c.state) != digest(a.state)


def test_5_snapshot_keeps_key_times_and_rebuilds_the_customer_index():
    d = Driver()
    _keys(d)
    d.ok(RevokeApiKey(at_ms=T + 50, key_id="key_b"))
    for customer_id in ("m", "a", "z", "b"):
        d.ok(Deposit(at_ms=T + 60, project="acme", customer_id=customer_id, amount=1))
    restored = decode_state(encode_state(d.state))
    assert digest(restored) == digest(d.state)
    assert list(restored.api_keys.values()) == list(d.state.api_keys.values())
    assert list(restored.projects["acme"].customer_ids) == ["a", "b", "m", "z"]


# -- the customer list (CONTRACT §9.3) ---------------------------------------------------------------


def _customers(d: Driver, ids: list[str], project: str = "acme") -> None:
    for customer_id in ids:
        d.ok(Deposit(at_ms=T, project=project, customer_id=customer_id, amount=len(customer_id), email=f"{customer_id}@x"))


def test_9_3_pages_cover_every_customer_once_in_order():
    d = Driver()
    ids = [f"cust_{i:03d}" for i in range(47)][::-1] + ["a", "Z", "émile", "cust_"]
    _customers(d, ids)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = customer_page(d.state, "acme", limit=10, cursor=cursor, prefix=None, now_ms=T)
        assert page.total_count == len(ids)
        seen += [item.customer_id for item in page.items]
        pages += 1
        if not page.has_more:
            assert page.next_cursor is None
            break
        cursor = page.next_cursor
    assert seen == sorted(ids) and pages == 6
    first = customer_page(d.state, "acme", limit=1, cursor=None, prefix="a", now_ms=T).items[0]
    assert msgspec.structs.asdict(first) | {"balance": msgspec.structs.asdict(first.balance)} == {
        "customer_id": "a", "name": None, "email": "a@x", "created_at": format_ms(T),
        "balance": {"total": 1, "used": 0, "frozen": 0, "available": 1},
    }  # fmt: skip


def test_9_3_prefix_counts_and_pages_with_its_own_cursor():
    d = Driver()
    _customers(d, ["ab", "abc", "abd", "ab\U0010ffff", "ab\U0010ffffz", "ac", "aa", "b"])
    page = customer_page(d.state, "acme", limit=2, cursor=None, prefix="ab", now_ms=T)
    assert [i.customer_id for i in page.items] == ["ab", "abc"] and page.total_count == 5 and page.has_more
    rest = customer_page(d.state, "acme", limit=10, cursor=page.next_cursor, prefix="ab", now_ms=T)
    assert [i.customer_id for i in rest.items] == ["abd", "ab\U0010ffff", "ab\U0010ffffz"] and not rest.has_more
    # a cursor is bound to its listing: another prefix, no prefix, or another project
    for prefix, project in (("a", "acme"), (None, "acme"), ("ab", "other")):
        refused = customer_page(d.state, project, limit=10, cursor=page.next_cursor, prefix=prefix, now_ms=T)
        assert refused.code == "invalid_cursor", (prefix, project)
    for bad in ("", "x", "kwGiYzLECPFIU-_ZoLwv", page.next_cursor + "A"):
        assert customer_page(d.state, "acme", limit=5, cursor=bad, prefix="ab", now_ms=T).code == "invalid_cursor"
    assert customer_page(d.state, "acme", limit=0, cursor=None, prefix=None, now_ms=T).code == "invalid_limit"
    assert customer_page(d.state, "acme", limit=101, cursor=None, prefix=None, now_ms=T).code == "invalid_limit"
    none = customer_page(d.state, "acme", limit=5, cursor=None, prefix="zz", now_ms=T)
    assert (none.items, none.total_count, none.has_more, none.next_cursor) == ([], 0, False, None)
    assert customer_page(d.state, "nobody", limit=5, cursor=None, prefix=None, now_ms=T).total_count == 0


def test_9_3_a_customer_created_while_paging_is_not_repeated():
    d = Driver()
    _customers(d, ["b", "d", "f"])
    first = customer_page(d.state, "acme", limit=2, cursor=None, prefix=None, now_ms=T)
    _customers(d, ["a", "e"])  # one before the cursor, one after it
    rest = customer_page(d.state, "acme", limit=10, cursor=first.next_cursor, prefix=None, now_ms=T)
    assert [i.customer_id for i in first.items + rest.items] == ["b", "d", "e", "f"]


def test_9_3_prefix_upper_bound():
    assert prefix_upper_bound("ab") == "ac"
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff\U0010ffff") is None


# -- the runtime: when a key starts and stops working ----------------------------------------------


class HeldFsync:
    """LogFile factory whose fdatasync waits while `held` is set (the write itself goes through)."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.released.set()

    def __call__(self, path: Path) -> OsLogFile:
        released = self.released

        class Held(OsLogFile):
            def fdatasync(self) -> None:
                assert released.wait(10), "test never released the fsync"
                super().fdatasync()

        return Held(path)


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(what)


async def test_9_2_created_key_works_only_once_durable_revoked_key_is_refused_at_once(tmp_path: Path):
    gate = HeldFsync()
    runtime = await Runtime.open(RuntimeConfig(data_dir=tmp_path, snapshot_interval_records=0, snapshot_interval_s=0),
                                 log_file_factory=gate)  # fmt: skip
    try:
        await runtime.create_api_key("", "admin-secret", "key_adm", admin=True)
        assert runtime.authenticate("admin-secret") is ADMIN
        gate.released.clear()
        create = asyncio.ensure_future(runtime.create_api_key("acme", "new-secret", "key_new", label="app"))
        await _until(lambda: "key_new" in runtime.state.key_hash_by_id, "the create was never applied")
        assert runtime.authenticate("new-secret").code == "invalid_api_key"  # applied, not durable
        assert not create.done()
        gate.released.set()
        view = await create
        assert (view.key_id, view.project, view.label) == ("key_new", "acme", "app")
        assert runtime.authenticate("new-secret") == "acme"
        assert runtime.has_project("acme") and not runtime.has_project("nope")
        gate.released.clear()
        revoke = asyncio.ensure_future(runtime.submit(RevokeApiKey(at_ms=0, key_id="key_new")))
        await _until(lambda: runtime.state.api_keys[runtime.state.key_hash_by_id["key_new"]].revoked, "never applied")
        assert runtime.authenticate("new-secret").code == "api_key_revoked"  # refused before its 2xx
        gate.released.set()
        assert (await revoke).body.key_id == "key_new"
        assert runtime.authenticate("new-secret").code == "api_key_revoked"
        assert runtime.find_key("key_adm") is None and runtime.find_key("key_new").revoked_at is not None
    finally:
        gate.released.set()
        await runtime.close()
