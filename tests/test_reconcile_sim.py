"""Reconciliation against the simulator (in-process, time-scaled, real HTTP) over a real SQLite file, with calls
placed by the real engine: idempotency, a row 10 minutes late, the statistics budget over a 30-minute run, and
uncertain attempts. Times: at time scale 60 one simulated minute lasts one wall second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import Session, select

from dialer.db import open_database, session_scope
from dialer.dialing.engine import Engine
from dialer.ingest import campaigns
from dialer.models import Attempt, Campaign, Contact, EventLog, KeyValue, StatRow, utcnow
from dialer.outcomes.reconcile import WATERMARK_KEY, ReconcileConfig, Reconciler
from dialer.sim.harness import RunningSimulator, run_simulator
from dialer.sim.scenario import Scenario
from dialer.zadarma.budget import RateBudget
from dialer.zadarma.client import Timeouts, ZadarmaClient
from dialer.zadarma.signing import authorization_header, params_string
from tests.conftest import KEY, PBX_NUMBER, SECRET, small_world

PBX = PBX_NUMBER
SCALE = 60.0
WINDOW_S = 60.0 / SCALE  # the statistics limit's window, in wall seconds


def _scenario(**overrides: Any) -> Scenario:
    return small_world(seed=11, agents=3, **overrides)


@dataclass
class World:
    sim: RunningSimulator
    db: DbEngine
    client: ZadarmaClient
    engine: Engine
    campaign_id: int
    phones: list[str]

    def campaign(self) -> Campaign:
        with session_scope(self.db, write=False) as s:
            c = s.get(Campaign, self.campaign_id)
            assert c is not None
            return c

    def place(self, n: int) -> list[str]:
        """Claim and place up to ``n`` callbacks through the engine; returns the attempts' end states."""
        campaign = self.campaign()
        return [self.engine.place(campaign, a) for a in self.engine.claim(campaign, n)]

    def attempts(self) -> list[Attempt]:
        with Session(self.db) as s:
            return list(s.exec(select(Attempt).order_by(Attempt.id)).all())  # type: ignore[arg-type]

    def truth(self) -> dict[str, dict[str, Any]]:
        return {"+" + c["to"].lstrip("+"): c for c in self.sim.calls()}


@contextmanager
def world(tmp_path: Path, scenario: Scenario, *, contacts: int, faults: dict[str, float] | None = None,
          read_timeout: float = 5.0) -> Iterator[World]:
    db = open_database(f"sqlite:///{tmp_path / 'dialer.db'}")
    phones = [f"+44207946{i:04d}" for i in range(contacts)]
    with session_scope(db) as s:
        c = campaigns.create_campaign(
            s, "rec", PBX, agents=3, agent_extensions="100,101,102", max_attempts=3, window="00:00-23:59",
            weekdays=list(range(7)), timezone="Europe/London", retry_busy_s="1h", retry_no_answer_s="1h",
            retry_failed_s="1h", retry_abandoned_s="1h",
        )
        c.state = "running"
        cid = c.id or 0
        for phone in phones:
            s.add(Contact(campaign_id=cid, phone=phone))
    with run_simulator(scenario, key=KEY, secret=SECRET, time_scale=SCALE, faults=faults) as sim:
        # The sped-up world's rate-limit window, as the budget would learn it from the headers.
        client = ZadarmaClient(KEY, SECRET, base_url=sim.url, timeouts=Timeouts(read=read_timeout),
                               budget=RateBudget(window_s=WINDOW_S))
        engine = Engine(db, client)
        try:
            yield World(sim, db, client, engine, cid, phones)
        finally:
            engine.close(timeout=1.0)
            client.close()
            db.dispose()


def _reconciler(w: World, **config: Any) -> Reconciler:
    # The world's durations are SCALE times its wall seconds, as `dialer run --time-scale` tells the daemon.
    cfg = {"overlap_s": 5.0, "uncertain_grace_s": 300 / SCALE, "pbx_leg_grace_s": 5.0, "time_scale": SCALE, **config}
    return Reconciler(w.db, w.client, config=ReconcileConfig(**cfg))


def _reconcile_until(rec: Reconciler, done: Any, timeout: float = 120, every: float = 0.5) -> None:
    """Reconcile every ``every`` seconds, as the daemon does, until ``done()``; ``timeout`` only bounds a hang."""
    deadline = time.monotonic() + timeout
    while True:
        rec.run_once()
        if done():
            return
        assert time.monotonic() < deadline, "reconciliation did not settle in time"
        time.sleep(every)


def _snapshot(db: DbEngine) -> dict[str, list[tuple[Any, ...]]]:
    with db.connect() as conn:
        return {t: [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY id")]
                for t in ("attempt", "contact", "stat_row")}


def _watermark(db: DbEngine) -> datetime | None:
    with Session(db) as s:
        kv = s.get(KeyValue, WATERMARK_KEY)
        return datetime.fromisoformat(kv.value) if kv is not None else None


def test_reconciling_twice_changes_nothing(tmp_path: Path) -> None:
    with world(tmp_path, _scenario(), contacts=12) as w:
        assert w.place(12) == ["placed"] * 12
        w.sim.wait_calls_ended(timeout=120)
        rec = _reconciler(w)
        _reconcile_until(rec, lambda: all(a.state == "completed" for a in w.attempts()))
        # Outcomes equal the simulator's truth: the first run did the real work.
        truth = w.truth()
        for a in w.attempts():
            t = truth[a.phone]
            assert (a.answered, a.connected, a.abandoned) == (t["answered"], t["connected"], t["abandoned"]), a
        assert any(a.connected for a in w.attempts()) and any(not a.answered for a in w.attempts())

        before = _snapshot(w.db)
        again = rec.run_once()
        assert not again.errors and not again.incomplete
        assert (again.rows_new, again.matched, again.completed, again.not_placed) == (0, 0, 0, 0)
        rec.match(utcnow())
        assert _snapshot(w.db) == before
        # A second reconciler (the CLI next to the daemon) reading the same rows changes nothing either.
        _reconciler(w).run_once(since=utcnow() - timedelta(minutes=5))
        assert _snapshot(w.db) == before


@pytest.mark.slow  # waits for ten simulated minutes of statistics lag (~12 s of wall time)
def test_a_statistics_row_ten_minutes_late_is_still_matched(tmp_path: Path) -> None:
    scenario = _scenario(statistics={"lag_s": 600}, calls={"answer_probability": 1.0, "p_busy": 0.0,
                                                             "p_failed": 0.0})
    with world(tmp_path, scenario, contacts=2) as w:
        assert w.place(2) == ["placed", "placed"]
        rec = _reconciler(w, overlap_s=1.0)  # far smaller than the lag: the overlap alone would miss the rows
        watermark_before_rows: datetime | None = None
        deadline = time.monotonic() + 120  # the rows are due ~10 s after the calls; this only bounds a hang
        while not all(a.state == "completed" for a in w.attempts()):
            assert time.monotonic() < deadline, "the late rows were never matched"
            mark = _watermark(w.db)
            result = rec.run_once()
            assert not result.errors
            if result.rows_new and watermark_before_rows is None:
                watermark_before_rows = mark
            time.sleep(0.5)
        truth = w.truth()
        assert watermark_before_rows is not None
        with Session(w.db) as s:
            legs = {r.attempt_id: r for r in s.exec(select(StatRow).where(StatRow.source == "pbx")).all()
                    if (r.pbx_call_id or "").startswith("out_")}
        for a in w.attempts():
            t = truth[a.phone]
            assert (a.answered, a.connected) == (t["answered"], t["connected"])
            leg = legs[a.id]
            assert leg.callstart is not None
            # The row is dated when the call started, ~10 wall seconds before it appeared: far behind the
            # watermark the earlier runs had reached (and the 1 s overlap).
            assert (watermark_before_rows - leg.callstart).total_seconds() > 5.0


@pytest.mark.slow  # thirty simulated minutes are thirty wall seconds at least: a soak, not a quick check
def test_thirty_minutes_of_reconciling_keep_to_three_statistics_calls_a_minute(tmp_path: Path) -> None:
    with world(tmp_path, _scenario(), contacts=150) as w:
        # Small pages: every run wants several, so the budget, not the data, limits the statistics calls.
        rec = _reconciler(w, page_limit=10)
        started = time.monotonic()
        placed = 0

        def statistics_calls() -> int:
            return len(w.sim.requests("/v1/statistics/"))

        # At least 30 simulated minutes, 100 calls placed and 30 statistics calls made: a busy machine takes
        # longer to get there, never less far.
        while time.monotonic() - started < 30 * 60 / SCALE or placed < 100 or statistics_calls() < 30:
            assert time.monotonic() - started < 600, f"{placed} calls, {statistics_calls()} statistics calls in 600 s"
            placed += len(w.place(2))
            rec.run_once()  # as the daemon does: never waits for the budget, fetches the rest next run
            time.sleep(0.5)
        assert placed >= 100
        # And it keeps up: once dialling stops, the last calls are reconciled.
        _reconcile_until(rec, lambda: all(a.state == "completed" for a in w.attempts()))
        truth = w.truth()
        assert sum(bool(a.connected) for a in w.attempts()) == sum(bool(t["connected"]) for t in truth.values())
        stats_calls = w.sim.requests("/v1/statistics/")
        stats = w.sim.stats()

    times = sorted(r["at"] for r in stats_calls if r["key"] == KEY)
    assert len(times) >= 30, "reconciliation hardly used the statistics budget: the check would prove nothing"
    # Any window of one (scaled) minute, not only the server's fixed windows, holds at most 3 calls.
    tightest = min(b - a for a, b in zip(times, times[3:], strict=False))
    assert tightest >= WINDOW_S, f"4 statistics calls within {tightest:.3f} s"
    assert all(r["status"] == 200 for r in stats_calls)
    assert stats["rate_limited_total"] == 0
    assert {r["path"] for r in stats_calls} == {"/v1/statistics/pbx/", "/v1/statistics/"}


def test_uncertain_attempts_are_completed_or_given_back(tmp_path: Path) -> None:
    scenario = _scenario(calls={"answer_probability": 1.0, "p_busy": 0.0, "p_failed": 0.0})
    grace = 300 / SCALE
    # Zadarma places the call but its answer never arrives: the engine cannot know whether it rang.
    with world(tmp_path, scenario, contacts=2, faults={"timeout_after_processing": 1.0}, read_timeout=0.5) as w:
        assert w.place(1) == ["uncertain"]
        # And an attempt whose request never reached Zadarma (a crash between claiming and sending).
        never = "+442079469999"
        with session_scope(w.db) as s:
            contact = Contact(campaign_id=w.campaign_id, phone=never, state="dialing", attempts=1)
            s.add(contact)
            s.flush()
            sent = utcnow() - timedelta(seconds=2)  # statistics date calls to the second
            s.add(Attempt(campaign_id=w.campaign_id, contact_id=contact.id or 0, phone=never, state="uncertain",
                          created_at=sent, sent_at=sent, error="daemon stopped before the outcome was known"))
        # A call placed after it: only once its row is in the statistics do they cover the lost callback's time.
        assert w.place(1) == ["uncertain"]
        rec = _reconciler(w)
        states: list[dict[str, str]] = []

        def settled() -> bool:
            states.append({a.phone: a.state for a in w.attempts()})
            return "uncertain" not in states[-1].values()

        _reconcile_until(rec, settled, every=0.25)
        truth = w.truth()

    attempts = {a.phone: a for a in w.attempts()}
    real = attempts[w.phones[0]]
    t = truth[w.phones[0]]
    assert t["responded"] is False  # the simulator really withheld the answer
    assert real.state == "completed"
    assert (real.disposition, real.answered, real.connected, real.agent) == (
        "answered", t["answered"], t["connected"], t["agent"])
    assert real.pbx_call_id == t["pbx_call_id"]

    later = attempts[w.phones[1]]
    assert later.state == "completed" and truth[w.phones[1]]["responded"] is False

    gone = attempts[never]
    assert gone.state == "not_placed" and gone.finished_at is not None and gone.sent_at is not None
    # Not before the grace period, and not before the statistics listed the later call.
    assert (gone.finished_at - gone.sent_at).total_seconds() >= grace
    with Session(w.db) as s:
        later_leg = s.exec(select(StatRow).where(StatRow.attempt_id == later.id,
                                                 StatRow.pbx_call_id == truth[w.phones[1]]["pbx_call_id"])).one()
        assert later_leg.callstart is not None and later_leg.callstart > gone.sent_at
        assert later_leg.fetched_at <= gone.finished_at
    with Session(w.db) as s:
        contact = s.exec(select(Contact).where(Contact.phone == never)).one()
        assert contact.state == "pending" and contact.attempts == 0
        assert contact.next_attempt_at is not None and contact.next_attempt_at <= utcnow()
        due = campaigns.next_due_contacts(s, w.campaign_id, utcnow(), 10)
        assert never in {c.phone for c in due}
        assert s.exec(select(EventLog).where(EventLog.kind == "uncertain_resolved")).all()


def test_simulator_lists_every_api_request_it_received() -> None:
    def get(url: str, path: str, params: dict[str, str], secret: str = SECRET) -> int:
        headers = {"Authorization": authorization_header(KEY, path, params, secret)}
        return httpx.get(f"{url}{path}?{params_string(params)}", headers=headers, timeout=10).status_code

    window = {"start": "2026-11-26 00:00:00", "end": "2026-11-26 01:00:00"}
    # Windows are aligned to multiples of their length since the epoch: at 60 million world seconds (a million wall
    # seconds at scale 60) the four statistics calls share one window unless a boundary falls in their second.
    with run_simulator(_scenario(limits={"window_s": 60e6}), key=KEY, secret=SECRET, time_scale=SCALE) as sim:
        began = time.time()
        codes = [get(sim.url, "/v1/info/balance/", {"format": "json"}),
                 get(sim.url, "/v1/info/balance/", {"format": "json"}, secret="wrong0secret0wrong000")]
        codes += [get(sim.url, "/v1/statistics/pbx/", {**window, "version": "2"}) for _ in range(4)]
        assert codes == [200, 401, 200, 200, 200, 429]
        everything = sim.requests()
        stats_only = sim.requests("/v1/statistics/")
        later = sim.get(f"/_sim/requests?since={time.time() + 60}")
    assert [(r["path"], r["status"]) for r in everything] == [
        ("/v1/info/balance/", 200), ("/v1/info/balance/", 401), *[("/v1/statistics/pbx/", c) for c in codes[2:]]]
    assert all(r["key"] == KEY and r["method"] == "GET" for r in everything)
    times = [r["at"] for r in everything]
    assert times == sorted(times) and began <= times[0] <= times[-1] <= time.time()
    assert stats_only == everything[2:]
    assert later == []
