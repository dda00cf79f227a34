"""ServerConfig: the HTTP knobs of `tally serve`, one frozen value built by net/cli.py.

The ledger's own knobs (shards, WAL, snapshots) live in `engine.runtime.RuntimeConfig`; the CLI
fills both from flags. Nothing else reads argv or the environment. Defaults are named constants;
bounds are checked at construction (ValueError), so a bad value fails at start-up, never under load.
"""

import dataclasses
import ipaddress
import re
from typing import Final

HOST_DEFAULT: Final = "127.0.0.1"
PORT_DEFAULT: Final = 3002  # the SDKs' local default (velobase-api §1A.0)

# The largest request body. Every valid request is far below it: a deposit with maximal ids, a
# 2000-char description and metadata at its own bound (net/schemas.METADATA_SIZE_MAX, 16 KiB) fits
# in ~30 KiB even if every character is escaped. Bigger bodies get 413 `request_too_large`.
# `tally serve --workers N`: HTTP front processes beside the ledger process (net/workers.py).
WORKERS_MAX: Final = 64

REQUEST_SIZE_MAX_DEFAULT: Final = 64 * 1024
REQUEST_SIZE_MAX_MIN: Final = 32 * 1024  # below this a valid deposit could be refused
REQUEST_SIZE_MAX_MAX: Final = 16 * 1024 * 1024

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens, 1..63 each,
# 253 in all (a trailing dot allowed). Whether the name resolves is the CLI's check (I/O).
HOST_NAME_LENGTH_MAX: Final = 253
_HOST_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_host(host: str) -> bool:
    """An IP address literal (v4 or v6) or a syntactically valid host name."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host.removesuffix(".")
    if not 1 <= len(name) <= HOST_NAME_LENGTH_MAX:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    host: str = HOST_DEFAULT
    port: int = PORT_DEFAULT  # 0: any free port (tests)
    request_size_max: int = REQUEST_SIZE_MAX_DEFAULT

    def __post_init__(self) -> None:
        """Operator input reaches here (flags, environment): ValueError with one line, not assert."""
        if not (isinstance(self.host, str) and is_host(self.host)):
            raise ValueError(f"host must be an IP address or a host name, not {self.host!r}")
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise ValueError(f"port must be 0..65535, not {self.port}")
        if not REQUEST_SIZE_MAX_MIN <= self.request_size_max <= REQUEST_SIZE_MAX_MAX:
            raise ValueError(f"request_size_max must be {REQUEST_SIZE_MAX_MIN}..{REQUEST_SIZE_MAX_MAX} bytes")
