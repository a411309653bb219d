"""Deleting a campaign and removing contacts from one, keeping the record of calls made unless told to purge it.

Invariant: nothing here touches a call that may be under way. A campaign is deleted only when it is not running
and none of its calls is live; a contact in a call is never removed. Without ``purge`` every call attempt stays
on record, and so does each contact it belongs to (an attempt needs its contact and campaign rows).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from dialer.ingest.campaigns import CampaignError, change_state, get_campaign
from dialer.models import Attempt, Campaign, Contact, DncEntry, EventLog, KeyValue
from dialer.outcomes.states import LIVE_ATTEMPT_STATES, CampaignState, ContactState
from dialer.reporting.figures import agent_seconds_key

_CHUNK = 500


@dataclass
class DeleteResult:
    name: str
    purged: bool
    kept_as: str | None = None  # the deleted campaign's new name (without purge)
    contacts_removed: int = 0
    contacts_kept: int = 0  # with call attempts on record
    attempts_removed: int = 0
    attempts_kept: int = 0
    events_removed: int = 0
    events_kept: int = 0
    dnc_removed: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class RemoveResult:
    matched: int = 0  # contacts of the campaign the numbers or file name matched
    removed: int = 0
    attempts_removed: int = 0
    kept_with_calls: list[str] = field(
        default_factory=list
    )  # numbers kept: they have call attempts on record
    in_call: list[str] = field(default_factory=list)  # numbers in a call now: never removed
    not_found: list[str] = field(default_factory=list)  # numbers asked for that the campaign does not hold

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def deleted_name(name: str, campaign_id: int) -> str:
    """The name a campaign deleted without purge keeps its records under, freeing its own."""
    suffix = f"~deleted-{campaign_id}"
    return name[: 100 - len(suffix)] + suffix


def delete_campaign(session: Session, name: str, *, purge: bool, now: datetime) -> DeleteResult:
    """Delete campaign ``name``; refuses (CampaignError) while it is running or any of its calls is live.

    Without ``purge``: contacts never dialled are deleted; the campaign becomes ``deleted`` under the name
    ``deleted_name`` (hidden from lists, its own name free again) and keeps its call attempts, the contacts they
    belong to, its event log and its do-not-call entries. With ``purge``: all of it is deleted.
    """
    campaign = get_campaign(session, name)
    cid = campaign.id
    assert cid is not None
    live = _count(session, sa.select(sa.func.count()).select_from(Attempt).where(
        col(Attempt.campaign_id) == cid, col(Attempt.state).in_(LIVE_ATTEMPT_STATES)))  # fmt: skip
    if live:
        raise CampaignError(
            f"campaign {name!r} has {live} call(s) in progress or not yet settled: wait for them to end (see "
            "`dialer status`; `dialer reconcile` settles uncertain ones), then delete it"
        )
    if campaign.state == CampaignState.DELETED:
        if not purge:
            raise CampaignError(f"campaign {name!r} is already deleted; --purge removes the records it keeps")
    else:
        # The state machine refuses a running campaign, saying what delete works from.
        change_state(session, name, "delete")
    result = DeleteResult(name=name, purged=purge)
    attempts = _count(
        session, sa.select(sa.func.count()).select_from(Attempt).where(col(Attempt.campaign_id) == cid)
    )
    events = _count(
        session, sa.select(sa.func.count()).select_from(EventLog).where(col(EventLog.campaign_id) == cid)
    )
    if purge:
        result.contacts_removed = _count(
            session, sa.select(sa.func.count()).select_from(Contact).where(col(Contact.campaign_id) == cid)
        )
        result.attempts_removed, result.events_removed = attempts, events
        result.dnc_removed = _rowcount(
            session.execute(sa.delete(DncEntry).where(col(DncEntry.campaign_id) == cid))
        )
        session.execute(sa.delete(EventLog).where(col(EventLog.campaign_id) == cid))
        session.execute(sa.delete(KeyValue).where(col(KeyValue.key) == agent_seconds_key(cid)))
        # Explicit, not left to ON DELETE CASCADE: the attempts first (they point at contacts and campaign).
        session.execute(sa.delete(Attempt).where(col(Attempt.campaign_id) == cid))
        session.execute(sa.delete(Contact).where(col(Contact.campaign_id) == cid))
        session.execute(sa.delete(Campaign).where(col(Campaign.id) == cid))
        session.expunge(campaign)
        return result
    has_attempt = (
        sa.select(sa.literal(1)).select_from(Attempt).where(col(Attempt.contact_id) == col(Contact.id))
    )
    result.contacts_removed = _rowcount(session.execute(
        sa.delete(Contact).where(col(Contact.campaign_id) == cid, ~has_attempt.exists())
        .execution_options(synchronize_session=False)))  # fmt: skip
    result.contacts_kept = _count(
        session, sa.select(sa.func.count()).select_from(Contact).where(col(Contact.campaign_id) == cid)
    )
    result.attempts_kept, result.events_kept = attempts, events
    campaign.name = result.kept_as = deleted_name(name, cid)
    campaign.updated_at = now
    session.add(campaign)
    session.add(
        EventLog(
            campaign_id=cid,
            kind="campaign_deleted",
            at=now,
            message=f"campaign {name!r} deleted; its call records are kept as {campaign.name!r}",
        )
    )
    session.flush()
    return result


def remove_contacts(
    session: Session,
    campaign: Campaign,
    *,
    phones: Iterable[str] = (),
    source_file: str | None = None,
    purge: bool = False,
) -> RemoveResult:
    """Remove the campaign's contacts with these (E.164) numbers, or loaded from the file named ``source_file``.

    A contact in a call is never removed. One with call attempts on record is kept (and still dialled) unless
    ``purge``, which deletes it with its attempts.
    """
    cid = campaign.id
    assert cid is not None
    wanted = sorted(set(phones))
    rows: list[tuple[int, str, str]] = []
    if wanted:
        for i in range(0, len(wanted), _CHUNK):
            rows.extend(session.execute(
                sa.select(col(Contact.id), col(Contact.phone), col(Contact.state))
                .where(col(Contact.campaign_id) == cid, col(Contact.phone).in_(wanted[i : i + _CHUNK]))
            ).all())  # fmt: skip
    if source_file is not None:
        rows.extend(session.execute(
            sa.select(col(Contact.id), col(Contact.phone), col(Contact.state))
            .where(col(Contact.campaign_id) == cid, col(Contact.source_file) == source_file)
        ).all())  # fmt: skip
    by_id = {r[0]: r for r in rows}
    result = RemoveResult(matched=len(by_id))
    found = {phone for _, phone, _ in by_id.values()}
    result.not_found = [p for p in wanted if p not in found]
    ids = sorted(by_id)
    live_ids: set[int] = set()
    called_ids: set[int] = set()
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        for contact_id, state in session.execute(
            sa.select(col(Attempt.contact_id), col(Attempt.state)).where(col(Attempt.contact_id).in_(chunk))
        ):
            called_ids.add(contact_id)
            if state in LIVE_ATTEMPT_STATES:
                live_ids.add(contact_id)
    live_ids |= {i for i, (_, _, state) in by_id.items() if state == ContactState.DIALING}
    result.in_call = sorted(by_id[i][1] for i in live_ids)
    if not purge:
        result.kept_with_calls = sorted(by_id[i][1] for i in called_ids - live_ids)
    doomed = [i for i in ids if i not in live_ids and (purge or i not in called_ids)]
    for i in range(0, len(doomed), _CHUNK):
        chunk = doomed[i : i + _CHUNK]
        result.attempts_removed += _rowcount(session.execute(
            sa.delete(Attempt).where(col(Attempt.contact_id).in_(chunk), col(Attempt.state).not_in(LIVE_ATTEMPT_STATES))
            .execution_options(synchronize_session=False)))  # fmt: skip
        result.removed += _rowcount(session.execute(
            sa.delete(Contact).where(col(Contact.id).in_(chunk), col(Contact.state) != ContactState.DIALING)
            .execution_options(synchronize_session=False)))  # fmt: skip
    return result


def _count(session: Session, stmt: sa.Select[Any]) -> int:
    return int(session.execute(stmt).scalar() or 0)


def _rowcount(res: object) -> int:
    return int(getattr(res, "rowcount", 0) or 0)
