"""Self-healing live state (pure, on an explicit clock): a call whose end event was lost stops counting once the
database says it is over or it outlives what the calls seen so far teach; its agent comes back to idle."""

from __future__ import annotations

from dialer.dialing.live import STALE_TALK_S, LiveState


def _campaign(live: LiveState) -> None:
    live.configure_campaign(1, extensions=["100", "101"], now=0.0)


def _talk(live: LiveState, attempt: int, start: float, ring: float, talk: float | None) -> None:
    """One call: placed at ``start``, answered after ``ring``, routed to an agent; ended after ``talk`` (None: the
    end event is lost)."""
    live.call_placed(1, attempt, f"+44{attempt}", start)
    live.customer_answered(attempt, start + ring)
    kind, ext = live.route(1, attempt, f"in_{attempt}", start + ring)
    assert kind == "agent" and ext is not None
    live.agent_answered(f"in_{attempt}", ext, start + ring, attempt)
    if talk is not None:
        live.call_ended(f"in_{attempt}", attempt, start + ring + talk, agent=ext, connected=True, talk_s=talk,
                        disposition="answered")  # fmt: skip


def test_learned_talk_bound_frees_an_agent_whose_end_was_lost() -> None:
    live = LiveState()
    _campaign(live)
    t = 0.0
    for i in range(30):  # 30 calls seen to end: talks of 20-49 s
        _talk(live, i, t, 5.0, 20.0 + i)
        t += 60.0
    assert live.talks.bound() == 2 * 49.0 and live.rings.bound() == 10.0
    _talk(live, 100, t, 5.0, None)  # its END is lost
    assert len(live.view(1, t + 50).talking_since) == 1
    view = live.view(1, t + 5 + 2 * 49.0 + 6)  # past the learned bound (the sweep runs every 5 s)
    assert view.talking_since == () and view.idle == 2
    assert live.healed == 1 and live.talks.bound() < STALE_TALK_S


def test_a_ringing_call_stops_counting_past_the_learned_ring_bound() -> None:
    live = LiveState()
    _campaign(live)
    for i in range(30):
        _talk(live, i, i * 60.0, 4.0 + (i % 5), 30.0)
    live.call_placed(1, 200, "+44200", 2000.0)  # no event ever comes back
    assert len(live.view(1, 2010.0).ringing_since) == 1
    assert live.view(1, 2000.0 + 2 * 8.0 + 1).ringing_since == ()


def test_the_database_closes_calls_and_frees_their_agents() -> None:
    live = LiveState()
    _campaign(live)
    _talk(live, 1, 0.0, 5.0, None)
    live.call_placed(1, 2, "+442", 1.0)
    live.customer_answered(2, 3.0)  # waiting for an agent, then nothing more is heard
    assert sorted(live.live_attempts(1)) == [1, 2]
    assert live.close_calls([1, 2, 99], 10.0) == 2
    view = live.view(1, 10.0)
    assert (view.idle, view.waiting, view.talking_since, view.ringing_since) == (2, 0, (), ())
    assert live.live_attempts(1) == [] and live.close_calls([1], 11.0) == 0
    assert live.drain_finished(1) == []  # the outcomes are the database's, not pacing's guesses
