"""The timer loop: fire freeze TTLs and bucket expiry when they fall due (CONTRACT §3.10, §3.11, §6).

Timers are ordinary logged commands stamped with their due time. They are applied on the owning
customer's shard (single writer), lazily before any command or read of that customer (§7.3), and
here, in the background, for customers nobody touches. A customer whose shard queue is full is
left for the next round (its pointer stays in the due heap); nothing waits unboundedly.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from engine.core.state import LedgerState
from engine.core.timers import next_due_ms, pop_due_customers
from engine.runtime.errors import Unavailable

log = logging.getLogger("tally.timers")

TIMER_POLL_INTERVAL_S_MAX = 1.0
TIMER_RETRY_INTERVAL_S = 0.005

# (project, customer_id, now_ms) -> the future of a shard work item that fires that customer's
# due timers; raises Unavailable when the shard cannot take it now.
FireFn = Callable[[str, str, int], "asyncio.Future[Any]"]


class TimerLoop:
    def __init__(self, state: LedgerState, stamp: Callable[[], int], fire: FireFn) -> None:
        self._state = state
        self._stamp = stamp
        self._fire = fire

    async def fire_due(self) -> int:
        """Fire every timer due now, customer by customer; wait until each is durable.

        Returns how many customers could not be fired this round (busy shard, failed log); they
        stay due and are offered again. Every submitted future is awaited, even after a failure.
        """
        now_ms = self._stamp()
        futures: list[asyncio.Future[Any]] = []
        deferred = 0
        for project, customer_id in pop_due_customers(self._state, now_ms):
            try:
                futures.append(self._fire(project, customer_id, now_ms))
            except Unavailable:
                deferred += 1  # the customer's next command or read applies these timers first
        for outcome in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(outcome, Unavailable):
                deferred += 1
            elif isinstance(outcome, BaseException):
                raise outcome
        if futures:
            log.info("timers fired customers=%d deferred=%d", len(futures) - deferred, deferred)
        return deferred

    async def run(self) -> None:
        while True:
            due_ms = next_due_ms(self._state)
            now_ms = self._stamp()
            if due_ms is not None and due_ms <= now_ms:
                deferred = await self.fire_due()
                if deferred:
                    log.debug("%d customers' timers deferred (busy shard or failed log)", deferred)
                # A customer whose shard was too busy stays due; don't spin on it.
                await asyncio.sleep(TIMER_RETRY_INTERVAL_S)
                continue
            delay_s = TIMER_POLL_INTERVAL_S_MAX
            if due_ms is not None:
                delay_s = min(delay_s, max(0.001, (due_ms - now_ms) / 1000))
            await asyncio.sleep(delay_s)
