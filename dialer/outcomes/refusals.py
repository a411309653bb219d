"""What a refused callback does to campaigns: account failures pause them, they never burn contacts.

A callback Zadarma refuses for a reason that would refuse any number (a wrong key, an empty balance, a blocked
account, a bad campaign setting) says nothing about the contact: the engine gives the attempt back
(``dialer.outcomes.transitions.attempt_not_placed``) and calls :func:`pause_for_refusal`, which pauses the
campaigns the cause reaches with a reason that says what to do. Only a refusal about the number itself counts
against the contact (``dialer.zadarma.errors.classify_refusal`` decides which).

Invariant: a pause is recorded once per campaign (an ``EventLog`` row, and the caller logs once when anything
was paused): refusals of requests already in flight find the campaigns paused and add nothing.

An empty balance pauses with the same ``low balance`` reason as the daemon's balance floor, so the daemon's
balance check resumes the campaigns by itself once money is back. "Back" means above the balance the first check
after the refusal saw (:func:`balance_decision`), not merely above zero: Zadarma may refuse a balance that is
positive but below a call's price, and resuming on it would refuse and pause again every minute. A top-up made
before that first check is not noticed; the pause reason names the command that resumes by hand.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlmodel import Session, col, select

from dialer.kv import put_value
from dialer.models import Campaign, EventLog
from dialer.outcomes.states import CAMPAIGN_ACTIONS, LOW_BALANCE
from dialer.zadarma.errors import Refusal

# The pause reason's prefix the daemon's balance check resumes (dialer.dialing.daemon).
# {"at": ISO time of Zadarma's refusal for money, "balance": the lowest balance the daemon saw since, or None}.
NO_MONEY_KEY = "account:no_money"

# Refusals that reach every campaign of the account: they share its key and its balance.
ACCOUNT_WIDE = frozenset({Refusal.AUTH, Refusal.MONEY})
PAUSING = frozenset({Refusal.AUTH, Refusal.MONEY, Refusal.ACCOUNT})


def pause_reason(refusal: Refusal, message: str, campaign_name: str) -> str:
    """The campaign's pause reason: what Zadarma said and what the operator does about it."""
    resume = f"`dialer campaign resume {campaign_name}`"
    said = message.strip()[:200]
    if refusal == Refusal.AUTH:
        return (f"Zadarma refused the API key (401 {said}): check ZADARMA_KEY / ZADARMA_SECRET and restart "
                f"`dialer run`, then {resume}")
    if refusal == Refusal.MONEY:
        return (f"{LOW_BALANCE}: Zadarma refused a callback ({said}): top up the account; the daemon resumes "
                f"the campaign by itself when the balance rises (or {resume})")
    return (f"Zadarma refused a callback for any number ({said}): fix the account or campaign setting it "
            f"names, then {resume}")


def pause_for_refusal(
    session: Session, campaign_id: int, refusal: Refusal, message: str, now: datetime
) -> list[str]:
    """Pause what ``refusal`` reaches: every running campaign for the key or the balance, else this one.

    Returns the names of the campaigns paused now (empty when they were already paused). Nothing for a
    ``NUMBER`` or ``TRANSIENT`` refusal.
    """
    if refusal not in PAUSING:
        return []
    allowed, target = CAMPAIGN_ACTIONS["pause"]
    query = select(Campaign).where(col(Campaign.state).in_(allowed))
    if refusal not in ACCOUNT_WIDE:
        query = query.where(col(Campaign.id) == campaign_id)
    paused: list[str] = []
    for campaign in session.exec(query).all():
        campaign.state = target
        campaign.pause_reason = pause_reason(refusal, message, campaign.name)
        campaign.updated_at = now
        session.add(campaign)
        session.add(EventLog(campaign_id=campaign.id, level="error", kind=f"paused_{refusal}",
                             message=campaign.pause_reason))
        paused.append(campaign.name)
    if refusal == Refusal.MONEY and paused:
        # The balance it refused at is filled in by the daemon's next balance check.
        put_value(session, NO_MONEY_KEY, {"at": now.isoformat(), "balance": None})
    return paused


class BalanceDecision(NamedTuple):
    """What the daemon's balance check does: ``pause`` running campaigns (below the floor), ``resume`` those
    paused for ``low balance``, or ``wait``; and the refusal mark to store (``NO_MONEY_KEY``)."""

    action: str
    mark: Any


def balance_decision(balance: float, floor: float, mark: Any) -> BalanceDecision:
    """Pure. ``mark`` is the ``NO_MONEY_KEY`` value: None, or the refusal's time and the balance seen since."""
    if floor and balance < floor:
        return BalanceDecision("pause", mark)
    if not isinstance(mark, dict):
        return BalanceDecision("resume", None)
    seen = mark.get("balance")
    if not isinstance(seen, int | float):
        return BalanceDecision("wait", {**mark, "balance": balance})  # the first look since Zadarma refused
    if balance > max(float(seen), 0.0):
        return BalanceDecision("resume", None)
    return BalanceDecision("wait", {**mark, "balance": min(float(seen), balance)})

