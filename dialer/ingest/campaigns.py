"""Campaign service: settings validation, lifecycle (start/pause/resume/stop), contact counts and the due query.

Settings arrive as strings from the command line (``--retry-busy 30m``, ``set NAME window=09:00-18:00``) or as
typed values from code; ``parse_setting`` turns either into the stored value or raises ``SettingsError`` with a
message that says what is wrong and what is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dialer.ingest import phones
from dialer.ingest.replan import PLANNING_KEYS, ReplanResult, replan
from dialer.models import LIVE_ATTEMPT_SQL, Attempt, Campaign, Contact, DncEntry, utcnow
from dialer.outcomes.states import CAMPAIGN_ACTIONS, DUE_CONTACT_STATES, CampaignState
from dialer.outcomes.transitions import mark_dnc_contacts

PACING_NAMES = ("progressive", "vicidial", "vicidial-average", "predictive")
MAX_RATIO = 5.0
# A call script is read aloud from a screen: a few pages at most.
MAX_SCRIPT = 20_000
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SETTING_KEYS = (
    "from_number",
    "sip",
    "agents",
    "agent_extensions",
    "pacing",
    "abandon_target",
    "abandon_window",
    "max_attempts",
    "retry_busy_s",
    "retry_no_answer_s",
    "retry_failed_s",
    "retry_abandoned_s",
    "window_start",
    "window_end",
    "weekdays",
    "holidays",
    "default_region",
    "timezone",
    "abandon_action",
    "wrapup_s",
    "script",
)
# Friendlier names accepted by `dialer campaign set` (and the CLI options), mapped to columns.
ALIASES = {
    "from": "from_number",
    "retry_busy": "retry_busy_s",
    "retry_no_answer": "retry_no_answer_s",
    "retry_failed": "retry_failed_s",
    "retry_abandoned": "retry_abandoned_s",
    "region": "default_region",
    "tz": "timezone",
    "extensions": "agent_extensions",
    "wrapup": "wrapup_s",
}


class SettingsError(ValueError):
    """A campaign setting is invalid; the message says which and what is accepted."""


class CampaignError(Exception):
    """A campaign operation is not possible (unknown name, wrong state...)."""


# --- settings ----------------------------------------------------------------------------------------------


def parse_pacing(value: str) -> str:
    v = str(value).strip().lower()
    if v in PACING_NAMES:
        return v
    m = re.fullmatch(r"ratio:(\d+(?:\.\d+)?)", v)
    if m:
        k = float(m.group(1))
        if 1.0 <= k <= MAX_RATIO:
            return f"ratio:{m.group(1)}"
        raise SettingsError(
            f"pacing {value!r}: the ratio K must be between 1 and {MAX_RATIO:g} (e.g. ratio:1.5)"
        )
    raise SettingsError(
        f"unknown pacing policy {value!r}: use progressive, ratio:K (1 <= K <= 5), vicidial, vicidial-average "
        "or predictive"
    )


def parse_duration_s(value: Any, what: str = "delay") -> int:
    """Seconds from 900, "900", "15m", "2h", "3d", "1h30m"."""
    if isinstance(value, bool):
        raise SettingsError(f"{what}: {value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = int(value)
    else:
        text = str(value).strip().lower()
        if re.fullmatch(r"\d+", text):
            seconds = int(text)
        else:
            parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
            if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", text).strip():
                raise SettingsError(f"{what}: {value!r} is not a duration (use seconds or e.g. 30m, 2h, 3d)")
            mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}
            seconds = int(sum(float(n) * mult[u] for n, u in parts))
    if not 0 <= seconds <= 90 * 86400:
        raise SettingsError(f"{what}: {value!r} must be between 0 and 90 days")
    return seconds


def parse_fraction(value: Any) -> float:
    text = str(value).strip()
    try:
        f = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise SettingsError(f"abandon target {value!r} is not a number (use 0.03 or 3%)") from None
    if not 0 < f <= 0.05:
        raise SettingsError(
            f"abandon target {value!r} must be above 0 and at most 0.05 (5%); the legal cap is 3%"
        )
    return f


def parse_weekdays(value: Any) -> list[int]:
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise SettingsError("weekdays: empty (use e.g. mon-fri, mon,wed,fri or 0,1,2,3,4)")
        days: set[int] = set()
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (_weekday(p) for p in part.split("-", 1))
                if a > b:
                    raise SettingsError(f"weekdays: range {part!r} runs backwards")
                days.update(range(a, b + 1))
            else:
                days.add(_weekday(part))
        out = sorted(days)
    else:
        try:
            out = sorted({int(v) for v in value})
        except (TypeError, ValueError):
            raise SettingsError(f"weekdays {value!r}: use numbers 0 (Monday) to 6 (Sunday)") from None
        if any(d < 0 or d > 6 for d in out):
            raise SettingsError(f"weekdays {value!r}: use numbers 0 (Monday) to 6 (Sunday)")
    if not out:
        raise SettingsError("weekdays: at least one day is needed")
    return out


def _weekday(token: str) -> int:
    token = token.strip().lower()
    if token.isdigit() and 0 <= int(token) <= 6:
        return int(token)
    for i, name in enumerate(WEEKDAY_NAMES):
        if token[:3] == name and len(token) >= 3:
            return i
    raise SettingsError(f"weekdays: {token!r} is not a day (mon..sun or 0..6, Monday = 0)")


def parse_holidays(value: Any) -> list[str]:
    items = (
        [p.strip() for p in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    )
    out = []
    for item in items:
        if not item:
            continue
        try:
            out.append(date.fromisoformat(item).isoformat())
        except ValueError:
            raise SettingsError(f"holiday {item!r} is not a date like 2026-12-25") from None
    return sorted(set(out))


def parse_time(value: Any, what: str) -> str:
    try:
        t = phones.parse_hhmm(str(value))
    except ValueError:
        raise SettingsError(f"{what} {value!r} is not a time of day like 09:00") from None
    return "24:00" if t.hour == 23 and t.minute == 59 and t.second == 59 else f"{t.hour:02d}:{t.minute:02d}"


def parse_region(value: Any) -> str | None:
    if value is None or str(value).strip() in ("", "none", "None"):
        return None
    code = str(value).strip().upper()
    if not phones.is_region(code):
        raise SettingsError(f"unknown region {value!r}: use a two-letter country code such as GB, RU, US, DE")
    return code


def parse_timezone(value: Any) -> str:
    name = str(value).strip()
    if not phones.is_timezone(name):
        raise SettingsError(f"unknown time zone {value!r}: use an IANA name such as Europe/London")
    return name


def parse_abandon_action(value: Any) -> str:
    v = str(value).strip()
    if v == "hangup" or re.fullmatch(r"ivr_play:\S+", v):
        return v
    raise SettingsError(f"abandon action {value!r}: use hangup or ivr_play:<file id>")


def parse_from(value: Any) -> str:
    v = str(value).strip()
    if not re.fullmatch(r"\+?[0-9A-Za-z_\-]{1,40}", v):
        raise SettingsError(
            f"from {value!r}: give the PBX number, extension or scenario id (e.g. 100 or 442037691880)"
        )
    return v


def parse_int(value: Any, what: str, lo: int, hi: int) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise SettingsError(f"{what} {value!r} is not a whole number") from None
    if not lo <= n <= hi:
        raise SettingsError(f"{what} must be between {lo} and {hi}, got {n}")
    return n


def parse_setting(key: str, value: Any) -> tuple[str, Any]:
    """(column, stored value) for one setting; raises SettingsError."""
    k = key.strip().lower().replace("-", "_")
    k = ALIASES.get(k, k)
    if k == "from_number":
        return k, parse_from(value)
    if k == "sip":
        v = None if value is None or str(value).strip() in ("", "none") else str(value).strip()
        if v is not None and not re.fullmatch(r"\+?[0-9A-Za-z_\-]{1,40}", v):
            raise SettingsError(f"sip {value!r}: give a SIP number or extension for caller id")
        return k, v
    if k == "agents":
        return k, parse_int(value, "agents", 1, 10_000)
    if k == "agent_extensions":
        items = value.split(",") if isinstance(value, str) else list(value)
        exts = [str(x).strip() for x in items if str(x).strip()]
        if any(not re.fullmatch(r"[0-9A-Za-z_\-]{1,20}", e) for e in exts):
            raise SettingsError(f"agent extensions {value!r}: give extensions like 100,101,102")
        return k, exts
    if k == "pacing":
        return k, parse_pacing(value)
    if k == "abandon_target":
        return k, parse_fraction(value)
    if k == "abandon_window":
        v = str(value).strip().lower()
        if v not in ("30d", "24h"):
            raise SettingsError(f"abandon window {value!r}: use 30d (US rule) or 24h (UK Ofcom)")
        return k, v
    if k == "max_attempts":
        return k, parse_int(value, "max attempts", 1, 100)
    if k in ("retry_busy_s", "retry_no_answer_s", "retry_failed_s", "retry_abandoned_s"):
        return k, parse_duration_s(value, k.removesuffix("_s").replace("_", " ") + " delay")
    if k == "window_start":
        return k, parse_time(value, "window start")
    if k == "window_end":
        return k, parse_time(value, "window end")
    if k == "weekdays":
        return k, parse_weekdays(value)
    if k == "holidays":
        return k, parse_holidays(value)
    if k == "default_region":
        return k, parse_region(value)
    if k == "timezone":
        return k, parse_timezone(value)
    if k == "abandon_action":
        return k, parse_abandon_action(value)
    if k == "wrapup_s":
        seconds = parse_duration_s(value, "wrap-up limit")
        if seconds > 3600:
            raise SettingsError(f"wrap-up limit {value!r}: at most 1h")
        return k, seconds
    if k == "script":
        text = "" if value is None else str(value).replace("\r\n", "\n").strip()
        if len(text) > MAX_SCRIPT:
            raise SettingsError(f"the call script is {len(text):,} characters; at most {MAX_SCRIPT:,}")
        return k, text or None
    known = ", ".join([*SETTING_KEYS, "window", *ALIASES])
    raise SettingsError(f"unknown setting {key!r}; known: {known}")


def parse_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parses several settings; ``window=09:00-18:00`` sets both ends."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None and key not in ("sip", "default_region", "region", "script"):
            continue
        if key.strip().lower() == "window":
            m = re.fullmatch(r"\s*(\S+)\s*-\s*(\S+)\s*", str(value))
            if not m:
                raise SettingsError(f"window {value!r}: use START-END like 09:00-20:00")
            out["window_start"] = parse_time(m.group(1), "window start")
            out["window_end"] = parse_time(m.group(2), "window end")
            continue
        column, parsed = parse_setting(key, value)
        out[column] = parsed
    return out


def validate(c: Campaign) -> None:
    """Cross-field checks on a whole campaign."""
    start, end = phones.parse_hhmm(c.window_start), phones.parse_hhmm(c.window_end)
    if start >= end:
        raise SettingsError(
            f"calling window {c.window_start}-{c.window_end}: the start must be before the end "
            "(windows do not cross midnight)"
        )
    if c.agent_extensions and len(c.agent_extensions) != c.agents:
        raise SettingsError(f"{len(c.agent_extensions)} agent extensions given for {c.agents} agents")


# --- lifecycle ---------------------------------------------------------------------------------------------


def get_campaign(session: Session, name: str) -> Campaign:
    campaign = session.exec(select(Campaign).where(Campaign.name == name)).first()
    if campaign is None:
        raise CampaignError(f"no campaign named {name!r} (see `dialer campaign list`)")
    return campaign


def find_campaign(session: Session, name: str) -> Campaign | None:
    return session.exec(select(Campaign).where(Campaign.name == name)).first()


def create_campaign(session: Session, name: str, from_number: str, **settings: Any) -> Campaign:
    name = name.strip()
    if not name or len(name) > 100:
        raise SettingsError("campaign name must be 1-100 characters")
    if find_campaign(session, name) is not None:
        raise CampaignError(f"campaign {name!r} already exists (change it with `dialer campaign set`)")
    values = parse_settings({"from_number": from_number, **settings})
    campaign = Campaign(name=name, **values)
    validate(campaign)
    session.add(campaign)
    session.flush()
    return campaign


def update_campaign(session: Session, name: str, settings: Mapping[str, Any]) -> Campaign:
    return change_settings(session, name, settings)[0]


def change_settings(
    session: Session, name: str, settings: Mapping[str, Any], *, now: datetime | None = None
) -> tuple[Campaign, ReplanResult | None]:
    """Change settings; a change to the window, days, holidays, zone, retry delays or attempt cap re-plans the
    contacts waiting to be dialled at once (the re-plan's result; None when nothing planning-related changed)."""
    campaign = get_campaign(session, name)
    values = parse_settings(settings)
    before = {key: getattr(campaign, key) for key in values}
    for key, value in values.items():
        setattr(campaign, key, value)
    validate(campaign)
    now = now or utcnow()
    campaign.updated_at = now
    session.add(campaign)
    session.flush()
    if not any(key in PLANNING_KEYS and before[key] != value for key, value in values.items()):
        return campaign, None
    return campaign, replan(session, campaign, now)


def change_state(session: Session, name: str, action: str, reason: str | None = None) -> Campaign:
    campaign = get_campaign(session, name)
    allowed, target = CAMPAIGN_ACTIONS[action]
    if campaign.state not in allowed:
        raise CampaignError(
            f"cannot {action} campaign {name!r}: it is {campaign.state} ({action} works from {', '.join(sorted(allowed))})"
        )
    campaign.state = target
    campaign.pause_reason = reason if target == CampaignState.PAUSED else None
    if target != CampaignState.RUNNING:
        # The engine's verdict (dialer.dialing.why) is about a running campaign: the next run starts afresh.
        campaign.dial_reason = campaign.dial_reason_detail = None
        campaign.dial_reason_until = campaign.dial_reason_since = None
    campaign.updated_at = utcnow()
    session.add(campaign)
    session.flush()
    return campaign


def start_campaign(session: Session, name: str) -> Campaign:
    return change_state(session, name, "start")


def pause_campaign(session: Session, name: str, reason: str | None = "paused by operator") -> Campaign:
    return change_state(session, name, "pause", reason)


def list_campaigns(session: Session, *, include_deleted: bool = False) -> list[Campaign]:
    q = select(Campaign).order_by(col(Campaign.id))
    if not include_deleted:
        q = q.where(col(Campaign.state) != CampaignState.DELETED)
    return list(session.exec(q).all())


# --- contacts ----------------------------------------------------------------------------------------------


def contact_counts(session: Session, campaign_id: int) -> dict[str, int]:
    rows = session.execute(
        sa.select(col(Contact.state), sa.func.count())
        .where(col(Contact.campaign_id) == campaign_id)
        .group_by(col(Contact.state))
    ).all()
    return {str(state): int(n) for state, n in rows}


def list_contacts(
    session: Session, campaign_id: int, state: str | None = None, limit: int | None = 100, offset: int = 0
) -> list[Contact]:
    q = select(Contact).where(Contact.campaign_id == campaign_id)
    if state:
        q = q.where(Contact.state == state)
    q = q.order_by(col(Contact.id)).offset(offset)
    if limit is not None:
        q = q.limit(limit)
    return list(session.exec(q).all())


def next_due_contacts(
    session: Session,
    campaign_id: int,
    now: datetime,
    limit: int,
    *,
    max_attempts: int | None = None,
    lock: bool = False,
) -> list[Contact]:
    """Contacts the daemon may dial next, best first: state pending or retry, due (next_attempt_at empty or <= now),
    under the attempt cap, not on the do-not-call list, and whose number is not in a live call in ANY campaign
    (one person, one live call; the unique index ``uq_attempt_live_phone`` refuses what slips past this);
    ordered by priority (high first) then next_attempt_at (empty first). The calling window is NOT checked
    here: filter with ``phones.callable_now`` and over-fetch.

    Each due state is read separately so the index (campaign_id, state, priority DESC, next_attempt_at) serves
    the order directly and the query stops after ``limit`` rows even with millions of contacts waiting.
    ``lock=True`` adds ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (several daemons claiming at once); SQLite
    serialises writers with BEGIN IMMEDIATE instead.
    """
    if limit <= 0:
        return []
    if max_attempts is None:
        max_attempts = session.execute(
            sa.select(col(Campaign.max_attempts)).where(col(Campaign.id) == campaign_id)
        ).scalar()
        if max_attempts is None:
            return []
    dnc = (
        sa.select(sa.literal(1))
        .where(col(DncEntry.phone) == col(Contact.phone))
        .where(sa.or_(col(DncEntry.campaign_id).is_(None), col(DncEntry.campaign_id) == campaign_id))
    )
    # One probe of the small partial index per row read; the predicate is literal SQL so the planner can
    # match it to the index's own (see models.LIVE_ATTEMPT_SQL).
    in_call = (
        sa.select(sa.literal(1))
        .select_from(Attempt)
        .where(col(Attempt.phone) == col(Contact.phone))
        .where(sa.text(LIVE_ATTEMPT_SQL))
    )
    order = (
        col(Contact.priority).desc(),
        col(Contact.next_attempt_at).asc().nulls_first(),
        col(Contact.id).asc(),
    )

    def due_in(state: str) -> Any:
        return (
            select(Contact)
            .where(col(Contact.campaign_id) == campaign_id)
            .where(col(Contact.state) == state)
            .where(sa.or_(col(Contact.next_attempt_at).is_(None), col(Contact.next_attempt_at) <= now))
            .where(col(Contact.attempts) < max_attempts)
            .where(~dnc.exists())
            .where(~in_call.exists())
            .order_by(*order)
            .limit(limit)
        )

    if lock and session.get_bind().dialect.name == "postgresql":
        # FOR UPDATE cannot lock through a UNION: one locked query per state, merged here.
        found: list[Contact] = []
        for state in DUE_CONTACT_STATES:
            found.extend(session.exec(due_in(state).with_for_update(skip_locked=True, of=Contact)).all())
        found.sort(key=_due_order)
        return found[:limit]
    # One round trip: the best `limit` of each state (each an ordered index range), merged by the database.
    parts = [sa.select(due_in(state).with_only_columns(col(Contact.id)).subquery()) for state in DUE_CONTACT_STATES]
    ids = sa.union_all(*parts).subquery("due")
    stmt = select(Contact).where(col(Contact.id).in_(sa.select(ids.c.id))).order_by(*order).limit(limit)
    return list(session.exec(stmt).all())


def _due_order(c: Contact) -> tuple[int, int, float, int]:
    ts = c.next_attempt_at
    return (-c.priority, 0 if ts is None else 1, 0.0 if ts is None else ts.timestamp(), c.id or 0)


# --- do-not-call -------------------------------------------------------------------------------------------


def add_dnc(
    session: Session, numbers: Iterable[str], campaign: Campaign | None = None, reason: str | None = None
) -> tuple[int, int]:
    """Adds normalised E.164 numbers; marks matching contacts 'dnc'. Returns (entries added, contacts marked)."""
    phones_ = sorted(set(numbers))
    if not phones_:
        return 0, 0
    cid = campaign.id if campaign is not None else None
    existing: set[str] = set()
    for chunk in _chunks(phones_, 500):
        q = sa.select(col(DncEntry.phone)).where(col(DncEntry.phone).in_(chunk))
        q = q.where(col(DncEntry.campaign_id).is_(None) if cid is None else col(DncEntry.campaign_id) == cid)
        existing.update(session.execute(q).scalars())
    now = utcnow()
    new = [p for p in phones_ if p not in existing]
    for p in new:
        session.add(DncEntry(phone=p, campaign_id=cid, reason=reason, created_at=now))
    session.flush()
    marked = 0
    # Per campaign, so the lookup uses the (campaign_id, phone) unique index.
    cids = (
        [cid] if cid is not None else [int(x) for x in session.execute(sa.select(col(Campaign.id))).scalars()]
    )
    for campaign_id in cids:
        for chunk in _chunks(phones_, 500):
            marked += mark_dnc_contacts(session, campaign_id, chunk, now)
    return len(new), marked


def remove_dnc(session: Session, numbers: Iterable[str], campaign: Campaign | None = None) -> int:
    """Removes entries (contacts already marked 'dnc' stay so: re-load them to call them again)."""
    cid = campaign.id if campaign is not None else None
    removed = 0
    for chunk in _chunks(sorted(set(numbers)), 500):
        q = sa.delete(DncEntry).where(col(DncEntry.phone).in_(chunk))
        q = q.where(col(DncEntry.campaign_id).is_(None) if cid is None else col(DncEntry.campaign_id) == cid)
        removed += int(getattr(session.execute(q), "rowcount", 0) or 0)
    return removed


def list_dnc(session: Session, campaign: Campaign | None = None) -> list[DncEntry]:
    q = select(DncEntry)
    if campaign is not None:
        q = q.where(DncEntry.campaign_id == campaign.id)
    return list(session.exec(q.order_by(col(DncEntry.phone))).all())


def dnc_phones(session: Session, campaign_id: int | None) -> set[str]:
    """Every number that must not be called in this campaign (global entries plus the campaign's own)."""
    q = sa.select(col(DncEntry.phone)).where(
        sa.or_(col(DncEntry.campaign_id).is_(None), col(DncEntry.campaign_id) == campaign_id)
        if campaign_id is not None
        else col(DncEntry.campaign_id).is_(None)
    )
    return set(session.execute(q).scalars())


def _chunks(items: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
