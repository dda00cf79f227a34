"""Bearer API key -> project id (CONTRACT §3.15). Checked before anything else on every /v1 route.

    no header, empty, not "Bearer <token>"        401 missing_api_key
    token not printable ASCII or over 512 chars   401 invalid_api_key (never reaches the runtime)
    otherwise                                     Runtime.authenticate: project, or its Rejected
                                                  (invalid_api_key, api_key_revoked)

Keys are hashed and compared in constant time by the runtime (engine.core.keys); net never stores one.
"""

from typing import Final, Protocol

from aiohttp import web

from engine.core.limits import API_KEY_LENGTH_MAX
from engine.core.results import Rejected
from net.errors import ClientError


class Authenticator(Protocol):
    def authenticate(self, api_key: str) -> str | Rejected: ...


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip(" \t")
    return token or None


_MISSING: Final = ClientError("missing_api_key", "missing API key: send Authorization: Bearer <api_key>")


def authenticate(request: web.Request, runtime: Authenticator) -> str:
    """The request's project id; raises ClientError(401) otherwise."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise ClientError(_MISSING.code, _MISSING.message)
    if len(token) > API_KEY_LENGTH_MAX or not (token.isascii() and token.isprintable()):
        raise ClientError("invalid_api_key", "invalid API key")
    result = runtime.authenticate(token)
    if type(result) is str:
        return result
    assert type(result) is Rejected, result
    raise ClientError(result.code, result.message, result.details)
