"""API key hashing (CONTRACT §3.15): keys are stored only as SHA-256 hex, compared in constant time."""

import hashlib
import hmac
from typing import Final, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def hash_api_key(key: str) -> str:
    """SHA-256 hex of the key's UTF-8 bytes. A fast hash is enough: keys are random, not passwords."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def keys_match(a: str, b: str) -> bool:
    """Constant-time equality of two hashes (or keys), CONTRACT §3.15."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


KEY_HASH_MEMO_MAX: Final = 1024  # keys whose hash is kept; past this the memo starts again empty


class BoundedMemo(dict[K, V]):
    """A dict of at most `size` entries that starts again empty when full: `put` adds one. What
    the key memos below share (raw API keys kept in this process's memory only, never written or
    logged). Emptied, not evicted one by one: a client sending many unknown keys only costs
    itself and everyone else the work the memo would have saved."""

    __slots__ = ("_size",)

    def __init__(self, size: int = KEY_HASH_MEMO_MAX) -> None:
        assert size > 0, size
        super().__init__()
        self._size = size

    def put(self, key: K, value: V) -> None:
        if len(self) >= self._size:
            self.clear()
        self[key] = value


class KeyHashMemo(BoundedMemo[str, str]):
    """`hash_api_key` with the hashes of the last <= `size` distinct keys kept: `memo[key]` is
    hash_api_key(key) (issue 14: a SHA-256 and a hex string per request saved for the few keys a
    server sees; a dict whose __missing__ hashes, so a known key costs one dict lookup).

    A memo of a pure function, not an auth cache: what a key may do is still looked up in the
    ledger state on every request, so a revoked or rotated key stops working at once with no
    invalidation."""

    __slots__ = ()

    def __missing__(self, key: str) -> str:
        key_hash = hash_api_key(key)
        self.put(key, key_hash)
        return key_hash
