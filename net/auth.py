"""Bearer API key -> project id (CONTRACT §3.15, §9.1, §9.2). Checked before anything else.

    no header, empty, not "Bearer <token>"        401 missing_api_key
    token not printable ASCII or over 512 chars   401 invalid_api_key (never reaches the runtime)
    otherwise                                     Runtime.authenticate: project, ADMIN, or its
                                                  Rejected (invalid_api_key, api_key_revoked)

On /v1 (`authenticate`), an admin key acts on the project named by `X-Tally-Project`:
    header absent or empty                        400 project_required
    no such project                               404 project_not_found
A project key's header is ignored: a project key only ever reaches its own project.
On /admin (`authenticate_admin`): a project key -> 403 admin_required.

Keys are hashed and compared in constant time by the runtime (engine.core.keys); net never stores one.
"""

from typing import Final, Protocol

from aiohttp import hdrs, web

from engine.core.limits import API_KEY_LENGTH_MAX
from engine.core.results import Rejected
from engine.runtime import Admin
from net.errors import ClientError
from net.schemas import is_identifier

PROJECT_HEADER: Final = "X-Tally-Project"


class Authenticator(Protocol):
    def authenticate(self, api_key: str) -> str | Admin | Rejected: ...

    def has_project(self, project: str) -> bool: ...


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


def principal(request: web.Request, runtime: Authenticator) -> str | Admin:
    """The key's project id or ADMIN; raises ClientError(401) otherwise."""
    header = request.headers.get(hdrs.AUTHORIZATION)  # istr: no case folding per request
    if header is not None and header.startswith("Bearer ") and header[7:8] not in " \t" and header[-1] not in " \t":
        token: str | None = header[7:]  # the usual spelling, nothing to strip: bearer_token's answer
    else:
        token = bearer_token(header)
    if token is None:
        raise ClientError(_MISSING.code, _MISSING.message)
    if len(token) > API_KEY_LENGTH_MAX or not (token.isascii() and token.isprintable()):
        raise ClientError("invalid_api_key", "invalid API key")
    result = runtime.authenticate(token)
    if type(result) is str or type(result) is Admin:
        return result
    assert type(result) is Rejected, result
    raise ClientError(result.code, result.message, result.details)


def authenticate(request: web.Request, runtime: Authenticator) -> str:
    """The project a /v1 request acts on; raises ClientError (401, 400 project_required, 404
    project_not_found)."""
    who = principal(request, runtime)
    if type(who) is str:
        return who
    project = request.headers.get(PROJECT_HEADER)
    if not project:
        raise ClientError(
            "project_required", f"an admin key names the project in {PROJECT_HEADER}", {"header": PROJECT_HEADER}
        )
    if not is_identifier(project):  # no project has such a name; not echoed (it may not be text)
        raise ClientError("project_not_found", f"no such project (bad {PROJECT_HEADER})", {"header": PROJECT_HEADER})
    if not runtime.has_project(project):
        raise ClientError("project_not_found", f"no project {project!r}", {"project": project})
    return project


def authenticate_admin(request: web.Request, runtime: Authenticator) -> None:
    """An /admin request: returns for an admin key; raises ClientError (401, 403 admin_required)."""
    if type(principal(request, runtime)) is not Admin:
        raise ClientError("admin_required", "this route needs an admin key")
