"""Folding events into outcomes and live state, with the receive time as the clock (no HTTP: see
test_webhooks_http.py for the wire)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from dialer.db import session_scope
from dialer.dialing.live import LiveState
from dialer.metrics import Metrics
from dialer.models import Attempt, Contact, DncEntry
from dialer.outcomes.event_fields import customer_phone, dedup_key
from dialer.outcomes.events import WebhookProcessor
from dialer.outcomes.routing import abandon_answer
from dialer.outcomes.states import AttemptState, ContactState
from tests.webhooks_support import T0, answer, at, end, internal, make_db, out_end, out_start, seed, start


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_db(tmp_path)
    yield engine
    engine.dispose()


def _attempt(engine, attempt_id: int) -> Attempt:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        a = s.get(Attempt, attempt_id)
        assert a is not None
        return a


def _contact(engine, contact_id: int) -> Contact:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        c = s.get(Contact, contact_id)
        assert c is not None
        return c


def test_helpers() -> None:
    assert customer_phone("442037691881") == "+442037691881"
    assert customer_phone("+44 20 3769 1881") == "+442037691881"
    assert customer_phone("Alice Smith (442037691881)") == "+442037691881"
    assert customer_phone("100") is None and customer_phone("") is None
    assert abandon_answer("hangup") == {"hangup": 1}
    assert abandon_answer("ivr_play:42") == {"ivr_play": "42"}
    assert abandon_answer("ivr_play:") == {"hangup": 1}
    a = out_end("+441", "t", "busy")
    assert dedup_key(a) == dedup_key(dict(a)) != dedup_key({**a, "duration": "1"})
    # A resend with an unknown extra field is the same event.
    assert dedup_key({**a, "calltype": "x"}) == dedup_key(a)


def test_connected_call_full_sequence(world) -> None:  # type: ignore[no-untyped-def]
    s = seed(world)
    live = LiveState()
    seen: list[int] = []
    live.subscribe(seen.append)
    p = WebhookProcessor(world, live)
    aid, phone = s.attempt_ids[0], s.phones[0]
    live.call_placed(s.campaign_id, aid, phone, T0.timestamp())
    p.process(out_start(phone, "c1"), at(0.5), True)
    assert live.view(s.campaign_id, at(1).timestamp()).ringing_since == (T0.timestamp(),)

    r = p.process(start(phone, "c1", 8), at(8), True)
    assert r.answer == {"redirect": "100", "caller_name": "Customer 0"}
    v = live.view(s.campaign_id, at(8.1).timestamp())
    assert (
        v.ringing_since == () and v.waiting == 0 and v.idle == 1 and v.talking_since == (at(8).timestamp(),)
    )
    assert [ext for ext, _ in v.idle_agents] == ["101"]

    p.process(internal(phone, "c1", "100", 8), at(8.2), True)
    p.process(answer(phone, "c1", "100", 8), at(9), True)
    v = live.view(s.campaign_id, at(10).timestamp())
    assert v.talking == (("100", at(9).timestamp()),)
    assert _attempt(world, aid).state == "placed"  # nothing final yet

    p.process(end(phone, "c1", "100", "answered", 70, 8), at(79), True)
    a = _attempt(world, aid)
    assert (a.state, a.disposition, a.answered, a.connected, a.abandoned) == (
        "completed",
        "answered",
        True,
        True,
        False,
    )
    assert a.agent == "100" and a.talk_seconds == 70 and a.ring_seconds == pytest.approx(8.0)
    assert a.pbx_call_id == "out_c1"
    assert _contact(world, s.contact_ids[0]).state == "done"
    p.process(out_end(phone, "c1", "answered", 0, 71), at(79.5), True)
    assert _attempt(world, aid).connected is True

    finished = live.drain_finished(s.campaign_id)
    assert len(finished) == 1
    f = finished[0]
    assert (f.answered, f.connected, f.abandoned, f.ring_s, f.talk_s) == (True, True, False, 8.0, 70.0)
    assert f.placed_at == T0.timestamp() and f.ended_at == at(79).timestamp()
    assert live.drain_finished(s.campaign_id) == []
    v = live.view(s.campaign_id, at(80).timestamp())
    assert v.idle == 2 and v.talking_since == () and v.agents_logged_in == 2
    assert s.campaign_id in seen


def test_unanswered_outcomes_and_failed_spelling(world) -> None:  # type: ignore[no-untyped-def]
    s = seed(world, n=3)
    live = LiveState()
    p = WebhookProcessor(world, live)
    for (phone, token, disp), t in zip(
        [(s.phones[0], "u1", "no answer"), (s.phones[1], "u2", "busy"), (s.phones[2], "u3", "failed")],
        (25, 3, 1),
        strict=True,
    ):
        p.process(out_start(phone, token), at(0.2), True)
        p.process(out_end(phone, token, disp), at(t), True)
    got = [
        (_attempt(world, a).disposition, _attempt(world, a).answered, _attempt(world, a).state)
        for a in s.attempt_ids
    ]
    assert got == [
        ("no answer", False, "completed"),
        ("busy", False, "completed"),
        ("call failed", False, "completed"),
    ]
    assert [_contact(world, c).state for c in s.contact_ids] == ["retry", "retry", "retry"]
    finished = live.drain_finished(s.campaign_id)
    assert [(f.answered, f.ring_s, f.disposition) for f in finished] == [
        (False, 25.0, "no answer"),
        (False, 3.0, "busy"),
        (False, 1.0, "call failed"),
    ]


def test_no_free_agent_plays_abandon_message(world) -> None:  # type: ignore[no-untyped-def]
    s = seed(world, n=3, abandon_action="ivr_play:777")
    live = LiveState()
    p = WebhookProcessor(world, live)
    answers = [p.process(start(ph, f"a{i}", 5), at(5 + i), True).answer for i, ph in enumerate(s.phones)]
    assert answers[0] == {"redirect": "100", "caller_name": "Customer 0"}
    assert answers[1] == {"redirect": "101", "caller_name": "Customer 1"}
    assert answers[2] == {"ivr_play": "777"}
    a = _attempt(world, s.attempt_ids[2])
    # Abandoned, but the customer is still on the line hearing the message: the attempt stays live, so the number
    # stays locked against every other campaign until the call ends.
    assert (a.state, a.answered, a.connected, a.abandoned) == (AttemptState.PLACED, True, False, True)
    assert _contact(world, s.contact_ids[2]).state == ContactState.DIALING
    # The PBX then ends the leg with nobody: the attempt ends abandoned, counted once.
    p.process(end(s.phones[2], "a2", "", "cancel", 8, 5), at(15), True)
    a = _attempt(world, s.attempt_ids[2])
    assert (a.state, a.answered, a.connected, a.abandoned) == (AttemptState.COMPLETED, True, False, True)
    assert _contact(world, s.contact_ids[2]).last_disposition == "abandoned"
    metrics = Metrics(db=world).render()  # the counters are the database's
    assert f'dialer_calls_abandoned_total{{campaign="{s.campaign_id}",campaign_name="spring"}} 1\n' in metrics
    finished = live.drain_finished(s.campaign_id)
    assert [(f.abandoned, f.connected) for f in finished] == [(True, False)]


def test_answered_but_no_agent_took_it_is_abandoned(world) -> None:  # type: ignore[no-untyped-def]
    s = seed(world, n=1)
    live = LiveState()
    p = WebhookProcessor(world, live)
    phone = s.phones[0]
    p.process(start(phone, "x1", 5), at(5), True)
    p.process(internal(phone, "x1", "100", 5), at(5.1), True)
    p.process(end(phone, "x1", "100", "no answer", 3, 5), at(8), True)
    a = _attempt(world, s.attempt_ids[0])
    assert (a.answered, a.connected, a.abandoned, a.disposition) == (True, False, True, "answered")
    v = live.view(s.campaign_id, at(9).timestamp())
    assert v.idle == 2  # the reserved agent is free again


def test_dnc_and_unknown_callers(world) -> None:  # type: ignore[no-untyped-def]
    s = seed(world, n=1)
    with session_scope(world) as sess:
        sess.add(DncEntry(phone="+447700900123", campaign_id=None, reason="asked"))
    p = WebhookProcessor(world, LiveState())
    assert p.process(start("+447700900123", "d1", 1), at(1), True).answer == {"redirect": "blacklist"}
    assert p.process(start("+447700900999", "d2", 1), at(1), True).answer == {}
    # A customer whose attempt is finished calling back is an unknown caller too.
    p.process(out_end(s.phones[0], "d3", "busy"), at(2), True)
    assert p.process(start(s.phones[0], "d4", 3), at(3), True).answer == {}


def test_longest_idle_agent_gets_the_next_call_and_wrapup(world) -> None:  # type: ignore[no-untyped-def]
    s = seed(world, n=3)
    live = LiveState(wrapup_s={1: 10.0})
    p = WebhookProcessor(world, live)
    ph = s.phones
    assert p.process(start(ph[0], "w0", 1), at(1), True).answer["redirect"] == "100"  # type: ignore[index]
    p.process(answer(ph[0], "w0", "100", 1), at(2), True)
    p.process(end(ph[0], "w0", "100", "answered", 30, 1), at(32), True)
    v = live.view(s.campaign_id, at(35).timestamp())
    assert v.wrapup_since == (at(32).timestamp(),) and v.idle == 1
    # 101 has been idle since the start, 100 only after its wrap-up: 101 is the longest idle.
    assert p.process(start(ph[1], "w1", 50), at(50), True).answer["redirect"] == "101"  # type: ignore[index]
    assert p.process(start(ph[2], "w2", 51), at(51), True).answer["redirect"] == "100"  # type: ignore[index]
    assert live.drain_wrapups(s.campaign_id, at(51).timestamp()) == [10.0]


def test_count_only_campaign_learns_extensions(world) -> None:  # type: ignore[no-untyped-def]
    s = seed(world, n=3, extensions=[], agents=2)
    live = LiveState()
    p = WebhookProcessor(world, live)
    ph = s.phones
    # Nobody known by extension yet but two agents free: let the PBX choose, with the caller's name.
    assert p.process(start(ph[0], "k0", 1), at(1), True).answer == {"caller_name": "Customer 0"}
    assert live.view(s.campaign_id, at(1).timestamp()).waiting == 1
    p.process(internal(ph[0], "k0", "205", 1), at(1.5), True)
    p.process(answer(ph[0], "k0", "205", 1), at(2), True)
    v = live.view(s.campaign_id, at(3).timestamp())
    assert v.waiting == 0 and v.talking == (("205", at(2).timestamp()),) and v.idle == 1
    assert p.process(start(ph[1], "k1", 4), at(4), True).answer == {"caller_name": "Customer 1"}
    p.process(answer(ph[1], "k1", "206", 4), at(5), True)
    p.process(end(ph[0], "k0", "205", "answered", 20, 1), at(22), True)
    # 205 is free and known now: the next customer is redirected to it.
    assert p.process(start(ph[2], "k2", 30), at(30), True).answer == {
        "redirect": "205",
        "caller_name": "Customer 2",
    }


def test_silence_detection() -> None:
    live = LiveState()
    assert live.is_silent(100.0, 30)  # nothing ever arrived
    live.event_received(100.0)
    assert not live.is_silent(500.0, 30)  # quiet, but nothing was dialled
    live.call_placed(1, 1, "+441", 510.0)
    assert not live.is_silent(530.0, 30)
    assert live.is_silent(541.0, 30)
    live.event_received(542.0)
    assert not live.is_silent(600.0, 30)


def test_engine_side_api(world) -> None:  # type: ignore[no-untyped-def]
    live = LiveState(ring_timeout_s=60)
    live.configure_campaign(7, extensions=["300"], wrapup_s=5)
    live.call_placed(7, 11, "+441", 100.0)
    live.call_placed(7, 12, "+442", 101.0)
    assert live.view(7, 102.0).ringing_since == (100.0, 101.0)
    live.call_failed(7, 12)
    assert live.view(7, 103.0).ringing_since == (100.0,)
    assert live.view(7, 161.0).ringing_since == ()  # rang past the timeout: no longer counted
    live.set_agent_online("300", False, 150.0)
    v = live.view(7, 150.0)
    assert v.agents_logged_in == 0 and v.idle == 0


def test_restart_finds_the_attempt_by_phone(world) -> None:  # type: ignore[no-untyped-def]
    """A fresh processor (daemon restarted mid-call) still ends the call from the END event alone."""
    s = seed(world, n=1)
    WebhookProcessor(world, LiveState()).process(start(s.phones[0], "r9", 5), at(5), True)
    p2 = WebhookProcessor(world, LiveState())
    p2.process(end(s.phones[0], "r9", "100", "answered", 44, 5), at(50), True)
    a = _attempt(world, s.attempt_ids[0])
    assert (a.connected, a.agent, a.talk_seconds) == (True, "100", 44)
    with Session(world) as sess:
        assert len(list(sess.exec(select(Attempt)))) == 1


def test_a_late_event_of_another_call_does_not_end_the_live_call_to_the_number(world) -> None:  # type: ignore[no-untyped-def]
    """The number's live attempt already knows its customer leg (out_new); the end of an earlier call whose other
    events were lost (out_old) must not end it: the number would be freed while the customer is on the line."""
    s = seed(world, n=1)
    p = WebhookProcessor(world, LiveState())
    phone, aid = s.phones[0], s.attempt_ids[0]
    p.process(out_start(phone, "new"), at(0.2), True)
    p.process(out_end(phone, "old", "no answer"), at(0.5), True)
    a = _attempt(world, aid)
    assert (a.state, a.pbx_call_id, a.live) == ("placed", "out_new", True)
    p.process(out_end(phone, "new", "busy"), at(1), True)
    assert (_attempt(world, aid).state, _attempt(world, aid).disposition) == ("completed", "busy")


def test_observation_and_snapshot_for_the_daemon(world) -> None:  # type: ignore[no-untyped-def]
    from dialer.models import Campaign

    s = seed(world, n=2)
    with Session(world) as sess:
        campaign = sess.get(Campaign, s.campaign_id)
    assert campaign is not None
    live = LiveState()
    t0 = T0.timestamp()
    obs = live.observation(campaign, t0)  # configures the campaign from its row
    assert (obs.live, obs.agents_logged_in, obs.idle, obs.finished) == (True, 2, 2, ())
    p = WebhookProcessor(world, live)
    live.call_placed(s.campaign_id, s.attempt_ids[0], s.phones[0], t0)
    live.call_placed(s.campaign_id, s.attempt_ids[1], s.phones[1], t0)
    p.process(out_end(s.phones[1], "o1", "busy"), at(3), True)
    p.process(start(s.phones[0], "o0", 6), at(6), True)
    obs = live.observation(campaign, at(7).timestamp())
    assert obs.ringing_since == () and obs.idle == 1 and obs.talking_since == (at(6).timestamp(),)
    assert [f.disposition for f in obs.finished] == ["busy"]
    assert live.observation(campaign, at(8).timestamp()).finished == ()  # drained exactly once
    snap = live.snapshot(at(8).timestamp())
    assert snap["events"] == 2 and snap["last_event_age_s"] == 2.0
    assert snap["campaigns"][str(s.campaign_id)]["talking"] == [
        {"extension": "100", "since": at(6).timestamp()}
    ]  # type: ignore[index]
