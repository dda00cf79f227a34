"""Deliveries: POST each webhook's due events off the ledger's path (CONTRACT §11.3).

One background task (`Deliverer.run`, started and cancelled by Runtime) polls the outbox's due
heap (engine/core/hooks.py `pop_due_deliveries`) and starts one attempt task per due
(webhook, customer), at most `in_flight_max` at once and never two for the same pair (strict order
per customer). An attempt:

1. waits until the event's LSN is durable (an event a crash could still take back is never sent);
2. POSTs `event_body(event)` signed afresh (`t` = now) with `Tally-Signature` and `Tally-Event-Id`
   through `post` (default `AiohttpPoster`: one ClientSession, 10 s total timeout, bounded
   connections);
3. logs the outcome as a WebhookAttempt command through Runtime.submit; the core decides
   delivered / retry after backoff / given up. So delivery progress is in the log and survives
   restarts; a crash between 2 and 3 means the event is sent again (at least once).

Nothing here blocks a shard: the receiver is only ever awaited by attempt tasks. An attempt whose
outcome cannot be logged (queue full, storage failed, shutting down) is offered again after
`retry_unlogged_s`, so a busy ledger sheds delivery work first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Final

import aiohttp

from engine.core.commands import Command, WebhookAttempt
from engine.core.hooks import head_event, pop_due_deliveries, push_due
from engine.core.limits import WEBHOOK_ERROR_LENGTH_MAX, WEBHOOK_TIMEOUT_S
from engine.core.results import Applied, Rejected
from engine.core.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, event_body, sign
from engine.core.state import LedgerState
from engine.runtime.errors import Unavailable

log = logging.getLogger("tally.webhooks")

# (url, body, headers) -> (HTTP status or 0 when none came, error text or None)
PostFn = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, str | None]]]

DELIVERY_POLL_INTERVAL_S: Final = 0.05  # how late a due attempt may start; an idle poll is ~1 us
DELIVERY_IN_FLIGHT_MAX: Final = 64  # concurrent attempts (and client connections)
RETRY_UNLOGGED_S: Final = 1.0


class AiohttpPoster:
    """The real receiver client: one aiohttp session made on first use (on the running loop),
    `timeout_s` for the whole exchange, at most `connections_max` connections."""

    def __init__(self, *, timeout_s: float = WEBHOOK_TIMEOUT_S, connections_max: int = DELIVERY_IN_FLIGHT_MAX) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._connections_max = connections_max
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections_max)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                return response.status, None
        except asyncio.TimeoutError:
            return 0, "timeout"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"[:WEBHOOK_ERROR_LENGTH_MAX]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Deliverer:
    """Runs the attempts. `submit` is Runtime.submit, `wait_durable(lsn)` the durability wait,
    `clock_ms` the runtime clock (signature `t`); `post` and `sleep` are seams for tests."""

    def __init__(
        self, state: LedgerState, *, submit: Callable[[Command], Awaitable[Applied | Rejected]],
        wait_durable: Callable[[int], Awaitable[Any]], clock_ms: Callable[[], int], post: PostFn,
        in_flight_max: int = DELIVERY_IN_FLIGHT_MAX, poll_s: float = DELIVERY_POLL_INTERVAL_S,
        retry_unlogged_s: float = RETRY_UNLOGGED_S,
    ) -> None:  # fmt: skip
        assert in_flight_max >= 1 and poll_s > 0
        self._state = state
        self._submit = submit
        self._wait_durable = wait_durable
        self._clock_ms = clock_ms
        self._post = post
        self._in_flight_max = in_flight_max
        self._poll_s = poll_s
        self._retry_unlogged_s = retry_unlogged_s
        self._busy: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Poll and start due attempts until cancelled; then cancel the attempts in flight."""
        try:
            while True:
                self.pump()
                await asyncio.sleep(self._poll_s)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            close = getattr(self._post, "close", None)
            if close is not None:
                await close()

    def pump(self) -> int:
        """Start every due attempt there is room for; returns how many started."""
        hooks = self._state.hooks
        room = self._in_flight_max - len(self._busy)
        if hooks is None or room <= 0:
            return 0
        keys = pop_due_deliveries(hooks, self._clock_ms(), self._busy, room)
        for key in keys:
            self._busy.add(key)
            task = asyncio.get_running_loop().create_task(self._attempt(*key), name="tally-webhook-attempt")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(keys)

    async def _attempt(self, wid: str, customer_id: str) -> None:
        logged = False
        try:
            logged = await self._try(wid, customer_id)
        except Unavailable:
            pass
        except Exception:  # a bug; the event stays queued and is offered again
            log.exception("webhook attempt failed", extra={"webhook_id": wid})
        finally:
            self._busy.discard((wid, customer_id))
        if not logged:
            await asyncio.sleep(self._retry_unlogged_s)
            if self._state.hooks is not None:
                push_due(self._state.hooks, wid, customer_id)

    async def _try(self, wid: str, customer_id: str) -> bool:
        head = head_event(self._state, wid, customer_id)
        if head is None:
            return True  # delivered or deleted meanwhile: nothing to offer again
        webhook, event = head
        await self._wait_durable(event.lsn)
        body = event_body(event)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(webhook.secret, self._clock_ms() // 1000, body),
            EVENT_ID_HEADER: event.id,
        }
        started = time.monotonic()
        status, error = await self._post(webhook.url, body, headers)
        duration_ms = int((time.monotonic() - started) * 1000)
        command = WebhookAttempt(
            at_ms=0, project=event.project, customer_id=customer_id, webhook_id=wid, event_id=event.id,
            status=status, error=error, duration_ms=duration_ms,
        )  # fmt: skip
        result = await self._submit(command)
        # Not logged = no longer the head (webhook deleted): nothing to offer again either.
        return isinstance(result, Applied)
