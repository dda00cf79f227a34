"""API key hashing (CONTRACT §3.15): keys are stored only as SHA-256 hex, compared in constant time."""

import hashlib
import hmac


def hash_api_key(key: str) -> str:
    """SHA-256 hex of the key's UTF-8 bytes. A fast hash is enough: keys are random, not passwords."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def keys_match(a: str, b: str) -> bool:
    """Constant-time equality of two hashes (or keys), CONTRACT §3.15."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))
