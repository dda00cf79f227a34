"""create_app(config, runtime): the aiohttp Application and its one route table (CONTRACT §2).

The app holds no loop-bound state of its own; net/server.py runs it (AppRunner(access_log=None)).
`client_max_size` is the request body limit (413 `request_too_large`); handler cancellation stays
off (aiohttp's default), so a client that hangs up never cancels a write half-way.
"""

from typing import Final

from aiohttp import web

from net.admin import AdminHandlers, admin_routes
from net.config import ServerConfig
from net.errors import error_middleware
from net.handlers import Handlers, Runtime
from net.openapi import OPENAPI_PATH, openapi_json

RUNTIME: Final = web.AppKey("runtime", Runtime)
CONFIG: Final = web.AppKey("config", ServerConfig)


def routes(handlers: Handlers, admin: AdminHandlers) -> list[web.RouteDef]:
    """The route table. The static POST /v1/customers/deposit is listed before the GET catch-all;
    aiohttp tries a path's routes in order, so GET /v1/customers/deposit is customer "deposit".
    GET /v1/customers (no trailing segment) is the customer list; the catch-all needs one."""
    return [
        web.get("/v1/customers", handlers.customers),
        web.post("/v1/customers/deposit", handlers.deposit),
        web.post("/v1/billing/deposit", handlers.deposit),
        web.get("/v1/customers/{tail:.+}", handlers.customer),  # {id} and {id}/ledger, raw path
        web.post("/v1/billing/freeze", handlers.freeze),
        web.post("/v1/billing/consume", handlers.consume),
        web.post("/v1/billing/unfreeze", handlers.unfreeze),
        web.post("/v1/billing/deduct", handlers.deduct),
        web.get("/health", handlers.health),
        web.get(OPENAPI_PATH, openapi_json),  # no auth (net/openapi.py)
        *admin_routes(admin),
    ]


def create_app(config: ServerConfig, runtime: Runtime) -> web.Application:
    app = web.Application(
        client_max_size=config.request_size_max,
        middlewares=[error_middleware],
    )
    app[CONFIG] = config
    app[RUNTIME] = runtime
    app.add_routes(routes(Handlers(runtime), AdminHandlers(runtime)))
    return app
