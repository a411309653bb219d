"""Per-agent figures: the report, the SQLite export's ``kpi_agents`` view, ``dialer report --json`` and the XLSX equal
what this test computes on its own from the event rows it wrote.

The independent count does not walk the events as the library does: it cuts the period at every event time and asks,
for each piece, which event was the last one at or before its start (the state the agent was in), then adds up the
pieces. The data sits on the edges: an agent logged in (and paused) across the period's start, one still talking at
the report time, one whose wrap-up ran past its limit with no event yet, a pause code changed during a pause, an
agent who works another campaign too, one who only took a call of this campaign, a removed one, one with nothing,
an event after the report time, fractions of a second everywhere, and a report time with microseconds.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy.engine import Engine

from dialer.db import open_database, session_scope
from dialer.models import Agent, AgentCampaign, AgentEvent, Attempt, Callback, Campaign, Contact
from dialer.outcomes.states import AgentState, AttemptState, CallbackState, ContactState
from dialer.reporting.reports import Report, build_report
from dialer.reporting.sqlite_export import export_sqlite
from dialer.reporting.xlsx_export import export_xlsx
from tests.conftest import clean_env, invoke

S = AgentState
TZ = "Europe/Berlin"
CAMPAIGN = "sales"
NOW = datetime(2026, 11, 26, 12, 0, 0, 400_000, tzinfo=UTC)
END = NOW.replace(microsecond=0)  # the report time is cut to the whole second
CREATED = datetime(2026, 11, 26, 7, 0, 0, 250_000, tzinfo=UTC)
START = CREATED.replace(microsecond=0)  # so is the start of the agents' period
SUCCESS = {"sale"}  # the default list's success code
EVIL = '=HYPERLINK("http://x","y")'


def t(hh: int, mm: int, ss: float = 0.0) -> datetime:
    whole = int(ss)
    return datetime(2026, 11, 26, hh, mm, whole, round((ss - whole) * 1e6), tzinfo=UTC)


# Each agent's events as (at, to_state, pause code), in the order they happened (and are written).
EVENTS: dict[str, list[tuple[datetime, AgentState, str | None]]] = {
    # Logged in and on a break across the period's start; a call, a lunch from wrap-up, a logout; and a login
    # after the report time, which no figure may see.
    "ann": [
        (t(6, 30), S.READY, None), (t(6, 50, 0.5), S.PAUSED, "break"), (t(7, 10), S.READY, None),
        (t(7, 20, 0.5), S.RINGING, None), (t(7, 20, 5.25), S.TALKING, None), (t(7, 25, 10.1), S.WRAPUP, None),
        (t(7, 26), S.READY, None), (t(8, 0), S.RINGING, None), (t(8, 0, 7), S.TALKING, None),
        (t(8, 4), S.WRAPUP, None), (t(8, 5, 0.75), S.PAUSED, "lunch"), (t(9, 0), S.READY, None),
        (t(11, 0, 0.05), S.LOGGED_OUT, None), (t(12, 30), S.READY, None),
    ],
    # Still talking at the report time; two events in the same instant.
    "bob": [
        (t(9, 0, 0.123456), S.READY, None), (t(9, 30), S.RINGING, None), (t(9, 30), S.TALKING, None),
        (t(9, 40, 0.5), S.WRAPUP, None), (t(9, 41), S.READY, None), (t(10, 15), S.PAUSED, "training"),
        (t(10, 45, 0.333333), S.READY, None), (t(11, 58, 0.5), S.RINGING, None), (t(11, 58, 30.5), S.TALKING, None),
    ],
    # Works another campaign too; in a wrap-up past its limit (11:51) that no event has ended yet.
    "cara": [
        (t(7, 30), S.READY, None), (t(11, 40), S.RINGING, None), (t(11, 40, 3), S.TALKING, None),
        (t(11, 50), S.WRAPUP, None),
    ],
    "dan": [],
    # Removed; worked only before the campaign existed.
    "eve": [(t(5, 0), S.READY, None), (t(6, 0), S.LOGGED_OUT, None)],
    # Not one of the campaign's agents, but a call of it was routed to them; a pause code changed mid-pause.
    "finn": [
        (t(10, 0), S.READY, None), (t(10, 5), S.RINGING, None), (t(10, 5, 2), S.TALKING, None),
        (t(10, 9), S.WRAPUP, None), (t(10, 30), S.PAUSED, "meeting"), (t(10, 45), S.PAUSED, "training"),
        (t(11, 30), S.LOGGED_OUT, None),
    ],
}  # fmt: skip
CARA_WRAPUP_UNTIL = t(11, 51)
MEMBERS = {"ann", "bob", "cara", "dan", "eve"}
# (agent, call time, connected, disposition, note): this campaign's calls routed to an agent.
CALLS: list[tuple[str, datetime, bool, str | None, str | None]] = [
    ("ann", t(7, 20), True, "sale", None),
    ("ann", t(8, 0), True, "not_interested", EVIL),
    ("bob", t(9, 30), True, "sale", "paid by card"),
    ("bob", t(10, 50), True, "sale", None),
    ("bob", t(11, 10), True, "legacy_code", None),  # a code no longer in the list: counted, not a sale
    ("bob", t(11, 58), True, None, None),  # still on the line: no disposition yet
    ("bob", t(11, 20), False, None, None),  # abandoned before it reached bob: not handled
    ("cara", t(11, 40), True, "callback", "after 5"),
    ("finn", t(10, 5), True, "dnc", None),
]
CALLBACK_DUE = t(16, 0)


@dataclass
class World:
    url: str
    engine: Engine
    ids: dict[str, int] = field(default_factory=dict)


def build_world(tmp_path: Path) -> World:
    url = f"sqlite:///{tmp_path / 'agents.db'}"
    world = World(url, open_database(url))
    with session_scope(world.engine) as s:
        camp = Campaign(name=CAMPAIGN, from_number="100", timezone=TZ, state="running", created_at=CREATED)
        other = Campaign(name="other", from_number="101", timezone="UTC", created_at=CREATED)
        s.add_all([camp, other])
        s.flush()
        assert camp.id is not None and other.id is not None
        for i, login in enumerate(EVENTS):
            events = EVENTS[login]
            last = events[-1] if events else None
            agent = Agent(login=login, name=f"{login.title()} {EVIL if login == 'ann' else ''}".strip(),
                          extension=str(101 + i), pin_hash="scrypt$x", state=last[1] if last else S.LOGGED_OUT,
                          pause_code=last[2] if last else None, state_since=last[0] if last else CREATED,
                          created_at=t(4, 0), removed_at=t(6, 30) if login == "eve" else None)  # fmt: skip
            if login == "cara":
                agent.wrapup_until = CARA_WRAPUP_UNTIL
            s.add(agent)
            s.flush()
            assert agent.id is not None
            world.ids[login] = agent.id
            if login in MEMBERS:
                s.add(AgentCampaign(agent_id=agent.id, campaign_id=camp.id))
            if login == "cara":
                s.add(AgentCampaign(agent_id=agent.id, campaign_id=other.id))
            before = S.LOGGED_OUT
            for at, to, code in events:
                s.add(AgentEvent(agent_id=agent.id, at=at, from_state=before, to_state=to, pause_code=code,
                                 reason="test"))  # fmt: skip
                before = to
        calls = [*CALLS, ("finn", t(10, 20), True, "sale", None)]  # the last one is the other campaign's
        for n, (login, at, connected, code, note) in enumerate(calls):
            cid = other.id if n == len(CALLS) else camp.id
            contact = Contact(campaign_id=cid, phone=f"+4930555{n:04d}", name=f"Customer {n}",
                              state=ContactState.CALLBACK if code == "callback" else ContactState.DONE, attempts=1)
            s.add(contact)
            s.flush()
            assert contact.id is not None
            attempt = Attempt(campaign_id=cid, contact_id=contact.id, phone=contact.phone,
                              state=AttemptState.COMPLETED, created_at=at, sent_at=at, placed_at=at,
                              finished_at=at + timedelta(minutes=3), answered=True, connected=connected,
                              abandoned=not connected, talk_seconds=120.0 if connected else None,
                              agent_id=world.ids[login], agent_disposition=code, agent_note=note,
                              disposition_at=at + timedelta(minutes=4) if code else None, live=False)  # fmt: skip
            s.add(attempt)
            s.flush()
            if code == "callback":
                s.add(Callback(campaign_id=cid, contact_id=contact.id, due_at=CALLBACK_DUE, next_try_at=CALLBACK_DUE,
                               from_attempt_id=attempt.id, note=note, state=CallbackState.SCHEDULED))  # fmt: skip
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("agents"))
    yield w
    w.engine.dispose()


# --- the independent count ------------------------------------------------------------------------------------


def events_as_seen(login: str, end: datetime) -> list[tuple[datetime, str, str | None]]:
    """The events of ``login`` and, for cara, the end of her wrap-up at its limit (the rule the figures follow for
    a wrap-up past its limit that no event records yet)."""
    events = list(EVENTS[login])
    if login == "cara" and end >= CARA_WRAPUP_UNTIL:
        events.append((CARA_WRAPUP_UNTIL, S.READY, None))
    return events


def expected_times(login: str, start: datetime, end: datetime) -> dict[str, timedelta]:
    """Time in each state (and ``paused:<code>``) inside [start, end], piece by piece."""
    events = events_as_seen(login, end)
    cuts = sorted({start, end, *(at for at, _, _ in events if start < at < end)})
    out: dict[str, timedelta] = {}
    for lo, hi in itertools.pairwise(cuts):
        state, code = str(S.LOGGED_OUT), None
        for at, to, c in events:  # in the order they happened: the last at or before ``lo`` wins
            if at <= lo:
                state, code = str(to), c
        out[state] = out.get(state, timedelta(0)) + (hi - lo)
        if state == S.PAUSED:
            out[f"paused:{code}"] = out.get(f"paused:{code}", timedelta(0)) + (hi - lo)
    return out


def tenths(seconds: Decimal) -> float:
    """Rounded half up to 0.1 s on the exact decimal value (the figures' rule for durations)."""
    return float(seconds.quantize(Decimal("0.1"), ROUND_HALF_UP))


def expected_row(login: str, start: datetime, end: datetime) -> dict[str, object]:
    times = expected_times(login, start, end)

    def exact(*states: str) -> Decimal:
        span = sum((times.get(s, timedelta(0)) for s in states), timedelta(0))
        return Decimal(span.days * 86400 + span.seconds) + Decimal(span.microseconds) / 1_000_000

    def sec(*states: str) -> float:
        return tenths(exact(*states))

    logged_in = sec(S.READY, S.PAUSED, S.RINGING, S.TALKING, S.WRAPUP)
    working = exact(S.READY, S.RINGING, S.TALKING, S.WRAPUP)
    mine = [c for c in CALLS if c[0] == login and c[2] and c[1] >= start]
    codes: dict[str, int] = {}
    for c in mine:
        if c[3] is not None:
            codes[c[3]] = codes.get(c[3], 0) + 1
    sales = sum(n for code, n in codes.items() if code in SUCCESS)
    return {
        "login": login,
        "calls_handled": len(mine),
        "talk_seconds": sec(S.TALKING),
        "wrapup_seconds": sec(S.WRAPUP),
        "ringing_seconds": sec(S.RINGING),
        "ready_seconds": sec(S.READY),
        "paused_seconds": sec(S.PAUSED),
        "logged_in_seconds": logged_in,
        "working_seconds": tenths(working),
        "occupancy": float(exact(S.TALKING) / working) if working else None,
        "sales": sales,
        "conversion": sales / len(mine) if mine else None,
        "undisposed": sum(1 for c in mine if c[3] is None),
        "pause_seconds": {k.split(":", 1)[1]: sec(k) for k in times if k.startswith("paused:")},
        "dispositions": codes,
    }


def expected_rows(start: datetime, end: datetime) -> list[dict[str, object]]:
    """Every agent of the campaign or its calls, by login; eve (removed, nothing in the period) left out."""
    return [expected_row(login, start, end) for login in sorted(EVENTS) if login != "eve"]


def comparable(row: dict[str, object]) -> dict[str, object]:
    """A report row without the codes it lists at zero (the campaign's whole lists), to compare with the count."""
    out = dict(row)
    out["pause_seconds"] = {k: v for k, v in dict(row["pause_seconds"]).items() if v}  # type: ignore[call-overload]
    out["dispositions"] = {k: v for k, v in dict(row["dispositions"]).items() if v}  # type: ignore[call-overload]
    return out


def assert_rows_equal(got: list[dict[str, object]], want: list[dict[str, object]]) -> None:
    assert [r["login"] for r in got] == [r["login"] for r in want]
    for g, w in zip(got, want, strict=True):
        g = comparable(g)
        for key, value in w.items():
            if key in ("occupancy", "conversion") and value is not None:
                assert g[key] == pytest.approx(value, rel=1e-12), (w["login"], key)
            else:
                assert g[key] == value, (w["login"], key, g[key], value)


def report_rows(report: Report) -> list[dict[str, object]]:
    return [vars(a) for a in report.agents]


# --- the report -------------------------------------------------------------------------------------------------


def test_per_agent_figures_equal_the_independent_count(world: World) -> None:
    report = build_report(world.engine, CAMPAIGN, now=NOW)
    assert report.agents_from == START and report.generated_at == END
    assert_rows_equal(report_rows(report), expected_rows(START, END))
    by_login = {a.login: a for a in report.agents}
    # By hand, the few figures the edges decide:
    # ann was on a break from 06:50:00.5 to 07:10, of which the period (from 07:00) holds 10 minutes.
    assert by_login["ann"].pause_seconds["break"] == 600.0
    # bob is still talking at the report time: 09:30 to 09:40:00.5, then 11:58:30.5 to 12:00:00.
    assert by_login["bob"].talk_seconds == 600.5 + 89.5
    # cara's wrap-up ends at its limit (11:51) and she is ready from there, though no event says so yet.
    assert by_login["cara"].wrapup_seconds == 60.0
    assert by_login["cara"].ready_seconds == (t(11, 40) - t(7, 30) + (END - t(11, 51))).total_seconds()
    # finn changed the pause code during a pause: each code keeps its own time.
    assert (by_login["finn"].pause_seconds["meeting"], by_login["finn"].pause_seconds["training"]) == (900.0, 2700.0)
    assert by_login["dan"].logged_in_seconds == 0.0 and by_login["dan"].occupancy is None
    # ann was ready 9,840.55 s exactly: durations round half up on the exact value (a float's round says .5).
    assert by_login["ann"].ready_seconds == 9840.6
    # The campaign's whole lists, zero where unused, and the old code after them.
    assert list(by_login["bob"].dispositions) == ["sale", "not_interested", "callback", "wrong_number", "dnc",
                                                  "no_decision_maker", "legacy_code"]  # fmt: skip
    assert list(by_login["dan"].pause_seconds) == ["break", "lunch", "training", "meeting"]
    # The states add up to the logged-in time, and conversion is sales over calls handled.
    for a in report.agents:
        parts = a.talk_seconds + a.wrapup_seconds + a.ringing_seconds + a.ready_seconds + a.paused_seconds
        assert parts == pytest.approx(a.logged_in_seconds, abs=0.25)
    assert (by_login["bob"].calls_handled, by_login["bob"].sales, by_login["bob"].undisposed) == (4, 2, 1)
    assert by_login["bob"].conversion == 0.5


def test_a_later_period_start_clips_the_states_straddling_it(world: World) -> None:
    since = t(8, 30)  # ann is at lunch from 08:05:00.75 to 09:00, bob not yet logged in
    report = build_report(world.engine, CAMPAIGN, now=NOW, agents_since=since)
    assert report.agents_from == since
    assert_rows_equal(report_rows(report), expected_rows(since, END))
    ann = next(a for a in report.agents if a.login == "ann")
    assert ann.pause_seconds["lunch"] == 1800.0 and ann.pause_seconds["break"] == 0.0
    assert ann.calls_handled == 0  # both of her calls came before 08:30


def test_a_report_in_the_past_cuts_every_open_state_at_its_time(world: World) -> None:
    earlier = t(9, 35, 0.9)
    report = build_report(world.engine, CAMPAIGN, now=earlier)
    assert_rows_equal(report_rows(report), expected_rows(START, earlier.replace(microsecond=0)))
    cara = next(a for a in report.agents if a.login == "cara")
    assert cara.wrapup_seconds == 0.0  # her wrap-up and its limit are after this report's time


def test_dispositions_by_hour_and_codes(world: World) -> None:
    report = build_report(world.engine, CAMPAIGN, now=NOW)
    rows = [(d.hour, d.code, d.meaning, d.calls) for d in report.dispositions_hourly]
    # Berlin is UTC+1 in November; the hour is the local hour the call was placed in.
    assert rows == [
        (datetime(2026, 11, 26, 8), "sale", "success", 1),
        (datetime(2026, 11, 26, 9), "not_interested", "failure", 1),
        (datetime(2026, 11, 26, 10), "sale", "success", 1),
        (datetime(2026, 11, 26, 11), "sale", "success", 1),  # the campaign's list order within an hour
        (datetime(2026, 11, 26, 11), "dnc", "dnc", 1),
        (datetime(2026, 11, 26, 12), "callback", "callback", 1),
        (datetime(2026, 11, 26, 12), "legacy_code", None, 1),
    ]
    assert [c.code for c in report.disposition_codes][:2] == ["sale", "not_interested"]


# --- the exports and the command line ---------------------------------------------------------------------------


def test_sqlite_view_computes_the_same_figures(world: World, tmp_path: Path) -> None:
    since = t(8, 30)
    for start in (None, since):
        report = build_report(world.engine, CAMPAIGN, now=NOW, agents_since=start)
        path = export_sqlite(world.engine, report, tmp_path / f"r{start is None}.sqlite")
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            view = [dict(r) for r in db.execute("SELECT * FROM kpi_agents")]
            table = [dict(r) for r in db.execute("SELECT * FROM agents ORDER BY login")]
            synthetic = db.execute("SELECT COUNT(*) FROM agent_events WHERE event_id IS NULL").fetchone()[0]
        assert synthetic == 1  # cara's wrap-up end
        assert [v["login"] for v in view] == [a.login for a in report.agents]
        for v, a, row in zip(view, report.agents, table, strict=True):
            for key in ("calls_handled", "sales"):
                assert v[key] == getattr(a, key) == row[key]
            for key in ("talk_seconds", "wrapup_seconds", "ringing_seconds", "ready_seconds", "paused_seconds",
                        "logged_in_seconds", "working_seconds"):  # fmt: skip
                assert v[key] == getattr(a, key) == row[key], (a.login, key)
            for key in ("occupancy", "conversion"):
                assert (v[key] is None) == (getattr(a, key) is None)
                if v[key] is not None:
                    assert v[key] == pytest.approx(getattr(a, key), rel=1e-12)
            assert row["pause_lunch_seconds"] == a.pause_seconds["lunch"]
            assert row["disposition_sale"] == a.dispositions["sale"]


def test_json_report_holds_the_agents_table(world: World, tmp_path: Path) -> None:
    out = invoke(["report", CAMPAIGN, "--json"], env=clean_env(DIALER_DATABASE_URL=world.url), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    end = datetime.fromisoformat(data["generated_at"]).astimezone(UTC)  # the command's own "now"
    assert datetime.fromisoformat(data["agents_from"]).astimezone(UTC) == START
    assert_rows_equal(data["agents"], expected_rows(START, end))
    assert {"hour", "code", "meaning", "calls"} <= set(data["dispositions_hourly"][0])
    assert next(d["code"] for d in data["disposition_codes"]) == "sale"


def test_terminal_report_shows_agents_and_dispositions(world: World, tmp_path: Path) -> None:
    out = invoke(["report", CAMPAIGN], env=clean_env(DIALER_DATABASE_URL=world.url, COLUMNS="200"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Agents (" in out.stdout and "Dispositions by hour" in out.stdout
    assert re.search(r"\bbob\b", out.stdout) and "legacy_code" in out.stdout


@pytest.fixture(scope="module")
def book(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    report = build_report(world.engine, CAMPAIGN, now=NOW)
    return export_xlsx(world.engine, report, tmp_path_factory.mktemp("xlsx") / "agents.xlsx")


def _rows(ws: object) -> list[dict[str, object]]:
    values = list(ws.iter_rows(values_only=True))  # type: ignore[attr-defined]
    header = [str(h) for h in values[0]]
    return [dict(zip(header, row, strict=True)) for row in values[1:] if any(v is not None for v in row)]


def test_xlsx_agents_sheet_values_and_chart(book: Path) -> None:
    wb = openpyxl.load_workbook(book)
    assert wb.sheetnames == ["Summary", "Contacts", "Attempts", "Hourly", "Agents", "Dispositions"]
    rows = _rows(wb["Agents"])
    want = expected_rows(START, END)
    assert [r["login"] for r in rows] == [w["login"] for w in want]
    for r, w in zip(rows, want, strict=True):
        for key in ("calls_handled", "talk_seconds", "wrapup_seconds", "ready_seconds", "paused_seconds",
                    "logged_in_seconds", "sales"):  # fmt: skip
            assert r[key] == w[key], (w["login"], key)
        assert r["pause_lunch_seconds"] == dict(w["pause_seconds"]).get("lunch", 0.0)  # type: ignore[call-overload]
    ann = rows[0]
    assert ann["name"] == f"Ann {EVIL}" and wb["Agents"]["C2"].data_type == "s"  # text, never a formula
    assert ann["occupancy"] == pytest.approx(want[0]["occupancy"]) and wb["Agents"]["M2"].number_format == "0.0%"
    disp = _rows(wb["Dispositions"])
    assert (disp[0][f"hour ({TZ})"], disp[0]["code"], disp[0]["calls"]) == (datetime(2026, 11, 26, 8), "sale", 1)
    # The chart: a stacked bar per agent, on the Agents sheet (the fifth), over its logins and state columns.
    with zipfile.ZipFile(book) as z:
        rels = z.read("xl/worksheets/_rels/sheet5.xml.rels").decode()
        drawing = re.search(r'Target="\.\./drawings/(drawing\d+\.xml)"', rels)
        assert drawing is not None
        chart_name = re.search(r"charts/(chart\d+\.xml)", z.read(f"xl/drawings/_rels/{drawing.group(1)}.rels").decode())
        assert chart_name is not None
        chart = z.read(f"xl/charts/{chart_name.group(1)}").decode()
    assert "<c:barChart>" in chart and '<c:grouping val="stacked"/>' in chart
    n = len(rows)
    assert f"Agents!$B$2:$B${n + 1}" in chart and f"Agents!$F$2:$F${n + 1}" in chart  # logins, talk


def test_xlsx_contacts_carry_the_final_disposition_and_callback(book: Path) -> None:
    wb = openpyxl.load_workbook(book)
    contacts = {r["phone"]: r for r in _rows(wb["Contacts"])}
    ann_no = contacts["+4930555" + "0001"]
    assert (ann_no["disposition"], ann_no["disposition_note"], ann_no["disposition_agent"]) == (
        "not_interested", EVIL, "ann")
    assert wb["Contacts"].cell(3, list(contacts["+49305550001"]).index("disposition_note") + 1).data_type == "s"
    cara = contacts["+49305550007"]
    assert (cara["disposition"], cara["disposition_agent"]) == ("callback", "cara")
    assert cara[f"callback_at ({TZ})"] == datetime(2026, 11, 26, 17, 0)  # 16:00 UTC in Berlin
    undisposed = contacts["+49305550005"]
    assert undisposed["disposition"] is None and undisposed[f"callback_at ({TZ})"] is None
    attempts = _rows(wb["Attempts"])
    assert [a["agent_disposition"] for a in attempts][:3] == ["sale", "not_interested", "sale"]
    assert attempts[0]["agent_id"] is not None
