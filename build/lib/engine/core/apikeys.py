"""Projects and API keys (CONTRACT §3.15, §9.1, §9.2): keys live in the log like everything else.

    CreateApiKey  -> Applied(KeyView) | Rejected api_key_exists (409), invalid_request (400)
    RevokeApiKey  -> Applied(RevokedKey) (a replay: the first revocation, not logged)
                     | Rejected key_not_found (404)

A project key (`admin` False) names its project, which the first key creates. An admin key
(`admin` True, CONTRACT §9.1) names none (`project` ""): it belongs to no project and creates none.
A key's `created_at_ms` / `revoked_at_ms` are the stamps of the commands that made and revoked it.
"""

from __future__ import annotations

from engine.core.commands import (
    CreateApiKey,
    RevokeApiKey,
)
from engine.core.common import commit
from engine.core.results import (
    Applied,
    KeyView,
    Rejected,
    RevokedKey,
)
from engine.core.state import (
    ApiKey,
    LedgerState,
    ProjectState,
)
from engine.core.timefmt import format_ms_or_none


def key_view(key: ApiKey) -> KeyView:
    """The listed shape of a key: never the key or its hash (CONTRACT §9.2)."""
    return KeyView(
        key_id=key.key_id,
        project=key.project,
        label=key.label,
        created_at=format_ms_or_none(key.created_at_ms),
        revoked_at=format_ms_or_none(key.revoked_at_ms),
    )


def apply_create_api_key(state: LedgerState, lsn: int, command: CreateApiKey) -> Applied | Rejected:
    if command.key_hash in state.api_keys or command.key_id in state.key_hash_by_id:
        return Rejected("api_key_exists", "an API key with this id or hash already exists")
    if command.admin != (command.project == ""):
        return Rejected("invalid_request", "an admin key names no project; a project key names one")
    if not command.admin and command.project not in state.projects:
        state.projects[command.project] = ProjectState(name=command.project)
    key = ApiKey(
        command.key_id, command.key_hash, command.project,
        label=command.label, admin=command.admin, created_at_ms=command.at_ms,
    )  # fmt: skip
    state.api_keys[command.key_hash] = key
    state.key_hash_by_id[command.key_id] = command.key_hash
    commit(state, None, lsn)
    return Applied(key_view(key), True)


def apply_revoke_api_key(state: LedgerState, lsn: int, command: RevokeApiKey) -> Applied | Rejected:
    key_hash = state.key_hash_by_id.get(command.key_id)
    if key_hash is None:
        return Rejected("key_not_found", f"no API key {command.key_id!r}", {"key_id": command.key_id})
    key = state.api_keys[key_hash]
    if key.revoked:
        return Applied(RevokedKey(key_id=key.key_id, revoked_at=format_ms_or_none(key.revoked_at_ms)), False)
    key.revoked = True
    key.revoked_at_ms = command.at_ms
    commit(state, None, lsn)
    return Applied(RevokedKey(key_id=key.key_id, revoked_at=format_ms_or_none(key.revoked_at_ms)), True)
