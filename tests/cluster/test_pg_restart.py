"""PostgreSQL restarted under load (CONTRACT §12.2, §12.4): writes get 503 meanwhile, nothing
acknowledged is lost, writes succeed again after.

Two real nodes over the worker's real PostgreSQL, lease 1000 ms. 8 writers of the reliability
workload follow the leader (the node whose /health is 200). Round 1 stops PostgreSQL cleanly (fast
shutdown), round 2 SIGKILLs its postmaster (a crash: PostgreSQL recovers from its own WAL); either
way it stays down 2 s (two leases), then starts again on the same port.

Held: every write first sent after PostgreSQL was down and answered before it was started again is
a 503 or a connection error (never a 2xx), and some were 503; within 30 s of the restart a write is
acknowledged again and the load gets further 2xx; then `check_server` on the leader: every acked op
present exactly once with its original body on replay, balances equal the ledger sums, every
unknown op resolved by resending it. TALLY_LONG=1: 3 rounds of each kind.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.campaign import API_KEY, ClusterWorkload, LeaderProxy, probe_deposit, retry_until_acked, sends_between
from tests.cluster.nodes import Cluster, cluster_missing_reason
from tests.cluster.pg import PostgresServer
from tests.reliability.harness import LONG, History, check_server, seed_from_env

DOWN_S = 2.0
WORKERS = 8
KINDS = ["stop", "kill"] * (3 if LONG else 1)

pytestmark = pytest.mark.skipif(cluster_missing_reason() is not None, reason=str(cluster_missing_reason()))


async def test_postgres_restart_under_load(tmp_path: Path, postgres: PostgresServer, pg_db: str) -> None:
    seed = seed_from_env()
    rng = random.Random(seed)
    print(f"\npostgres restart campaign seed={seed} rounds={KINDS}")
    cluster = Cluster(tmp_path, pg_db, 2, api_key=API_KEY)
    history = History(prefix=f"pr{rng.randrange(16**6):06x}")
    try:
        cluster.start()
        workload = ClusterWorkload(history, rng, cluster, cluster.leader())
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            for kind in KINDS:
                await _round(session, cluster, postgres, workload, rng, kind)
    except BaseException as error:
        raise AssertionError(f"postgres restart campaign failed with seed={seed} (rerun: TALLY_SEED={seed}): {str(error)[:6000]}\n{cluster.describe()}") from error
    finally:
        if not postgres.running:
            postgres.start()
        cluster.close()


async def _round(session: aiohttp.ClientSession, cluster: Cluster, postgres: PostgresServer,
                 workload: ClusterWorkload, rng: random.Random, kind: str) -> None:
    history = workload.history
    stop = asyncio.Event()
    load = asyncio.create_task(workload.run_following(session, stop, WORKERS))
    await asyncio.sleep(rng.uniform(0.5, 1.2))
    assert not load.done(), load
    acked_before = history.counts().get("acked", 0)
    await asyncio.to_thread(postgres.stop if kind == "stop" else postgres.kill)
    down_at = time.monotonic()
    await asyncio.sleep(DOWN_S)
    up_at = time.monotonic()
    await asyncio.to_thread(postgres.start)
    leader, took = await retry_until_acked(session, cluster.nodes, probe_deposit(history, f"{history.prefix}_probe"),
                                           history)
    acked_at_recovery = history.counts().get("acked", 0)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(load, 60)

    during = sends_between(history, down_at, up_at)
    during = [s for s in during if s[1] <= up_at]
    assert not [s for s in during if s[2] is not None and 200 <= s[2] < 300], "a write was acknowledged while PostgreSQL was down"
    assert all(s[2] in (None, 503) for s in during), [s for s in during if s[2] not in (None, 503)][:5]
    refused = sum(1 for s in during if s[2] == 503)
    assert refused > 0, f"no 503 while PostgreSQL was down ({len(during)} sends)"
    assert history.counts().get("acked", 0) > acked_at_recovery, "the load got no 2xx after PostgreSQL came back"
    async with LeaderProxy(cluster) as proxy:
        stats = await check_server(session, proxy.base_url, history, rng)
    print(f"postgres {kind}: acked before {acked_before}, {refused} writes 503 while down ({len(during)} sends), "
          f"first 2xx {took:.2f}s after PostgreSQL was ready, leader {leader.node_id}; {history.counts()} entries={stats.entries}")
