"""Opening hours, holidays and the time of day (flow format 2: `timezone:`, `hours:`, `now`).

An author writes the hours the way a shop door shows them:

    timezone: Europe/London
    hours:
      office:
        monday to friday: 08:00-18:00
        saturday: [09:00-12:30]
        sunday: closed
        closed: [public holidays, 2026-12-24]

`parse_schedule` turns one schedule into a `Schedule` (or raises `HoursError` with one plain
sentence, which the validator reports at the right line); `Schedule.is_open(when)` answers for
a moment in the flow's time zone. `Now` is what templates and conditions see as `now`: a small
record (`now.time`, `now.weekday`...) rather than a Python datetime, whose methods expressions
cannot call. Public holidays come from the `holidays` package (the country of the flow's
`language`, or a region written after `public holidays in`).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_GROUPS = {"weekdays": (0, 1, 2, 3, 4), "weekends": (5, 6), "every day": tuple(range(7)),
           "daily": tuple(range(7))}
_RANGE = re.compile(r"^\s*(\d{1,2})[:.](\d{2})\s*[-–]\s*(\d{1,2})[:.](\d{2})\s*$")
_HOLIDAYS = re.compile(r"^\s*public holidays(?:\s+in\s+(?P<region>[A-Za-z]{2}(?:-[A-Za-z0-9]+)?))?"
                       r"\s*$", re.IGNORECASE)


class HoursError(ValueError):
    """A schedule that cannot be read: one plain sentence, and the key it is about."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class Schedule:
    #: for each weekday (Monday first), the opening times as (from, to) minutes after midnight
    days: tuple[tuple[tuple[int, int], ...], ...]
    closed_on: frozenset[_dt.date]
    #: regions whose public holidays close this schedule: ("GB", "ENG"), ("GB", "SCT")...
    holidays: tuple[tuple[str, str | None], ...]

    def is_open(self, when: _dt.datetime) -> bool:
        """Open at `when` (a time already in the flow's zone)?"""
        day = when.date()
        if day in self.closed_on or any(_is_holiday(day, c, r) for c, r in self.holidays):
            return False
        minute = when.hour * 60 + when.minute
        return any(start <= minute < end for start, end in self.days[when.weekday()])


def day_keys(key: str) -> tuple[int, ...]:
    """`monday` -> (0,), `monday to friday` -> (0..4), `weekends` -> (5, 6)."""
    k = " ".join(str(key).lower().replace("-", " to ").split())
    if k in _GROUPS:
        return _GROUPS[k]
    if k in DAYS:
        return (DAYS.index(k),)
    m = re.fullmatch(r"(\w+) (?:to|until|till) (\w+)", k)
    if m and m.group(1) in DAYS and m.group(2) in DAYS:
        a, b = DAYS.index(m.group(1)), DAYS.index(m.group(2))
        return tuple(range(a, b + 1)) if a <= b else (*range(a, 7), *range(0, b + 1))
    raise HoursError(f"`{key}` is not a day: write a day name (`monday`), a range "
                     "(`monday to friday`), `weekdays`, `weekends` or `every day`", str(key))


def _times(key: str, value: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(value, str) and value.strip().lower() == "closed":
        return ()
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        m = _RANGE.match(str(item))
        if not m:
            raise HoursError(f"`{item}` under `{key}` is not opening times: write them like "
                             "`08:00-18:00`", key)
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or end > 24 * 60:
            raise HoursError(f"`{item}` under `{key}` is not a time of day", key)
        if end <= start:
            raise HoursError(f"`{item}` under `{key}` closes before it opens; a schedule "
                             "cannot run past midnight, so split it over two days", key)
        out.append((start, end))
    return tuple(out)


def parse_schedule(raw: Mapping[str, Any], country: str = "GB") -> Schedule:
    """One schedule from YAML. `country`: whose public holidays `public holidays` means."""
    days: list[tuple[tuple[int, int], ...]] = [() for _ in range(7)]
    closed: set[_dt.date] = set()
    regions: list[tuple[str, str | None]] = []
    for key, value in raw.items():
        if str(key).lower() == "closed":
            for item in value if isinstance(value, list) else [value]:
                text = str(item)
                m = _HOLIDAYS.match(text)
                if m:
                    regions.append(_region(m.group("region"), country))
                    continue
                try:
                    closed.add(_dt.date.fromisoformat(text.strip()))
                except ValueError:
                    raise HoursError(f"`{text}` under `closed` is not a date: write dates "
                                     "like `2026-12-24`, or `public holidays`", "closed") from None
            continue
        for d in day_keys(str(key)):
            days[d] = (*days[d], *_times(str(key), value))
    return Schedule(tuple(days), frozenset(closed), tuple(regions))


def _region(code: str | None, country: str) -> tuple[str, str | None]:
    if not code:
        return (country.upper(), "ENG" if country.upper() in ("GB", "UK") else None)
    country_code, _, sub = code.upper().partition("-")
    if country_code == "UK":
        country_code = "GB"
    from holidays.utils import list_supported_countries

    supported = list_supported_countries()
    if country_code not in supported:
        raise HoursError(f"there is no list of public holidays for `{code}`", "closed")
    if sub and sub not in supported[country_code]:
        raise HoursError(f"`{code}` is not a region of {country_code} with its own public "
                         f"holidays (they are {', '.join(supported[country_code])})", "closed")
    return (country_code, sub or None)


@lru_cache(maxsize=64)
def _calendar(country: str, region: str | None, year: int) -> frozenset[_dt.date]:
    import holidays

    return frozenset(holidays.country_holidays(country, subdiv=region, years=year))


def _is_holiday(day: _dt.date, country: str, region: str | None) -> bool:
    return day in _calendar(country, region, day.year)


def zone(name: str | None) -> _dt.tzinfo:
    """The flow's time zone (UTC when it names none). Raises HoursError for an unknown name."""
    if not name:
        return _dt.UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise HoursError(f"`{name}` is not a time zone: use a name like `Europe/London` or "
                         "`America/New_York`") from None


class Now(Mapping[str, Any]):
    """`now` in format 2: the moment of the call in the flow's time zone, as a record.

    `now.date` "2026-03-02", `now.time` "10:00", `now.hour` 10, `now.minute` 0,
    `now.weekday` "monday", `now.day`, `now.month`, `now.year`. Printed, it is
    "2026-03-02 10:00"."""

    __slots__ = ("_at", "_fields")

    def __init__(self, at: _dt.datetime) -> None:
        self._at = at
        self._fields = {
            "date": at.date().isoformat(), "time": f"{at.hour:02d}:{at.minute:02d}",
            "hour": at.hour, "minute": at.minute, "weekday": DAYS[at.weekday()],
            "day": at.day, "month": at.month, "year": at.year,
        }

    @property
    def moment(self) -> _dt.datetime:
        return self._at

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __str__(self) -> str:
        return f"{self._fields['date']} {self._fields['time']}"

    def __repr__(self) -> str:
        return f"Now({self})"


class OpenNow(Mapping[str, bool]):
    """`hours` in format 2: `hours.office` is true while the `office` schedule is open.
    Worked out only for the schedules a condition reads."""

    __slots__ = ("_at", "_schedules")

    def __init__(self, schedules: Mapping[str, Schedule], at: _dt.datetime) -> None:
        self._schedules = schedules
        self._at = at

    def __getitem__(self, key: str) -> bool:
        return self._schedules[key].is_open(self._at)

    def __iter__(self) -> Iterator[str]:
        return iter(self._schedules)

    def __len__(self) -> int:
        return len(self._schedules)
