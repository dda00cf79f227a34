"""ServerConfig: the HTTP knobs of `tally serve`, one frozen value built by net/cli.py.

The ledger's own knobs (shards, WAL, snapshots) live in `engine.runtime.RuntimeConfig`; the CLI
fills both from flags. Nothing else reads argv or the environment. Defaults are named constants;
bounds are checked at construction (ValueError), so a bad value fails at start-up, never under load.
"""

import dataclasses
from typing import Final

HOST_DEFAULT: Final = "127.0.0.1"
PORT_DEFAULT: Final = 3002  # the SDKs' local default (velobase-api §1A.0)

# The largest request body. Every valid request is far below it: a deposit with maximal ids, a
# 2000-char description and metadata at its own bound (net/schemas.METADATA_SIZE_MAX, 16 KiB) fits
# in ~30 KiB even if every character is escaped. Bigger bodies get 413 `request_too_large`.
REQUEST_SIZE_MAX_DEFAULT: Final = 64 * 1024
REQUEST_SIZE_MAX_MIN: Final = 32 * 1024  # below this a valid deposit could be refused
REQUEST_SIZE_MAX_MAX: Final = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    host: str = HOST_DEFAULT
    port: int = PORT_DEFAULT  # 0: any free port (tests)
    request_size_max: int = REQUEST_SIZE_MAX_DEFAULT

    def __post_init__(self) -> None:
        """Operator input reaches here (flags, environment): ValueError with one line, not assert."""
        if not (isinstance(self.host, str) and self.host):
            raise ValueError("host must be a non-empty host name or address")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")
        if not REQUEST_SIZE_MAX_MIN <= self.request_size_max <= REQUEST_SIZE_MAX_MAX:
            raise ValueError(f"request_size_max must be {REQUEST_SIZE_MAX_MIN}..{REQUEST_SIZE_MAX_MAX} bytes")
