"""RFC 3339 <-> UTC milliseconds (CONTRACT §3.16, §7.5). Pure functions, no clock."""

import datetime as _dt

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def format_ms(ms: int) -> str:
    """UTC milliseconds -> '2026-04-07T12:00:00.000Z'."""
    moment = _EPOCH + _dt.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_ms_or_none(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)
