"""The admin API (CONTRACT §9.2, §11): projects, keys and webhooks, for an admin key only.

    GET  /admin/v1/projects                 -> ProjectList
    POST /admin/v1/keys {project, label?}   -> CreatedKey (the only time the key is shown)
    GET  /admin/v1/keys[?project=]          -> KeyList (never a key or its hash)
    POST /admin/v1/keys/{key_id}/revoke     -> RevokedKey (idempotent)
    POST /admin/v1/webhooks {project, url, events?}   -> CreatedWebhook (the only time the secret is shown)
    GET  /admin/v1/webhooks[?project=]               -> WebhookList (never a secret)
    POST /admin/v1/webhooks/{id}/delete              -> DeletedWebhook; 404 webhook_not_found
    GET  /admin/v1/webhooks/{id}/deliveries[?limit=&cursor=] -> AttemptPage (CONTRACT §11.3)

Every handler: auth (401; a project key 403 admin_required) -> parse (400) -> runtime. Changes go
through Runtime.submit like any write: logged and fsync'd before the 2xx; a created key works and
a revoked key is refused from the next request on (engine/runtime/runtime.py says how).
Admin keys themselves are not listed or revoked here: an admin key id is 404 key_not_found.
"""

from __future__ import annotations

import secrets
from typing import Any, Final, Protocol

import msgspec
from aiohttp import web

from engine.core.commands import Command, CreateApiKey, DeleteWebhook, RevokeApiKey
from engine.core.keys import hash_api_key
from engine.core.results import (
    Applied,
    AttemptPage,
    CreatedKey,
    KeyList,
    KeyView,
    ProjectList,
    Rejected,
    RevokedKey,
    WebhookList,
)
from engine.runtime import Admin
from net import schemas
from net.auth import authenticate_admin
from net.bootstrap import new_api_key
from net.errors import ClientError, HttpError

ADMIN_PREFIX: Final = "/admin/v1"
_encoder = msgspec.json.Encoder()


class AdminRuntime(Protocol):
    """What the admin API needs from engine.runtime.Runtime."""

    def authenticate(self, api_key: str) -> str | Admin | Rejected: ...

    def has_project(self, project: str) -> bool: ...

    def find_key(self, key_id: str) -> KeyView | None: ...

    async def submit(self, command: Command) -> Applied | Rejected: ...

    async def list_projects(self) -> ProjectList: ...

    async def list_keys(self, project: str | None) -> KeyList | Rejected: ...

    async def list_webhooks(self, project: str | None) -> WebhookList | Rejected: ...

    async def list_deliveries(self, webhook_id: str, *, limit: int, cursor: str | None) -> AttemptPage | Rejected: ...


def _ok(body: Any) -> web.Response:
    return web.Response(body=_encoder.encode(body), content_type="application/json")


def _key_not_found(key_id: str) -> ClientError:
    return ClientError("key_not_found", f"no API key {key_id!r}", {"key_id": key_id})


class AdminHandlers:
    """The /admin/v1 handlers, bound to one runtime."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: AdminRuntime) -> None:
        self._runtime = runtime

    def bind(self, runtime: AdminRuntime) -> None:
        """Serve from `runtime` from the next request on (net/app.py open_app, after recovery)."""
        self._runtime = runtime

    async def projects(self, request: web.Request) -> web.Response:
        """GET /admin/v1/projects -> ProjectList; 400 unknown_field for any query parameter."""
        authenticate_admin(request, self._runtime)
        if request.query_string:
            raise ClientError("unknown_field", "this route takes no query parameters")
        return _ok(await self._runtime.list_projects())

    async def list_keys(self, request: web.Request) -> web.Response:
        """GET /admin/v1/keys[?project=] -> KeyList; 400 unknown_field, invalid_identifier; 404
        project_not_found."""
        authenticate_admin(request, self._runtime)
        project = schemas.parse_keys_query(request.raw_path.partition("?")[2])
        result = await self._runtime.list_keys(project)
        if type(result) is Rejected:
            raise HttpError(result.code, result.message, result.details)
        return _ok(result)

    async def create_key(self, request: web.Request) -> web.Response:
        """POST /admin/v1/keys {project, label?} -> CreatedKey, after the key is durable; 400 as
        schemas.parse_create_key says."""
        authenticate_admin(request, self._runtime)
        body = schemas.parse_create_key(await request.read())
        key, key_id = new_api_key()
        command = CreateApiKey(
            at_ms=0, project=body.project, key_id=key_id, key_hash=hash_api_key(key), label=body.label
        )
        result = await self._runtime.submit(command)
        if type(result) is Rejected:  # api_key_exists: a 2^-64 collision of random ids
            raise HttpError(result.code, result.message, result.details)
        view = result.body  # type: ignore[union-attr]  # mypy does not narrow on `type(x) is`
        assert type(view) is KeyView and view.created_at is not None, view
        return _ok(CreatedKey(key_id=view.key_id, project=view.project, label=view.label, created_at=view.created_at, key=key))

    async def revoke_key(self, request: web.Request) -> web.Response:
        """POST /admin/v1/keys/{key_id}/revoke -> RevokedKey (idempotent), after the revocation is
        durable; 404 key_not_found (also for an admin key's id). Routed on the raw path: the key
        id segment is percent-decoded once."""
        authenticate_admin(request, self._runtime)
        key_id = _key_id_of(request)
        if self._runtime.find_key(key_id) is None:  # unknown, or an admin key
            raise _key_not_found(key_id)
        result = await self._runtime.submit(RevokeApiKey(at_ms=0, key_id=key_id))
        if type(result) is Rejected:
            raise HttpError(result.code, result.message, result.details)
        body = result.body  # type: ignore[union-attr]  # mypy does not narrow on `type(x) is`
        assert type(body) is RevokedKey, body
        return _ok(body)


    # -- webhooks (CONTRACT §11.1, §11.3) --------------------------------------------------------

    async def create_webhook(self, request: web.Request) -> web.Response:
        """POST /admin/v1/webhooks {project, url, events?} -> CreatedWebhook once durable; 400 as
        schemas.parse_create_webhook says, too_many_webhooks; 404 project_not_found."""
        authenticate_admin(request, self._runtime)
        command = schemas.parse_create_webhook(await request.read(), new_webhook_secret())
        return await self._submit(command)

    async def list_webhooks(self, request: web.Request) -> web.Response:
        """GET /admin/v1/webhooks[?project=] -> WebhookList; 404 project_not_found."""
        authenticate_admin(request, self._runtime)
        project = schemas.parse_project_query(request.raw_path.partition("?")[2])
        return _answer(await self._runtime.list_webhooks(project))

    async def webhook_action(self, request: web.Request) -> web.Response:
        """POST /admin/v1/webhooks/{id}/delete -> DeletedWebhook once durable; 404 webhook_not_found."""
        authenticate_admin(request, self._runtime)
        webhook_id = _webhook_id_of(request, _DELETE_SUFFIX)
        return await self._submit(DeleteWebhook(at_ms=0, webhook_id=webhook_id))

    async def deliveries(self, request: web.Request) -> web.Response:
        """GET /admin/v1/webhooks/{id}/deliveries[?limit=&cursor=] -> AttemptPage, newest first;
        400 invalid_limit, invalid_cursor, unknown_field; 404 webhook_not_found."""
        authenticate_admin(request, self._runtime)
        webhook_id = _webhook_id_of(request, _DELIVERIES_SUFFIX)
        query = schemas.parse_deliveries_query(request.raw_path.partition("?")[2])
        return _answer(await self._runtime.list_deliveries(webhook_id, limit=query.limit, cursor=query.cursor))

    async def _submit(self, command: Command) -> web.Response:
        result = await self._runtime.submit(command)
        if type(result) is Rejected:
            raise HttpError(result.code, result.message, result.details)
        return _ok(result.body)  # type: ignore[union-attr]  # mypy does not narrow on `type(x) is`


def new_webhook_secret() -> str:
    """A fresh signing secret: 256 random bits (the HMAC key is its UTF-8 text, CONTRACT §11.4)."""
    return "whsec_" + secrets.token_urlsafe(32)


def _answer(result: Any) -> web.Response:
    if type(result) is Rejected:
        raise HttpError(result.code, result.message, result.details)
    return _ok(result)


_WEBHOOKS_PREFIX: Final = f"{ADMIN_PREFIX}/webhooks/"
_DELETE_SUFFIX: Final = "/delete"
_DELIVERIES_SUFFIX: Final = "/deliveries"


def _webhook_id_of(request: web.Request, suffix: str) -> str:
    """The {id} of /admin/v1/webhooks/{id}<suffix>, from the raw path (404 otherwise)."""
    path = request.raw_path.partition("?")[0]
    if not (path.startswith(_WEBHOOKS_PREFIX) and path.endswith(suffix)):
        raise ClientError("not_found", "no such route")
    raw = path[len(_WEBHOOKS_PREFIX) : -len(suffix)]
    if not raw or "/" in raw:
        raise ClientError("not_found", "no such route")
    try:
        return schemas.decode_path_id(raw)
    except ClientError:  # not an identifier: no webhook has such an id
        raise ClientError("webhook_not_found", "no such webhook") from None


_KEYS_PREFIX: Final = f"{ADMIN_PREFIX}/keys/"
_REVOKE_SUFFIX: Final = "/revoke"


def _key_id_of(request: web.Request) -> str:
    """The {key_id} of POST /admin/v1/keys/{key_id}/revoke, from the raw path."""
    path = request.raw_path.partition("?")[0]
    if not (path.startswith(_KEYS_PREFIX) and path.endswith(_REVOKE_SUFFIX)):
        raise ClientError("not_found", "no such route")
    raw = path[len(_KEYS_PREFIX) : -len(_REVOKE_SUFFIX)]
    if not raw or "/" in raw:
        raise ClientError("not_found", "no such route")
    try:
        return schemas.decode_path_id(raw)
    except ClientError:  # not an identifier: no key has such an id (and it is not echoed)
        raise ClientError("key_not_found", "no such API key") from None


def admin_routes(handlers: AdminHandlers) -> list[web.RouteDef]:
    """The /admin/v1 route table (CONTRACT §9.2)."""
    return [
        web.get(f"{ADMIN_PREFIX}/projects", handlers.projects),
        web.post(f"{ADMIN_PREFIX}/keys", handlers.create_key),
        web.get(f"{ADMIN_PREFIX}/keys", handlers.list_keys),
        web.post(f"{ADMIN_PREFIX}/keys/{{tail:.+}}", handlers.revoke_key),  # {key_id}/revoke, raw path
        web.post(f"{ADMIN_PREFIX}/webhooks", handlers.create_webhook),  # CONTRACT §11
        web.get(f"{ADMIN_PREFIX}/webhooks", handlers.list_webhooks),
        web.post(f"{ADMIN_PREFIX}/webhooks/{{tail:.+}}/delete", handlers.webhook_action),  # raw path
        web.get(f"{ADMIN_PREFIX}/webhooks/{{tail:.+}}/deliveries", handlers.deliveries),  # raw path
    ]
