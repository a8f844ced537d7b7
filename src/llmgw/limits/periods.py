"""Calendar periods for token quotas and budgets: day, week and month.

A period starts at local midnight in the configured time zone (weeks on
Monday, months on the 1st) and its label names it: ``2026-12-01`` for a day,
``2026-W49`` for an ISO week, ``2026-12`` for a month. The label goes into
the Redis key of the counter, so a new period starts from an empty counter
and no reset job is needed.

The period is picked from this process's clock, not from Redis TIME, because
Lua in Redis has no time zone database. A worker whose clock is off by a few
seconds counts a request made at midnight into the neighbouring period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from llmgw.limits.spec import Period


@dataclass(frozen=True)
class Window:
    """One calendar period: its label and its bounds in Unix seconds."""

    period: Period
    label: str
    starts_at: float
    ends_at: float


def _local_midnight(day: date, timezone: tzinfo) -> float:
    # zoneinfo resolves a midnight that a DST change skips or repeats to
    # one instant, so consecutive periods never overlap.
    return datetime(day.year, day.month, day.day, tzinfo=timezone).timestamp()


def window_at(period: Period, now: float, timezone: tzinfo = UTC) -> Window:
    """Return the period of kind ``period`` that contains Unix time ``now``."""
    today = datetime.fromtimestamp(now, timezone).date()
    if period == "day":
        first, following = today, today + timedelta(days=1)
        label = today.isoformat()
    elif period == "week":
        first = today - timedelta(days=today.weekday())
        following = first + timedelta(days=7)
        iso_year, iso_week, _ = today.isocalendar()
        label = f"{iso_year}-W{iso_week:02d}"
    elif period == "month":
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        label = f"{today.year}-{today.month:02d}"
    else:
        raise ValueError(
            f"invalid period {period!r}: expected 'day', 'week' or 'month'"
        )
    starts_at = _local_midnight(first, timezone)
    ends_at = _local_midnight(following, timezone)
    return Window(period=period, label=label, starts_at=starts_at, ends_at=ends_at)


class Calendar:
    """The current period of each kind in one time zone, cached until it ends.

    ``clock`` returns Unix time in seconds; tests inject a fake one.
    """

    def __init__(
        self, timezone: tzinfo = UTC, clock: Callable[[], float] = time.time
    ) -> None:
        self.timezone = timezone
        self.clock = clock
        self._current: dict[Period, Window] = {}

    def now(self) -> float:
        return self.clock()

    def window(self, period: Period, now: float | None = None) -> Window:
        """Return the period of kind ``period`` at ``now`` (default: the clock)."""
        if now is None:
            now = self.clock()
        cached = self._current.get(period)
        if cached is not None and cached.starts_at <= now < cached.ends_at:
            return cached
        window = window_at(period, now, self.timezone)
        self._current[period] = window
        return window


@lru_cache(maxsize=16)
def calendar_for(timezone: str) -> Calendar:
    """Return the shared calendar of an IANA time zone name such as "UTC".

    Raises ``zoneinfo.ZoneInfoNotFoundError`` for an unknown name.
    """
    return Calendar(ZoneInfo(timezone))
