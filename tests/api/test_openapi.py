"""net/openapi.py: the document and the app's route table agree both ways, and it is served.

What: every (method, path) of net.app's route table is documented (or listed in EXCLUDED_ROUTES: the
dashboard, net/dashboard.py) and every documented operation
resolves in the app to a real handler (not 404/405); every $ref resolves; every operation has
the error envelope for 401 unless it is public; the served /openapi.json is the document.
How it could fail: a route added to net/app.py without documenting it, or a documented path the
router does not serve.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from net import observe, openapi
from net.admin import AdminHandlers
from net.app import create_app
from net.config import ServerConfig
from net.entitlements_api import EntitlementHandlers
from net.handlers import Handlers
from net.slots_api import SlotHandlers
from tests.api.harness import Server, request
from tests.net.conftest import FakeRuntime

METHODS = ("get", "post", "put", "patch", "delete")


def _app() -> web.Application:
    return create_app(ServerConfig(), FakeRuntime())


def _documented() -> set[tuple[str, str]]:
    doc = openapi.document()
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item if method in METHODS}


def _route_table(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info()
        path = info.get("path") or re.sub(r"\{(\w+):[^}]*\}", r"{\1}", info["formatter"])
        if route.method == "HEAD":  # aiohttp adds HEAD beside every GET (allow_head)
            continue
        if path in openapi.EXCLUDED_ROUTES:  # the dashboard (net/dashboard.py): not an API operation
            continue
        out.add((route.method, path))
    return out


def test_every_route_is_documented():
    app = _app()
    table = _route_table(app)
    assert table, "empty route table"
    documented = _documented()
    for method, path in table:
        assert path in openapi.ROUTE_DOC_PATHS, f"route {method} {path} has no entry in ROUTE_DOC_PATHS"
        for doc_path in openapi.ROUTE_DOC_PATHS[path]:
            assert (method, doc_path) in documented, f"{method} {path} is not documented as {doc_path}"


def test_excluded_routes_are_routed_and_undocumented():
    app = _app()
    routed = {r.resource.canonical for r in app.router.routes() if r.method == "GET"}
    assert openapi.EXCLUDED_ROUTES <= routed
    assert openapi.EXCLUDED_ROUTES.isdisjoint(openapi.document()["paths"])
    assert openapi.EXCLUDED_ROUTES.isdisjoint(openapi.ROUTE_DOC_PATHS)


def test_every_head_route_has_a_get_twin():
    app = _app()
    heads = {r.resource.canonical for r in app.router.routes() if r.method == "HEAD"}
    gets = {r.resource.canonical for r in app.router.routes() if r.method == "GET"}
    assert heads == gets


def _sample(path: str) -> str:
    return path.replace("{customer_id}", "cust%2Fone")


@pytest.mark.parametrize(("method", "path"), sorted(_documented()))
async def test_every_documented_operation_is_routed(method, path):
    app = _app()
    match = await app.router.resolve(make_mocked_request(method, _sample(path), app=app))
    assert match.http_exception is None, (method, path, match.http_exception)
    # and back: the route that serves it maps to this documented path
    info = match.route.resource.get_info()
    route_path = info.get("path") or re.sub(r"\{(\w+):[^}]*\}", r"{\1}", info["formatter"])
    assert path in openapi.ROUTE_DOC_PATHS[route_path]
    handler = match.route.handler
    assert handler in (openapi.openapi_json, observe.metrics) or isinstance(
        getattr(handler, "__self__", None), (Handlers, AdminHandlers, SlotHandlers, EntitlementHandlers)
    )


def _refs(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_document_shape():
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1.")
    components = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, ref
    public = {"/health", "/openapi.json", "/metrics"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            statuses = set(op["responses"])
            assert "200" in statuses
            if path in public:
                assert op["security"] == []
                continue
            if path.startswith("/admin/"):
                assert op["security"] == [{"adminAuth": []}], (method, path)  # an admin key (§9.2)
                assert {"401", "403", "503"} <= statuses, (method, path)
                continue
            assert "security" not in op  # the global bearer scheme applies
            assert {"400", "401", "503"} <= statuses, (method, path)
            if method == "post":
                assert "413" in statuses
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                body = components[ref.rsplit("/", 1)[1]]
                assert body["additionalProperties"] is False and body["required"]
    # 200 bodies come from engine.core.results and allow no extra field
    for name in ("DepositResponse", "FreezeResponse", "ConsumeResponse", "UnfreezeResponse", "DeductResponse",
                 "CustomerResponse", "LedgerPage", "Detail", "Account", "Wallet", "WalletSource", "Balance", "LedgerEntryView"):
        assert components[name]["additionalProperties"] is False, name
    # request bodies are net/schemas.py's Structs: the document shows what msgspec enforces
    freeze = components["FreezeRequest"]
    assert freeze["required"] == ["customer_id", "amount", "transaction_id"]
    assert freeze["properties"]["amount"]["type"] == "integer"
    assert freeze["properties"]["amount"]["minimum"] == 1
    assert freeze["properties"]["amount"]["maximum"] == 2**53 - 1
    assert freeze["properties"]["customer_id"]["maxLength"] == 255
    business_type = freeze["properties"]["business_type"]["anyOf"][0]
    assert sorted(business_type["enum"]) == sorted(
        ["UNDEFINED", "TASK", "ORDER", "MEMBERSHIP", "SUBSCRIPTION", "FREE_TRIAL", "ADMIN_GRANT", "TOKEN_USAGE",
         "ADMIN_DEDUCT"]
    )
    assert len(freeze["allOf"]) == 2  # not both credit_types and wallet; not both TTLs
    consume = components["ConsumeRequest"]
    assert consume["properties"]["actual_amount"] == {
        **consume["properties"]["actual_amount"], "type": "integer", "minimum": 0, "maximum": 2**53 - 1
    }  # an integer, never null (CONTRACT §3.1)
    assert "actual_amount" not in consume["required"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "A project's API key, or an admin key with X-Tally-Project."
    }
    assert {k: schemes["adminAuth"][k] for k in ("type", "scheme")} == {"type": "http", "scheme": "bearer"}


def test_error_codes_are_registered_with_their_status():
    """Every code the document lists is in engine/core/codes.py, under its registered status,
    with the registered type and retryable."""
    from engine.core.codes import CODES

    doc = openapi.document()
    seen = set()
    for item in doc["paths"].values():
        for op in item.values():
            for status, response in op["responses"].items():
                if status == "200":
                    continue
                error = response["content"]["application/json"]["schema"]["properties"]["error"]["properties"]
                for code in error["code"]["enum"]:
                    seen.add(code)
                    assert CODES[code].status == int(status), (op["operationId"], code, status)
                    assert error["type"]["const"] == CODES[code].type
                    assert error["retryable"]["const"] is CODES[code].retryable
    assert {"amount_too_large", "actual_amount_must_be_non_negative", "invalid_json", "not_ready"} <= seen


def test_document_is_accepted_by_schemathesis():
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(openapi.document())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == _documented()


def test_served_document(tmp_path):
    server = Server(tmp_path / "data").start()
    try:
        reply = request(server.port, "GET", "/openapi.json", key=None)
        assert reply.status == 200
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.headers["x-request-id"]
        assert msgspec.json.decode(reply.body) == msgspec.json.decode(openapi.document_bytes())
        assert reply.json() == openapi.document()
    finally:
        server.kill()
