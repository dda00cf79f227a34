"""Webhook payloads and their signatures (CONTRACT §11.3): pure functions, no clock.

    event_body(event) -> bytes      {"id", "type", "created_at", "project", "data"} as JSON
    sign(secret, t_s, body) -> str  the Tally-Signature value "t=<t_s>,v1=<hex HMAC-SHA256>"
    verify(secret, header, body, now_s, tolerance_s) -> bool   what a receiver does (README)

The HMAC key is the secret's UTF-8 text; the signed message is f"{t}.".encode() + raw body.
Each attempt is signed afresh with its own `t` (unix seconds of the attempt).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

import msgspec

from engine.core.hooks_state import Event
from engine.core.timefmt import format_ms

SIGNATURE_HEADER: Final = "Tally-Signature"
EVENT_ID_HEADER: Final = "Tally-Event-Id"
SIGNATURE_TOLERANCE_S_DEFAULT: Final = 300

_encoder = msgspec.json.Encoder()


class EventBody(msgspec.Struct):
    id: str
    type: str
    created_at: str
    project: str
    data: dict[str, object]


def event_body(event: Event) -> bytes:
    """The JSON body POSTed for `event` (same bytes at every attempt)."""
    return _encoder.encode(EventBody(event.id, event.type, format_ms(event.at_ms), event.project, event.data))


def _mac(secret: str, t_s: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{t_s}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, t_s: int, body: bytes) -> str:
    """The Tally-Signature header value for `body` sent at unix second `t_s`."""
    return f"t={t_s},v1={_mac(secret, t_s, body)}"


def verify(secret: str, header: str, body: bytes, now_s: int, tolerance_s: int = SIGNATURE_TOLERANCE_S_DEFAULT) -> bool:
    """True iff `header` is a valid signature of `body` made within `tolerance_s` of `now_s`.
    Constant-time compare; a malformed header is False, never an exception."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    t_text, mac = parts.get("t", ""), parts.get("v1", "")
    if not (t_text.isascii() and t_text.isdigit()) or len(t_text) > 12:
        return False
    t_s = int(t_text)
    if abs(now_s - t_s) > tolerance_s:
        return False
    return hmac.compare_digest(_mac(secret, t_s, body), mac)
