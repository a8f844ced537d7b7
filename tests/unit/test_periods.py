"""Calendar periods of quotas and budgets: labels, bounds, time zones."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from llmgw.limits.periods import Calendar, calendar_for, window_at

BERLIN = ZoneInfo("Europe/Berlin")


def ts(text: str, zone: ZoneInfo | None = None) -> float:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone or UTC)
    return moment.timestamp()


def test_day_window_utc() -> None:
    window = window_at("day", ts("2026-12-31T23:59:59"))

    assert window.label == "2026-12-31"
    assert window.starts_at == ts("2026-12-31T00:00:00")
    assert window.ends_at == ts("2027-01-01T00:00:00")


def test_month_window_rolls_year() -> None:
    window = window_at("month", ts("2026-12-15T12:00:00"))

    assert window.label == "2026-12"
    assert window.ends_at == ts("2027-01-01T00:00:00")


def test_month_window_february_leap_year() -> None:
    window = window_at("month", ts("2028-02-29T10:00:00"))

    assert window.label == "2028-02"
    assert window.starts_at == ts("2028-02-01T00:00:00")
    assert window.ends_at == ts("2028-03-01T00:00:00")


@pytest.mark.parametrize(
    ("moment", "label", "monday"),
    [
        pytest.param("2026-12-06T23:00:00", "2026-W49", "2026-11-30", id="sunday"),
        pytest.param("2026-12-07T00:00:00", "2026-W50", "2026-12-07", id="monday"),
        pytest.param("2027-01-01T12:00:00", "2026-W53", "2026-12-28", id="iso-year"),
    ],
)
def test_week_starts_monday(moment: str, label: str, monday: str) -> None:
    window = window_at("week", ts(moment))

    assert window.label == label
    assert window.starts_at == ts(f"{monday}T00:00:00")
    assert window.ends_at - window.starts_at == 7 * 86_400


def test_day_window_in_time_zone() -> None:
    # 23:30 UTC on 31 March is already 1 April in Berlin (UTC+2 in summer).
    window = window_at("day", ts("2026-03-31T23:30:00"), BERLIN)

    assert window.label == "2026-04-01"
    assert window.starts_at == ts("2026-04-01T00:00:00", BERLIN)
    assert window.ends_at == ts("2026-04-02T00:00:00", BERLIN)


def test_day_window_across_dst_change() -> None:
    # Berlin moves its clocks forward on 29 March 2026: that day has 23 hours.
    window = window_at("day", ts("2026-03-29T12:00:00", BERLIN), BERLIN)

    assert window.ends_at - window.starts_at == 23 * 3600


def test_invalid_period_rejected() -> None:
    with pytest.raises(ValueError, match="invalid period 'year'"):
        window_at("year", 0.0)  # type: ignore[arg-type]


def test_calendar_caches_until_period_ends() -> None:
    now = [ts("2026-12-31T23:59:59")]
    calendar = Calendar(UTC, clock=lambda: now[0])

    first = calendar.window("day")
    again = calendar.window("day")
    now[0] += 1
    next_day = calendar.window("day")

    assert again is first
    assert first.label == "2026-12-31"
    assert next_day.label == "2027-01-01"
    assert calendar.window("month").label == "2027-01"


def test_calendar_for_shares_one_per_zone() -> None:
    berlin = calendar_for("Europe/Berlin")

    assert calendar_for("Europe/Berlin") is berlin
    assert berlin.timezone == BERLIN
    assert calendar_for("UTC") is not berlin
