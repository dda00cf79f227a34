"""net/dispatch.py: the fixed-route table gives exactly what aiohttp's router would.

What: every (path, method) entry of `exact_routes(create_app(...))` resolves, through the app's
own UrlDispatcher, to the same route; the requests the table must not take (a query string, a
%-escape, a trailing slash, a method of another route, an Expect header, a dynamic path) go to
Application._handle. How: aiohttp's mocked requests against the real route table, then real
requests through TallyTestServer for the envelope answers. How it could fail: a fixed route that
shadows what the router would pick (another handler answering), a 405 or 404 answered by a
handler, or request.app / match_info missing on the fast path (metrics, dashboard assets).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from net.app import create_app
from net.config import ServerConfig
from net.dispatch import Dispatch, exact_routes
from tests.app_server import TallyTestServer
from tests.net.conftest import GOOD_KEY, FakeRuntime


def _frozen_app() -> web.Application:
    app = create_app(ServerConfig(), FakeRuntime())
    app.freeze()
    return app


async def test_every_fixed_route_is_the_routers_choice() -> None:
    app = _frozen_app()
    table = exact_routes(app)
    assert {"/v1/billing/deduct", "/v1/customers/deposit", "/v1/customers", "/health", "/metrics"} <= set(table)
    assert set(table["/v1/billing/deduct"]) == {"POST"}
    assert set(table["/health"]) == {"GET", "HEAD"}
    assert not any("{" in path for path in table)
    for path, by_method in table.items():
        for method, match_info in by_method.items():
            routed = await app.router.resolve(make_mocked_request(method, path, app=app))
            assert routed.route is match_info.route, (method, path)
            assert match_info.current_app is app


async def test_what_the_table_does_not_take_goes_to_the_router() -> None:
    app = _frozen_app()
    dispatch = Dispatch(app)
    fast = make_mocked_request("POST", "/v1/billing/deduct", app=app)
    handler = dispatch.handler_of(fast)
    assert handler is exact_routes(app)["/v1/billing/deduct"]["POST"].handler
    assert fast.match_info.route.resource is not None
    assert fast.match_info.route.resource.canonical == "/v1/billing/deduct"
    routed = app._handle
    for method, path, headers in (
        ("GET", "/v1/billing/deduct", {}),  # 405 with Allow
        ("POST", "/v1/billing/deduct/", {}),
        ("POST", "/v1/billing/deduct?x=1", {}),
        ("POST", "/v1/billing/%64educt", {}),
        ("POST", "/v1/billing/deduct", {"Expect": "100-continue"}),
        ("GET", "/v1/customers/c-1", {}),  # the raw-path catch-all
        ("GET", "/nothing", {}),
    ):
        assert dispatch.handler_of(make_mocked_request(method, path, headers=headers, app=app)) == routed, (method, path)


async def test_an_app_with_middleware_is_always_routed_by_aiohttp() -> None:
    @web.middleware
    async def passthrough(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        return await handler(request)

    app = web.Application(middlewares=[passthrough])
    app.router.add_post("/x", passthrough)
    app.freeze()
    assert exact_routes(app) == {}


async def test_answers_through_the_table_and_around_it(fake: FakeRuntime) -> None:
    app = create_app(ServerConfig(), fake)
    auth = {"Authorization": f"Bearer {GOOD_KEY}"}
    async with TestClient(TallyTestServer(app)) as client:
        response = await client.get("/v1/billing/deduct", headers=auth)
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert (await response.json())["error"]["code"] == "method_not_allowed"
        response = await client.post("/v1/billing/nothing", headers=auth, data=b"{}")
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
        body = b'{"customer_id":"c-1","amount":1,"transaction_id":"t-1"}'
        for path in ("/v1/billing/deduct", "/v1/billing/%64educt"):
            response = await client.post(path, headers={**auth, "Expect": "100-continue"}, data=body)
            assert response.status == 200, path
            assert response.headers["X-Request-Id"].startswith("req_")
        response = await client.head("/health")
        assert response.status == 200
        response = await client.get("/metrics")
        assert response.status == 200
        text = await response.text()
        assert 'tally_http_requests_total{method="POST",route="/v1/billing/deduct",status="200"} 2.0' in text
        assert 'tally_http_requests_total{method="GET",route="unmatched",status="405"} 1.0' in text
