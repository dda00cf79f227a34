"""The dashboard (issue 13): one static page served by Tally itself, and the probe it signs in with.

    GET /dashboard              index.html    static, no auth
    GET /dashboard/app.js       the page's code (vanilla JS; no CDN, no build step)
    GET /dashboard/app.css      its styles
    GET /favicon.ico            the icon (a browser asks for it; a 404 there is a console error)
    GET /dashboard/session      Bearer key -> {"admin": true, "project": null} or
                                {"admin": false, "project": "<its project>"}; 401 as every route

Static files (`STATIC_PATHS`) touch no runtime, so the readiness gate (net/observe.py) lets them
through during recovery: the page loads and its API calls say "not_ready" until the ledger is up.
The session probe is gated like any keyed route.

Why a probe: the page must learn whether a key is an admin key (it then offers the project
choice and the Keys view) without a request that fails for the other kind: GET /admin/v1/projects
answers 403 to a project key and GET /v1/customers 400 to an admin key, and a browser logs every
4xx fetch as a console error. The probe answers 200 for any valid key.

These routes are not part of the billing API: net/openapi.py lists them in EXCLUDED_ROUTES.

The files live in net/dashboard_assets/ (package data, pyproject.toml) and are read once, at the
first request for each. Every response forbids framing and sniffing, and the page's Content
Security Policy allows only its own origin: no inline script, no eval, no third-party request.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

import msgspec
from aiohttp import web

from engine.runtime import Admin
from net.auth import Authenticator, principal

ASSET_DIR: Final = Path(__file__).with_name("dashboard_assets")
DASHBOARD_PATH: Final = "/dashboard"
FAVICON_PATH: Final = "/favicon.ico"
SESSION_PATH: Final = "/dashboard/session"

# path -> (file in ASSET_DIR, content type)
ASSETS: Final = {
    DASHBOARD_PATH: ("index.html", "text/html; charset=utf-8"),
    f"{DASHBOARD_PATH}/app.js": ("app.js", "text/javascript; charset=utf-8"),
    f"{DASHBOARD_PATH}/app.css": ("app.css", "text/css; charset=utf-8"),
    FAVICON_PATH: ("favicon.ico", "image/x-icon"),
}
STATIC_PATHS: Final = frozenset(ASSETS)  # served during recovery too (net/observe.py)

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new release's page never runs an old app.js
}


@cache
def _asset(name: str) -> bytes:
    return (ASSET_DIR / name).read_bytes()


async def static_asset(request: web.Request) -> web.Response:
    """One of ASSETS, chosen by the route's own path (never by anything the client sent)."""
    resource = request.match_info.route.resource
    assert resource is not None
    name, content_type = ASSETS[resource.canonical]
    response = web.Response(body=_asset(name), headers=_HEADERS)
    response.headers["Content-Type"] = content_type
    return response


class Session(msgspec.Struct):
    admin: bool
    project: str | None


_encoder = msgspec.json.Encoder()


class DashboardHandlers:
    """The session probe; bound to the runtime after recovery like net.handlers.Handlers."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Authenticator) -> None:
        self._runtime = runtime

    def bind(self, runtime: Authenticator) -> None:
        self._runtime = runtime

    async def session(self, request: web.Request) -> web.Response:
        """200 {"admin", "project"} for a valid key; 401 (missing_api_key, invalid_api_key,
        api_key_revoked) otherwise. An admin key's X-Tally-Project is not looked at."""
        who = principal(request, self._runtime)
        body = Session(True, None) if type(who) is Admin else Session(False, str(who))
        return web.Response(body=_encoder.encode(body), content_type="application/json",
                            headers={"Cache-Control": "no-store"})  # fmt: skip


def dashboard_routes(handlers: DashboardHandlers) -> list[web.RouteDef]:
    """The dashboard's routes (net/app.py); all excluded from /openapi.json."""
    return [*(web.get(path, static_asset) for path in ASSETS), web.get(SESSION_PATH, handlers.session)]
