"""create_app(config, runtime): the aiohttp Application and its one route table (CONTRACT §2).

The app holds no loop-bound state of its own; net/server.py runs it (AppRunner(access_log=None)).
`client_max_size` is the request body limit (413 `request_too_large`); handler cancellation stays
off (aiohttp's default), so a client that hangs up never cancels a write half-way.
"""

from typing import Final

from aiohttp import web

from net.config import ServerConfig
from net.entitlements_api import entitlement_routes
from net.errors import error_middleware
from net.handlers import Handlers, Runtime
from net.openapi import OPENAPI_PATH, openapi_json
from net.slots_api import slot_routes

RUNTIME: Final = web.AppKey("runtime", Runtime)
CONFIG: Final = web.AppKey("config", ServerConfig)


def routes(handlers: Handlers) -> list[web.RouteDef]:
    """The route table. The static POST /v1/customers/deposit is listed before the GET catch-all;
    aiohttp tries a path's routes in order, so GET /v1/customers/deposit is customer "deposit"."""
    return [
        web.post("/v1/customers/deposit", handlers.deposit),
        web.post("/v1/billing/deposit", handlers.deposit),
        web.get("/v1/customers/{tail:.+}", handlers.customer),  # {id} and {id}/ledger, raw path
        web.post("/v1/billing/freeze", handlers.freeze),
        web.post("/v1/billing/consume", handlers.consume),
        web.post("/v1/billing/unfreeze", handlers.unfreeze),
        web.post("/v1/billing/deduct", handlers.deduct),
        web.get("/health", handlers.health),
        web.get(OPENAPI_PATH, openapi_json),  # no auth (net/openapi.py)
    ]


def create_app(config: ServerConfig, runtime: Runtime) -> web.Application:
    app = web.Application(
        client_max_size=config.request_size_max,
        middlewares=[error_middleware],
    )
    app[CONFIG] = config
    app[RUNTIME] = runtime
    app.add_routes(routes(Handlers(runtime)))
    # -- slots and entitlements (velobase-api §1A.8-§1A.9, CONTRACT §8): their own modules --------
    app.add_routes(slot_routes(runtime))
    app.add_routes(entitlement_routes(runtime))
    return app
