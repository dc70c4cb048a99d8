"""Date-times for the RFC 5260 "date" and "currentdate" tests: a header's RFC 5322
date-time parsed, moved to another zone, and cut into the date parts of section 4.2.

Pure arithmetic on integers (no clock, no locale, no ``time.localtime``): the current time
comes in as a number, and the calendar is the proleptic Gregorian one the RFC asks for.
"""

from __future__ import annotations

import email.utils
import math
import re
from dataclasses import dataclass

# RFC 5260 section 4.2: the date parts (case-insensitive; callers lower-case them).
DATE_PARTS = frozenset({"year", "month", "day", "date", "julian", "hour", "minute", "second",
                        "time", "iso8601", "std11", "zone", "weekday"})
# An RFC 5322 date-time is about 31 characters, comments aside; a longer field is not a date
# worth parsing (and bounds the work a hostile header costs).
MAX_DATE_LENGTH = 256
# RFC 5260 section 4.1 / RFC 5322 section 3.3: zone = ("+" / "-") 4DIGIT, "hhmm".
_ZONE = re.compile(r"[+-][0-9]{4}\Z")
# RFC 5260 section 4.1: without :zone or :originalzone, dates are shown in the server's
# local zone. That is UTC here: the server's zone is UTC in containers, and a client that
# cares about the user's zone passes :zone.
LOCAL_ZONE = "+0000"
_DAY = 86400
# 1970-01-01, day 0 of the epoch, is Modified Julian Day 40587 and a Thursday.
_MJD_EPOCH = 40587
_EPOCH_WEEKDAY = 4
_WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class Moment:
    """An instant and the zone it is shown in. ``utc``: seconds since the epoch (a leap
    second counts as :59, with ``leap`` set so the "second" part still reads "60")."""

    utc: int
    zone: int  # minutes east of UTC
    leap: bool = False


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """The (year, month, day) of a day number from ``days_from_civil``."""
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_zone(text: str) -> int | None:
    """A "+hhmm"/"-hhmm" zone as minutes east of UTC; None when malformed (minutes past 59,
    or a whole day or more)."""
    if not _ZONE.match(text):
        return None
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 23 or minutes > 59:
        return None
    offset = hours * 60 + minutes
    return -offset if text[0] == "-" else offset


def parse_date(value: str) -> Moment | None:
    """The date-time of a header field in its own zone; None when it is not a valid one
    (RFC 5260 section 4: then the test is false). For a field like Received: the date is
    what follows the last ";" (RFC 5322 section 3.6.7)."""
    if ";" in value:
        value = value.rpartition(";")[2]
    value = value.strip()
    if not value or len(value) > MAX_DATE_LENGTH:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
    except (ValueError, IndexError, TypeError, OverflowError):
        return None
    if parsed is None:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    offset = parsed[9] or 0  # no zone, or "-0000": the time is UTC (RFC 5322 section 3.3)
    # RFC 5260 section 4: a date-time the calendar does not have (January 32nd) is false.
    if not (0 <= year <= 9999 and 1 <= month <= 12 and 0 <= hour <= 23 and 0 <= minute <= 59
            and 0 <= second <= 60 and offset % 60 == 0 and abs(offset) < _DAY):
        return None
    if not 1 <= day <= _days_in_month(year, month):
        return None
    local = days_from_civil(year, month, day) * _DAY + hour * 3600 + minute * 60
    return Moment(local + min(second, 59) - offset, offset // 60, second == 60)


def from_timestamp(now: float, zone: int = 0) -> Moment | None:
    """The instant ``now`` (seconds since the epoch) shown in ``zone``."""
    if not math.isfinite(now):
        return None
    return Moment(math.floor(now), zone)


def in_zone(moment: Moment, zone: int) -> Moment:
    """The same instant shown in another zone (minutes east of UTC)."""
    return Moment(moment.utc, zone, moment.leap)


def _zone_text(zone: int, colon: bool = False) -> str:
    # RFC 5260 section 4.2 "zone": "+hhmm" / "-hhmm"; an offset of zero is "+0000".
    sign = "-" if zone < 0 else "+"
    hours, minutes = divmod(abs(zone), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"


def date_part(moment: Moment, part: str) -> str | None:
    """One RFC 5260 section 4.2 date part (``part`` lower-case) of ``moment`` in its zone;
    None for a year outside 0000-9999, which the parts cannot express."""
    days, secs = divmod(moment.utc + moment.zone * 60, _DAY)
    year, month, day = civil_from_days(days)
    if not 0 <= year <= 9999:
        return None
    hour, rest = divmod(secs, 3600)
    minute, second = divmod(rest, 60)
    if moment.leap:
        second = 60
    date = f"{year:04d}-{month:02d}-{day:02d}"
    time = f"{hour:02d}:{minute:02d}:{second:02d}"
    weekday = (days + _EPOCH_WEEKDAY) % 7  # 0 is Sunday
    if part == "year":
        return f"{year:04d}"
    if part == "month":
        return f"{month:02d}"
    if part == "day":
        return f"{day:02d}"
    if part == "date":
        return date
    if part == "julian":
        # Days since 1858-11-17 of the date in this zone (the Julian Day minus 2400000.5).
        return str(days + _MJD_EPOCH)
    if part == "hour":
        return f"{hour:02d}"
    if part == "minute":
        return f"{minute:02d}"
    if part == "second":
        return f"{second:02d}"
    if part == "time":
        return time
    if part == "iso8601":
        # RFC 5260 section 4.2: RFC 3339 date-time, "T" and "Z" upper case, and a zero
        # offset written "Z", not "+00:00".
        return f"{date}T{time}{'Z' if moment.zone == 0 else _zone_text(moment.zone, True)}"
    if part == "std11":
        # A Date: field value (RFC 5322 section 3.3).
        return (f"{_WEEKDAYS[weekday]}, {day:02d} {_MONTHS[month - 1]} {year:04d} {time} "
                f"{_zone_text(moment.zone)}")
    if part == "zone":
        return _zone_text(moment.zone)
    if part == "weekday":
        return str(weekday)
    return None


def extract(moment: Moment, part: str, zone: str | None) -> str | None:
    """``part`` (any case) of ``moment`` shown in ``zone`` ("+hhmm"; None: the moment's own
    zone, for :originalzone). None when the part or the zone is not one (they may come from
    variables at run time; the compiler refuses literal ones)."""
    part = part.lower()
    if part not in DATE_PARTS:
        return None
    if zone is not None:
        offset = parse_zone(zone)
        if offset is None:
            return None
        moment = in_zone(moment, offset)
    return date_part(moment, part)
