"""Failover campaign (CONTRACT §12.2–§12.5): SIGKILL of the leader at random moments under write
load, on two and three real `tally serve --log-store postgresql://...` nodes over a real
PostgreSQL (tests/cluster/pg.py), lease 1000 ms.

Each round: 8 writers of the reliability workload (tests/reliability/harness.py) on the leader;
after a random 0.3–1.5 s the leader gets SIGKILL. A client then resends one deposit (same
idempotency key) to the survivors until one answers 200: that is the failover time (kill → first
2xx write on the new leader). Then: the new leader is the only node whose /health is 200; every
standby answers /health 503 role standby naming it and refuses a write with 503 not_leader,
details.leader; the killed node restarts (as a standby). `check_server` holds the new leader to
§4: every acked op present exactly once with its amounts and ids and replaying its original body
with is_idempotent_replay; no entry we did not send; balances equal the ledger sums; every unknown
op resolved by resending it (a retrying client is always safe), then the exact balances follow;
the check goes through `LeaderProxy`, which resends on a 503 (a leader on a starved machine may
step down during it: allowed, and retrying is what a client does).
At the end: every node stops cleanly (exit 0); `tally replay --log-store` twice gives the same
digest, `tally verify --log-store` exits 0; a clean restart of one node and a stop leave digest and
last_lsn unchanged.

How it could fail: an acked write lost or applied twice across a failover, two leaders at once, a
standby that accepts a write, a node that never takes over, a digest that moves without writes.
CI: 5 kills on 3 nodes, 2 on 2 nodes (test_failover_two_nodes.py). TALLY_LONG=1: 50 and 25. TALLY_SEED reruns the choices.
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import time
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.campaign import (API_KEY, ClusterWorkload, LeaderProxy, assert_standby_refuses, probe_deposit,
                                    retry_until_acked)
from tests.cluster.nodes import Cluster, cluster_cli, cluster_missing_reason, replay_log_store
from tests.reliability.harness import LONG, History, check_server, seed_from_env

WORKERS = 8
LOAD_S = (0.3, 1.5)
SERVE_ARGS = ("--snapshot-interval-records", "200")

pytestmark = pytest.mark.skipif(cluster_missing_reason() is not None, reason=str(cluster_missing_reason()))


KILLS_3 = 50 if LONG else 5
KILLS_2 = 25 if LONG else 2


async def test_leader_sigkill_campaign_three_nodes(tmp_path: Path, pg_db: str) -> None:
    await run_campaign(tmp_path, pg_db, 3, KILLS_3)


async def run_campaign(tmp_path: Path, pg_db: str, size: int, kills: int) -> None:
    """The campaign on `size` nodes (test_failover_two_nodes.py runs it on two, in parallel)."""
    seed = seed_from_env()
    print(f"\nfailover campaign nodes={size} kills={kills} seed={seed}")
    cluster = Cluster(tmp_path, pg_db, size, api_key=API_KEY, extra_args=SERVE_ARGS)
    began = time.monotonic()
    try:
        figures = await _campaign(cluster, tmp_path, random.Random(seed), kills)
    except BaseException as error:
        raise AssertionError(f"failover campaign nodes={size} failed with seed={seed} (rerun: TALLY_SEED={seed}): "
                             f"{str(error)[:6000]}\n{cluster.describe()}") from error
    finally:
        cluster.close()
    took = figures["failover_s"]
    assert isinstance(took, list)
    print(f"failover nodes={size} seed={seed}: kills={kills} failover p50={statistics.median(took):.2f}s "
          f"max={max(took):.2f}s {figures['counts']} checker retries={figures['checker_retries']} elapsed={time.monotonic() - began:.1f}s")


async def _campaign(cluster: Cluster, tmp_path: Path, rng: random.Random, kills: int) -> dict[str, object]:
    history = History(prefix=f"fo{rng.randrange(16**6):06x}")
    cluster.start()
    leader = cluster.leader()
    workload = ClusterWorkload(history, rng, cluster, leader)
    failover_s: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session, LeaderProxy(cluster) as proxy:
        for round_ in range(kills):
            workload.target = leader
            stop = asyncio.Event()
            load = asyncio.create_task(workload.run(session, leader.base_url, stop, WORKERS))
            await asyncio.sleep(rng.uniform(*LOAD_S))
            assert not load.done(), f"the load ended before the kill: {load}"
            assert leader.kill() == -signal.SIGKILL
            stop.set()
            survivors = [node for node in cluster.nodes if node is not leader]
            probe = probe_deposit(history, f"{history.prefix}_probe")
            new_leader, took = await retry_until_acked(session, survivors, probe, history)
            failover_s.append(took)
            await asyncio.wait_for(load, 60)
            current = await asyncio.to_thread(cluster.leader, 10, exclude=leader)  # new_leader unless it stepped down since
            for standby in survivors:
                if standby is not current:
                    await assert_standby_refuses(session, standby, current)
            await asyncio.to_thread(leader.start)  # the killed node comes back, as a standby
            await assert_standby_refuses(session, leader, current)
            stats = await check_server(session, proxy.base_url, history, rng)
            print(f"kill {round_ + 1}/{kills}: {leader.node_id} -> {new_leader.node_id} in {took:.2f}s "
                  f"ops={len(history.ops)} {history.counts()} entries={stats.entries} replays={stats.replays_sent}")
            leader = await asyncio.to_thread(cluster.leader)
        proxy_retries = proxy.retries
    counts = history.counts()
    assert counts.get("acked", 0) > 20 * kills, counts  # the load really ran
    _check_offline(cluster, tmp_path)
    return {"failover_s": failover_s, "counts": counts, "checker_retries": proxy_retries}


def _check_offline(cluster: Cluster, tmp_path: Path) -> None:
    """Clean stops, then the operator tools over the PostgreSQL log agree with themselves and
    with a clean restart."""
    for node in sorted(cluster.nodes, key=lambda n: n.role() == "leader"):  # standbys first
        assert node.stop() == 0, node.log()
    scratch = tmp_path / "cli"
    first, second = replay_log_store(cluster.dsn, scratch), replay_log_store(cluster.dsn, scratch)
    assert first["digest"] == second["digest"] and first["last_lsn"] == second["last_lsn"], (first, second)
    verified = cluster_cli("verify", cluster.dsn, scratch)
    assert verified.returncode == 0, verified.stderr[-2000:]
    node = cluster.nodes[0]
    node.start()
    cluster.leader()
    assert node.stop() == 0, node.log()
    again = replay_log_store(cluster.dsn, scratch)
    assert (again["digest"], again["last_lsn"]) == (first["digest"], first["last_lsn"]), (first, again)
