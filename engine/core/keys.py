"""API key hashing (CONTRACT §3.15): keys are stored only as SHA-256 hex, compared in constant time."""

import hashlib
import hmac
from typing import Final


def hash_api_key(key: str) -> str:
    """SHA-256 hex of the key's UTF-8 bytes. A fast hash is enough: keys are random, not passwords."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def keys_match(a: str, b: str) -> bool:
    """Constant-time equality of two hashes (or keys), CONTRACT §3.15."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


KEY_HASH_MEMO_MAX: Final = 1024  # keys whose hash is kept; past this the memo starts again empty


class KeyHashMemo(dict[str, str]):
    """`hash_api_key` with the hashes of the last <= `size` distinct keys kept: `memo[key]` is
    hash_api_key(key) (issue 14: a SHA-256 and a hex string per request saved for the few keys a
    server sees; a dict whose __missing__ hashes, so a known key costs one dict lookup).

    A memo of a pure function, not an auth cache: what a key may do is still looked up in the
    ledger state on every request, so a revoked or rotated key stops working at once with no
    invalidation. The raw keys it holds live only in this process's memory (never written or
    logged), as each request's own buffers do. Bounded: full, it is emptied (a client sending
    many wrong keys only costs itself and everyone else the hash they would pay anyway)."""

    __slots__ = ("_size",)

    def __init__(self, size: int = KEY_HASH_MEMO_MAX) -> None:
        assert size > 0, size
        super().__init__()
        self._size = size

    def __missing__(self, key: str) -> str:
        key_hash = hash_api_key(key)
        if len(self) >= self._size:
            self.clear()
        self[key] = key_hash
        return key_hash
