"""Calling windows with a frozen clock: several zones per number, weekends, holidays and DST changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dialer.ingest.phones import callable_now, ever_callable, next_window_start, normalize_one

LONDON = ("Europe/London",)
NY_LA = ("America/New_York", "America/Los_Angeles")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 3, 27, 8, 59), False),  # Friday, GMT: 08:59 local
        (utc(2026, 3, 27, 9, 0), True),
        (utc(2026, 3, 27, 19, 59), True),
        (utc(2026, 3, 27, 20, 0), False),  # the end is exclusive
        (utc(2026, 3, 30, 8, 0), True),  # Monday after the clocks went forward: 09:00 BST
        (utc(2026, 3, 30, 7, 59), False),
        (utc(2026, 3, 30, 19, 0), False),  # 20:00 BST
        (utc(2026, 3, 28, 12, 0), False),  # Saturday
    ],
)
def test_london_across_the_spring_dst_change(now: datetime, expected: bool) -> None:
    assert callable_now(LONDON, now, "09:00", "20:00") is expected


def test_every_zone_of_the_number_must_be_inside_the_window() -> None:
    # New York and Los Angeles: only when it is 09:00-20:00 in both.
    assert not callable_now(NY_LA, utc(2026, 3, 6, 16, 59), "09:00", "20:00")  # LA 08:59 PST
    assert callable_now(NY_LA, utc(2026, 3, 6, 17, 0), "09:00", "20:00")
    assert callable_now(NY_LA, utc(2026, 3, 7, 0, 59), "09:00", "20:00")  # NY Fri 19:59
    assert not callable_now(NY_LA, utc(2026, 3, 7, 1, 0), "09:00", "20:00")  # NY 20:00
    # After the US change to summer time (8 March 2026) the same local 09:00 in LA is an hour earlier in UTC.
    assert callable_now(NY_LA, utc(2026, 3, 9, 16, 0), "09:00", "20:00")
    assert not callable_now(NY_LA, utc(2026, 3, 9, 15, 59), "09:00", "20:00")


def test_a_russian_mobile_spanning_eleven_zones() -> None:
    res = normalize_one("+7 912 345 67 89", "RU")
    assert res.e164 == "+79123456789"
    zones = res.timezones
    assert "Europe/Moscow" in zones and "Asia/Kamchatka" in zones and len(zones) > 5
    # The number's zones run from UTC+2 (Bucharest in winter) to UTC+12 (Kamchatka, Anadyr): 09:00-20:00 in all
    # of them is 07:00-08:00 UTC.
    assert not callable_now(zones, utc(2026, 11, 26, 6, 59), "09:00", "20:00")
    assert callable_now(zones, utc(2026, 11, 26, 7, 0), "09:00", "20:00")
    assert callable_now(zones, utc(2026, 11, 26, 7, 59), "09:00", "20:00")
    assert not callable_now(zones, utc(2026, 11, 26, 8, 0), "09:00", "20:00")
    assert next_window_start(zones, utc(2026, 11, 26, 12, 0), "09:00", "20:00") == utc(2026, 11, 27, 7, 0)
    assert ever_callable(tuple(zones), "09:00", "20:00", (0, 1, 2, 3, 4), "UTC")
    assert not ever_callable(tuple(zones), "09:00", "18:00", (0, 1, 2, 3, 4), "UTC")


def test_weekdays_are_local_days_in_every_zone() -> None:
    zones = ("Pacific/Auckland", "Europe/London")
    # Friday 21:00 in London is already Saturday morning in Auckland.
    assert not callable_now(zones, utc(2026, 6, 5, 20, 0), "08:00", "21:30", weekdays=(0, 1, 2, 3, 4))
    assert callable_now(zones, utc(2026, 6, 5, 20, 0), "08:00", "21:30", weekdays=(0, 1, 2, 3, 4, 5))


def test_holidays_are_local_dates() -> None:
    assert not callable_now(LONDON, utc(2026, 12, 25, 12, 0), "09:00", "20:00", holidays=["2026-12-25"])
    assert callable_now(LONDON, utc(2026, 12, 24, 12, 0), "09:00", "20:00", holidays=["2026-12-25"])
    # 23:30 UTC on 24 Dec is already the 25th in Tokyo.
    assert not callable_now(
        ("Asia/Tokyo",), utc(2026, 12, 24, 23, 30), "08:00", "20:00", holidays=["2026-12-25"]
    )


def test_next_window_start_skips_the_weekend_and_follows_dst() -> None:
    # Friday 27 March 20:30 GMT -> Monday 30 March 09:00 BST, which is 08:00 UTC.
    assert next_window_start(LONDON, utc(2026, 3, 27, 20, 30), "09:00", "20:00") == utc(2026, 3, 30, 8, 0)
    # Inside the window: now.
    now = utc(2026, 3, 30, 12, 0)
    assert next_window_start(LONDON, now, "09:00", "20:00") == now
    # A Monday holiday pushes it to Tuesday.
    got = next_window_start(LONDON, utc(2026, 3, 27, 20, 30), "09:00", "20:00", holidays=["2026-03-30"])
    assert got == utc(2026, 3, 31, 8, 0)
    # Two zones: the later of the two local openings.
    assert next_window_start(NY_LA, utc(2026, 3, 9, 12, 0), "09:00", "20:00") == utc(2026, 3, 9, 16, 0)
    # Every result is really callable, and a minute earlier is not.
    for zones, start in ((LONDON, utc(2026, 10, 23, 21, 0)), (NY_LA, utc(2026, 10, 30, 3, 0))):
        t = next_window_start(zones, start, "09:00", "20:00")
        assert t is not None and callable_now(zones, t, "09:00", "20:00")
        assert not callable_now(zones, t.replace(minute=59, hour=t.hour - 1), "09:00", "20:00")


def test_windows_that_never_overlap() -> None:
    zones = ("Europe/London", "Asia/Tokyo")  # 8-9 hours apart: no common 09:00-17:00
    assert next_window_start(zones, utc(2026, 5, 4, 0, 0), "09:00", "17:00", horizon_days=14) is None
    assert not ever_callable(zones, "09:00", "17:00", (0, 1, 2, 3, 4), "UTC")


def test_unknown_zones_fall_back_to_the_campaign_zone() -> None:
    assert callable_now(
        ("Etc/Unknown",), utc(2026, 6, 1, 7, 0), "09:00", "20:00", fallback_zone="Europe/Berlin"
    )
    assert not callable_now(("Etc/Unknown",), utc(2026, 6, 1, 7, 0), "09:00", "20:00")  # UTC 07:00


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        callable_now(LONDON, datetime(2026, 6, 1, 12, 0), "09:00", "20:00")
