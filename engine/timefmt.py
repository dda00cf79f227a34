"""RFC 3339 <-> UTC milliseconds (CONTRACT §3.16, §7.5). Pure functions, no clock."""

import time


def format_ms(ms: int) -> str:
    """UTC milliseconds -> '2026-04-07T12:00:00.000Z' (years 0001-9999, zero-padded)."""
    seconds, millis = divmod(ms, 1000)
    t = time.gmtime(seconds)  # a pure conversion of the given instant, not a clock read
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{millis:03d}Z"
    )


def format_ms_or_none(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)
