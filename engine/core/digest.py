"""`digest(state) -> str`: SHA-256 hex over a canonical encoding of the persistent state.

Same history, same digest (CONTRACT §5), whatever the shard count or snapshot cadence: derived
heaps and indexes are left out, projects / customers / keys are sorted by name, and msgpack
with `order="sorted"` sorts every dict's keys (customer metadata included).
"""

import hashlib

import msgspec

from engine.core.codec import to_snap
from engine.core.state import LedgerState

_encoder = msgspec.msgpack.Encoder(order="sorted")


def digest(state: LedgerState) -> str:
    snap = to_snap(state, canonical=True)
    # The four fields of the version-1 form, as a plain array: msgspec writes every field of an
    # array_like Struct (omit_defaults drops none), so hashing `snap` itself would also hash the
    # later-appended `stamp_ms_last` and change every digest (tests/golden guards this).
    return hashlib.sha256(_encoder.encode((snap.version, snap.last_lsn, snap.api_keys, snap.projects))).hexdigest()
