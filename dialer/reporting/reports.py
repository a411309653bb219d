"""A campaign's KPIs, computed from the database: what `dialer report` prints and the exports hold.

The figures (calls, answer and abandon rates, windows, talk, occupancy) are defined once in
``dialer.reporting.figures``; this module applies them and adds the list-level ones:
- average talk time is over connected calls whose talk time is known; logged-in agent seconds are kept by the
  daemon in KeyValue ``campaign:{id}:agent_seconds`` (a number); without it occupancy is unknown (None).
- attempts per reached contact = calls placed / contacts reached; list penetration = contacts with at least one
  attempt (``Contact.attempts > 0``) / all contacts; cost = sum of ``Attempt.cost`` over all attempts.
- contacts by final state: reached = done; pending = pending + retry + dialing; exhausted, invalid and dnc as stored.
- the hourly table buckets calls by the local hour (campaign timezone, or the one asked for) they were placed in.
- durations are rounded to 0.1 s and the cost to the cent here, once, for every output (``figures.SECONDS_DIGITS``,
  ``figures.MONEY_DIGITS``); rates are computed from the exact values and left exact.
- the agents' tables (per agent, dispositions by hour, the disposition codes) come from
  ``dialer.reporting.agent_report`` over the agents' period (``agents_from`` to the report time).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from dialer.db import reader
from dialer.models import utcnow
from dialer.outcomes.states import RESULT_OF_STATE, AttemptState, ContactResult, ContactState
from dialer.reporting.agent_report import AgentRow, DispositionCodeRow, DispositionHourRow, agents_part
from dialer.reporting.figures import (
    abandon_rate,
    agent_seconds_key,
    agents_period_start,
    answer_rate,
    call_counts,
    occupancy,
    ratio,
    report_instant,
    shown_money,
    shown_seconds,
    window_start,
)


class CampaignNotFound(LookupError):
    """No campaign has that name; the message lists the ones that exist."""


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError with a readable message if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (use an IANA name such as Europe/London)") from None


@dataclass(frozen=True)
class HourlyRow:
    hour: datetime  # start of the local hour, timezone-naive (the report's ``timezone``)
    calls_placed: int
    answered: int
    connected: int
    abandoned: int
    abandon_rate: float | None
    talk_seconds: float


@dataclass(frozen=True)
class SummaryItem:
    key: str
    label: str
    value: Any
    kind: str  # "text" | "count" | "rate" | "seconds" | "money" | "number" | "datetime"


@dataclass
class Report:
    campaign_id: int
    campaign: str
    campaign_state: str
    timezone: str
    generated_at: datetime  # aware UTC: the ``now`` the windows end at
    abandon_target: float
    abandon_window: str
    contacts_total: int
    contacts_reached: int
    contacts_exhausted: int
    contacts_invalid: int
    contacts_dnc: int
    contacts_pending: int
    contacts_attempted: int
    contacts_by_state: dict[str, int]
    attempts_total: int
    attempts_by_state: dict[str, int]
    calls_placed: int
    answered: int
    connected: int
    abandoned: int
    answered_24h: int
    abandoned_24h: int
    answered_30d: int
    abandoned_30d: int
    answer_rate: float | None
    abandon_rate: float | None
    abandon_rate_24h: float | None
    abandon_rate_30d: float | None
    talk_seconds: float
    avg_talk_seconds: float | None
    agent_seconds: float | None
    occupancy: float | None
    attempts_per_reached: float | None
    list_penetration: float | None
    cost: float
    first_call_at: datetime | None
    last_call_at: datetime | None
    hourly: list[HourlyRow] = field(default_factory=list)
    # The agents' period starts here and ends at ``generated_at`` (aware UTC).
    agents_from: datetime | None = None
    agents: list[AgentRow] = field(default_factory=list)
    dispositions_hourly: list[DispositionHourRow] = field(default_factory=list)
    disposition_codes: list[DispositionCodeRow] = field(default_factory=list)

    @property
    def tzinfo(self) -> ZoneInfo:
        return zone(self.timezone)

    def local(self, when: datetime | None) -> datetime | None:
        """``when`` in the report's timezone (aware)."""
        return None if when is None else when.astimezone(self.tzinfo)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: the keys are the dataclass fields; times are ISO 8601 in the report's zone
        (``hourly[].hour`` and ``dispositions_hourly[].hour`` are local hours without offset)."""
        data = asdict(self)
        for key in ("generated_at", "first_call_at", "last_call_at", "agents_from"):
            when = self.local(data[key])
            data[key] = None if when is None else when.isoformat()
        data["hourly"] = [{**asdict(row), "hour": row.hour.isoformat()} for row in self.hourly]
        data["dispositions_hourly"] = [{**asdict(row), "hour": row.hour.isoformat()}
                                       for row in self.dispositions_hourly]  # fmt: skip
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def hourly_frame(self) -> pd.DataFrame:
        columns = [f.name for f in HourlyRow.__dataclass_fields__.values()]
        return pd.DataFrame([asdict(row) for row in self.hourly], columns=columns)

    def summary_items(self) -> list[SummaryItem]:
        """The Summary sheet, in reading order."""
        s = SummaryItem
        return [
            s("campaign", "Campaign", self.campaign, "text"),
            s("campaign_id", "Campaign id", self.campaign_id, "count"),
            s("campaign_state", "Campaign state", self.campaign_state, "text"),
            s("timezone", "Timezone of all times", self.timezone, "text"),
            s("generated_at", "Report time", self.local(self.generated_at), "datetime"),
            s("agents_from", "Agents' figures from", self.local(self.agents_from), "datetime"),
            s("first_call_at", "First call", self.local(self.first_call_at), "datetime"),
            s("last_call_at", "Last call", self.local(self.last_call_at), "datetime"),
            s("contacts_total", "Contacts", self.contacts_total, "count"),
            s("contacts_reached", "Reached", self.contacts_reached, "count"),
            s("contacts_exhausted", "Exhausted", self.contacts_exhausted, "count"),
            s("contacts_invalid", "Invalid", self.contacts_invalid, "count"),
            s("contacts_dnc", "Do not call", self.contacts_dnc, "count"),
            s("contacts_pending", "Pending", self.contacts_pending, "count"),
            s("contacts_attempted", "Contacts attempted", self.contacts_attempted, "count"),
            s("list_penetration", "List penetration", self.list_penetration, "rate"),
            s("attempts_total", "Attempts", self.attempts_total, "count"),
            *(s(f"attempts_{k}", f"Attempts {k}", v, "count") for k, v in self.attempts_by_state.items()),
            s("calls_placed", "Calls placed", self.calls_placed, "count"),
            s("answered", "Answered", self.answered, "count"),
            s("connected", "Connected", self.connected, "count"),
            s("abandoned", "Abandoned", self.abandoned, "count"),
            s("answer_rate", "Answer rate", self.answer_rate, "rate"),
            s("abandon_rate", "Abandon rate (campaign)", self.abandon_rate, "rate"),
            s("abandon_rate_24h", "Abandon rate (last 24 h)", self.abandon_rate_24h, "rate"),
            s("abandon_rate_30d", "Abandon rate (last 30 days)", self.abandon_rate_30d, "rate"),
            s("abandon_target", "Abandon target", self.abandon_target, "rate"),
            s("abandon_window", "Abandon window", self.abandon_window, "text"),
            s("attempts_per_reached", "Calls per reached contact", self.attempts_per_reached, "number"),
            s("talk_seconds", "Talk time", self.talk_seconds, "seconds"),
            s("avg_talk_seconds", "Average talk time", self.avg_talk_seconds, "seconds"),
            s("agent_seconds", "Agent logged-in time", self.agent_seconds, "seconds"),
            s("occupancy", "Occupancy", self.occupancy, "rate"),
            s("cost", "Cost", self.cost, "money"),
        ]


# --- reading -------------------------------------------------------------------------------------------------


def table(name: str) -> sa.Table:
    return SQLModel.metadata.tables[name]


def raw(column: Any) -> Any:
    """``column`` without SQLAlchemy's per-row result processing: pandas converts whole columns faster."""
    return sa.type_coerce(column, sa.types.NullType())


def utc_series(values: pd.Series) -> pd.Series:
    """Database datetimes (naive-UTC text on SQLite, aware datetimes on PostgreSQL) as a UTC datetime Series."""
    if values.empty or values.isna().all():
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    if pd.api.types.is_datetime64_any_dtype(values):
        out = values if getattr(values.dt, "tz", None) is not None else values.dt.tz_localize("UTC")
        return out.dt.tz_convert("UTC")
    return pd.to_datetime(values, utc=True, format="ISO8601")


def flag_series(values: pd.Series) -> pd.Series:
    """A nullable boolean column (0/1 on SQLite, bool on PostgreSQL) as 1.0 / 0.0 / NaN."""
    return pd.to_numeric(values.astype(object), errors="coerce").astype(float)


def attempt_time_utc(frame: pd.DataFrame) -> pd.Series:
    """When an attempt happened: Zadarma's placing time, else our sending time, else its creation."""
    out = utc_series(frame["placed_at"])
    for fallback in ("sent_at", "created_at"):
        out = out.fillna(utc_series(frame[fallback]))
    return out


def find_campaign(conn: Connection, name: str) -> dict[str, Any]:
    t = table("campaign")
    row = conn.execute(sa.select(t).where(t.c.name == name)).mappings().first()
    if row is None:
        names = [r for (r,) in conn.execute(sa.select(t.c.name).order_by(t.c.name).limit(20))]
        known = ", ".join(names) if names else "none yet (load one with `dialer campaign load`)"
        raise CampaignNotFound(f"no campaign named {name!r}; campaigns: {known}")
    return dict(row)


def _completed_calls(conn: Connection, campaign_id: int) -> pd.DataFrame:
    a = table("attempt")
    stmt = sa.select(
        raw(a.c.placed_at).label("placed_at"),
        raw(a.c.sent_at).label("sent_at"),
        raw(a.c.created_at).label("created_at"),
        raw(a.c.answered).label("answered"),
        raw(a.c.connected).label("connected"),
        raw(a.c.abandoned).label("abandoned"),
        a.c.talk_seconds,
    ).where(a.c.campaign_id == campaign_id, a.c.state == AttemptState.COMPLETED)
    frame = pd.read_sql(stmt, conn)
    out = pd.DataFrame(
        {
            "time": attempt_time_utc(frame),
            "answered": flag_series(frame["answered"]).eq(1),
            "connected": flag_series(frame["connected"]).eq(1),
            "abandoned": flag_series(frame["abandoned"]).eq(1),
            "talk": pd.to_numeric(frame["talk_seconds"], errors="coerce").astype(float),
        }
    )
    # Agent talk is what a connected call's talk time measures; an abandoned customer talked to nobody.
    out["agent_talk"] = out["talk"].where(out["connected"])
    return out


def _hourly(calls: pd.DataFrame, tz: str) -> list[HourlyRow]:
    if calls.empty:
        return []
    # Floor in local wall time: a zone with a half-hour offset still gets local-hour rows. In the autumn DST
    # change the repeated local hour is one row.
    hour = calls["time"].dt.tz_convert(tz).dt.tz_localize(None).dt.floor("h")
    grouped = calls.assign(hour=hour).groupby("hour", sort=True)
    table = grouped.agg(
        calls_placed=("answered", "size"),
        answered=("answered", "sum"),
        connected=("connected", "sum"),
        abandoned=("abandoned", "sum"),
        talk_seconds=("agent_talk", "sum"),
    )
    rows = []
    for when, r in table.iterrows():
        answered = int(r["answered"])
        abandoned = int(r["abandoned"])
        rows.append(
            HourlyRow(
                hour=cast(pd.Timestamp, when).to_pydatetime(),
                calls_placed=int(r["calls_placed"]),
                answered=answered,
                connected=int(r["connected"]),
                abandoned=abandoned,
                abandon_rate=abandon_rate(abandoned, answered),
                talk_seconds=shown_seconds(float(r["talk_seconds"])) or 0.0,
            )
        )
    return rows


def _agent_seconds(conn: Connection, campaign_id: int) -> float | None:
    kv = table("key_value")
    row = conn.execute(sa.select(kv.c.value).where(kv.c.key == agent_seconds_key(campaign_id))).first()
    if row is None:
        return None
    value = row[0]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def build_report(
    db_engine: Engine,
    campaign_name: str,
    *,
    now: datetime | None = None,
    tz: str | None = None,
    agents_since: datetime | None = None,
) -> Report:
    """The report of campaign ``campaign_name`` at ``now`` (default: the current time), times in ``tz``
    (default: the campaign's timezone); the agents' figures from ``agents_since`` if later than the campaign's
    start. Raises CampaignNotFound, or ValueError for an unknown ``tz``."""
    # Whole seconds: the exports write whole-second times, and the SQLite views must draw the same windows.
    now = report_instant(now or utcnow())
    with reader(db_engine).connect() as conn:
        campaign = find_campaign(conn, campaign_name)
        cid = int(campaign["id"])
        tz_name = tz or campaign["timezone"] or "UTC"
        zone(tz_name)

        c = table("contact")
        contacts_by_state = {s.value: 0 for s in ContactState}
        attempted = 0
        for state, count, n_attempted in conn.execute(
            sa.select(c.c.state, sa.func.count(), sa.func.sum(sa.case((c.c.attempts > 0, 1), else_=0)))
            .where(c.c.campaign_id == cid)
            .group_by(c.c.state)
        ):
            contacts_by_state[state] = int(count)
            attempted += int(n_attempted or 0)
        final = dict.fromkeys(ContactResult, 0)
        for state, count in contacts_by_state.items():
            final[RESULT_OF_STATE.get(state, ContactResult.PENDING)] += count
        contacts_total = sum(contacts_by_state.values())

        a = table("attempt")
        attempts_by_state = {s.value: 0 for s in AttemptState}
        cost = 0.0
        for state, count, state_cost in conn.execute(
            sa.select(a.c.state, sa.func.count(), sa.func.sum(a.c.cost))
            .where(a.c.campaign_id == cid)
            .group_by(a.c.state)
        ):
            attempts_by_state[state] = int(count)
            cost += float(state_cost or 0.0)

        calls = _completed_calls(conn, cid)
        agent_seconds = _agent_seconds(conn, cid)
        whole = call_counts(conn, cid)
        last_24h = call_counts(conn, cid, window_start(now, "24h"))
        last_30d = call_counts(conn, cid, window_start(now, "30d"))

        times = calls["time"].dropna()
        first_call = times.min().to_pydatetime() if len(times) else None
        agents_from = agents_period_start(campaign["created_at"], first_call, now, agents_since)
        agents = agents_part(conn, cid, start=agents_from, end=now, tz=tz_name)

    talk = calls["agent_talk"].dropna()

    return Report(
        campaign_id=cid,
        campaign=str(campaign["name"]),
        campaign_state=str(campaign["state"]),
        timezone=tz_name,
        generated_at=now,
        abandon_target=float(campaign["abandon_target"]),
        abandon_window=str(campaign["abandon_window"]),
        contacts_total=contacts_total,
        contacts_reached=final[ContactResult.REACHED],
        contacts_exhausted=final[ContactResult.EXHAUSTED],
        contacts_invalid=final[ContactResult.INVALID],
        contacts_dnc=final[ContactResult.DNC],
        contacts_pending=final[ContactResult.PENDING],
        contacts_attempted=attempted,
        contacts_by_state=contacts_by_state,
        attempts_total=sum(attempts_by_state.values()),
        attempts_by_state=attempts_by_state,
        calls_placed=whole.calls,
        answered=whole.answered,
        connected=whole.connected,
        abandoned=whole.abandoned,
        answered_24h=last_24h.answered,
        abandoned_24h=last_24h.abandoned,
        answered_30d=last_30d.answered,
        abandoned_30d=last_30d.abandoned,
        answer_rate=answer_rate(whole.answered, whole.calls),
        abandon_rate=whole.abandon_rate,
        abandon_rate_24h=last_24h.abandon_rate,
        abandon_rate_30d=last_30d.abandon_rate,
        talk_seconds=shown_seconds(whole.talk_seconds) or 0.0,
        avg_talk_seconds=shown_seconds(float(talk.mean())) if len(talk) else None,
        agent_seconds=shown_seconds(agent_seconds),
        occupancy=occupancy(whole.talk_seconds, agent_seconds),
        attempts_per_reached=ratio(whole.calls, final[ContactResult.REACHED]),
        list_penetration=ratio(attempted, contacts_total),
        cost=shown_money(cost),
        # Whole seconds, as every time in the exports: no call shows a time after the report's own.
        first_call_at=times.min().floor("s").to_pydatetime() if len(times) else None,
        last_call_at=times.max().floor("s").to_pydatetime() if len(times) else None,
        hourly=_hourly(calls, tz_name),
        agents_from=agents_from,
        agents=agents.agents,
        dispositions_hourly=agents.dispositions_hourly,
        disposition_codes=agents.disposition_codes,
    )
