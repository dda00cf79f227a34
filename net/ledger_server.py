"""LedgerServer: the ledger process's side of net/ipc.py (issue 14, `tally serve --workers N`).

One connection per front. A frame's calls run on the one real engine.runtime.Runtime (the single
writer: it stamps, applies in LSN order and group-commits), and each answer goes back, batched per
loop turn, only once Runtime says it may: after the log is durable to what it shows (CONTRACT §4,
§6). Response bodies are encoded to JSON here, once.

A frame is a batch (TigerBeetle's shape): its plain writes are applied at once, one after the
other, as the frame is read (Runtime.try_apply), and their answers wait together for ONE
durability wait (the largest LSN they rest on). Only what cannot go that way (reads, key
changes, a write whose shard has work queued) gets a task of its own. Frames are handled in the
connection's data_received (net/ipc.py Connection), and the frames waiting for the log sit in one
FIFO served by one resolver task, which flushes the fronts' outboxes as soon as it sends.

Keys (CONTRACT §9.1-§9.2): a front authenticates from its KeyReplica. When a key create or revoke
is applied and durable, the changed record goes to every front and the answer waits for all their
KeysAck: the next request on any front sees the change. A front that does not ack within
KEYS_ACK_TIMEOUT_S is killed (`kill_front`) and restarted with a fresh table, never left serving
a revoked key. A front that says Hello gets the full table first.

The gate (CONTRACT §9.5): fronts answer 503 until Status(open) (recovery, bootstrap done and
every front up, so keep-alive connections spread over all of them); Status also carries /health's
readiness and, while recovering, the records replayed so far.

Metrics (CONTRACT §9.4): GET /metrics on any front asks the ledger, which collects every front's
HTTP counters (CollectMetrics, waits up to METRICS_WAIT_S) and renders one text with the series
of a single-process server: request counters summed over the fronts (an exited front's last
counters kept), the ledger's WAL, recovery and process families, and tally_front_http_requests
{front} (each live front's share) and tally_fronts.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from engine.core.commands import CreateApiKey, RevokeApiKey
from engine.core.results import Applied, Rejected
from engine.runtime import Runtime
from engine.runtime.errors import Unavailable
from net import ipc
from net.observe import REQUEST_BOUNDS_S, Observer

log = logging.getLogger("tally.ledger")

KEYS_ACK_TIMEOUT_S: Final = 5.0
METRICS_WAIT_S: Final = 2.0
STATUS_INTERVAL_S: Final = 0.25  # readiness and recovery progress reach the fronts this often


# Commands whose answer waits for every front's KeysAck (_publish_key): never on the fast path.
_KEY_COMMANDS: Final = (CreateApiKey, RevokeApiKey)


class _Applied:
    """The writes of one frame applied at once: their answers (the OK ones in one Oks message,
    refusals as Replies) and the LSN they all rest on."""

    __slots__ = ("oks", "replies", "wait_lsn")

    def __init__(self) -> None:
        self.oks = ipc.Oks([], [])
        self.replies: list[ipc.Reply] = []
        self.wait_lsn = 0

    def put_into(self, outbox: ipc.Outbox) -> None:
        """Queue every answer on `outbox` (the owner flushes)."""
        if self.oks.ids:
            outbox.put(self.oks)
        for reply in self.replies:
            outbox.put(reply)

    def failed(self, error: Unavailable) -> list[ipc.Reply]:
        """Every call of the batch answered 503 `error` (the log failed before covering it)."""
        ids = [*self.oks.ids, *(reply.id for reply in self.replies)]
        return [ipc.Reply(call_id, ipc.UNAVAILABLE, code=error.code, message=error.message) for call_id in ids]


class _Front:
    """One connected front: its connection and outbox, whether it said hello, its last counters."""

    __slots__ = ("index", "connection", "outbox", "hello", "counters", "task")

    connection: ipc.Connection
    outbox: ipc.Outbox

    def __init__(self, index: int) -> None:
        self.index = index
        self.hello = False
        self.counters = ipc.FrontCounters([], [])
        self.task: asyncio.Task[None] | None = None


class LedgerServer:
    """Serves `workers` fronts from one Runtime. `observer` holds the WAL and recovery counters
    (net/server.py _open_runtime feeds it); `kill_front(index)` ends an unresponsive front."""

    def __init__(self, workers: int, observer: Observer, kill_front: Callable[[int], None]) -> None:
        self._workers = workers
        self._observer = observer
        self._kill_front = kill_front
        self._runtime: Runtime | None = None
        self._fronts: dict[int, _Front] = {}
        self._ever_hello: set[int] = set()
        self._all_up = asyncio.Event()
        self._open = False
        self._seq = 0
        self._acks: dict[tuple[int, int], asyncio.Future[None]] = {}
        self._encoder = msgspec.json.Encoder()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(_LedgerCollector(self))
        self._status_task: asyncio.Task[None] | None = None
        self._last_status: ipc.Status | None = None
        self._retired = RequestTotals()
        self._held: deque[tuple[_Front, _Applied]] = deque()  # frames' replies waiting for the log, FIFO
        self._resolver: asyncio.Task[None] | None = None  # runs while `_held` is not empty

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._status_task = asyncio.get_running_loop().create_task(self._push_status(), name="tally-front-status")

    async def open(self, runtime: Runtime) -> None:
        """Serve calls from `runtime`; returns once every front said hello and the gate is open."""
        self._runtime = runtime
        await self._all_up.wait()
        for front in list(self._fronts.values()):
            self._send_full_keys(front)
        self._open = True
        self._broadcast_status()

    def close(self) -> None:
        if self._status_task is not None:
            self._status_task.cancel()

    def status(self) -> ipc.Status:
        runtime = self._runtime
        ready = self._open and runtime is not None and runtime.ready
        durable = runtime.durable_lsn if runtime is not None else 0
        return ipc.Status(open=self._open, ready=ready, durable_lsn=durable, records=self._observer.records)

    def _broadcast_status(self) -> None:
        status = self._last_status = self.status()
        for front in self._fronts.values():
            front.outbox.send(status)

    def push_status(self) -> None:
        """Tell every front now if readiness changed (before a 503 or at shutdown), so the next
        GET /health on any of them says so."""
        if self.status() != self._last_status:
            self._broadcast_status()

    async def _push_status(self) -> None:
        while True:
            self.push_status()
            await asyncio.sleep(STATUS_INTERVAL_S)

    # -- one front's connection -----------------------------------------------------------------------

    async def attach(self, index: int, sock: socket.socket) -> asyncio.Task[None]:
        """Serve front `index` on `sock` (a connected Unix socket); the task returned ends when
        the front goes away."""
        front = _Front(index)
        front.connection = ipc.Connection(msgspec.msgpack.Decoder(list[ipc.FrontMsg]),
                                          lambda messages: self._on_frame(front, messages))  # fmt: skip
        front.outbox = front.connection.outbox
        self._fronts[index] = front
        await ipc.connect(sock, front.connection)
        front.task = asyncio.get_running_loop().create_task(self._serve(front), name=f"tally-front-{index}")
        return front.task

    def _on_frame(self, front: _Front, messages: list[ipc.FrontMsg]) -> None:
        """One frame: its plain writes applied now, one after the other, their replies held for
        one durability wait; everything else handled on its own."""
        applied = _Applied()
        for message in messages:
            if type(message) is not ipc.Write or not self._apply_now(front, message, applied):
                self._handle(front, message)
        if applied.oks.ids or applied.replies:
            self._answer_when_durable(front, applied)

    async def _serve(self, front: _Front) -> None:
        """Wait for the end of the front's connection, then forget it."""
        try:
            error = await front.connection.closed
            if error is not None:
                log.warning("front %d connection broken: %r", front.index, error)
        finally:
            front.outbox.closed = True
            if self._fronts.get(front.index) is front:
                del self._fronts[front.index]
            self._retired.add(front.counters)  # its last counters stay in the sums
            for (index, _), future in list(self._acks.items()):
                if index == front.index and not future.done():
                    future.set_result(None)  # it is gone: it serves nothing any more
            front.connection.close()

    def _handle(self, front: _Front, message: ipc.FrontMsg) -> None:
        if type(message) is ipc.Write or type(message) is ipc.Call:
            asyncio.get_running_loop().create_task(self._answer(front, message))
        elif type(message) is ipc.Hello:
            self._hello(front)
        elif type(message) is ipc.KeysAck or type(message) is ipc.MetricsPush:
            if type(message) is ipc.MetricsPush:
                front.counters = message.counters
            future = self._acks.pop((front.index, message.seq), None)
            if future is not None and not future.done():
                future.set_result(None)

    def _hello(self, front: _Front) -> None:
        front.hello = True
        self._ever_hello.add(front.index)
        self._send_full_keys(front)
        front.outbox.send(self.status())
        if len(self._ever_hello) >= self._workers:
            self._all_up.set()

    def _send_full_keys(self, front: _Front) -> None:
        """The whole key table, taken now: a change applied later is sent after it, in order."""
        runtime = self._runtime
        if runtime is None:
            return  # before recovery ends no call is served; open() sends it (see _all_up)
        state = runtime.state
        self._seq += 1
        front.outbox.send(ipc.Keys(self._seq, True, list(state.api_keys.values()), list(state.projects)))

    # -- calls ------------------------------------------------------------------------------------

    def _apply_now(self, front: _Front, write: ipc.Write, applied: _Applied) -> bool:
        """A plain write (not a key change) applied now; its answer joins `applied`. False: it
        must take the slow path (`_answer`: key changes, a shard with work queued, not open)."""
        command = write.command
        runtime = self._runtime
        if runtime is None or not self._open or type(command) in _KEY_COMMANDS:
            return False
        try:
            done = runtime.try_apply(command)
        except Unavailable as error:
            self.push_status()  # e.g. the WAL failed: /health turns 503 on every front first
            front.outbox.send(ipc.Reply(write.id, ipc.UNAVAILABLE, code=error.code, message=error.message))
            return True
        except Exception as error:  # a bug: this call answers 500 internal_error, the rest go on
            log.exception("write %s failed", type(command).__name__)
            front.outbox.send(ipc.Reply(write.id, ipc.FAILED, message=repr(error)))
            return True
        if done is None:
            return False
        result, wait_lsn = done
        if type(result) is Applied:
            oks = applied.oks
            oks.ids.append(write.id)
            oks.bodies.append(self._encoder.encode(result.body))
        else:
            applied.replies.append(self._reply_of(write.id, result))
        if wait_lsn > applied.wait_lsn:
            applied.wait_lsn = wait_lsn
        return True

    def _answer_when_durable(self, front: _Front, applied: _Applied) -> None:
        """Send `applied`'s replies once the log is durable to its wait_lsn (503 if it fails).
        Held batches wait in one FIFO served by one resolver task (not a task per frame)."""
        runtime = self._runtime
        assert runtime is not None
        if not self._held and applied.wait_lsn <= runtime.durable_lsn:
            applied.put_into(front.outbox)
            front.outbox.send_later()
            return
        self._held.append((front, applied))
        if self._resolver is None:
            self._resolver = asyncio.get_running_loop().create_task(self._resolve_held(runtime))

    async def _resolve_held(self, runtime: Runtime) -> None:
        """Each turn: wait for the oldest held batch's LSN, then send every batch the log now
        covers, and flush those fronts' outboxes at once (no extra loop turn)."""
        held = self._held
        try:
            while held:
                try:
                    await runtime.wait_durable(held[0][1].wait_lsn)
                except Unavailable as error:
                    self.push_status()
                    while held:
                        front, applied = held.popleft()
                        for reply in applied.failed(error):
                            front.outbox.send(reply)
                    return
                durable_lsn = runtime.durable_lsn
                touched: set[_Front] = set()
                while held and held[0][1].wait_lsn <= durable_lsn:
                    front, applied = held.popleft()
                    applied.put_into(front.outbox)
                    touched.add(front)
                for front in touched:
                    front.outbox.flush()  # every front's replies of this commit in one frame
        finally:
            self._resolver = None

    def _reply_of(self, call_id: int, result: Applied | Rejected) -> ipc.Reply:
        if type(result) is Rejected:
            return ipc.Reply(call_id, ipc.REJECTED, code=result.code, message=result.message, details=result.details)
        assert type(result) is Applied
        return ipc.Reply(call_id, ipc.OK, body=self._encoder.encode(result.body))

    async def _answer(self, front: _Front, call: ipc.Write | ipc.Call) -> None:
        try:
            reply = await self._reply(call)
        except Unavailable as error:
            self.push_status()  # e.g. the WAL failed: /health turns 503 on every front first
            reply = ipc.Reply(call.id, ipc.UNAVAILABLE, code=error.code, message=error.message)
        except Exception as error:  # a bug: the front answers 500 internal_error, the ledger goes on
            log.exception("call %s failed", type(call.command if isinstance(call, ipc.Write) else call.op).__name__)
            reply = ipc.Reply(call.id, ipc.FAILED, message=repr(error))
        front.outbox.send(reply)

    async def _reply(self, call: ipc.Write | ipc.Call) -> ipc.Reply:
        if type(call) is ipc.Write:
            result = await self._ledger().submit(call.command)
            if type(result) is Applied and isinstance(call.command, _KEY_COMMANDS):
                await self._publish_key(call.command)
            return self._reply_of(call.id, result)
        assert type(call) is ipc.Call
        op = call.op
        if type(op) is ipc.Metrics:
            return ipc.Reply(call.id, ipc.OK, body=await self._metrics_text())
        result = await self._run(op)
        if type(result) is Rejected or type(result) is Applied:
            return self._reply_of(call.id, result)
        return ipc.Reply(call.id, ipc.OK, body=self._encoder.encode(result))

    def _ledger(self) -> Runtime:
        """The Runtime, once the gate is open (else 503 not_ready)."""
        runtime = self._runtime
        if runtime is None or not self._open:
            raise Unavailable("not_ready", "the server is recovering its ledger; retry shortly")
        return runtime

    async def _run(self, op: ipc.AnyOp) -> Any:
        runtime = self._ledger()
        match op:
            case ipc.GetCustomer():
                return await runtime.get_customer(op.project, op.customer_id)
            case ipc.GetLedger():
                return await runtime.get_ledger(op.project, op.customer_id, limit=op.limit, cursor=op.cursor,
                                                filters=op.filters)  # fmt: skip
            case ipc.ListCustomers():
                return await runtime.list_customers(op.project, limit=op.limit, cursor=op.cursor, prefix=op.prefix)
            case ipc.GetAlerts():
                return await runtime.get_alerts(op.project, op.customer_id)
            case ipc.Read():
                return await runtime.read(op.read.project, op.read.customer_id, op.read)
            case ipc.ListProjects():
                return await runtime.list_projects()
            case ipc.ListKeys():
                return await runtime.list_keys(op.project)
            case ipc.ListWebhooks():
                return await runtime.list_webhooks(op.project)
            case ipc.ListDeliveries():
                return await runtime.list_deliveries(op.webhook_id, limit=op.limit, cursor=op.cursor)
        raise AssertionError(f"no such call: {op!r}")

    async def _publish_key(self, command: CreateApiKey | RevokeApiKey) -> None:
        """Send the key's record as it is now to every front; wait for all their acks."""
        runtime = self._runtime
        assert runtime is not None
        state = runtime.state
        key_hash = command.key_hash if type(command) is CreateApiKey else state.key_hash_by_id.get(command.key_id)
        record = None if key_hash is None else state.api_keys.get(key_hash)
        if record is None:
            return
        self._seq += 1
        message = ipc.Keys(self._seq, False, [record], [] if record.admin else [record.project])
        waits = [(front.index, self._expect(front, message.seq, message)) for front in list(self._fronts.values())]
        for index, future in waits:
            try:
                await asyncio.wait_for(future, KEYS_ACK_TIMEOUT_S)
            except TimeoutError:
                log.error("front %d did not apply a key change in %.0f s; killing it", index, KEYS_ACK_TIMEOUT_S)
                self._kill_front(index)

    def _expect(self, front: _Front, seq: int, message: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[(front.index, seq)] = future
        front.outbox.send(message)
        return future

    async def _metrics_text(self) -> bytes:
        self._seq += 1
        seq = self._seq
        waits = [self._expect(front, seq, ipc.CollectMetrics(seq)) for front in list(self._fronts.values())]
        if waits:
            await asyncio.wait(waits, timeout=METRICS_WAIT_S)
        for front in list(self._fronts.values()):
            self._acks.pop((front.index, seq), None)
        return generate_latest(self.registry)

    def front_counters(self) -> list[tuple[int, ipc.FrontCounters]]:
        return sorted(((front.index, front.counters) for front in self._fronts.values()), key=lambda pair: pair[0])

    def request_totals(self) -> tuple[dict[tuple[str, str, int], int], dict[str, tuple[list[int], float]]]:
        """Every front's last counters plus those of fronts that exited."""
        totals = RequestTotals()
        totals.add(ipc.FrontCounters(
            [(*key, count) for key, count in self._retired.counts.items()],
            [(route, buckets, total) for route, (buckets, total) in self._retired.durations.items()],
        ))  # fmt: skip
        for front in self._fronts.values():
            totals.add(front.counters)
        return totals.counts, totals.durations


class _LedgerCollector(Collector):
    """net/observe.py's families, the same names and labels as one process has: the request
    counters are summed over the fronts (those of fronts that exited stay counted, so a series
    never goes down); `tally_front_http_requests` shows each live front's share."""

    def __init__(self, server: LedgerServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server
        observer = server._observer
        counts, durations_by_route = server.request_totals()
        requests = CounterMetricFamily("tally_http_requests", "HTTP requests answered, by route template, method and status",
                                       labels=["route", "method", "status"])  # fmt: skip
        for (route, method, status), count in sorted(counts.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        durations = HistogramMetricFamily("tally_http_request_duration_seconds",
                                          "Time from the request's dispatch to its response, by route template",
                                          labels=["route"])  # fmt: skip
        for route, (buckets, total) in sorted(durations_by_route.items()):
            durations.add_metric([route], _cumulative(REQUEST_BOUNDS_S, buckets), total)
        yield durations
        per_front = CounterMetricFamily("tally_front_http_requests", "HTTP requests answered by each live front process",
                                        labels=["front"])  # fmt: skip
        for index, counters in server.front_counters():
            per_front.add_metric([str(index)], sum(count for *_, count in counters.requests))
        yield per_front
        fsync = HistogramMetricFamily("tally_wal_fsync_duration_seconds", "fdatasync time of one WAL group commit")
        fsync.add_metric([], observer.fsync.buckets(), observer.fsync.total)
        yield fsync
        batch = HistogramMetricFamily("tally_wal_batch_records", "Records per WAL group commit")
        batch.add_metric([], observer.batch.buckets(), observer.batch.total)
        yield batch
        now = server.status()
        yield GaugeMetricFamily("tally_ready", "1 when the server accepts writes (GET /health 200)", value=int(now.ready))
        yield GaugeMetricFamily("tally_wal_last_lsn", "Highest LSN known durable (fsync'd)", value=now.durable_lsn)
        yield GaugeMetricFamily("tally_recovery_records", "WAL records replayed by the last start-up recovery",
                                value=observer.records)  # fmt: skip
        yield GaugeMetricFamily("tally_fronts", "HTTP front processes connected to the ledger", value=len(server.front_counters()))


class RequestTotals:
    """Request counters summed over fronts: (route, method, status) -> count, route -> (bucket
    counts (not cumulative, +Inf last), sum seconds)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.durations: dict[str, tuple[list[int], float]] = {}

    def add(self, counters: ipc.FrontCounters) -> None:
        for route, method, status, count in counters.requests:
            key = (route, method, status)
            self.counts[key] = self.counts.get(key, 0) + count
        for route, buckets, total in counters.durations:
            old_buckets, old_total = self.durations.get(route, ([0] * len(buckets), 0.0))
            self.durations[route] = ([a + b for a, b in zip(old_buckets, buckets)], old_total + total)


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    out, running = [], 0
    for bound, count in zip((*map(str, bounds), "+Inf"), counts):
        running += count
        out.append((bound, float(running)))
    return out
