"""The failover campaign of test_failover.py on two nodes (a module of its own so that xdist's
--dist loadfile runs it beside the three-node one): after each kill the survivor is the only
candidate, and it must take over alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.nodes import cluster_missing_reason
from tests.cluster.test_failover import KILLS_2, run_campaign

pytestmark = pytest.mark.skipif(cluster_missing_reason() is not None, reason=str(cluster_missing_reason()))


async def test_leader_sigkill_campaign_two_nodes(tmp_path: Path, pg_db: str) -> None:
    await run_campaign(tmp_path, pg_db, 2, KILLS_2)
