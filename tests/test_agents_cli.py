"""`dialer agent`, `dialer disposition` and `dialer callbacks` in-process on a real SQLite file: accounts, sessions
and their event rows, dispositions moving contacts, callbacks; and bad input to every command: a clear message, a
non-zero exit, and not one row written."""

from __future__ import annotations

import itertools
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from dialer.db import open_database, session_scope
from dialer.models import Agent, AgentEvent, Attempt, Callback, Campaign, Contact, DncEntry, utcnow
from dialer.outcomes.states import AgentState, AttemptState, CallbackState, ContactState
from tests.conftest import Cli

PIN = "4821\n"


@dataclass
class World:
    cli: Cli
    url: str
    campaign_id: int
    attempts: list[int]  # completed, connected, routed to alice; their contacts are done
    ringing: int  # an attempt still in a call
    unanswered: int  # a completed attempt that never reached an agent


def _db(url: str) -> Any:
    return open_database(url)


@pytest.fixture
def world(cli: Cli) -> World:
    cli.ok("campaign", "create", "spring", "--from", "100", "--window", "00:00-24:00", "--weekdays", "mon-sun",
           "--timezone", "Europe/London")  # fmt: skip
    cli.ok("campaign", "create", "autumn", "--from", "100")
    cli.ok("agent", "add", "alice", "--name", "Alice Smith", "--extension", "101", "-c", "spring", "--pin-stdin",
           input=PIN)  # fmt: skip
    cli.ok("agent", "add", "bob", "--name", "Bob", "--extension", "102", "-c", "spring", "-c", "autumn",
           "--pin-stdin", input="1234\n")  # fmt: skip
    engine = _db(cli.database_url)
    now = utcnow()
    try:
        with session_scope(engine) as s:
            camp = s.exec(select(Campaign).where(Campaign.name == "spring")).one()
            autumn = s.exec(select(Campaign).where(Campaign.name == "autumn")).one()
            alice = s.exec(select(Agent).where(Agent.login == "alice")).one()
            ids = []
            for i in range(4):
                phone = f"+44790000000{i}"
                c = Contact(campaign_id=camp.id or 0, phone=phone, state=ContactState.DONE, attempts=1,
                            timezones=["Europe/Helsinki"])  # fmt: skip
                s.add(c)
                s.add(Contact(campaign_id=autumn.id or 0, phone=phone, timezones=["Europe/London"]))
                s.flush()
                a = Attempt(campaign_id=camp.id or 0, contact_id=c.id or 0, phone=phone, state=AttemptState.COMPLETED,
                            connected=True, answered=True, disposition="answered", agent="101", agent_id=alice.id,
                            live=False, finished_at=now)  # fmt: skip
                s.add(a)
                s.flush()
                ids.append(a.id or 0)
            extra = []
            for phone, state, connected in (("+447900000010", AttemptState.PLACED, None),
                                             ("+447900000011", AttemptState.COMPLETED, False)):  # fmt: skip
                c = Contact(campaign_id=camp.id or 0, phone=phone, state=ContactState.DIALING, attempts=1)
                s.add(c)
                s.flush()
                a = Attempt(campaign_id=camp.id or 0, contact_id=c.id or 0, phone=phone, state=state,
                            connected=connected, disposition="no answer" if connected is False else None)
                s.add(a)
                s.flush()
                extra.append(a.id or 0)
            cid = camp.id or 0
    finally:
        engine.dispose()
    return World(cli, cli.database_url, cid, ids, extra[0], extra[1])


def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: what "nothing written" is checked against."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def _get(url: str, model: Any, **where: Any) -> Any:
    engine = _db(url)
    try:
        with session_scope(engine, write=False) as s:
            q = select(model)
            for k, v in where.items():
                q = q.where(getattr(model, k) == v)
            return s.exec(q).all()
    finally:
        engine.dispose()


# --- accounts and sessions ----------------------------------------------------------------------------------


def test_agents_are_added_listed_changed_and_removed(world: World) -> None:
    cli = world.cli
    rows = json.loads(cli.ok("agent", "list", "--json"))
    assert [(r["login"], r["extension"], r["campaigns"], r["state"]) for r in rows] == [
        ("alice", "101", ["spring"], AgentState.LOGGED_OUT), ("bob", "102", ["autumn", "spring"], AgentState.LOGGED_OUT)]
    stored = _get(world.url, Agent, login="alice")[0]
    assert stored.pin_hash.startswith("scrypt$") and "4821" not in stored.pin_hash
    assert [r["login"] for r in json.loads(cli.ok("agent", "list", "-c", "autumn", "--json"))] == ["bob"]
    out = json.loads(cli.ok("agent", "set", "alice", "--name", "Alice S.", "--extension", "111",
                            "--add-campaign", "autumn", "--json"))  # fmt: skip
    assert (out["name"], out["extension"], out["campaigns"]) == ("Alice S.", "111", ["autumn", "spring"])
    cli.ok("agent", "set", "alice", "--remove-campaign", "autumn", "--pin", input="5555\n5555\n")
    assert _get(world.url, Agent, login="alice")[0].pin_hash != stored.pin_hash
    assert "Removed agent 'bob'" in cli.ok("agent", "remove", "bob")
    assert [r["login"] for r in json.loads(cli.ok("agent", "list", "--json"))] == ["alice"]
    # The login is free again; the removed row stays for its history.
    cli.ok("agent", "add", "bob", "--name", "Bob Two", "--extension", "102", "--pin-stdin", input="9876\n")
    assert len(_get(world.url, Agent, login="bob")) == 2
    assert "alice" in cli.ok("agent", "list") and "Alice S." in cli.ok("agent", "list")


def test_a_pin_is_prompted_for_with_confirmation(world: World) -> None:
    out = world.cli("agent", "add", "carol", "--name", "Carol", "--extension", "103", input="2468\n2468\n")
    assert out.returncode == 0 and "2468" not in out.stdout
    assert "PIN" in out.stdout


def test_sessions_move_and_every_change_is_an_event(world: World) -> None:
    cli = world.cli
    assert cli.ok("agent", "login", "alice").strip() == "alice: ready."
    assert cli.ok("agent", "pause", "alice", "--code", "lunch").strip() == "alice: paused (lunch)."
    cli.ok("agent", "pause", "alice", "--code", "break")
    cli.ok("agent", "ready", "alice")
    cli.ok("agent", "ready", "alice")  # already ready: no event
    out = json.loads(cli.ok("agent", "logout", "alice", "--json"))
    assert out == {"login": "alice", "state": AgentState.LOGGED_OUT, "pause_code": None, "deferred": False,
                   "pending_change": None}  # fmt: skip
    alice = _get(world.url, Agent, login="alice")[0]
    events = sorted(_get(world.url, AgentEvent, agent_id=alice.id), key=lambda e: e.id)
    assert [(e.from_state, e.to_state, e.pause_code, e.reason) for e in events] == [
        (AgentState.LOGGED_OUT, AgentState.READY, None, "login"),
        (AgentState.READY, AgentState.PAUSED, "lunch", "pause"),
        (AgentState.PAUSED, AgentState.PAUSED, "break", "pause"),
        (AgentState.PAUSED, AgentState.READY, None, "ready"),
        (AgentState.READY, AgentState.LOGGED_OUT, None, "logout"),
    ]
    assert all(a.at <= b.at for a, b in itertools.pairwise(events))


def test_pausing_or_logging_out_in_a_call_waits_for_its_end(world: World) -> None:
    cli = world.cli
    cli.ok("agent", "login", "alice")
    engine = _db(world.url)
    try:
        with session_scope(engine) as s:
            alice = s.exec(select(Agent).where(Agent.login == "alice")).one()
            alice.state, alice.attempt_id = AgentState.TALKING, world.ringing
    finally:
        engine.dispose()
    out = cli.ok("agent", "pause", "alice", "--code", "lunch")
    assert "in a call" in out and "paused:lunch when it ends" in out
    assert _get(world.url, Agent, login="alice")[0].state == AgentState.TALKING
    assert json.loads(cli.ok("agent", "list", "--json"))[0]["pending_change"] == "paused:lunch"
    assert "logged_out when it ends" in cli.ok("agent", "logout", "alice")
    cli.ok("agent", "ready", "alice")  # takes the logout back
    assert _get(world.url, Agent, login="alice")[0].pending_state is None


# --- dispositions -------------------------------------------------------------------------------------------


def test_a_sale_is_recorded_and_ends_the_agents_wrapup(world: World) -> None:
    cli = world.cli
    cli.ok("agent", "login", "alice")
    engine = _db(world.url)
    try:
        with session_scope(engine) as s:
            alice = s.exec(select(Agent).where(Agent.login == "alice")).one()
            alice.state, alice.attempt_id = AgentState.WRAPUP, world.attempts[0]
            alice.wrapup_until = utcnow() + timedelta(seconds=60)
    finally:
        engine.dispose()
    out = json.loads(cli.ok("disposition", str(world.attempts[0]), "1", "--note", "two boxes", "--agent", "alice",
                            "--json"))  # fmt: skip
    assert (out["code"], out["contact_state"], out["contact_moved"]) == ("sale", ContactState.DONE, True)
    a = _get(world.url, Attempt, id=world.attempts[0])[0]
    assert (a.agent_disposition, a.agent_note, a.disposition) == ("sale", "two boxes", "answered")
    alice = _get(world.url, Agent, login="alice")[0]
    assert alice.state == AgentState.READY
    last = max(_get(world.url, AgentEvent, agent_id=alice.id), key=lambda e: e.id)
    assert (last.from_state, last.to_state, last.reason, last.attempt_id) == (
        AgentState.WRAPUP, AgentState.READY, "disposition", world.attempts[0])


def test_do_not_call_lists_the_number_at_once_in_every_campaign(world: World) -> None:
    aid = world.attempts[1]
    out = json.loads(world.cli.ok("disposition", str(aid), "dnc", "--json"))
    assert out["dnc_added"] and out["contact_state"] == ContactState.DNC
    phone = _get(world.url, Attempt, id=aid)[0].phone
    entries = _get(world.url, DncEntry, phone=phone)
    assert len(entries) == 1 and entries[0].campaign_id is None and "dnc" in (entries[0].reason or "")
    assert {c.state for c in _get(world.url, Contact, phone=phone)} == {ContactState.DNC}


def test_retry_and_callback_dispositions(world: World) -> None:
    cli = world.cli
    before = utcnow()
    out = json.loads(cli.ok("disposition", str(world.attempts[2]), "no_decision_maker", "--json"))
    contact = _get(world.url, Contact, id=out["contact"])[0]
    assert contact.state == ContactState.RETRY
    assert before + timedelta(seconds=3600) <= contact.next_attempt_at <= utcnow() + timedelta(seconds=3600)

    # 09:30 in the contact's zone (Helsinki, UTC+2 in winter) is 07:30 UTC.
    day = (utcnow() + timedelta(days=2)).date()
    out = json.loads(cli.ok("disposition", str(world.attempts[3]), "callback", "--callback-at", f"{day} 09:30",
                            "--only-me", "--note", "after payday", "--json"))  # fmt: skip
    want = datetime(day.year, day.month, day.day, 7, 30, tzinfo=UTC)
    assert out["contact_state"] == ContactState.CALLBACK and out["callback_next_try_at"] == want.isoformat()
    cb = _get(world.url, Callback, id=out["callback_id"])[0]
    alice = _get(world.url, Agent, login="alice")[0]
    assert (cb.due_at, cb.agent_id, cb.state, cb.note) == (want, alice.id, CallbackState.SCHEDULED, "after payday")
    listed = json.loads(cli.ok("callbacks", "list", "--campaign", "spring", "--json"))
    assert [(r["phone"], r["due_local"], r["zone"], r["only_agent"]) for r in listed] == [
        (cb_phone := _get(world.url, Attempt, id=world.attempts[3])[0].phone, f"{day} 09:30", "Europe/Helsinki",
         "alice")]  # fmt: skip
    assert cb_phone in cli.ok("callbacks", "list")
    assert json.loads(cli.ok("callbacks", "list", "--state", "cancelled", "--json")) == []
    # Removing alice makes her "only me" callback anyone's.
    cli.ok("agent", "remove", "alice")
    assert _get(world.url, Callback, id=out["callback_id"])[0].agent_id is None


# --- bad input ----------------------------------------------------------------------------------------------

BAD: list[tuple[list[str], str | None, str]] = [
    (["agent", "add", "Bad Login!", "--name", "X", "--extension", "1", "--pin-stdin"], PIN, "login"),
    (["agent", "add", "alice", "--name", "X", "--extension", "1", "--pin-stdin"], PIN, "already exists"),
    (["agent", "add", "zed", "--name", "X", "--extension", "1 0", "--pin-stdin"], PIN, "extension"),
    (["agent", "add", "zed", "--name", " ", "--extension", "1", "--pin-stdin"], PIN, "name"),
    (["agent", "add", "zed", "--name", "X", "--extension", "1", "-c", "nope", "--pin-stdin"], PIN, "no campaign"),
    (["agent", "add", "zed", "--name", "X", "--extension", "1", "--pin-stdin"], "12\n", "4 to 12 digits"),
    (["agent", "add", "zed", "--name", "X", "--extension", "1"], "1234\n9999\n", ""),  # confirmation differs
    (["agent", "add", "zed", "--extension", "1", "--pin-stdin"], PIN, "--name"),
    (["agent", "set", "nobody", "--name", "X"], None, "no agent"),
    (["agent", "set", "alice", "-c", "nope"], None, "no campaign"),
    (["agent", "set", "alice", "--pin-stdin"], "abcd\n", "4 to 12 digits"),
    (["agent", "remove", "nobody"], None, "no agent"),
    (["agent", "list", "-c", "nope"], None, "no campaign"),
    (["agent", "login", "nobody"], None, "no agent"),
    (["agent", "pause", "alice", "--code", "lunch"], None, "not logged in"),
    (["agent", "pause", "alice"], None, "--code"),
    (["agent", "ready", "alice"], None, "not logged in"),
    (["agent", "logout", "alice"], None, "not logged in"),
    (["agent", "codes", "nope"], None, "no campaign"),
    (["agent", "codes", "spring", "--dispositions", "sale:1"], None, "code:hotkey:meaning"),
    (["agent", "codes", "spring", "--pause-codes", "a,a"], None, "given twice"),
    (["disposition", "999", "sale"], None, "no call attempt 999"),
    (["disposition", "x", "sale"], None, "valid integer"),
    (["disposition", "{a0}", "maybe"], None, "unknown disposition 'maybe'"),
    (["disposition", "{ringing}", "sale"], None, "once the call has ended"),
    (["disposition", "{unanswered}", "sale"], None, "never reached an agent"),
    (["disposition", "{a0}", "sale", "--agent", "bob"], None, "not routed to this agent"),
    (["disposition", "{a0}", "sale", "--agent", "nobody"], None, "no agent"),
    (["disposition", "{a0}", "callback"], None, "give its time"),
    (["disposition", "{a0}", "callback", "--callback-at", "2020-01-01 10:00"], None, "in the past"),
    (["disposition", "{a0}", "callback", "--callback-at", "soon"], None, "callback time"),
    (["disposition", "{a0}", "sale", "--only-me"], None, "call-back disposition"),
    (["disposition", "{a0}", "sale", "--callback-at", "+1h"], None, "call-back disposition"),
    (["disposition", "{a0}", "sale", "--note", "x" * 2001], None, "at most 2000"),
    (["callbacks", "list", "--campaign", "nope"], None, "no campaign"),
    (["callbacks", "list", "--state", "later"], None, "--state"),
]


@pytest.mark.parametrize(("args", "stdin", "message"), BAD, ids=[" ".join(a[:3]) for a, _, _ in BAD])
def test_bad_input_says_why_exits_non_zero_and_writes_nothing(world: World, args: list[str], stdin: str | None,
                                                              message: str) -> None:
    ids = {"{a0}": str(world.attempts[0]), "{ringing}": str(world.ringing), "{unanswered}": str(world.unanswered)}
    args = [ids.get(a, a) for a in args]
    before = _rows(world.url)
    res = world.cli(*args, input=stdin)
    assert res.returncode != 0, res.stdout
    assert message in res.stderr + res.stdout
    assert "Traceback" not in res.stderr
    assert _rows(world.url) == before


def test_bad_session_changes_from_a_logged_in_agent_write_nothing(world: World) -> None:
    cli = world.cli
    cli.ok("agent", "login", "alice")
    cli.ok("agent", "set", "bob", "--extension", "101")
    cli.ok("agent", "set", "bob", "--campaign", "autumn")
    cli.ok("agent", "add", "solo", "--name", "Solo", "--extension", "120", "--pin-stdin", input=PIN)
    before = _rows(world.url)
    for args, message in [
        (["agent", "login", "alice"], "already logged in"),
        (["agent", "login", "bob"], "extension 101 is in use by agent 'alice'"),
        (["agent", "login", "solo"], "works no campaign"),
        (["agent", "pause", "alice", "--code", "nap"], "unknown pause code 'nap'"),
        (["agent", "set", "alice", "--extension", "130"], "log out before changing the extension"),
        (["agent", "remove", "alice"], "log them out first"),
    ]:
        res = cli(*args)
        assert res.returncode != 0 and message in res.stderr, (args, res.stderr)
    assert _rows(world.url) == before


def test_a_second_disposition_of_a_call_is_refused(world: World) -> None:
    world.cli.ok("disposition", str(world.attempts[0]), "sale")
    before = _rows(world.url)
    res = world.cli("disposition", str(world.attempts[0]), "not_interested")
    assert res.returncode != 0 and "already has the disposition 'sale'" in res.stderr
    assert _rows(world.url) == before


def test_db_file_is_the_one_the_cli_uses(world: World, tmp_path: Path) -> None:
    assert world.url == f"sqlite:///{tmp_path / 'dialer.db'}"
