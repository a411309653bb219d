"""The invariants every end-to-end run must keep, checked against the simulator's truth."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from dialer.ingest.phones import callable_now
from dialer.models import Attempt, Campaign, Contact

FINAL = {"done", "exhausted", "invalid", "dnc"}


def digits(number: str) -> str:
    return "".join(ch for ch in str(number) if ch.isdigit())


def real_calls(truth: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Callbacks that made the phone ring (a rejected request is in the truth but rang nobody)."""
    return [c for c in truth if c.get("placed_at") is not None and c.get("state") != "rejected"]


def match_truth(truth: list[dict[str, Any]], attempts: list[Attempt]) -> dict[str, Attempt]:
    """Pair every real call with the attempt that placed it: same number, nearest in time, one-to-one."""
    called = [a for a in attempts if a.state == "completed"]
    by_phone: dict[str, list[Attempt]] = defaultdict(list)
    for a in called:
        by_phone[digits(a.phone)].append(a)
    pairs: dict[str, Attempt] = {}
    for call in sorted(real_calls(truth), key=lambda c: c["placed_at"]):
        cands = by_phone.get(digits(call["to"]), [])
        if not cands:
            continue
        t = call["placed_at"]
        best = min(cands, key=lambda a: abs(_ref(a) - t))
        if abs(_ref(best) - t) <= 30:
            pairs[str(call["id"])] = best
            cands.remove(best)
    return pairs


def _ref(a: Attempt) -> float:
    return (a.placed_at or a.sent_at or a.created_at).timestamp()


def check_invariants(
    truth: list[dict[str, Any]],
    attempts: list[Attempt],
    contacts: list[Contact],
    campaign: Campaign,
    *,
    dnc: set[str] | frozenset[str] = frozenset(),
    rate_limited: int = 0,
) -> dict[str, Attempt]:
    calls = real_calls(truth)
    # Every contact ended somewhere final.
    states = Counter(c.state for c in contacts)
    assert set(states) <= FINAL, f"contacts not final: {states}"
    # Nothing is left in flight.
    live = [a for a in attempts if a.state in ("placing", "placed", "uncertain")]
    assert not live, f"{len(live)} attempts still live: {[(a.id, a.state) for a in live[:5]]}"
    # The truth and the database agree one-to-one on the callbacks that rang someone.
    pairs = match_truth(truth, attempts)
    completed = [a for a in attempts if a.state == "completed"]
    missing = [c for c in calls if str(c["id"]) not in pairs]
    assert not missing, f"{len(missing)} real calls have no attempt, e.g. {missing[:2]}"
    assert len(completed) == len(calls), f"{len(completed)} completed attempts vs {len(calls)} real calls"
    check_calls_linked(truth, attempts)
    # No contact ever had two calls at once (one live attempt per contact).
    per_number: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for c in calls:
        per_number[digits(c["to"])].append((c["placed_at"], c.get("ended_at") or c["placed_at"]))
    for number, spans in per_number.items():
        spans.sort()
        for (_, end1), (start2, _) in itertools.pairwise(spans):
            assert start2 >= end1 - 0.01, f"{number} was called again while its earlier call was live"
    # Nothing called on the DNC list, nothing outside a contact's window.
    called_numbers = {digits(c["to"]) for c in calls}
    assert not (called_numbers & {digits(n) for n in dnc}), "a DNC number was called"
    by_phone = {digits(c.phone): c for c in contacts}
    for call in calls:
        contact = by_phone[digits(call["to"])]
        moment = datetime.fromtimestamp(call["placed_at"], UTC)
        assert callable_now(contact.timezones, moment, campaign.window_start, campaign.window_end,
                            campaign.weekdays, campaign.holidays, fallback_zone=campaign.timezone)
    assert rate_limited == 0, f"{rate_limited} requests were rate limited"
    return pairs


def truth_totals(truth: list[dict[str, Any]]) -> dict[str, float]:
    calls = real_calls(truth)
    return {
        "answered": sum(1 for c in calls if c.get("answered")),
        "connected": sum(1 for c in calls if c.get("connected")),
        "abandoned": sum(1 for c in calls if c.get("abandoned")),
        "talk_seconds": sum(float(c.get("talk_seconds") or 0) for c in calls if c.get("connected")),
    }


def check_calls_linked(truth: list[dict[str, Any]], attempts: list[Attempt]) -> None:
    """Each real call's customer leg belongs to one attempt to its number with the call's outcome: a row or an
    event of one call folded into another attempt is what lets a number go while its customer is on the line."""
    by_leg: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        if a.pbx_call_id:
            by_leg[a.pbx_call_id].append(a)
    for call in real_calls(truth):
        mine = by_leg.get(str(call["pbx_call_id"]), [])
        assert len(mine) <= 1, f"call {call['pbx_call_id']} is linked to {len(mine)} attempts"
        for a in mine:
            assert digits(a.phone) == digits(call["to"]), f"{call['pbx_call_id']} linked to another number"
            assert bool(a.answered) == bool(call["answered"]), (
                f"attempt {a.id} says answered={a.answered}, its call {call['pbx_call_id']} {call['answered']}")
