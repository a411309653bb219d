"""`dialer status` (and --json) and /metrics show each campaign's agents by state and its scheduled callbacks, "due
now" counts the callbacks whose time has come, and `dialer agent list` shows times in the operator's zone."""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import select

from dialer.db import open_database, session_scope
from dialer.metrics import Metrics
from dialer.models import Agent, Callback, Campaign, Contact, utcnow
from dialer.outcomes.states import ContactState
from tests.conftest import Cli


def _setup(cli: Cli) -> None:
    cli.ok("campaign", "create", "spring", "--from", "100", "--timezone", "Europe/London")
    cli.ok("campaign", "create", "plain", "--from", "100")
    for login, ext in (("alice", "101"), ("bob", "102"), ("carol", "103")):
        cli.ok("agent", "add", login, "--name", login.title(), "--extension", ext, "-c", "spring", "--pin-stdin",
               input="4821\n")  # fmt: skip
    cli.ok("agent", "login", "alice")
    cli.ok("agent", "login", "bob")
    cli.ok("agent", "pause", "bob", "--code", "lunch")
    engine = open_database(cli.database_url)
    now = utcnow()
    try:
        with session_scope(engine) as s:
            camp = s.exec(select(Campaign).where(Campaign.name == "spring")).one()
            for i, due in enumerate((now - timedelta(minutes=5), now - timedelta(minutes=1), now + timedelta(hours=2))):
                c = Contact(campaign_id=camp.id or 0, phone=f"+44790000001{i}", state=ContactState.CALLBACK,
                            attempts=1, next_attempt_at=due)  # fmt: skip
                s.add(c)
                s.flush()
                s.add(Callback(campaign_id=camp.id or 0, contact_id=c.id or 0, due_at=due, next_try_at=due))
            s.add(Contact(campaign_id=camp.id or 0, phone="+447900000020"))  # a fresh contact, due now
    finally:
        engine.dispose()


def test_status_shows_agents_by_state_and_due_callbacks(cli: Cli) -> None:
    _setup(cli)
    st = json.loads(cli.ok("status", "--json"))
    spring = next(c for c in st["campaigns"] if c["name"] == "spring")
    plain = next(c for c in st["campaigns"] if c["name"] == "plain")
    assert spring["agents"] == {"logged_out": 1, "ready": 1, "paused": 1, "ringing": 0, "talking": 0, "wrapup": 0}
    assert (spring["callbacks_scheduled"], spring["callbacks_due"]) == (3, 2)
    # Due now: the fresh contact and the two callbacks whose time has come; the third waits.
    assert (spring["due_now"], spring["due_later"]) == (3, 1)
    assert plain["agents"] is None and plain["callbacks_due"] == 0
    text = cli.ok("status")
    assert "agents: 1 logged_out, 1 ready, 1 paused" in text and "callbacks: 2 due of 3 scheduled" in text


def test_metrics_show_agents_by_state_and_callbacks(cli: Cli) -> None:
    _setup(cli)
    engine = open_database(cli.database_url)
    try:
        text = Metrics(db=engine).render()
    finally:
        engine.dispose()
    assert 'dialer_agents{campaign="1",campaign_name="spring",state="paused"} 1' in text
    assert 'dialer_agents{campaign="1",campaign_name="spring",state="ready"} 1' in text
    assert 'dialer_callbacks_due{campaign="1",campaign_name="spring"} 2' in text
    assert 'dialer_callbacks_scheduled{campaign="1",campaign_name="spring"} 3' in text
    assert 'dialer_callbacks_due{campaign="2",campaign_name="plain"} 0' in text
    assert 'campaign_name="plain",state=' not in text  # no agents: no agent series


def test_agent_list_shows_times_in_the_operators_zone(cli: Cli) -> None:
    _setup(cli)
    engine = open_database(cli.database_url)
    try:
        with session_scope(engine, write=False) as s:
            since = s.exec(select(Agent).where(Agent.login == "alice")).one().state_since.replace(tzinfo=UTC)
    finally:
        engine.dispose()
    zone = "Asia/Kolkata"  # UTC+5:30 all year
    local = since.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
    out = cli.ok("agent", "list", env={"DIALER_TIMEZONE": zone, "COLUMNS": "200"})
    assert f"since ({zone})" in out and local in out
    assert "since (UTC)" in cli.ok("agent", "list", env={"COLUMNS": "200"})
    rows = json.loads(cli.ok("agent", "list", "--json", env={"DIALER_TIMEZONE": zone}))
    assert next(r for r in rows if r["login"] == "alice")["since_local"].endswith("+05:30")
    bad = cli("agent", "list", env={"DIALER_TIMEZONE": "Nowhere/Bad"})
    assert bad.returncode != 0 and "not an IANA time zone" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr
