"""Attacks on the daemon's safety against the simulator, checked against its ground truth (``/_sim/calls``).

A wrong secret, an empty balance and a balance running out mid-campaign must burn no contact (no contact
exhausted or invalid without real calls; every contact's attempts counter equals its real calls) and pause the
campaigns with a reason that says what to do. Statistics 20 minutes late with ambiguous callbacks must ring no
number more than its attempt cap. The engine, reconciler and simulator run in this process (real HTTP, a real
SQLite file, the world sped up); one slow test runs `dialer run` and `dialer sim serve` as subprocesses.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import Session, col, select

from dialer.db import session_scope
from dialer.dialing.daemon import Daemon, DaemonConfig
from dialer.dialing.engine import Engine
from dialer.dialing.status import daemon_status
from dialer.ingest import campaigns
from dialer.kv import get_value
from dialer.models import Attempt, Campaign, Contact, EventLog
from dialer.outcomes.reconcile import ReconcileConfig, Reconciler
from dialer.outcomes.refusals import NO_MONEY_KEY
from dialer.outcomes.states import LOW_BALANCE, AttemptState, CampaignState, ContactState
from dialer.settings import Settings
from dialer.sim.harness import RunningSimulator
from dialer.sim.scenario import Scenario
from dialer.zadarma.budget import RateBudget
from dialer.zadarma.client import Timeouts, ZadarmaClient
from tests.conftest import KEY, PBX_NUMBER, SECRET, small_world, wait_for

WRONG_SECRET = "wrong0secret0wrong00"
CALLBACK = "/v1/request/callback/"


def _scenario(**overrides: Any) -> Scenario:
    return small_world(seed=13, agents=8, **overrides)


@dataclass
class World:
    sim: RunningSimulator
    db: DbEngine
    engine: Engine
    reconciler: Reconciler
    max_attempts: int

    def drive(self, until: Callable[[], Any], timeout: float, what: str) -> Any:
        """Tick every running campaign and reconcile, as the daemon does, until ``until()`` holds."""
        last = [0.0]

        def step() -> Any:
            for cid in self.engine.running_campaign_ids():
                self.engine.tick(cid)
            if time.monotonic() - last[0] > 0.2:
                self.reconciler.run_once()
                last[0] = time.monotonic()
            return until()

        return wait_for(step, timeout, what=what)

    def campaigns(self) -> list[Campaign]:
        with Session(self.db) as s:
            return list(s.exec(select(Campaign).order_by(col(Campaign.id))).all())

    def contacts(self) -> list[Contact]:
        with Session(self.db) as s:
            return list(s.exec(select(Contact)).all())

    def attempts(self) -> list[Attempt]:
        with Session(self.db) as s:
            return list(s.exec(select(Attempt).order_by(col(Attempt.id))).all())

    def all_paused(self) -> bool:
        return all(c.state == CampaignState.PAUSED for c in self.campaigns())

    def settled(self) -> bool:
        """Every contact final and no call live: what the campaign would finish on."""
        open_ = {ContactState.PENDING, ContactState.RETRY, ContactState.DIALING}
        live = {AttemptState.PLACING, AttemptState.PLACED, AttemptState.UNCERTAIN}
        return (not any(c.state in open_ for c in self.contacts())
                and not any(a.state in live for a in self.attempts()))

    def no_call_live(self) -> bool:
        live = {AttemptState.PLACING, AttemptState.PLACED, AttemptState.UNCERTAIN}
        return not any(a.state in live for a in self.attempts())


@dataclass
class Measured:
    real_calls: int
    burned: list[str]  # exhausted or invalid without the real calls that would make it so
    over_cap: list[str]  # rung more often than the attempt cap
    miscounted: list[str]  # attempts counter differs from the real calls

    def line(self, name: str) -> str:
        return (f"{name}: real calls {self.real_calls}, contacts burned {len(self.burned)}, numbers over max "
                f"attempts {len(self.over_cap)}, counters off {len(self.miscounted)}")


def measure(w: World, truth: list[dict[str, Any]]) -> Measured:
    real = Counter("+" + c["to"].lstrip("+") for c in truth)
    unallocated = {"+" + c["to"].lstrip("+") for c in truth if c.get("disposition") == "unallocated number"}
    burned, miscounted = [], []
    for c in w.contacts():
        if c.state == ContactState.EXHAUSTED and real[c.phone] < w.max_attempts:
            burned.append(c.phone)
        if c.state == ContactState.INVALID and c.phone not in unallocated:
            burned.append(c.phone)
        if c.attempts != real[c.phone]:
            miscounted.append(c.phone)
    over = [phone for phone, n in real.items() if n > w.max_attempts]
    return Measured(sum(real.values()), burned, over, miscounted)


@contextmanager
def world(db: DbEngine, start_simulator: Callable[..., RunningSimulator], scenario: Scenario, *,
          contacts: int, names: tuple[str, ...] = ("spring",), secret: str = SECRET, scale: float = 60.0,
          faults: dict[str, float] | None = None, read_timeout: float = 5.0, max_attempts: int = 3,
          retry: str = "2s", grace_s: float = 5.0) -> Iterator[World]:
    with session_scope(db) as s:
        for k, name in enumerate(names):
            c = campaigns.create_campaign(
                s, name, PBX_NUMBER, agents=8, agent_extensions=",".join(str(100 + i) for i in range(8)),
                pacing="ratio:2", max_attempts=max_attempts, window="00:00-23:59", weekdays=list(range(7)),
                timezone="Europe/London", retry_busy_s=retry, retry_no_answer_s=retry, retry_failed_s=retry,
                retry_abandoned_s=retry,
            )
            c.state = CampaignState.RUNNING
            for i in range(contacts):
                s.add(Contact(campaign_id=c.id or 0, phone=f"+4420794{k}{i:04d}"))
    sim = start_simulator(scenario, time_scale=scale, faults=faults)
    # The sped-up world's rate-limit window, as the budget would learn it from the headers.
    client = ZadarmaClient(KEY, secret, base_url=sim.url, timeouts=Timeouts(read=read_timeout),
                           budget=RateBudget(window_s=60.0 / scale))
    engine = Engine(db, client)
    reconciler = Reconciler(db, client, config=ReconcileConfig(
        overlap_s=5.0, uncertain_grace_s=grace_s, pbx_leg_grace_s=5.0, time_scale=scale))
    try:
        yield World(sim, db, engine, reconciler, max_attempts)
    finally:
        engine.close(timeout=1.0)
        client.close()


def _paused_log_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "dialer.engine" and r.getMessage().startswith("campaigns paused")]


def test_a_wrong_secret_pauses_every_campaign_and_spends_no_attempt(
    db: DbEngine, start_simulator: Callable[..., RunningSimulator], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with world(db, start_simulator, _scenario(), contacts=20, names=("spring", "autumn"),
               secret=WRONG_SECRET) as w:
        w.drive(w.all_paused, 30, "both campaigns paused")
        sent = len(w.sim.requests(CALLBACK))
        for _ in range(5):  # paused: nothing more is sent
            for cid in (c.id for c in w.campaigns()):
                w.engine.tick(cid or 0)
        assert len(w.sim.requests(CALLBACK)) == sent
        truth = w.sim.calls()
        requests = w.sim.requests(CALLBACK)
        m = measure(w, truth)
        print(m.line("wrong secret"))
        assert m.real_calls == 0 and not m.burned and not m.over_cap and not m.miscounted
        # One tick's batch was refused, every attempt given back: the contacts are as loaded.
        assert 1 <= len(requests) <= 16 and {r["status"] for r in requests} == {401}
        assert {(c.state, c.attempts) for c in w.contacts()} == {(ContactState.PENDING, 0)}
        assert {a.state for a in w.attempts()} == {AttemptState.NOT_PLACED}
        assert all("(auth)" in (a.error or "") for a in w.attempts())

        status = daemon_status(db)
        for c in status["campaigns"]:
            print(f"wrong secret: {c['name']} {c['state']}: {c['pause_reason']}")
            assert c["state"] == CampaignState.PAUSED
            assert "ZADARMA_KEY / ZADARMA_SECRET" in c["pause_reason"]
            assert f"`dialer campaign resume {c['name']}`" in c["pause_reason"]
        with Session(db) as s:
            events = s.exec(select(EventLog).where(EventLog.kind == "paused_auth")).all()
        assert sorted(e.campaign_id or 0 for e in events) == sorted(c.id or 0 for c in w.campaigns())
        assert len(_paused_log_lines(caplog)) == 1  # logged once, not once per contact or per campaign


def test_an_empty_balance_pauses_until_money_is_back(
    db: DbEngine, start_simulator: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    with world(db, start_simulator, _scenario(account={"balance": 0.0}), contacts=20) as w:
        w.drive(w.all_paused, 30, "the campaign paused")
        truth = w.sim.calls()
        m = measure(w, truth)
        reason = daemon_status(db)["campaigns"][0]["pause_reason"]
        print(m.line("empty balance"), "| reason:", reason)
        assert m.real_calls == 0 and not m.burned and not m.over_cap and not m.miscounted
        assert {(c.state, c.attempts) for c in w.contacts()} == {(ContactState.PENDING, 0)}
        assert reason.startswith(LOW_BALANCE) and "Not enough money" in reason and "top up" in reason
        assert all("(money)" in (a.error or "") for a in w.attempts())

        # The daemon's balance check: the first look after the refusal learns the balance; only a rise resumes.
        settings = Settings(zadarma_key=KEY, zadarma_secret=SECRET, zadarma_api_url=w.sim.url,
                            database_url=f"sqlite:///{tmp_path / 'dialer.db'}")
        daemon = Daemon(settings, DaemonConfig(), db=db)
        try:
            daemon.check_balance()
            assert w.all_paused()
            with Session(db) as s:
                assert get_value(s, NO_MONEY_KEY)["balance"] == 0.0
            daemon.check_balance()
            assert w.all_paused()
            w.sim._api.sim.balance = 5.0  # the operator tops up (the simulator has no API for it)
            daemon.check_balance()
            assert [c.state for c in w.campaigns()] == [CampaignState.RUNNING]
            assert w.campaigns()[0].pause_reason is None
        finally:
            daemon.engine.close(timeout=0.5)
            daemon.client.close()
        w.drive(lambda: len(w.sim.calls()) >= 5, 30, "calls once money is back")


def test_a_balance_running_out_mid_campaign_burns_nothing(
    db: DbEngine, start_simulator: Callable[..., RunningSimulator]
) -> None:
    # 0.05 USD at 0.009 a started minute: about six answered calls, then Zadarma refuses.
    scenario = _scenario(account={"balance": 0.05}, calls={"answer_probability": 0.6})
    with world(db, start_simulator, scenario, contacts=40) as w:
        w.drive(w.all_paused, 60, "the campaign paused when the money ran out")
        w.drive(w.no_call_live, 60, "the calls already placed reconciled")
        truth = w.sim.calls()
        m = measure(w, truth)
        refused = [a for a in w.attempts() if "(money)" in (a.error or "")]
        reason = w.campaigns()[0].pause_reason or ""
        print(m.line("balance runs out"), f"| refused attempts given back {len(refused)} | reason: {reason}")
        assert m.real_calls >= 6 and refused
        assert not m.burned and not m.over_cap and not m.miscounted
        assert reason.startswith(LOW_BALANCE)
        # The contacts Zadarma refused are still due, their attempts not spent.
        due = {c.phone for c in w.contacts() if c.state in (ContactState.PENDING, ContactState.RETRY)}
        assert {a.phone for a in refused} <= due


def test_only_a_refusal_about_the_number_counts_against_the_contact(
    db: DbEngine, start_simulator: Callable[..., RunningSimulator]
) -> None:
    with world(db, start_simulator, _scenario(), contacts=6) as w:
        cid = w.campaigns()[0].id or 0
        with session_scope(db) as s:
            s.add(Contact(campaign_id=cid, phone="+12"))  # Zadarma: "Check phone number"
        w.drive(lambda: len(w.sim.calls()) >= 6, 30, "the good numbers called")
        bad = next(c for c in w.contacts() if c.phone == "+12")
        assert (bad.state, bad.attempts) == (ContactState.INVALID, 1)
        assert w.campaigns()[0].state == CampaignState.RUNNING and w.campaigns()[0].pause_reason is None


@pytest.mark.slow  # twenty simulated minutes of lag are tens of wall seconds at least: a soak, not a quick check
def test_statistics_twenty_minutes_late_never_ring_a_number_over_its_cap(
    db: DbEngine, start_simulator: Callable[..., RunningSimulator]
) -> None:
    scale = 120.0  # 1230 s of statistics lag is about 10 wall seconds
    grace = 300 / scale  # far shorter than the lag: by the clock alone the ambiguous calls "never happened"
    faults = {"statistics_lag_s": 1200, "timeout_after_processing": 0.3}
    with world(db, start_simulator, _scenario(calls={"answer_probability": 0.4}), contacts=24, scale=scale,
               faults=faults, read_timeout=0.3, max_attempts=2, retry="3s", grace_s=grace) as w:
        w.drive(w.settled, 180, "every contact final and every call reconciled")
        truth = w.sim.calls()
        m = measure(w, truth)
        ambiguous = [a for a in w.attempts() if "may have been processed" in (a.error or "")]
        given_back = [a for a in w.attempts() if "did not happen" in (a.error or "")]
        print(m.line("statistics lag 1200 s"), f"| ambiguous callbacks {len(ambiguous)}, declared never placed "
              f"{len(given_back)}, truth not answered to the client {sum(not c['responded'] for c in truth)}")
        assert not m.burned and not m.over_cap and not m.miscounted
        # They really were ambiguous, and every one had really rung: each ended as the call it was.
        assert len(ambiguous) >= 3
        assert all(a.state == AttemptState.COMPLETED for a in ambiguous)
        assert not given_back
        assert sum(not c["responded"] for c in truth) == len(ambiguous)


# -- end to end ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.e2e
def test_daemon_with_statistics_lag_and_a_wrong_secret_end_to_end(tmp_path: Path) -> None:
    from tests.e2e import Stack, stack

    def check(st: Stack, max_attempts: int) -> Measured:
        truth = st.wait_truth_settled(60)
        real = Counter("+" + c["to"].lstrip("+") for c in truth)
        contacts = st.contacts()
        burned = [c.phone for c in contacts
                  if c.state in (ContactState.EXHAUSTED, ContactState.INVALID) and real[c.phone] == 0]
        burned += [c.phone for c in contacts if c.state == ContactState.EXHAUSTED and real[c.phone] < max_attempts]
        return Measured(sum(real.values()), burned, [p for p, n in real.items() if n > max_attempts],
                        [c.phone for c in contacts if c.attempts != real[c.phone]])

    faults = ["statistics-lag-s=1200", "timeout-after-processing=0.2"]
    (tmp_path / "lag").mkdir()
    with stack(tmp_path / "lag", webhooks=False, faults=faults) as st:
        st.make_campaign("lag", 40, agents=5, pacing="ratio:3", max_attempts=2)
        st.cli("campaign", "start", "lag")
        st.run_daemon(600)
        m = check(st, 2)
        ambiguous = [a for a in st.attempts() if "may have been processed" in (a.error or "")]
        print(m.line("e2e statistics lag 1200 s"), f"| ambiguous {len(ambiguous)}")
        assert st.campaign("lag").state == CampaignState.FINISHED
        assert not m.burned and not m.over_cap and not m.miscounted
        assert ambiguous and all(a.state == AttemptState.COMPLETED for a in ambiguous)

    (tmp_path / "secret").mkdir()
    with stack(tmp_path / "secret", webhooks=False) as st:
        st.make_campaign("secret", 20, agents=5, pacing="ratio:3")
        st.cli("campaign", "start", "secret")
        st.env["ZADARMA_SECRET"] = WRONG_SECRET
        proc = st.start_daemon()
        try:
            def paused() -> dict[str, Any] | None:
                status = json.loads(st.cli("status", "--json").stdout)
                c = status["campaigns"][0]
                return c if c["state"] == CampaignState.PAUSED else None

            shown = wait_for(paused, 60, what="the campaign paused", every=0.5)
        finally:
            proc.terminate()
            proc.wait(15)
        m = check(st, 3)
        print(m.line("e2e wrong secret"), "| reason:", shown["pause_reason"])
        assert m.real_calls == 0 and not m.burned and not m.miscounted
        assert "ZADARMA_KEY / ZADARMA_SECRET" in shown["pause_reason"]
