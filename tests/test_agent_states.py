"""Agents' decision functions, each on its own: session moves, disposition moves, callback times, code lists, PINs.

Pure functions only (no database), so every row of each table of cases is one assertion.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialer.agents.accounts import AgentError, check_pin, hash_pin, verify_pin
from dialer.agents.callbacks import CallbackTimeError, parse_callback_at
from dialer.agents.presence import AgentPresence, TeamPresence
from dialer.dialing.why import ContactFacts, Reason, TickFacts, WaitKind, decide
from dialer.outcomes.agent_states import (
    AgentMove,
    AgentNow,
    AgentStateError,
    CallStep,
    call_move,
    is_ready,
    presence_move,
    wrapup_ended,
)
from dialer.outcomes.callbacks import first_try
from dialer.outcomes.codes import (
    DEFAULT_DISPOSITIONS,
    CodesError,
    DispositionDef,
    find_disposition,
    parse_dispositions,
    parse_pause_codes,
)
from dialer.outcomes.dispositions import disposition_move
from dialer.outcomes.states import AgentState, ContactState, DispositionMeaning, Presence

A = AgentState
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


# --- presence -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "request_", "code", "expected"), [
    (A.LOGGED_OUT, Presence.LOGIN, None, AgentMove(A.READY)),
    (A.READY, Presence.PAUSE, "lunch", AgentMove(A.PAUSED, "lunch")),
    (A.PAUSED, Presence.PAUSE, "break", AgentMove(A.PAUSED, "break")),
    (A.PAUSED, Presence.READY, None, AgentMove(A.READY)),
    (A.WRAPUP, Presence.READY, None, AgentMove(A.READY)),
    (A.WRAPUP, Presence.PAUSE, "training", AgentMove(A.PAUSED, "training")),
    (A.READY, Presence.LOGOUT, None, AgentMove(A.LOGGED_OUT)),
    (A.PAUSED, Presence.LOGOUT, None, AgentMove(A.LOGGED_OUT)),
    (A.READY, Presence.READY, None, AgentMove(A.READY)),
    # In a call: the request waits for the end of the call.
    (A.TALKING, Presence.PAUSE, "lunch", AgentMove(A.TALKING, None, A.PAUSED, "lunch", deferred=True)),
    (A.RINGING, Presence.LOGOUT, None, AgentMove(A.RINGING, None, A.LOGGED_OUT, None, deferred=True)),
])  # fmt: skip
def test_presence_moves(state: AgentState, request_: Presence, code: str | None, expected: AgentMove) -> None:
    assert presence_move(AgentNow(state), request_, code) == expected


@pytest.mark.parametrize(("state", "request_", "code", "message"), [
    (A.READY, Presence.LOGIN, None, "already logged in"),
    (A.LOGGED_OUT, Presence.READY, None, "not logged in"),
    (A.LOGGED_OUT, Presence.PAUSE, "lunch", "not logged in"),
    (A.LOGGED_OUT, Presence.LOGOUT, None, "not logged in"),
    (A.READY, Presence.PAUSE, None, "pause code"),
])  # fmt: skip
def test_impossible_presence_changes_say_why(state: AgentState, request_: Presence, code: str | None,
                                             message: str) -> None:
    with pytest.raises(AgentStateError, match=message):
        presence_move(AgentNow(state), request_, code)


def test_ready_during_a_call_takes_back_a_pause_asked_for() -> None:
    talking = AgentNow(A.TALKING, None, A.PAUSED, "lunch")
    assert presence_move(talking, Presence.READY) == AgentMove(A.TALKING)


# --- calls --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("now", "step", "talked", "wrapup", "expected"), [
    (AgentNow(A.READY), CallStep.ROUTED, False, True, AgentMove(A.RINGING)),
    (AgentNow(A.WRAPUP), CallStep.ROUTED, False, True, AgentMove(A.RINGING)),
    (AgentNow(A.RINGING), CallStep.ANSWERED, False, True, AgentMove(A.TALKING)),
    (AgentNow(A.READY), CallStep.ANSWERED, False, True, AgentMove(A.TALKING)),  # the ring event was lost
    (AgentNow(A.TALKING), CallStep.ROUTED, False, True, AgentMove(A.TALKING)),
    (AgentNow(A.TALKING), CallStep.ENDED, True, True, AgentMove(A.WRAPUP)),
    (AgentNow(A.TALKING), CallStep.ENDED, True, False, AgentMove(A.READY)),  # no wrap-up time
    (AgentNow(A.RINGING), CallStep.ENDED, False, True, AgentMove(A.READY)),  # the customer left first
    # A pause or logout asked for during the call replaces wrap-up.
    (AgentNow(A.TALKING, None, A.PAUSED, "lunch"), CallStep.ENDED, True, True, AgentMove(A.PAUSED, "lunch")),
    (AgentNow(A.TALKING, None, A.LOGGED_OUT), CallStep.ENDED, True, True, AgentMove(A.LOGGED_OUT)),
    # The PBX rang a paused agent: after the call, back to that pause.
    (AgentNow(A.PAUSED, "break"), CallStep.ROUTED, False, True, AgentMove(A.RINGING, None, A.PAUSED, "break")),
    # Logged-out agents are not followed; an end for an agent not in a call changes nothing.
    (AgentNow(A.LOGGED_OUT), CallStep.ROUTED, False, True, AgentMove(A.LOGGED_OUT)),
    (AgentNow(A.READY), CallStep.ENDED, True, True, AgentMove(A.READY)),
])  # fmt: skip
def test_call_moves(now: AgentNow, step: CallStep, talked: bool, wrapup: bool, expected: AgentMove) -> None:
    assert call_move(now, step, talked=talked, wrapup=wrapup) == expected


def test_wrapup_ends_to_ready_and_only_from_wrapup() -> None:
    assert wrapup_ended(AgentNow(A.WRAPUP)) == AgentMove(A.READY)
    assert wrapup_ended(AgentNow(A.PAUSED, "lunch")) == AgentMove(A.PAUSED, "lunch")


def test_a_wrapup_past_its_limit_counts_as_ready() -> None:
    assert is_ready(A.READY, None, NOW)
    assert is_ready(A.WRAPUP, NOW, NOW) and not is_ready(A.WRAPUP, NOW + timedelta(seconds=1), NOW)
    assert not is_ready(A.PAUSED, None, NOW) and not is_ready(A.TALKING, None, NOW)


def test_team_counts_working_as_logged_in_and_not_paused_plus_in_calls() -> None:
    def member(i: int, state: AgentState) -> AgentPresence:
        return AgentPresence(i, f"a{i}", str(100 + i), state, NOW)

    team = TeamPresence(tuple(member(i, s) for i, s in enumerate(
        [A.READY, A.READY, A.TALKING, A.WRAPUP, A.PAUSED, A.LOGGED_OUT, A.RINGING])))  # fmt: skip
    assert (team.working, team.ready, team.paused, team.logged_out) == (5, 2, 1, 1)
    assert team.ready_ids == {0, 1}
    assert team.describe() == "1 paused, 1 logged out, 3 busy"


# --- dispositions -------------------------------------------------------------------------------------------


def _move(meaning: DispositionMeaning, **kw: object) -> tuple[ContactState, datetime | None]:
    args: dict[str, object] = {"attempts": 1, "max_attempts": 3, "retry_delay_s": 3600, "now": NOW, **kw}
    m = disposition_move(meaning, **args)  # type: ignore[arg-type]
    return m.state, m.next_attempt_at


def test_disposition_moves() -> None:
    M = DispositionMeaning
    assert _move(M.SUCCESS) == (ContactState.DONE, None)
    assert _move(M.FAILURE) == (ContactState.DONE, None)
    assert _move(M.DNC) == (ContactState.DNC, None)
    assert _move(M.RETRY) == (ContactState.RETRY, NOW + timedelta(hours=1))
    assert _move(M.RETRY, attempts=3) == (ContactState.EXHAUSTED, None)
    later = NOW + timedelta(days=1)
    assert _move(M.CALLBACK, callback_at=later) == (ContactState.CALLBACK, later)
    # Never before the legal redial lock after an abandoned call.
    lock = NOW + timedelta(days=2)
    assert _move(M.RETRY, lock_until=lock) == (ContactState.RETRY, lock)
    assert _move(M.CALLBACK, callback_at=later, lock_until=lock) == (ContactState.CALLBACK, lock)
    with pytest.raises(ValueError):
        _move(M.CALLBACK)


def test_a_callback_first_try_is_its_time_or_the_lock_end() -> None:
    assert first_try(NOW, None) == NOW
    assert first_try(NOW, NOW + timedelta(hours=1)) == NOW + timedelta(hours=1)
    assert first_try(NOW, NOW - timedelta(hours=1)) == NOW


def test_defaults_and_finding_a_disposition_by_code_or_hotkey() -> None:
    meanings = {d.code: d.meaning for d in DEFAULT_DISPOSITIONS}
    assert meanings == {
        "sale": DispositionMeaning.SUCCESS, "not_interested": DispositionMeaning.FAILURE,
        "callback": DispositionMeaning.CALLBACK, "wrong_number": DispositionMeaning.FAILURE,
        "dnc": DispositionMeaning.DNC, "no_decision_maker": DispositionMeaning.RETRY,
    }  # fmt: skip
    assert sorted(d.hotkey for d in DEFAULT_DISPOSITIONS) == [1, 2, 3, 4, 5, 6]
    assert find_disposition(DEFAULT_DISPOSITIONS, "1") == DEFAULT_DISPOSITIONS[0]
    assert find_disposition(DEFAULT_DISPOSITIONS, "Not Interested") == DEFAULT_DISPOSITIONS[1]
    assert find_disposition(DEFAULT_DISPOSITIONS, "no-decision-maker") == DEFAULT_DISPOSITIONS[5]
    assert find_disposition(DEFAULT_DISPOSITIONS, "9") is None
    assert find_disposition(DEFAULT_DISPOSITIONS, "maybe") is None


def test_code_lists_parse_and_refuse_bad_ones() -> None:
    got = parse_dispositions("sold:1:success, later:2:callback:Call me later")
    assert got == (DispositionDef("sold", "Sold", 1, DispositionMeaning.SUCCESS),
                   DispositionDef("later", "Call me later", 2, DispositionMeaning.CALLBACK))  # fmt: skip
    assert [p.code for p in parse_pause_codes("break, coaching:One-to-one")] == ["break", "coaching"]
    for bad, message in [("sold:1", "code:hotkey:meaning"), ("sold:x:success", "not a digit"),
                         ("sold:0:success", "not 1-9"), ("sold:1:maybe", "meaning"),
                         ("a:1:success,b:1:failure", "given twice"), ("Bad Code:1:success", "lower-case"),
                         ("", "at least one")]:  # fmt: skip
        with pytest.raises(CodesError, match=message):
            parse_dispositions(bad)
    with pytest.raises(CodesError, match="given twice"):
        parse_pause_codes("break,break")


# --- callback times -----------------------------------------------------------------------------------------


def test_callback_times_are_read_in_the_contact_zone() -> None:
    # 12:00 UTC is 14:00 in Helsinki (EET, UTC+2, in December).
    assert parse_callback_at("2026-12-02 09:30", "Europe/Helsinki", NOW) == datetime(2026, 12, 2, 7, 30, tzinfo=UTC)
    assert parse_callback_at("2026-12-02T09:30:00", "Europe/Helsinki", NOW) == datetime(2026, 12, 2, 7, 30,
                                                                                        tzinfo=UTC)  # fmt: skip
    # An explicit offset wins over the zone.
    assert parse_callback_at("2026-12-02 09:30+00:00", "Europe/Helsinki", NOW) == datetime(2026, 12, 2, 9, 30,
                                                                                           tzinfo=UTC)  # fmt: skip
    assert parse_callback_at("2026-12-02T09:30Z", "Asia/Tokyo", NOW) == datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    # A time of day: its next occurrence there (15:00 today, 13:00 tomorrow).
    assert parse_callback_at("15:00", "Europe/Helsinki", NOW) == datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    assert parse_callback_at("13:00", "Europe/Helsinki", NOW) == datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
    assert parse_callback_at("+90m", "Europe/Helsinki", NOW) == NOW + timedelta(minutes=90)
    assert parse_callback_at("in 2h", "UTC", NOW) == NOW + timedelta(hours=2)
    assert parse_callback_at("+1d", "UTC", NOW) == NOW + timedelta(days=1)
    for bad in ("tomorrow", "25:00", "2026-13-01 10:00", ""):
        with pytest.raises(CallbackTimeError):
            parse_callback_at(bad, "UTC", NOW)


# --- PINs ---------------------------------------------------------------------------------------------------


def test_pins_are_hashed_with_a_salt_and_checked() -> None:
    one, two = hash_pin("4821"), hash_pin("4821")
    assert one != two and one.startswith("scrypt$16384$8$1$") and "4821" not in one
    assert verify_pin("4821", one) and verify_pin("4821", two)
    assert not verify_pin("4822", one) and not verify_pin("", one)
    tampered = one[:-6] + ("A" if one[-6] != "A" else "B") + one[-5:]
    for broken in ("", "plain", "scrypt$x$8$1$AA$AA", "md5$1$1$1$AA$AA", tampered, "scrypt$16384$8$1$AAAA$AAAA"):
        assert not verify_pin("4821", broken)
    for bad in ("", "123", "1234567890123", "12a4", " 1234"):
        with pytest.raises(AgentError, match="4 to 12 digits"):
            check_pin(bad)


# --- why not dialling ---------------------------------------------------------------------------------------


def _tick(**kw: object) -> TickFacts:
    base: dict[str, object] = {"now": NOW, "decided": 0, "claimed": 0, "skipped_window": 0, "agents_logged_in": 3,
                               "agents_idle": 3, "live": False, "in_progress": 0, "budget": 10}  # fmt: skip
    return TickFacts(**{**base, **kw})  # type: ignore[arg-type]


def test_a_team_with_nobody_ready_says_no_ready_agents() -> None:
    due = ContactFacts(due_now=5, due_sampled=5, due_in_window=5)
    v = decide(_tick(contacts=due, agents_logged_in=0, team="2 paused, 1 logged out"))
    assert (v.reason, v.detail) == (Reason.NO_AGENTS, "no ready agents: 2 paused, 1 logged out")
    assert decide(_tick(contacts=due, agents_logged_in=0)).detail == "no agent logged in"


def test_callbacks_in_why_not_dialling() -> None:
    later = NOW + timedelta(hours=3)
    waiting = ContactFacts(due_now=0, waiting=1, next_at=later, next_kind=WaitKind.CALLBACK)
    assert decide(_tick(contacts=waiting)) == decide(_tick(contacts=waiting))
    assert (decide(_tick(contacts=waiting)).reason, decide(_tick(contacts=waiting)).until) == (
        Reason.CALLBACK_WAIT, later)
    only_me = ContactFacts(due_now=2, callbacks_due=2)
    assert decide(_tick(contacts=only_me, decided=2)).reason == Reason.CALLBACK_WAIT
