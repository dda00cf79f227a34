"""The PostgreSQL log store against a real PostgreSQL (CONTRACT §12): one node through the official
SDK with a restart, the same history through both stores, two nodes (roles, not_leader, a standby
kept current, SIGKILL of the leader), PostgreSQL stopped under a leader.

PostgreSQL comes from tests/cluster/conftest.py (skips with the reason when its binaries are absent).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from velobase_billing import Velobase

import wal
from tests.cluster.nodes import Cluster, ClusterNode, cluster_cli, get_health, replay_log_store
from tests.cluster.pg import PostgresServer
from tests.system.server import TallyProcess, replay_json
from tests.waiting import wait_for
from wal.pg import PgLog, PgLogStore, PortUnavailable, Row, decode_batch

API_KEY = "vb_live_pgcore_key_0123456789abcdef"
LEASE_MS = 1000


def _request(node: TallyProcess, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(node.base_url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _deposit(node: TallyProcess, customer: str, key: str, amount: int = 10) -> tuple[int, dict[str, Any]]:
    return _request(node, "POST", "/v1/customers/deposit", {"customer_id": customer, "amount": amount, "idempotency_key": key})


def _wait_leader(node: ClusterNode, within_s: float = 30.0) -> None:
    leader = (200, {"status": "ok", "role": "leader", "node_id": node.node_id})
    wait_for(lambda: get_health(node.base_url), what=f"{node.node_id} leader", within_s=within_s,
             until=lambda health: health == leader)  # fmt: skip


def _wait_standby(node: ClusterNode, leader: ClusterNode) -> None:
    standby = (503, {"status": "standby", "role": "standby", "node_id": node.node_id, "leader": leader.node_id})
    wait_for(lambda: get_health(node.base_url), what=f"{node.node_id} a standby of {leader.node_id}", within_s=10,
             until=lambda health: health == standby)  # fmt: skip


def _grants(node: TallyProcess, customer: str) -> list[str]:
    """The GRANT entries' transaction ids (a deposit's idempotency key), newest first."""
    status, page = _request(node, "GET", f"/v1/customers/{customer}/ledger?limit=100")
    assert status == 200, page
    return [item["transaction_id"] for item in page["items"] if item["operation_type"] == "GRANT"]


def test_one_node_sdk_restart_same_digest(tmp_path: Path, pg_db: str) -> None:
    node = ClusterNode(tmp_path / "n1", dsn=pg_db, node_id="n1", api_key=API_KEY, lease_ms=LEASE_MS)
    try:
        node.start()
        _wait_leader(node)
        vb = Velobase(api_key=API_KEY, base_url=node.base_url)
        try:
            vb.customers.deposit(customer_id="u1", amount=1000, idempotency_key="order_1")
            vb.billing.deduct(customer_id="u1", amount=5, transaction_id="img_1")
            vb.billing.freeze(customer_id="u1", amount=100, transaction_id="chat_1", unfreeze_after_seconds=600)
            vb.billing.consume(transaction_id="chat_1", actual_amount=73)
        finally:
            vb.close()
        before = replay_log_store(pg_db, tmp_path / "n1")
        assert before["last_lsn"] >= 5  # two keys, then four changes
        assert node.stop() == 0
        assert not any((tmp_path / "n1").glob("wal-*.log")), "the log must not be on the local disk"
        node.start()
        _wait_leader(node)
        vb = Velobase(api_key=API_KEY, base_url=node.base_url)
        try:
            balance = vb.customers.get("u1").balance
        finally:
            vb.close()
        assert (balance.total, balance.used, balance.available) == (1000, 78, 922)
        after = replay_log_store(pg_db, tmp_path / "n1")
        assert after["digest"] == before["digest"] and after["last_lsn"] == before["last_lsn"]
        verified = cluster_cli("verify", pg_db, tmp_path / "n1")
        assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True
        lines = cluster_cli("inspect", pg_db, tmp_path / "n1").stdout.splitlines()
        assert [json.loads(line)["lsn"] for line in lines] == list(range(1, after["last_lsn"] + 1))
    finally:
        node.kill()


async def _copy_log(data_dir: Path, log: PgLog) -> int:
    """Append the local log's records to the PostgreSQL log as one leader would (batches of 3)."""
    records = list(wal.read_log(data_dir, after_lsn=0, truncate_torn_tail=False))
    store = log.open_store(1)
    await store.start()
    try:
        for lsn, payload in records:
            store.append(lsn, payload)
            if lsn % 3 == 0:
                await store.wait_durable(lsn)
        await store.wait_durable(records[-1][0])
    finally:
        await store.close()
    return len(records)


def test_the_same_history_has_the_same_digest_in_both_stores(tmp_path: Path, pg_db: str) -> None:
    local = TallyProcess(tmp_path / "local", api_key=API_KEY)
    try:
        local.start()
        for i in range(20):
            assert _deposit(local, f"c{i % 4}", f"d{i}")[0] == 200
            status, _ = _request(local, "POST", "/v1/billing/deduct", {"customer_id": f"c{i % 4}", "amount": 3, "transaction_id": f"t{i}"})
            assert status == 200
    finally:
        assert local.stop() == 0
    copied = asyncio.run(_copy_log(tmp_path / "local", PgLog(pg_db, "copier")))
    in_local = replay_json(tmp_path / "local")
    in_pg = replay_log_store(pg_db, tmp_path / "nothing-here")
    assert in_pg["records"] == in_local["records"] == copied == in_local["last_lsn"]
    assert in_pg["digest"] == in_local["digest"]


def test_two_nodes_roles_not_leader_standby_current_and_failover(tmp_path: Path, pg_db: str) -> None:
    cluster = Cluster(tmp_path, pg_db, 2, api_key=API_KEY, lease_ms=LEASE_MS)
    try:
        cluster.start()
        leader = cluster.leader()
        standby = next(node for node in cluster.nodes if node is not leader)
        acked = []
        for i in range(30):
            status, body = _deposit(leader, "alice", f"k{i}")
            assert status == 200, body
            acked.append(f"k{i}")
        _wait_standby(standby, leader)
        status, body = _deposit(standby, "alice", "refused")
        assert status == 503 and body["error"]["code"] == "not_leader" and body["error"]["retryable"] is True
        assert body["error"]["details"] == {"leader": leader.node_id}
        status, body = _request(standby, "GET", "/admin/v1/projects")
        assert status == 503 and body["error"]["code"] == "not_leader"
        # SIGKILL of the leader: the standby takes over (how fast: bench/cluster_bench.py).
        leader.kill()
        new_leader = cluster.leader(timeout=30)
        assert new_leader is standby
        grants = _grants(new_leader, "alice")
        assert sorted(grants) == sorted(acked), "every acknowledged deposit exactly once"
        # Retrying with the same ids is safe: a replay, nothing new.
        status, body = _deposit(new_leader, "alice", "k0")
        assert status == 200 and body["is_idempotent_replay"] is True
        status, body = _request(new_leader, "GET", "/v1/customers/alice")
        assert body["balance"]["total"] == 300
        # The old leader comes back as a standby of the new one.
        leader.start()
        _wait_standby(leader, standby)
        status, body = _deposit(leader, "alice", "again")
        assert status == 503 and body["error"]["details"] == {"leader": standby.node_id}
    finally:
        cluster.close()


def test_postgresql_stopped_under_a_leader_then_back(tmp_path: Path, pg_db: str, postgres: PostgresServer) -> None:
    node = ClusterNode(tmp_path / "n1", dsn=pg_db, node_id="n1", api_key=API_KEY, lease_ms=LEASE_MS)
    try:
        node.start()
        _wait_leader(node)
        assert _deposit(node, "bob", "before")[0] == 200
        postgres.stop()
        try:
            status, body = _deposit(node, "bob", "during")
            assert status == 503 and body["error"]["code"] in ("storage_unavailable", "not_leader"), body
        finally:
            postgres.start()

        def retried() -> tuple[int, dict[str, Any]]:
            status, body = _deposit(node, "bob", "during")  # the same id: safe whatever happened
            assert status in (200, 503) and (status == 200 or body["error"]["retryable"]), body
            return status, body

        wait_for(retried, what="the deposit accepted once PostgreSQL is back", within_s=30,
                 until=lambda answer: answer[0] == 200)  # fmt: skip
        assert sorted(_grants(node, "bob")) == ["before", "during"]
        assert get_health(node.base_url) == (200, {"status": "ok", "role": "leader", "node_id": "n1"})
    finally:
        node.kill()
        shutil.rmtree(tmp_path / "n1", ignore_errors=True)


class _SilentRenewals:
    """A lease port whose renewals never arrive (a node cut off from its lease, or whose clock
    stopped): every other operation goes through."""

    def __init__(self, port: Any) -> None:
        self._port = port

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)

    async def renew(self, node_id: str, epoch: int, lease_ms: int) -> bool:
        raise PortUnavailable("renewal lost")


async def _fencing(dsn: str) -> list[Row]:
    log = PgLog(dsn, "a", lease_ms=300)
    old = PgLogStore(log.port(), _SilentRenewals(log.port()), "a", next_lsn=1, lease_ms=300,
                     batch_records_max=16, queue_records_max=64)  # fmt: skip
    await old.start()
    old.append(1, b"one")
    await old.wait_durable(1)
    old.lease_deadline = float("inf")  # it believes in its lease forever: only PostgreSQL can stop it
    await asyncio.sleep(0.5)  # the lease expires by PostgreSQL's clock
    new = PgLog(dsn, "b", lease_ms=3000).open_store(2)
    await new.start()
    assert new.epoch == old.epoch + 1
    old.append(2, b"stale")
    with pytest.raises(wal.WalFailed):
        await old.wait_durable(2)
    assert old.failed
    new.append(2, b"two")
    await new.wait_durable(2)
    await old.close()
    await new.close()
    port = log.port()
    try:
        return await port.rows_after_lsn(0, 100)
    finally:
        await port.close()


def test_postgresql_fences_a_leader_whose_lease_expired(pg_db: str) -> None:
    rows = asyncio.run(_fencing(pg_db))
    assert [(r.position, r.epoch, r.first_lsn, r.last_lsn) for r in rows] == [(2, 1, 1, 1), (3, 2, 2, 1), (4, 2, 2, 2)]
    assert [record for row in rows for record in decode_batch(row)] == [(1, b"one"), (2, b"two")]
