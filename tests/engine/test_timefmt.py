"""engine/core/timefmt.py: UTC ms -> RFC 3339 by arithmetic (the core imports no `time`).

What: every instant of years 0001-9999 formats exactly as the standard library's calendar does,
also after the per-second cache has seen it. How it could fail: an off-by-one in the civil-date
arithmetic (leap years, centuries, before 1970), a stale cache entry, a missing zero pad.
"""

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from engine.core.timefmt import format_ms, format_ms_or_none

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS_MIN = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
MS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def reference(ms: int) -> str:
    instant = EPOCH + timedelta(milliseconds=ms)
    date = f"{instant.year:04d}-{instant.month:02d}-{instant.day:02d}"  # strftime's %Y does not pad
    return f"{date}T{instant.hour:02d}:{instant.minute:02d}:{instant.second:02d}.{ms % 1000:03d}Z"


@given(st.integers(MS_MIN, MS_MAX))
def test_matches_the_standard_calendar(ms: int) -> None:
    assert format_ms(ms) == format_ms(ms) == reference(ms)


def test_edges_and_padding() -> None:
    assert format_ms(MS_MIN) == "0001-01-01T00:00:00.000Z"
    assert format_ms(MS_MAX) == "9999-12-31T23:59:59.999Z"
    assert format_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert format_ms(951_782_400_000) == "2000-02-29T00:00:00.000Z"  # a leap century
    assert format_ms(1_775_563_200_007) == "2026-04-07T12:00:00.007Z"
    assert format_ms_or_none(None) is None
