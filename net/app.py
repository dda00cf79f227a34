"""create_app(config, runtime): the aiohttp Application and its one route table (CONTRACT §2).

The app holds no loop-bound state of its own and no middleware; net/transport.py's TallyRunner
serves it with its Observer (app[OBSERVER]) around it: the readiness gate, then the request id and
the §3.14 envelope (net/errors.py), then metrics and the request log line (net/observe.py). `tally serve` builds the app with runtime=None
and an Observer so it can listen while recovering (§9.5), then calls `open_app` once ready.
`client_max_size` is the request body limit (413 `request_too_large`); handler cancellation stays
off (aiohttp's default), so a client that hangs up never cancels a write half-way.
"""

from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from net.admin import AdminHandlers, admin_routes
from net.config import ServerConfig
from net.dashboard import DashboardHandlers, dashboard_routes
from net.entitlements_api import EntitlementHandlers, entitlement_routes
from net.handlers import NOT_READY, Handlers, Runtime
from net.logs import RequestLog
from net.observe import METRICS_PATH, REGISTRY, Observer, metrics
from net.slots_api import SlotHandlers, slot_routes
from net.openapi import OPENAPI_PATH, openapi_json

CONFIG: Final = web.AppKey("config", ServerConfig)
HANDLERS: Final = web.AppKey("handlers", Handlers)
ADMIN_HANDLERS: Final = web.AppKey("admin_handlers", AdminHandlers)
DASHBOARD_HANDLERS: Final = web.AppKey("dashboard_handlers", DashboardHandlers)
SLOT_HANDLERS: Final = web.AppKey("slot_handlers", SlotHandlers)
ENTITLEMENT_HANDLERS: Final = web.AppKey("entitlement_handlers", EntitlementHandlers)
OBSERVER: Final = web.AppKey("observer", Observer)


def routes(handlers: Handlers, admin: AdminHandlers, dashboard: DashboardHandlers) -> list[web.RouteDef]:
    """The route table. The static POST /v1/customers/deposit is listed before the GET catch-all;
    aiohttp tries a path's routes in order, so GET /v1/customers/deposit is customer "deposit".
    GET /v1/customers (no trailing segment) is the customer list; the catch-all needs one.
    The dashboard's routes (net/dashboard.py) are not part of the API: /openapi.json leaves them out."""
    return [
        web.get("/v1/customers", handlers.customers),
        web.post("/v1/customers/deposit", handlers.deposit),
        web.post("/v1/billing/deposit", handlers.deposit),
        web.get("/v1/customers/{tail:.+}", handlers.customer),  # {id} and {id}/ledger, raw path
        web.post("/v1/billing/freeze", handlers.freeze),
        web.post("/v1/billing/consume", handlers.consume),
        web.post("/v1/billing/unfreeze", handlers.unfreeze),
        web.post("/v1/billing/deduct", handlers.deduct),
        web.post("/v1/billing/refund", handlers.refund),  # CONTRACT §10
        web.post("/v1/billing/void", handlers.void),
        web.put("/v1/alerts/{tail:.+}", handlers.put_alerts),  # CONTRACT §11.1, raw path
        web.get("/v1/alerts/{tail:.+}", handlers.get_alerts),
        web.get("/health", handlers.health),
        web.get(OPENAPI_PATH, openapi_json),  # no auth (net/openapi.py)
        web.get(METRICS_PATH, metrics),  # no auth (CONTRACT §9.4)
        *admin_routes(admin),
        *dashboard_routes(dashboard),  # issue 13: static page + session probe
    ]


def create_app(config: ServerConfig, runtime: Runtime | None, *, observer: Observer | None = None) -> web.Application:
    """The app for `runtime`, or, with runtime None, for one still recovering (every route but
    /health, /metrics and the dashboard's static files is 503 not_ready until `open_app`). `observer` None: a fresh one with its
    own CollectorRegistry and no request log (tests, in-process servers)."""
    if observer is None:
        observer = Observer(CollectorRegistry(), None)
    if runtime is not None:
        observer.open(runtime)
    app = web.Application(client_max_size=config.request_size_max)  # TallyRunner adds app[OBSERVER]
    handlers = Handlers(NOT_READY if runtime is None else runtime)
    admin = AdminHandlers(NOT_READY if runtime is None else runtime)
    dashboard = DashboardHandlers(NOT_READY if runtime is None else runtime)
    slots = SlotHandlers(NOT_READY if runtime is None else runtime)
    entitlements = EntitlementHandlers(NOT_READY if runtime is None else runtime)
    app[CONFIG] = config
    app[HANDLERS] = handlers
    app[ADMIN_HANDLERS] = admin
    app[DASHBOARD_HANDLERS] = dashboard
    app[SLOT_HANDLERS] = slots
    app[ENTITLEMENT_HANDLERS] = entitlements
    app[OBSERVER] = observer
    app[REGISTRY] = observer.registry
    app.add_routes(routes(handlers, admin, dashboard))
    # -- slots and entitlements (velobase-api §1A.8-§1A.9, CONTRACT §8): their own modules --------
    app.add_routes(slot_routes(slots))
    app.add_routes(entitlement_routes(entitlements))
    return app


def create_server_app(config: ServerConfig, request_log: RequestLog | None) -> tuple[Observer, web.Application]:
    """A listening process's app, still recovering (runtime None), and its Observer with the
    process's own metrics registry (never prometheus_client's global one) and process collector."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    observer = Observer(registry, request_log)
    return observer, create_app(config, None, observer=observer)


def open_app(app: web.Application, runtime: Runtime) -> None:
    """Recovery is done and the runtime accepts writes: bind it, then open the gate (§9.5)."""
    app[HANDLERS].bind(runtime)
    app[ADMIN_HANDLERS].bind(runtime)
    app[DASHBOARD_HANDLERS].bind(runtime)
    app[SLOT_HANDLERS].bind(runtime)
    app[ENTITLEMENT_HANDLERS].bind(runtime)
    app[OBSERVER].open(runtime)
