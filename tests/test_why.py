"""Why a campaign is or is not dialling: the pure reason function, pacing's own words for a hold, the verdict
stored and logged once per change, and what `dialer status` and /metrics show."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from dialer.db import session_scope
from dialer.dialing.status import STATUS_KEY, DaemonState, daemon_status
from dialer.dialing.why import (
    ContactFacts,
    Reason,
    TickFacts,
    Verdict,
    WaitKind,
    decide,
    describe,
    effective,
)
from dialer.dialing.why_store import Explainer, contact_facts
from dialer.ingest import campaigns
from dialer.kv import put_value
from dialer.metrics import Metrics
from dialer.models import Attempt, Campaign, Contact
from dialer.outcomes.states import AttemptState, CampaignState, ContactState
from dialer.pacing import Observation, make_policy
from dialer.pacing.base import why_held

SUNDAY = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # Europe/London is on GMT in November
MONDAY_9 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _tick(**kw: object) -> TickFacts:
    base: dict[str, object] = {
        "now": SUNDAY, "decided": 3, "claimed": 0, "skipped_window": 0, "agents_logged_in": 3, "agents_idle": 3,
        "live": False, "in_progress": 0, "budget": 100,
    }  # fmt: skip
    base.update(kw)
    return TickFacts(**base)  # type: ignore[arg-type]


# -- the pure function ------------------------------------------------------------------------------------


def test_a_tick_that_placed_calls_is_dialling() -> None:
    assert decide(_tick(claimed=2)).reason == Reason.DIALLING


@pytest.mark.parametrize(
    ("kind", "reason"),
    [(WaitKind.WINDOW, Reason.OUTSIDE_WINDOW), (WaitKind.RETRY, Reason.RETRY_WAIT), (WaitKind.LOCK, Reason.REDIAL_LOCK)],
)
def test_nothing_due_now_waits_until_the_earliest_next_attempt(kind: WaitKind, reason: Reason) -> None:
    facts = ContactFacts(due_now=0, waiting=121, next_at=MONDAY_9, next_kind=kind)
    assert decide(_tick(contacts=facts)) == Verdict(reason, "", MONDAY_9)


def test_due_contacts_all_outside_their_window_wait_for_the_first_opening() -> None:
    later = MONDAY_9 + timedelta(hours=1)
    facts = ContactFacts(due_now=50, due_sampled=20, due_in_window=0, due_next_window=later, waiting=10,
                         next_at=MONDAY_9, next_kind=WaitKind.WINDOW)  # fmt: skip
    v = decide(_tick(contacts=facts, skipped_window=20))
    assert (v.reason, v.until) == (Reason.OUTSIDE_WINDOW, MONDAY_9)


def test_the_window_comes_before_agents_budget_and_pacing() -> None:
    facts = ContactFacts(due_now=0, waiting=5, next_at=MONDAY_9, next_kind=WaitKind.WINDOW)
    v = decide(_tick(contacts=facts, agents_logged_in=0, budget=0, decided=0))
    assert v.reason == Reason.OUTSIDE_WINDOW


def test_no_open_contacts_left_is_finishing() -> None:
    assert decide(_tick(contacts=ContactFacts(due_now=0, waiting=0, in_call=2))).reason == Reason.FINISHING


def test_agents_budget_and_pacing() -> None:
    due = ContactFacts(due_now=10, due_sampled=10, due_in_window=10)
    assert decide(_tick(contacts=due, agents_logged_in=0, decided=0)).reason == Reason.NO_AGENTS
    reset = SUNDAY + timedelta(seconds=42)
    assert decide(_tick(contacts=due, budget=0, decided=0, budget_reset_at=reset)) == Verdict(
        Reason.API_BUDGET, "the API rate limit is spent", reset
    )
    busy = decide(_tick(contacts=due, live=True, agents_idle=0, decided=0))
    assert busy.reason == Reason.NO_AGENTS and "3 agents" in busy.detail
    held = decide(_tick(contacts=due, decided=0, policy_reason="abandon rate over target"))
    assert held == Verdict(Reason.PACING_HELD, "abandon rate over target")
    # Calls in progress, or a call placed a moment ago: pacing's rhythm, still dialling.
    assert decide(_tick(contacts=due, decided=0, in_progress=2)).reason == Reason.DIALLING
    assert decide(_tick(contacts=due, decided=0, since_last_call_s=3.0)).reason == Reason.DIALLING
    assert decide(_tick(contacts=due, decided=0, since_last_call_s=120.0)).reason == Reason.PACING_HELD
    assert decide(_tick(contacts=due, live=True, agents_idle=0, decided=0, since_last_call_s=5.0)).reason == (
        Reason.DIALLING  # agents in wrap-up after a call a moment ago: work, not a blocker
    )


def test_due_contacts_none_claimed_are_numbers_in_calls_elsewhere() -> None:
    facts = ContactFacts(due_now=4, due_sampled=0)
    assert decide(_tick(contacts=facts, decided=3)).reason == Reason.NUMBERS_IN_CALL


def test_what_status_shows_follows_the_campaign_state_first() -> None:
    stored = Verdict(Reason.OUTSIDE_WINDOW, "", MONDAY_9)
    assert effective(CampaignState.PAUSED, "lunch", stored, daemon_running=True) == Verdict(Reason.PAUSED, "lunch")
    low = effective(CampaignState.PAUSED, "low balance: 1.00 < 5.00", stored, daemon_running=True)
    assert low.reason == Reason.LOW_BALANCE
    assert effective(CampaignState.STOPPED, None, stored, daemon_running=True).reason == Reason.NOT_RUNNING
    assert effective(CampaignState.RUNNING, None, stored, daemon_running=False).reason == Reason.NO_DAEMON
    assert effective(CampaignState.RUNNING, None, stored, daemon_running=True) == stored


def test_times_are_told_in_the_zone_asked_for() -> None:
    v = Verdict(Reason.OUTSIDE_WINDOW, "", MONDAY_9)
    assert describe(v, "Europe/London", SUNDAY) == "outside calling window until Mon 09:00 Europe/London"
    assert describe(v, "Europe/Moscow", SUNDAY) == "outside calling window until Mon 12:00 Europe/Moscow"
    # Beyond the coming week the weekday alone would be ambiguous.
    far = describe(Verdict(Reason.REDIAL_LOCK, "", MONDAY_9 + timedelta(days=7)), "Europe/London", SUNDAY)
    assert far.endswith("until Mon 2026-12-07 09:00 Europe/London")
    assert describe(Verdict(Reason.PAUSED, "lunch"), "UTC") == "paused (lunch)"


@pytest.mark.parametrize("spec", ["progressive", "ratio:1.5", "vicidial", "predictive"])
def test_every_policy_says_why_it_chose_no_call(spec: str) -> None:
    policy = make_policy(spec)
    obs = Observation(now=1000.0, time_of_day=43200.0, agents_logged_in=2, idle=0, talking_since=(990.0, 995.0),
                      ringing_since=(999.0,), live=True)  # fmt: skip
    assert policy.decide(obs) == 0
    text = why_held(policy, obs)
    assert text and ("agent" in text or "dial" in text), text
    assert why_held(policy, Observation(now=1001.0, time_of_day=0.0, agents_logged_in=0, idle=0)) == (
        "no agent logged in"
    )


# -- stored and logged once per change ----------------------------------------------------------------------


def _campaign(db: Engine, n: int = 5) -> int:
    with session_scope(db) as s:
        c = campaigns.create_campaign(s, "spring", "100", agents=3, timezone="Europe/London")
        c.state = CampaignState.RUNNING
        for i in range(n):
            s.add(Contact(campaign_id=c.id or 0, phone=f"+44207946{i:04d}", timezones=["Europe/London"]))
        s.flush()
        return c.id or 0


def _get(db: Engine, cid: int) -> Campaign:
    with session_scope(db, write=False) as s:
        c = s.get(Campaign, cid)
        assert c is not None
        return c


def test_contact_facts_split_due_now_from_waiting(db: Engine) -> None:
    cid = _campaign(db, 4)
    with session_scope(db) as s:
        contacts = list(s.exec(select(Contact).order_by(col(Contact.id))).all())
        contacts[0].next_attempt_at = MONDAY_9
        contacts[1].state, contacts[1].attempts = ContactState.DIALING, 1
    with session_scope(db, write=False) as s:
        facts = contact_facts(s, _get(db, cid), SUNDAY)
    assert (facts.due_now, facts.waiting, facts.next_at, facts.next_kind, facts.in_call) == (
        2, 1, MONDAY_9, WaitKind.WINDOW, 1
    )
    # Sunday with mon-fri: the due ones are outside their window until Monday 09:00.
    assert (facts.due_sampled, facts.due_in_window, facts.due_next_window) == (2, 0, MONDAY_9)


def test_the_reason_is_stored_and_logged_once_per_change(db: Engine, caplog: pytest.LogCaptureFixture) -> None:
    cid = _campaign(db)
    explainer = Explainer(refresh_s=0.0)
    obs = Observation(now=SUNDAY.timestamp(), time_of_day=43200.0, agents_logged_in=3, idle=3, live=False)
    caplog.set_level(logging.INFO, logger="dialer.engine")
    for i in range(5):
        v = explainer.update(db, _get(db, cid), SUNDAY.timestamp() + i, obs, decided=3, claimed=0, skipped_window=0)
    assert v == Verdict(Reason.OUTSIDE_WINDOW, "", MONDAY_9)
    logged = [r for r in caplog.records if r.getMessage().startswith("dialling reason")]
    assert len(logged) == 1
    c = _get(db, cid)
    assert (c.dial_reason, c.dial_reason_until, c.dial_reason_since) == (Reason.OUTSIDE_WINDOW, MONDAY_9, SUNDAY)
    # Another reason: stored with a new "since", logged once more.
    monday = MONDAY_9.timestamp() + 60
    for i in range(3):
        explainer.update(db, _get(db, cid), monday + i, obs, decided=3, claimed=3, skipped_window=0)
    assert len([r for r in caplog.records if r.getMessage().startswith("dialling reason")]) == 2
    c = _get(db, cid)
    assert c.dial_reason == Reason.DIALLING and c.dial_reason_since == datetime.fromtimestamp(monday, UTC)
    # Paused and resumed: the stored verdict was cleared, so the same verdict is stored (and logged) afresh.
    with session_scope(db) as s:
        campaigns.pause_campaign(s, "spring")
        campaigns.change_state(s, "spring", "resume")
    assert _get(db, cid).dial_reason is None
    explainer.update(db, _get(db, cid), monday + 10, obs, decided=3, claimed=3, skipped_window=0)
    c = _get(db, cid)
    assert c.dial_reason == Reason.DIALLING and c.dial_reason_since == datetime.fromtimestamp(monday + 10, UTC)
    assert len([r for r in caplog.records if r.getMessage().startswith("dialling reason")]) == 3


def test_status_and_metrics_show_the_reason(db: Engine) -> None:
    cid = _campaign(db)
    obs = Observation(now=SUNDAY.timestamp(), time_of_day=43200.0, agents_logged_in=3, idle=3, live=False)
    Explainer().update(db, _get(db, cid), SUNDAY.timestamp(), obs, decided=3, claimed=0, skipped_window=0)
    with session_scope(db) as s:
        put_value(s, STATUS_KEY, {"state": DaemonState.RUNNING, "updated_at": SUNDAY.isoformat()})
    st = daemon_status(db, now=SUNDAY)["campaigns"][0]
    assert st["why"]["reason"] == Reason.OUTSIDE_WINDOW
    assert st["why"]["text"] == "outside calling window until Mon 09:00 Europe/London"
    assert st["why"]["since"] == SUNDAY.isoformat()
    assert (st["due_now"], st["due_later"]) == (5, 0)
    # The operator's zone, when set, for every time in words.
    assert daemon_status(db, "Europe/Moscow", now=SUNDAY)["campaigns"][0]["why"]["text"].endswith(
        "until Mon 12:00 Europe/Moscow"
    )
    text = Metrics(db=db).render()
    lines = [line for line in text.splitlines() if line.startswith("dialer_campaign_dial_reason{")]
    assert f'dialer_campaign_dial_reason{{campaign="{cid}",campaign_name="spring",reason="outside_window"}} 1' in lines
    assert len(lines) == len(Reason) and sum(line.endswith(" 1") for line in lines) == 1
    # A paused campaign says so, whatever the engine last stored.
    with session_scope(db) as s:
        campaigns.pause_campaign(s, "spring", "lunch")
    assert daemon_status(db, now=SUNDAY)["campaigns"][0]["why"]["text"] == "paused (lunch)"
    assert 'campaign_name="spring",reason="paused"} 1' in Metrics(db=db).render()


@pytest.mark.parametrize(
    ("abandoned", "next_at", "kind"),
    [
        (True, SUNDAY + 72 * timedelta(hours=1), WaitKind.LOCK),  # the legal lock after an abandon
        (False, SUNDAY + timedelta(hours=1), WaitKind.RETRY),  # the no-answer delay
        (False, MONDAY_9 + timedelta(days=1), WaitKind.WINDOW),  # later than any delay: moved to a window
    ],
)
def test_the_earliest_wait_says_what_it_waits_for(db: Engine, abandoned: bool, next_at: datetime,
                                                  kind: WaitKind) -> None:  # fmt: skip
    cid = _campaign(db, 1)
    with session_scope(db) as s:
        c = s.get(Campaign, cid)
        assert c is not None
        c.retry_no_answer_s, c.retry_abandoned_s = 3600, 72 * 3600
        ct = s.exec(select(Contact)).one()
        ct.state, ct.attempts, ct.next_attempt_at = ContactState.RETRY, 1, next_at
        s.add(Attempt(campaign_id=cid, contact_id=ct.id or 0, phone=ct.phone, state=AttemptState.COMPLETED,
                      disposition="answered" if abandoned else "no answer", answered=abandoned, abandoned=abandoned,
                      finished_at=SUNDAY, live=False))  # fmt: skip
    with session_scope(db, write=False) as s:
        facts = contact_facts(s, _get(db, cid), SUNDAY)
    assert (facts.due_now, facts.waiting, facts.next_at, facts.next_kind) == (0, 1, next_at, kind)
