"""Request -> handler without aiohttp's per-request router walk for the fixed routes (issue 14).

    Dispatch(app)            built once the app is frozen (net/transport.py TallyRunner)
      .handler_of(request)   the coroutine function to await for `request`:

    raw path (query included) equals a fixed     that route's handler; request.match_info is
      route's path, method one of its own,       the route's prebuilt, frozen match info (so
      no Expect header                           request.app and .match_info.route still work)
    anything else: dynamic routes (customer      the app's own Application._handle: the
      catch-all, alerts, admin), 404, 405 +      UrlDispatcher walk, aiohttp's 404/405 with
      Allow, %-escaped or dot-segment paths,     Allow, Expect: 100-continue, exactly as
      a query string, Expect                     before
    an app with middlewares or domain sub-apps   always Application._handle (never the case in
                                                 net/app.py; kept exact rather than guessed)

Why it is exact: aiohttp resolves a path by walking its prefixes from the longest, trying the
resources indexed under each in registration order; a plain (variable-free) resource is indexed
under its whole path, so for that exact path it is tried first and the first route with the
request's method wins (HEAD included: web.get adds a HEAD route with the same handler). The
table holds that first route per (path, method) and leaves out a path with a route for any
method (`*`). tests/net/test_dispatch.py checks every entry against `router.resolve`. What it
saves per request: the resolve walk, a match info built, filled and frozen, and
Application._handle's checks (hot deduct: 414.8k -> 401.0k instructions, bench/instructions.py).
"""

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_NO_ROUTES: Final[dict[str, web.UrlMappingMatchInfo]] = {}


def exact_routes(app: web.Application) -> dict[str, dict[str, web.UrlMappingMatchInfo]]:
    """path -> method -> the frozen match info aiohttp's router would give a request for exactly
    that raw path and method (see the module docstring); empty for an app it cannot vouch for."""
    if app.middlewares or app.router._matched_sub_app_resources:
        return {}
    table: dict[str, dict[str, web.UrlMappingMatchInfo]] = {}
    any_method: set[str] = set()
    for resource in app.router.resources():
        if type(resource) is not web.PlainResource:
            continue
        path = resource.canonical
        by_method = table.setdefault(path, {})
        for route in resource:
            if route.method == hdrs.METH_ANY:
                any_method.add(path)
            elif route.method not in by_method:  # the first registered route of a method wins
                match_info = web.UrlMappingMatchInfo({}, route)
                match_info.add_app(app)
                match_info.freeze()
                by_method[route.method] = match_info
    return {path: by_method for path, by_method in table.items() if path not in any_method and by_method}


class Dispatch:
    """The handler of each request: a fixed route's own, or the app's full routing."""

    __slots__ = ("_exact", "_routed")

    def __init__(self, app: web.Application) -> None:
        assert app.frozen, "routes are final once the app is frozen (AppRunner.setup)"
        self._exact = exact_routes(app)
        self._routed: Handler = app._handle

    def handler_of(self, request: web.Request) -> Handler:
        """The coroutine function that answers `request` (see the module docstring); sets
        request.match_info for a fixed route. Never raises."""
        match_info = self._exact.get(request.raw_path, _NO_ROUTES).get(request.method)
        if match_info is None or hdrs.EXPECT in request.headers:
            return self._routed
        request._match_info = match_info
        return match_info.handler
