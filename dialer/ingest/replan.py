"""Re-planning: contacts waiting to be dialled get the earliest next attempt legal under the campaign's current rules.

Run after a change to the calling window, days, holidays, zone, retry delays or attempt cap (``campaigns.
change_settings``), and by `dialer campaign reschedule`. Without it a contact the claim once moved to Monday 09:00
stays there whatever the window becomes.

Invariant: a re-plan never places a contact earlier than its legal lock (the ``retry_abandoned`` delay after its
last abandoned call) nor outside its calling window, and never touches a contact with a live attempt; every write
goes through ``dialer.outcomes.transitions``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col

from dialer.ingest import phones
from dialer.models import Attempt, Campaign, Contact
from dialer.outcomes.states import DUE_CONTACT_STATES, LIVE_ATTEMPT_STATES, AttemptState, ContactState
from dialer.outcomes.transitions import REJECTED, exhaust_over_cap, reschedule_contacts, retry_lock_until

# The settings whose change re-plans the campaign's waiting contacts.
PLANNING_KEYS = frozenset({
    "window_start", "window_end", "weekdays", "holidays", "timezone",
    "retry_busy_s", "retry_no_answer_s", "retry_failed_s", "retry_abandoned_s", "max_attempts",
})  # fmt: skip
# Attempts that were calls, or refusals with a retry delay: what a contact's retry lock runs from.
_LOCKING_ATTEMPTS = (AttemptState.COMPLETED, AttemptState.FAILED)
_CHUNK = 500


@dataclass
class ReplanResult:
    contacts: int = 0  # contacts considered (waiting to be dialled, no live call)
    moved: int = 0  # whose next attempt changed
    exhausted: int = 0  # over a lowered attempt cap
    due_now: int = 0  # due at once after the re-plan
    next_at: datetime | None = None  # the earliest next attempt of the others

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = asdict(self)
        d["next_at"] = self.next_at.isoformat() if self.next_at else None
        return d


@dataclass(frozen=True)
class LastCalls:
    end: datetime | None = None
    disposition: str | None = None
    abandoned: bool = False
    abandon_end: datetime | None = None

    def lock_until(self, campaign: Campaign, *, legal_only: bool = False) -> datetime | None:
        return retry_lock_until(campaign, last_end=self.end, last_disposition=self.disposition,
                                last_abandoned=self.abandoned, last_abandon_end=self.abandon_end,
                                legal_only=legal_only)  # fmt: skip


def legal_time(campaign: Campaign, zones: Iterable[str], earliest: datetime) -> datetime:
    """The first moment >= ``earliest`` inside the contact's calling window on an allowed day. When no window
    opens within a month (every day excluded) it stays ``earliest`` and the claim moves it a day at a time."""
    nxt = phones.next_window_start(
        list(zones),
        earliest,
        campaign.window_start,
        campaign.window_end,
        campaign.weekdays,
        campaign.holidays,
        fallback_zone=campaign.timezone,
    )
    return nxt or earliest


def replan(
    session: Session,
    campaign: Campaign,
    now: datetime,
    *,
    states: Iterable[ContactState] = DUE_CONTACT_STATES,
    legal_only: bool = False,
) -> ReplanResult:
    """Give every waiting contact of ``campaign`` in ``states`` its earliest legal next attempt.

    ``legal_only`` (`reschedule --now`): ignore the retry delays, keep the legal lock and the windows.
    """
    assert campaign.id is not None
    result = ReplanResult(exhausted=exhaust_over_cap(session, campaign.id, campaign.max_attempts, now))
    last = last_calls(session, campaign.id)
    live = (
        sa.select(sa.literal(1))
        .select_from(Attempt)
        .where(col(Attempt.contact_id) == col(Contact.id), col(Attempt.state).in_(LIVE_ATTEMPT_STATES))
    )
    rows = session.execute(
        sa.select(col(Contact.id), col(Contact.timezones), col(Contact.next_attempt_at)).where(
            col(Contact.campaign_id) == campaign.id, col(Contact.state).in_(list(states)), ~live.exists()
        )
    ).all()
    plans: dict[tuple[tuple[str, ...], datetime], datetime] = {}
    moves: dict[datetime, list[int]] = defaultdict(list)
    for contact_id, zones, current in rows:
        result.contacts += 1
        facts = last.get(contact_id)
        lock = facts.lock_until(campaign, legal_only=legal_only) if facts is not None else None
        earliest = max(now, lock) if lock is not None else now
        key = (tuple(zones or ()), earliest)
        planned = plans.get(key)
        if planned is None:
            planned = plans[key] = legal_time(campaign, key[0], earliest)
        if planned <= now:
            result.due_now += 1
            if current is None or current <= now:
                continue  # due now already: nothing to write
        else:
            result.next_at = planned if result.next_at is None else min(result.next_at, planned)
            if current == planned:
                continue
        moves[planned].append(contact_id)
    for planned, ids in moves.items():
        for i in range(0, len(ids), _CHUNK):
            result.moved += reschedule_contacts(session, ids[i : i + _CHUNK], planned, now)
    return result


def last_calls(session: Session, campaign_id: int, contact_id: int | None = None) -> dict[int, LastCalls]:
    """Per contact (or for one): its last call (end, disposition, abandoned) and the end of its last abandoned
    call, what ``transitions.retry_lock_until`` needs."""
    ended = sa.func.coalesce(col(Attempt.finished_at), col(Attempt.updated_at))
    scope = [col(Attempt.campaign_id) == campaign_id]
    if contact_id is not None:
        scope.append(col(Attempt.contact_id) == contact_id)
    latest = (
        sa.select(sa.func.max(col(Attempt.id)))
        .where(*scope, col(Attempt.state).in_(_LOCKING_ATTEMPTS))
        .group_by(col(Attempt.contact_id))
    )
    out: dict[int, LastCalls] = {}
    columns = (
        col(Attempt.contact_id),
        ended,
        col(Attempt.disposition),
        col(Attempt.abandoned),
        col(Attempt.state),
    )
    for contact_id, end, disposition, abandoned, state in session.execute(
        sa.select(*columns).where(col(Attempt.id).in_(latest))
    ):
        # A refused callback (failed) has no disposition of its own: the contact's is "rejected".
        disp = REJECTED if state == AttemptState.FAILED else disposition
        out[contact_id] = LastCalls(end=end, disposition=disp, abandoned=bool(abandoned))
    for contact_id, abandon_end in session.execute(
        sa.select(col(Attempt.contact_id), sa.func.max(ended))
        .where(*scope, col(Attempt.abandoned).is_(True))
        .group_by(col(Attempt.contact_id))
    ):
        prev = out.get(contact_id, LastCalls())
        out[contact_id] = LastCalls(prev.end, prev.disposition, prev.abandoned, abandon_end)
    return out
