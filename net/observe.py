"""What an operator sees of a live server (CONTRACT §9.4, §9.5): metrics, request logs, readiness.

    Observer(registry, request_log)   one per server; no global state (the registry is passed in)
      .request_handler(handler_of, router)  the server's request handler around the app: readiness
                                       gate, then the route's handler (what it raises: the
                                       envelope of net.errors.exception_response), then one
                                       metrics update + one request log line (no aiohttp
                                       middleware layer: issue 14)
      .on_record(lsn)                  recovery progress (called from the recovery thread)
      .on_wal_batch(records, fsync_s)  one durable WAL group commit (called on the loop)
      .open(runtime)                   recovery done, keys bootstrapped: serve every route
    metrics(request)                   GET /metrics: Prometheus text of the registry (no auth)

Readiness (§9.5): until `open`, GET /health answers 503 {"status": "recovering", "records": N}
(N WAL records replayed so far), GET /metrics answers (tally_ready 0), the dashboard's static
files (net/dashboard.py STATIC_PATHS: they touch no runtime) are served, every other route 503
`not_ready` (retryable, §3.14 envelope). The gate never touches the runtime or its state before
`open`: the half-built ledger lives only in the recovery thread until then.

Metrics: the hot path only bumps plain ints (a dict entry and a histogram bucket per request, a
bucket per WAL batch); a prometheus_client custom collector turns them into families at scrape
time. Label values come from closed sets: the route TEMPLATE (a customer id never becomes a
label), a known method or "OTHER", the status code.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import msgspec
from aiohttp import web
from multidict import istr
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from net.dashboard import STATIC_PATHS
from net.errors import ERROR_CODE, REQUEST_ID_HEADER, error_response, exception_response, new_request_id
from net.answer import JsonAnswer
from net.logs import RequestLog

HEALTH_PATH: Final = "/health"
METRICS_PATH: Final = "/metrics"
CUSTOMER_ROUTE: Final = "/v1/customers/{tail}"  # net/app.py's catch-all, split into two labels here
CUSTOMER_LABEL_PREFIX: Final = "/v1/customers/{customer_id}"  # the two labels CUSTOMER_ROUTE gets
UNMATCHED_ROUTE: Final = "unmatched"  # 404 / 405: no route template
METHODS: Final = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))

# Histogram upper bounds. Requests: 0.25 ms .. 10 s. fsync: 25 µs .. 2.5 s. Batch: 1 .. 4096 records.
REQUEST_BOUNDS_S: Final = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
FSYNC_BOUNDS_S: Final = (0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)
BATCH_BOUNDS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]  # what a web.Server calls


class _Histogram:
    """Bucket counts (not cumulative; the last is +Inf) and a sum: ints and a float, no locks
    (touched on the event loop only)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs as prometheus_client's HistogramMetricFamily takes them."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts):
            running += count
            out.append((bound, float(running)))
        return out


class _Cell:
    """The counters of one (route, method) pair: `requests` entries by status (the status key
    tuple is made once per status, not per request) and the route's duration histogram."""

    __slots__ = ("requests", "route", "method", "histogram", "keys")

    def __init__(self, requests: dict[tuple[str, str, int], int], route: str, method: str,
                 histogram: _Histogram) -> None:  # fmt: skip
        self.requests = requests
        self.route = route
        self.method = method
        self.histogram = histogram
        self.keys: dict[int, tuple[str, str, int]] = {}

    def observe(self, status: int, duration_s: float) -> None:
        key = self.keys.get(status)
        if key is None:
            key = self.keys[status] = (self.route, self.method, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        histogram = self.histogram  # _Histogram.observe, inlined: a call less per request
        histogram.counts[bisect.bisect_left(histogram.bounds, duration_s)] += 1
        histogram.total += duration_s


class _HealthRecovering(msgspec.Struct):
    status: str
    records: int


class _HealthLeader(msgspec.Struct):
    status: str
    role: str
    node_id: str


class _HealthStandby(msgspec.Struct):
    status: str
    role: str
    node_id: str
    leader: str | None


_encoder = msgspec.json.Encoder()


class Observer:
    """Per-server metrics, request log and readiness gate. `request_log` None: no request lines
    (e.g. --log-level warning). `runtime` given: open from the start (tests, in-process apps)."""

    def __init__(self, registry: CollectorRegistry, request_log: RequestLog | None, runtime: Any = None) -> None:
        self.request_log = request_log
        self.records = 0  # recovery progress; an int written by one thread (atomic under the GIL)
        self.runtime: Any = runtime  # the Runtime once open; duck-typed: ready, durable_lsn
        # Cluster mode (CONTRACT §12): the ClusterNode, duck-typed: role, node_id, leader.
        self.cluster: Any = None
        self.requests: dict[tuple[str, str, int], int] = {}  # (route, method, status) -> count
        self.durations: dict[str, _Histogram] = {}
        self._cells: dict[tuple[str, str], _Cell] = {}  # (route, method) -> its counters
        self.fsync = _Histogram(FSYNC_BOUNDS_S)
        self.batch = _Histogram(BATCH_BOUNDS)
        self.registry = registry
        registry.register(_Collector(self))

    def on_record(self, _lsn: int) -> None:
        """Recovery replayed one more record (from the recovery thread)."""
        self.records += 1

    def on_wal_batch(self, records: int, fsync_s: float | None) -> None:
        """One durable group commit of `records` records; fsync_s None when fsync is off."""
        self.batch.observe(records)
        if fsync_s is not None:
            self.fsync.observe(fsync_s)

    def open(self, runtime: Any) -> None:
        """Recovery and bootstrap are done: every route is served from now on."""
        self.runtime = runtime

    def _cell(self, route: str, method: str) -> _Cell:
        """The counters of one (route template, method) label pair, made on first use. Closed
        sets: route templates and METHODS (else "OTHER"), so the map stays small."""
        method = method if method in METHODS else "OTHER"
        cell = self._cells.get((route, method))
        if cell is None:
            histogram = self.durations.get(route)
            if histogram is None:
                histogram = self.durations[route] = _Histogram(REQUEST_BOUNDS_S)
            cell = self._cells[(route, method)] = _Cell(self.requests, route, method, histogram)
        return cell

    def request_handler(self, handler_of: Callable[[web.Request], Handler], router: web.UrlDispatcher) -> RequestHandler:
        """The server's request handler (net/transport.py TallyRunner passes net/dispatch.py's
        `handler_of`, which routes a request and names the coroutine that answers it): the
        readiness gate, then that handler (what it raises: net.errors.exception_response), then
        one metrics update and one request log line.

        It wraps the app from outside rather than as an aiohttp middleware, so a request crosses
        no middleware layer (issue 14: aiohttp adds a coroutine and a current-app switch per
        middleware per request). `router` labels the requests the gate answers unrouted."""
        # Per request the hot path does: one clock read before and after, one cached route label
        # (per aiohttp resource), one cached cell (per label pair), an int bump, a histogram
        # bucket, and the request line only when request lines are on (issue 14: no per-request
        # tuples, dict rebuilds or header lookups).
        cells: dict[tuple[object, str], _Cell] = {}  # (aiohttp resource, method) -> cell
        cell_of = self._cell
        perf_counter = time.perf_counter
        request_id_header = istr(REQUEST_ID_HEADER)  # set without case folding

        async def observed(request: web.BaseRequest) -> web.StreamResponse:
            assert isinstance(request, web.Request)  # the app's request factory makes these
            started = perf_counter()
            request_id = new_request_id()
            # serving (the gate's usual answer, None) is checked here: a call less per request
            response = None if self.cluster is None and self.runtime is not None else self._gate(request, request_id)
            if response is None:
                try:
                    response = await handler_of(request)(request)  # handler_of routes it
                except Exception as exc:
                    response = exception_response(exc, request, request_id)
                else:
                    if type(response) is JsonAnswer:
                        response.add_header(REQUEST_ID_HEADER, request_id)  # no header multidict made
                    else:
                        response.headers[request_id_header] = request_id
                match_info = request.match_info
            else:
                match_info = await router.resolve(request)
            duration_s = perf_counter() - started
            method = request.method
            key = (match_info.route.resource, method if method in METHODS else "OTHER")
            cell = cells.get(key)
            if cell is None:
                cell = cell_of(route_label(match_info, request.raw_path), method)
                if not cell.route.startswith(CUSTOMER_LABEL_PREFIX):  # that label depends on the path
                    cells[key] = cell  # bounded: the app's resources (and None) x METHODS + OTHER
            route = cell.route
            status = response.status
            cell.observe(status, duration_s)
            request_log = self.request_log
            if request_log is not None:
                code = response.get(ERROR_CODE) if status >= 400 else None
                request_log.line(request_id, method, route, status, code, duration_s)
            return response

        return observed

    def _gate(self, request: web.Request, request_id: str) -> web.StreamResponse | None:
        """The answer of a server that does not serve this request (cluster standby, still
        recovering), or None: serve it."""
        cluster = self.cluster
        if cluster is not None and request.path == HEALTH_PATH and cluster.role == "leader":
            return self._cluster_health(request, cluster, request_id)
        if cluster is not None and cluster.role != "leader" and request.path not in STATIC_PATHS:
            return self._standby(request, cluster, request_id)
        if self.runtime is None and request.path not in STATIC_PATHS:
            return self._not_ready(request, request_id)
        return None

    def _not_ready(self, request: web.Request, request_id: str) -> web.StreamResponse:
        """Before `open` (CONTRACT §9.5): /health says how far recovery is; /metrics answers;
        anything else is 503 not_ready."""
        if request.path == HEALTH_PATH and request.method in ("GET", "HEAD"):
            body = _encoder.encode(_HealthRecovering("recovering", self.records))
            response = web.Response(status=503, body=body, content_type="application/json")
        elif request.path == METRICS_PATH and request.method in ("GET", "HEAD"):
            response = metrics_response(self.registry)
        else:
            response = error_response("not_ready", "the server is recovering its ledger; retry shortly", None, request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    def _cluster_health(self, request: web.Request, cluster: Any, request_id: str) -> web.StreamResponse:
        """The leader's GET /health (CONTRACT §12.3): 200 with its role once it serves."""
        runtime = self.runtime
        if runtime is None or not runtime.ready or request.method not in ("GET", "HEAD"):
            return self._standby(request, cluster, request_id)
        body = _encoder.encode(_HealthLeader("ok", "leader", cluster.node_id))
        response = web.Response(status=200, body=body, content_type="application/json")
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    def _standby(self, request: web.Request, cluster: Any, request_id: str) -> web.StreamResponse:
        """A standby (CONTRACT §12.3): /health 503 {"status": "standby", ...}, /metrics served,
        anything else 503 not_leader with details.leader (the lease holder's id, or null)."""
        if request.path == HEALTH_PATH and request.method in ("GET", "HEAD"):
            body = _encoder.encode(_HealthStandby("standby", "standby", cluster.node_id, cluster.leader))
            response = web.Response(status=503, body=body, content_type="application/json")
        elif request.path == METRICS_PATH and request.method in ("GET", "HEAD"):
            response = metrics_response(self.registry)
        else:
            leader = cluster.leader
            message = f"this node is a standby; the leader is {leader!r}" if leader else "this node is a standby; no leader right now"
            response = error_response("not_leader", message, {"leader": leader}, request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response


def route_label(match_info: web.UrlMappingMatchInfo, raw_path: str) -> str:
    """The route template of a request (never its raw path): "/v1/billing/deduct",
    "/v1/customers/{customer_id}", "/v1/customers/{customer_id}/ledger", or "unmatched"."""
    resource = match_info.route.resource
    if resource is None:
        return UNMATCHED_ROUTE
    route = resource.canonical
    if route == CUSTOMER_ROUTE:
        path = raw_path.partition("?")[0]
        return "/v1/customers/{customer_id}/ledger" if path.endswith("/ledger") else "/v1/customers/{customer_id}"
    return route


def metrics_response(registry: CollectorRegistry) -> web.Response:
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


class _Collector(Collector):
    """Turns an Observer's plain counters into Prometheus families at scrape time."""

    def __init__(self, observer: Observer) -> None:
        self._observer = observer

    def collect(self) -> Iterator[Metric]:
        observer = self._observer
        requests = CounterMetricFamily("tally_http_requests", "HTTP requests answered, by route template, method and status",
                                       labels=["route", "method", "status"])  # fmt: skip
        for (route, method, status), count in sorted(observer.requests.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        durations = HistogramMetricFamily("tally_http_request_duration_seconds",
                                          "Time from the request's dispatch to its response, by route template",
                                          labels=["route"])  # fmt: skip
        for route, histogram in sorted(observer.durations.items()):
            durations.add_metric([route], histogram.buckets(), histogram.total)
        yield durations
        fsync = HistogramMetricFamily("tally_wal_fsync_duration_seconds", "fdatasync time of one WAL group commit")
        fsync.add_metric([], observer.fsync.buckets(), observer.fsync.total)
        yield fsync
        batch = HistogramMetricFamily("tally_wal_batch_records", "Records per WAL group commit")
        batch.add_metric([], observer.batch.buckets(), observer.batch.total)
        yield batch
        runtime = observer.runtime
        ready = runtime is not None and bool(runtime.ready)
        yield GaugeMetricFamily("tally_ready", "1 when the server accepts writes (GET /health 200)", value=int(ready))
        last_lsn = getattr(runtime, "durable_lsn", 0) if runtime is not None else 0
        yield GaugeMetricFamily("tally_wal_last_lsn", "Highest LSN known durable (fsync'd)", value=last_lsn)
        yield GaugeMetricFamily("tally_recovery_records", "WAL records replayed by the last start-up recovery",
                                value=observer.records)  # fmt: skip


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text format of this server's registry (no auth, §9.4); in a
    front of `tally serve --workers N`, the ledger process's text (METRICS_SOURCE, net/front.py)."""
    source = request.app.get(METRICS_SOURCE)
    if source is not None:
        response = web.Response(body=await source())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
    registry = request.app[REGISTRY]
    return metrics_response(registry)


REGISTRY: Final = web.AppKey("registry", CollectorRegistry)
# A front's source of the whole server's metrics text (net/ledger_client.py LedgerClient.metrics_text).
METRICS_SOURCE: Final = web.AppKey[Callable[[], Awaitable[bytes]]]("metrics_source")
