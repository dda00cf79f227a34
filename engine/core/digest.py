"""`digest(state) -> str`: SHA-256 hex over a canonical encoding of the persistent state.

Same history, same digest (CONTRACT §5), whatever the shard count or snapshot cadence: derived
heaps and indexes are left out, projects / customers / keys are sorted by name, and msgpack
with `order="sorted"` sorts every dict's keys (customer metadata included).

API keys (CONTRACT §3.15, §9.1-§9.2) are hashed as `[key_id, key_hash, project, revoked]`, the
layout they had before labels and admin keys existed, so every older history keeps its digest;
a key with a label or the admin flag appends `[label, admin]`. Key times (`created_at_ms`,
`revoked_at_ms`) are left out, like `stamp_ms_last`: they are stamps the log already holds, and a
key restored from a snapshot written before Tally kept them has none, so including them would
make the digest depend on the snapshot cadence.

Webhooks and alert rules (CONTRACT §11) are hashed as a fifth element, present only in a history
that has them: events derived from the log, the outboxes and the attempts are state like any
other, so `tally replay` proves the same history gives the same events.
"""

import hashlib
from typing import Any

import msgspec

from engine.core.codec import hooks_snap, to_snap
from engine.core.state import ApiKey, LedgerState

_encoder = msgspec.msgpack.Encoder(order="sorted")


def _key_form(key: ApiKey) -> tuple[Any, ...]:
    base = (key.key_id, key.key_hash, key.project, key.revoked)
    if key.label is None and not key.admin:
        return base
    return (*base, key.label, key.admin)


def digest(state: LedgerState) -> str:
    snap = to_snap(state, canonical=True)
    # The four fields of the version-1 form, as a plain array: msgspec writes every field of an
    # array_like Struct (omit_defaults drops none), so hashing `snap` itself would also hash the
    # later-appended `stamp_ms_last` and change every digest (tests/golden guards this). Keys are
    # hashed in their digest form (_key_form: no times).
    keys = [_key_form(key) for key in snap.api_keys]
    hooks = hooks_snap(state, canonical=True)
    if hooks is None:
        return hashlib.sha256(_encoder.encode((snap.version, snap.last_lsn, keys, snap.projects))).hexdigest()
    # CONTRACT §11: webhooks, outboxes, attempts and alert rules as a fifth element, only when
    # the history has any (every older history keeps its digest).
    return hashlib.sha256(_encoder.encode((snap.version, snap.last_lsn, keys, snap.projects, hooks))).hexdigest()
