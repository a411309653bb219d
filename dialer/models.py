"""Database tables (SQLModel). Every part of the dialer reads and writes these.

Time rule: every datetime column is a ``UTCDateTime``. It accepts only timezone-aware datetimes (a naive one is a
bug waiting to happen: local time or UTC?), stores UTC, and always hands back aware UTC datetimes, on SQLite
(which has no time zones) and on PostgreSQL alike. Use ``utcnow()`` for "now".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from dialer.outcomes.states import (
    LIVE_ATTEMPT_STATES,
    AgentState,
    AttemptState,
    CallbackState,
    CampaignState,
    ContactState,
    sql_list,
)

# A stable naming convention lets Alembic's batch mode (SQLite table copies) find and alter constraints by name.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEFAULT_WEEKDAYS = [0, 1, 2, 3, 4]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; returns aware UTC datetimes; refuses naive ones."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"UTCDateTime expects a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(
                f"naive datetime {value!r}: pass an aware datetime (e.g. dialer.models.utcnow())"
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite compares datetimes as text, so every stored value must be the same naive-UTC format.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Campaign(SQLModel, table=True):
    __tablename__ = "campaign"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, nullable=False)
    from_number: str = Field(nullable=False)
    sip: str | None = None
    agents: int = 1
    agent_extensions: list[str] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    pacing: str = "progressive"
    abandon_target: float = 0.03
    abandon_window: str = "30d"
    max_attempts: int = 3
    retry_busy_s: int = 1800
    retry_no_answer_s: int = 3600
    retry_failed_s: int = 900
    retry_abandoned_s: int = 259200
    window_start: str = "09:00"
    window_end: str = "20:00"
    weekdays: list[int] = Field(
        default_factory=lambda: list(DEFAULT_WEEKDAYS), sa_type=sa.JSON, nullable=False
    )
    holidays: list[str] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    default_region: str | None = None
    timezone: str = "UTC"
    abandon_action: str = "hangup"
    # With agents (dialer.agents): how long an agent stays in wrap-up after a call unless a disposition ends it.
    wrapup_s: int = Field(default=60, nullable=False, sa_column_kwargs={"server_default": "60"})
    # The call script agents read, shown with the contact's record (``{name}``-style fields filled in).
    script: str | None = None
    state: str = Field(default=CampaignState.DRAFT.value, index=True)
    pause_reason: str | None = None
    # Why the daemon is or is not dialling it (dialer.dialing.why), written by the engine when it changes:
    # a reason code, its detail, the time it lasts until (when known) and since when it holds.
    dial_reason: str | None = None
    dial_reason_detail: str | None = None
    dial_reason_until: datetime | None = _ts()
    dial_reason_since: datetime | None = _ts()
    created_at: datetime = _created()
    updated_at: datetime = _created()


class Contact(SQLModel, table=True):
    __tablename__ = "contact"
    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "phone"),
        # "Next due contacts of campaign X": one index range per due state, read in priority order. On
        # PostgreSQL migration 0008 builds it as (..., next_attempt_at ASC NULLS FIRST, id): the query's order.
        sa.Index("ix_contact_due", "campaign_id", "state", sa.text("priority DESC"), "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", nullable=False, ondelete="CASCADE")
    phone: str = Field(nullable=False)
    name: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    timezones: list[str] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    state: str = Field(default=ContactState.PENDING.value, nullable=False)
    priority: int = Field(default=0, nullable=False)
    next_attempt_at: datetime | None = _ts()
    attempts: int = Field(default=0, nullable=False)
    last_disposition: str | None = None
    source_line: int | None = None
    # The name (not the path) of the file the contact was loaded from: `dialer campaign remove --source`.
    source_file: str | None = None
    created_at: datetime = _created()
    updated_at: datetime = _created()


# The predicate of the live-call index. Queries that want the index must repeat it as literal SQL
# (``LIVE_ATTEMPT_SQL``): SQLite and PostgreSQL only use a partial index when they can match its predicate, and
# bound parameters in its place defeat that.
_LIVE = f"state IN ({sql_list(LIVE_ATTEMPT_STATES)})"
LIVE_ATTEMPT_SQL = f"attempt.{_LIVE}"


class Attempt(SQLModel, table=True):
    __tablename__ = "attempt"
    __table_args__ = (
        # One person, one live call: at most one live attempt per phone number, whatever campaigns hold it,
        # enforced by the database (SQLite and PostgreSQL). It also covers "one per contact" (a contact's
        # attempts all carry its number) and is the index the due query probes to skip numbers in a call.
        # One Zadarma account per database today; with several accounts the key becomes (account, phone).
        sa.Index(
            "uq_attempt_live_phone",
            "phone",
            unique=True,
            sqlite_where=sa.text(_LIVE),
            postgresql_where=sa.text(_LIVE),
        ),
        sa.Index("ix_attempt_campaign_state", "campaign_id", "state"),
        sa.Index("ix_attempt_phone_created", "phone", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", nullable=False, ondelete="CASCADE")
    contact_id: int = Field(foreign_key="contact.id", nullable=False, index=True, ondelete="CASCADE")
    phone: str = Field(nullable=False)
    state: str = Field(default=AttemptState.PLACING.value, nullable=False)
    created_at: datetime = _created()
    sent_at: datetime | None = _ts()
    placed_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    error: str | None = None
    disposition: str | None = None
    answered: bool | None = None
    connected: bool | None = None
    abandoned: bool | None = None
    agent: str | None = None
    ring_seconds: float | None = None
    talk_seconds: float | None = None
    cost: float | None = None
    pbx_call_id: str | None = Field(default=None, index=True)
    # NOTIFY_RECORD's ``call_id_with_rec`` for a recorded call (``/v1/pbx/record/request/`` gives its link).
    recording: str | None = None
    live: bool = Field(default=True, nullable=False)
    updated_at: datetime = _created()
    # The agent session the customer was routed to (``agent`` above is the PBX extension Zadarma reports), and
    # that agent's verdict on the call (``disposition`` above is Zadarma's): a campaign's disposition code.
    agent_id: int | None = Field(default=None, foreign_key="agent.id", index=True, ondelete="SET NULL")
    agent_disposition: str | None = None
    agent_note: str | None = None
    disposition_at: datetime | None = _ts()


class DncEntry(SQLModel, table=True):
    __tablename__ = "dnc_entry"
    __table_args__ = (sa.UniqueConstraint("phone", "campaign_id"),)

    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(nullable=False)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", ondelete="CASCADE")
    reason: str | None = None
    created_at: datetime = _created()


class WebhookEvent(SQLModel, table=True):
    __tablename__ = "webhook_event"
    __table_args__ = (
        # The few events waiting to be folded again (``dialer.outcomes.events``), found without a scan.
        sa.Index("ix_webhook_event_unfolded", "id", sqlite_where=sa.text("fold_error IS NOT NULL"),
                 postgresql_where=sa.text("fold_error IS NOT NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = _created()
    event: str = Field(nullable=False, index=True)
    pbx_call_id: str | None = Field(default=None, index=True)
    dedup_key: str = Field(nullable=False, unique=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    signature_ok: bool = Field(default=False, nullable=False)
    # Why folding this event failed (None: folded). Folded again later, in order, until it succeeds.
    fold_error: str | None = None
    fold_tries: int = Field(default=0, nullable=False, sa_column_kwargs={"server_default": "0"})


class StatRow(SQLModel, table=True):
    __tablename__ = "stat_row"
    __table_args__ = (
        sa.UniqueConstraint("source", "row_key"),
        sa.Index("ix_stat_row_callstart", "callstart"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(nullable=False)
    row_key: str = Field(nullable=False)
    callstart: datetime | None = _ts()
    pbx_call_id: str | None = Field(default=None, index=True)
    clid: str | None = None
    destination: str | None = Field(default=None, index=True)
    disposition: str | None = None
    seconds: int | None = None
    sip: str | None = None
    cost: float | None = None
    raw: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    attempt_id: int | None = Field(default=None, foreign_key="attempt.id", index=True, ondelete="SET NULL")
    fetched_at: datetime = _created()


class KeyValue(SQLModel, table=True):
    __tablename__ = "key_value"

    key: str = Field(primary_key=True)
    value: Any = Field(default=None, sa_type=sa.JSON, nullable=True)
    updated_at: datetime = _created()


class EventLog(SQLModel, table=True):
    __tablename__ = "event_log"
    __table_args__ = (sa.Index("ix_event_log_campaign_at", "campaign_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _created()
    level: str = Field(default="info", nullable=False)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", ondelete="SET NULL")
    kind: str = Field(nullable=False)
    message: str = Field(nullable=False)


# --- agents (dialer.agents; their states and moves: dialer.outcomes.agent_states) ------------------------------

# A login names one agent among those not removed (a removed agent's row stays for its history).
_ACTIVE_AGENT = "removed_at IS NULL"


class Agent(SQLModel, table=True):
    """A person at a PBX extension. ``state`` and the columns after it are the current session, moved only by
    ``dialer.outcomes.agent_states`` (which writes an ``AgentEvent`` for every change)."""

    __tablename__ = "agent"
    __table_args__ = (
        sa.Index("uq_agent_login", "login", unique=True, sqlite_where=sa.text(_ACTIVE_AGENT),
                 postgresql_where=sa.text(_ACTIVE_AGENT)),
    )

    id: int | None = Field(default=None, primary_key=True)
    login: str = Field(nullable=False)
    name: str = Field(nullable=False)
    extension: str = Field(nullable=False, index=True)
    # ``scrypt$N$r$p$salt$hash`` (dialer.agents.accounts): never the PIN itself.
    pin_hash: str = Field(nullable=False)
    state: str = Field(default=AgentState.LOGGED_OUT.value, nullable=False)
    pause_code: str | None = None
    state_since: datetime = _created()
    # The call the agent is on or last handled (no foreign key: attempts point at agents).
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", ondelete="SET NULL")
    attempt_id: int | None = None
    wrapup_until: datetime | None = _ts()
    # A pause or logout asked for during a call: applied when the call ends.
    pending_state: str | None = None
    pending_code: str | None = None
    created_at: datetime = _created()
    updated_at: datetime = _created()
    removed_at: datetime | None = _ts()


class AgentCampaign(SQLModel, table=True):
    """Which campaigns an agent works. A campaign with agents paces for their presence; one without any keeps its
    configured agent count."""

    __tablename__ = "agent_campaign"

    agent_id: int = Field(foreign_key="agent.id", primary_key=True, ondelete="CASCADE")
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, index=True, ondelete="CASCADE")


class AgentEvent(SQLModel, table=True):
    """One change of an agent's state: time in each state (and in each pause code) is read off these rows."""

    __tablename__ = "agent_event"
    __table_args__ = (sa.Index("ix_agent_event_agent_at", "agent_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agent.id", nullable=False, ondelete="CASCADE")
    at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    from_state: str = Field(nullable=False)
    to_state: str = Field(nullable=False)
    # The pause code of ``to_state`` (paused), else None.
    pause_code: str | None = None
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", ondelete="SET NULL")
    attempt_id: int | None = Field(default=None, foreign_key="attempt.id", ondelete="SET NULL")
    reason: str = Field(default="", nullable=False)


class PauseCode(SQLModel, table=True):
    """A campaign's own pause codes; a campaign without rows uses the defaults (dialer.outcomes.codes)."""

    __tablename__ = "pause_code"
    __table_args__ = (sa.UniqueConstraint("campaign_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", nullable=False, ondelete="CASCADE")
    code: str = Field(nullable=False)
    label: str = Field(nullable=False)


class DispositionCode(SQLModel, table=True):
    """A campaign's own dispositions; a campaign without rows uses the defaults (dialer.outcomes.codes)."""

    __tablename__ = "disposition_code"
    __table_args__ = (sa.UniqueConstraint("campaign_id", "code"), sa.UniqueConstraint("campaign_id", "hotkey"))

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", nullable=False, ondelete="CASCADE")
    code: str = Field(nullable=False)
    label: str = Field(nullable=False)
    hotkey: int = Field(nullable=False)
    meaning: str = Field(nullable=False)


class Callback(SQLModel, table=True):
    """A callback an agent scheduled. ``due_at`` is the time asked for; ``next_try_at`` the earliest it may be
    placed (moved by the redial lock and the calling window). ``agent_id``: only that agent takes it."""

    __tablename__ = "callback"
    __table_args__ = (sa.Index("ix_callback_due", "campaign_id", "state", "next_try_at"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", nullable=False, ondelete="CASCADE")
    contact_id: int = Field(foreign_key="contact.id", nullable=False, index=True, ondelete="CASCADE")
    due_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    next_try_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    agent_id: int | None = Field(default=None, foreign_key="agent.id", index=True, ondelete="SET NULL")
    state: str = Field(default=CallbackState.SCHEDULED.value, nullable=False)
    # The attempt whose disposition asked for it, and the attempt that placed it.
    from_attempt_id: int | None = Field(default=None, foreign_key="attempt.id", ondelete="SET NULL")
    attempt_id: int | None = Field(default=None, foreign_key="attempt.id", index=True, ondelete="SET NULL")
    note: str | None = None
    created_at: datetime = _created()
    updated_at: datetime = _created()


class AgentToken(SQLModel, table=True):
    """One session of the agents' HTTP API (``dialer.agents.tokens``): only the SHA-256 of the random token is
    stored, so a copy of the database logs nobody in."""

    __tablename__ = "agent_token"

    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agent.id", nullable=False, index=True, ondelete="CASCADE")
    token_hash: str = Field(nullable=False, unique=True)
    created_at: datetime = _created()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    revoked_at: datetime | None = _ts()
    # The address the login came from, for the record.
    client: str | None = None


class WebUser(SQLModel, table=True):
    """A person who logs in to the web console with a password (supervisors; agents log in with their PIN).
    Only the scrypt hash of the password is stored (``dialer.agents.accounts.hash_pin``)."""

    __tablename__ = "web_user"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(nullable=False, unique=True)
    role: str = Field(nullable=False)
    password_hash: str = Field(nullable=False)
    created_at: datetime = _created()
    disabled_at: datetime | None = _ts()
