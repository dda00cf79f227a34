"""UTC milliseconds -> RFC 3339 (CONTRACT §3.16, §7.5). Pure arithmetic: no clock, no `time`."""

import functools



def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm)."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


@functools.lru_cache(maxsize=256)
def _second_prefix(second_number: int) -> str:
    """'2026-04-07T12:00:00' for a second since the epoch. Responses format the current second
    over and over (the hot path: every write answers with its time), so the calendar arithmetic
    and the formatting run once per second, not once per timestamp."""
    days, second_of_day = divmod(second_number, 86_400)
    year, month, day = _civil_from_days(days)
    minutes, second = divmod(second_of_day, 60)
    hour, minute = divmod(minutes, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


def format_ms(ms: int) -> str:
    """UTC milliseconds -> '2026-04-07T12:00:00.000Z' (years 0001-9999, zero-padded)."""
    second_number, millis = divmod(ms, 1000)
    return _second_prefix(second_number) + _MILLIS[millis]


def format_ms_or_none(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)
