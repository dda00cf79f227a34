"""Shard.run_now, the fast path of issue 14: a write applied in the caller's task.

What: it runs only when nothing is queued ahead (FIFO holds), while the log has room, and while
fewer than queue_depth_max of its answers wait for durability (the queue's bound covers both
paths); a broken invariant in the work stops all writes (fail-stop) and answers 503.
How it could fail: a fast-path write overtaking queued work, an unbounded number of answers
waiting for the log, or an exception other than Unavailable escaping to the HTTP layer (a 500).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.runtime.errors import Unavailable
from engine.runtime.shards import Shard


class FakeHost:
    def __init__(self) -> None:
        self.durable_lsn = 0
        self.room = 100
        self.resolved: list[tuple[int, list[Any]]] = []

    async def wait_for_log_room(self, items: int) -> None:
        return None

    def has_log_room(self, items: int) -> bool:
        return self.room >= items

    def resolve_when_durable(self, lsn: int, waiting: list[Any]) -> None:
        self.resolved.append((lsn, waiting))


def _shard(host: FakeHost, failures: list[BaseException]) -> Shard:
    return Shard(host, 0, queue_depth_max=2, batch_size_max=2, on_failure=failures.append)


async def test_bounded_by_answers_waiting_for_the_log() -> None:
    host, failures = FakeHost(), list[BaseException]()
    shard = _shard(host, failures)
    assert shard.run_now(lambda: ("a", 1)) == ("a", 1)
    assert shard.run_now(lambda: ("b", 2)) == ("b", 2)
    assert shard.run_now(lambda: ("c", 3)) is None  # two answers wait for lsn 1 and 2
    host.durable_lsn = 1
    assert shard.run_now(lambda: ("c", 3)) == ("c", 3)
    assert shard.run_now(lambda: ("d", 4)) is None
    host.durable_lsn = 4
    assert shard.run_now(lambda: ("e", 4)) == ("e", 4)  # a replay resting on durable state
    assert shard.run_now(lambda: ("f", 5)) == ("f", 5)
    assert failures == []


async def test_never_overtakes_queued_work_nor_a_full_log() -> None:
    host, failures = FakeHost(), list[BaseException]()
    shard = _shard(host, failures)
    queued = shard.submit(lambda: ("queued", 1))
    assert shard.run_now(lambda: ("late", 2)) is None
    assert not queued.done()
    shard.start()
    for _ in range(10):
        await asyncio.sleep(0)
    assert host.resolved and host.resolved[0][0] == 1  # the queued item was applied by the task
    host.room = 0
    assert shard.run_now(lambda: ("x", 2)) is None
    await shard.stop()


async def test_a_broken_invariant_is_a_503_and_stops_writes() -> None:
    host, failures = FakeHost(), list[BaseException]()
    shard = _shard(host, failures)

    def broken() -> tuple[str, int]:
        raise AssertionError("invariant")

    with pytest.raises(Unavailable) as raised:
        shard.run_now(broken)
    assert raised.value.code == "storage_unavailable"
    assert [type(error) for error in failures] == [AssertionError]

    def refused() -> tuple[str, int]:
        raise Unavailable("overloaded", "full")

    with pytest.raises(Unavailable) as raised:
        shard.run_now(refused)
    assert raised.value.code == "overloaded" and len(failures) == 1
