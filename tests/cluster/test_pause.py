"""A paused leader is fenced (CONTRACT §12.4): SIGSTOP of the leader past its lease while requests
are in flight, then SIGCONT.

Two real nodes over a real PostgreSQL, lease 1000 ms. 6 writers of the reliability workload send
only to the leader L. After 0.5–1.0 s L gets SIGSTOP (requests are in flight: the test asserts
some were sent before the pause and answered only after it). The other node takes over; a client
writes through it (a deposit resent until 200), so the log moves on without L. After 3 leases L
gets SIGCONT and the writers keep sending to it for 1 s more.

Held: every write L answers that was *sent* after the pause began is a 503 or a connection error,
never a 2xx; a 2xx L gives for a request in flight across the pause is allowed only if that write
is in the log, which `check_server` on the new leader verifies for every acked op (present exactly
once, replaying its original body); unknown ops are resolved by resending them to the new leader.
L ends as a standby: /health 503 role standby naming the new leader, a write to it 503 not_leader.
Two rounds (pause, take over, resume) on one cluster; TALLY_LONG=1: 6.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.campaign import (API_KEY, ClusterWorkload, LeaderProxy, assert_standby_refuses, probe_deposit,
                                    retry_until_acked, sends_between)
from tests.cluster.nodes import LEASE_MS, Cluster, cluster_missing_reason
from tests.reliability.harness import LONG, History, check_server, seed_from_env

ROUNDS = 6 if LONG else 2
WORKERS = 6

pytestmark = pytest.mark.skipif(cluster_missing_reason() is not None, reason=str(cluster_missing_reason()))


async def test_paused_leader_never_acknowledges_again(tmp_path: Path, pg_db: str) -> None:
    seed = seed_from_env()
    rng = random.Random(seed)
    print(f"\npause campaign seed={seed} rounds={ROUNDS}")
    cluster = Cluster(tmp_path, pg_db, 2, api_key=API_KEY)
    try:
        cluster.start()
        for round_ in range(ROUNDS):
            await _round(cluster, rng, round_)
    except BaseException as error:
        raise AssertionError(f"pause campaign failed with seed={seed} (rerun: TALLY_SEED={seed}): {str(error)[:6000]}\n{cluster.describe()}") from error
    finally:
        cluster.close()


async def _round(cluster: Cluster, rng: random.Random, round_: int) -> None:
    paused = cluster.leader()
    history = History(prefix=f"pa{round_}{rng.randrange(16**6):06x}")
    probes = History(prefix=f"pp{round_}{rng.randrange(16**6):06x}")
    workload = ClusterWorkload(history, rng, cluster, paused)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        stop = asyncio.Event()
        load = asyncio.create_task(workload.run(session, paused.base_url, stop, WORKERS))
        await asyncio.sleep(rng.uniform(0.5, 1.0))
        assert not load.done(), load
        paused_at = time.monotonic()
        paused.pause()
        others = [node for node in cluster.nodes if node is not paused]
        new_leader, took = await retry_until_acked(session, others, probe_deposit(probes, f"{probes.prefix}_c"), probes)
        for _ in range(5):  # the log moves on without the paused node
            await retry_until_acked(session, others, probe_deposit(probes, f"{probes.prefix}_c"), probes)
        await asyncio.sleep(max(0.0, paused_at + 3 * LEASE_MS / 1000 - time.monotonic()))
        resumed_at = time.monotonic()
        step_downs = paused.step_downs()
        paused.resume()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(load, 60)

        in_flight = [s for s in history.sends if s[0] < paused_at < s[1] and s[1] > resumed_at]
        assert in_flight, "no request was in flight across the pause"
        after = sends_between(history, paused_at)
        acked_after = [s for s in after if s[2] is not None and 200 <= s[2] < 300]
        assert not acked_after, f"the paused leader acknowledged {len(acked_after)} writes sent after the pause: {acked_after[:5]}"
        assert all(s[2] in (None, 503) for s in after), [s for s in after if s[2] not in (None, 503)][:5]
        assert [s for s in after if s[0] >= resumed_at], "no write reached the node after SIGCONT"
        for _ in range(200):  # it steps down once it notices (its next append or lease check)
            if paused.step_downs() > step_downs:
                break
            await asyncio.sleep(0.05)
        assert paused.step_downs() == step_downs + 1, paused.log()
        current = await asyncio.to_thread(cluster.leader, 10)  # new_leader unless it stepped down since
        if current is new_leader:
            await assert_standby_refuses(session, paused, new_leader)
        else:  # churn on a starved machine: the paused node may lead again, but only after a new takeover
            assert current.role() == "leader"
        async with LeaderProxy(cluster) as proxy:
            stats = await check_server(session, proxy.base_url, history, rng)
            await check_server(session, proxy.base_url, probes, rng)
    print(f"pause round {round_ + 1}: {paused.node_id} paused, {new_leader.node_id} took over in {took:.2f}s; "
          f"in flight across the pause {len(in_flight)}, sent after {len(after)} (all 503/refused); "
          f"{history.counts()} entries={stats.entries}")
