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
    return hashlib.sha256(_encoder.encode(to_snap(state, canonical=True))).hexdigest()
