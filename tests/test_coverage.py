"""When the statistics provably cover an uncertain callback's time (dialer.outcomes.coverage): the rule on its own,
and what is learned from the rows as they are first fetched. No simulator: times are made up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dialer.db import open_database, session_scope
from dialer.outcomes.coverage import Coverage, learn_from_rows, observe, read_coverage

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def coverage(*, fetched: float | None, latest: float | None, lag: float | None = 1200.0, longest: float = 60.0,
             floor: float = 900.0) -> Coverage:
    return Coverage(fetched_until=None if fetched is None else at(fetched),
                    latest_call=None if latest is None else at(latest), lag_s=lag, longest_call_s=longest,
                    floor_s=floor)


def test_the_wall_clock_alone_never_declares_a_callback_not_placed() -> None:
    # A day later, but no row has ever been seen: the lag is unknown, nothing is proven.
    assert not coverage(fetched=86_400, latest=None, lag=None).covers(at(0), later_call_pending=False)
    # Rows seen and the grace long past, but no complete fetch of the statistics since.
    assert not coverage(fetched=None, latest=3600).covers(at(0), later_call_pending=False)


def test_a_later_call_in_the_statistics_plus_the_learned_margin_covers_it() -> None:
    cov = coverage(fetched=0, latest=30)  # margin = lag 1200 + longest call 60 = 1260 s (over the 900 s floor)
    assert cov.margin_s == 1260
    assert not cov.covers(at(0), later_call_pending=True)
    assert not coverage(fetched=1259, latest=30).covers(at(0), later_call_pending=True)
    assert coverage(fetched=1260, latest=30).covers(at(0), later_call_pending=True)


def test_without_a_later_call_in_the_statistics_the_margin_alone_is_not_enough() -> None:
    # The last call seen started before the callback: the statistics have not moved past it yet.
    assert not coverage(fetched=5000, latest=-10).covers(at(0), later_call_pending=True)


def test_a_campaigns_last_call_waits_twice_the_margin() -> None:
    # Nothing was placed after it, so no later row can ever come: twice the learned margin at a complete fetch.
    assert not coverage(fetched=2519, latest=-10).covers(at(0), later_call_pending=False)
    assert coverage(fetched=2520, latest=-10).covers(at(0), later_call_pending=False)


def test_grace_is_a_lower_bound_only() -> None:
    quick = coverage(fetched=0, latest=5, lag=2.0, longest=3.0, floor=900.0)
    assert quick.margin_s == 900
    assert not coverage(fetched=899, latest=5, lag=2.0, longest=3.0).covers(at(0), later_call_pending=True)
    assert coverage(fetched=900, latest=5, lag=2.0, longest=3.0).covers(at(0), later_call_pending=True)


def test_observe_reads_the_lag_the_longest_call_and_the_latest_customer_leg() -> None:
    fetched = at(1300)
    rows = [
        (at(0), 0, "out_a"),  # unanswered: its end is its start, so the ring counts into the lag: 1300 s
        (at(10), 60, "out_b"),  # answered, 60 s: ended at 70, fetched 1230 s later
        (at(20), 60, "in_b"),  # a PBX leg: not a call placed by us, so not the latest customer leg
        (None, 5, "out_c"),  # unreadable start: ignored
    ]
    lag, longest, latest = observe(rows, fetched, 1.0)
    assert (lag, longest, latest) == (1300.0, 60.0, at(10))
    # A sped-up world gives seconds in its own time: 60 world seconds at 60x is one wall second.
    lag, longest, _ = observe(rows[1:2], fetched, 60.0)
    assert (lag, longest) == (1289.0, 1.0)
    assert observe([], fetched, 1.0) == (None, 0.0, None)


def test_what_is_learned_is_kept_per_hour_for_a_day(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'dialer.db'}")
    try:
        with session_scope(db) as s:
            learn_from_rows(s, [{"callstart": at(0), "seconds": 0, "pbx_call_id": "out_a"}], at(1200), 1.0)
            learn_from_rows(s, [{"callstart": at(3600), "seconds": 30, "pbx_call_id": "out_b"}], at(3640), 1.0)
        with session_scope(db, write=False) as s:
            cov = read_coverage(s, at(3640), 60.0, at(3640))
            assert (cov.lag_s, cov.longest_call_s, cov.latest_call) == (1200.0, 30.0, at(3600))
            # A day later the 20-minute hour has aged out; the latest call seen stays.
            later = read_coverage(s, at(3640), 60.0, at(3600 + 86_400 + 1))
            assert (later.lag_s, later.latest_call) == (10.0, at(3600))
    finally:
        db.dispose()
