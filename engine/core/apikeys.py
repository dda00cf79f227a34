"""Projects and API keys (CONTRACT §3.15): keys live in the log like everything else.
"""

from __future__ import annotations

from engine.core.commands import (
    CreateApiKey,
    RevokeApiKey,
)
from engine.core.common import NOT_LOGGED, commit
from engine.core.results import (
    Applied,
    Rejected,
)
from engine.core.state import (
    ApiKey,
    LedgerState,
    ProjectState,
)

# -- projects and API keys (CONTRACT §3.15) ------------------------------------------------------


def apply_create_api_key(state: LedgerState, lsn: int, command: CreateApiKey) -> Applied | Rejected:
    if command.key_hash in state.api_keys or command.key_id in state.key_hash_by_id:
        return Rejected("api_key_exists", "an API key with this id or hash already exists")
    if command.project not in state.projects:
        state.projects[command.project] = ProjectState(name=command.project)
    state.api_keys[command.key_hash] = ApiKey(command.key_id, command.key_hash, command.project)
    state.key_hash_by_id[command.key_id] = command.key_hash
    commit(state, None, lsn)
    return Applied(None, True)


def apply_revoke_api_key(state: LedgerState, lsn: int, command: RevokeApiKey) -> Applied | Rejected:
    key_hash = state.key_hash_by_id.get(command.key_id)
    if key_hash is None:
        return Rejected("api_key_not_found", f"no API key {command.key_id!r}")
    key = state.api_keys[key_hash]
    if key.revoked:
        return NOT_LOGGED
    key.revoked = True
    commit(state, None, lsn)
    return Applied(None, True)

