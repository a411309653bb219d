"""`dialer agent`, `dialer disposition` and `dialer callbacks`: agents' accounts and sessions for supervisors and
scripts, an agent's disposition of a call, and the scheduled callbacks.

Thin: each command parses, calls ``dialer.agents`` / ``dialer.outcomes`` and prints. A PIN is never taken on the
command line (it would sit in the shell history and the process list): it is prompted for with hidden input, or
read from standard input with ``--pin-stdin``. The database layer and Rich are imported inside the commands.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from dialer.commands.common import DAILY, EXIT_ERROR, EXIT_USAGE, SETUP, PanelGroup, fail, print_json
from dialer.commands.db import open_db
from dialer.outcomes.states import CallbackState, Presence

app = typer.Typer(help="Agents: accounts (login, name, extension, PIN, campaigns) and their sessions (log in, "
                  "pause with a code, ready, log out).\n\n"
                  "Example: dialer agent add alice --name 'Alice Smith' --extension 101 --campaign spring",
                  cls=PanelGroup, no_args_is_help=True)  # fmt: skip
callbacks_app = typer.Typer(help="Scheduled callbacks (from call-back dispositions).\n\n"
                            "Example: dialer callbacks list --campaign spring", no_args_is_help=True)  # fmt: skip

JSON = typer.Option(False, "--json", help="Print JSON.")
_DISPOSITIONS_HELP = ("Replace the dispositions: code:hotkey:meaning[:label], comma-separated; meanings success, "
                      "failure, retry, callback, dnc.")
_PAUSE_CODES_HELP = "Replace the pause codes: code[:label], comma-separated."
_CALLBACK_AT_HELP = ("For a call back: when, in the contact's local time ('2026-12-01 14:30', '14:30') or from now "
                     "('+2h').")
_ONLY_ME_HELP = "For a call back: only the agent who took the call places it (when ready); otherwise anyone."
_AGENT_HELP = "Save it as this agent (the one the call was routed to); without it, as a supervisor."
PIN_STDIN = typer.Option(False, "--pin-stdin", help="Read the PIN from standard input (one line) instead of "
                         "prompting for it.")  # fmt: skip


@contextmanager
def _errors() -> Iterator[None]:
    """Library refusals as one-line messages: bad input exits 2, anything else refused exits 1."""
    from dialer.agents.accounts import AgentError
    from dialer.agents.callbacks import CallbackTimeError
    from dialer.outcomes.codes import CodesError
    from dialer.outcomes.dispositions import DispositionError, ErrorKind

    try:
        yield
    except (AgentError, DispositionError) as exc:
        fail(str(exc), EXIT_USAGE if exc.kind == ErrorKind.INVALID else EXIT_ERROR)
    except (CallbackTimeError, CodesError) as exc:
        fail(str(exc), EXIT_USAGE)


def _read_pin(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().strip()
    return str(typer.prompt("PIN (4-12 digits)", hide_input=True, confirmation_prompt=True)).strip()


def _now() -> Any:
    from dialer.models import utcnow

    return utcnow()


# --- accounts -----------------------------------------------------------------------------------------------


@app.command("add", rich_help_panel=SETUP)
def add(
    login: str = typer.Argument(..., help="Login name (letters, digits, '.', '_', '-')."),
    name: str = typer.Option(..., "--name", help="The agent's name."),
    extension: str = typer.Option(..., "--extension", help="The PBX extension the agent sits at, e.g. 101."),
    campaign: list[str] = typer.Option([], "--campaign", "-c", help="A campaign the agent works (repeat for more)."),
    pin_stdin: bool = PIN_STDIN,
    json_out: bool = JSON,
) -> None:
    """Add an agent. The PIN (4-12 digits, for the agent's own login) is prompted for, or read with --pin-stdin.

    A campaign with agents paces for those logged in and not paused; one without keeps its configured count.

    Example: echo 4821 | dialer agent add alice --name 'Alice Smith' --extension 101 --campaign spring --pin-stdin
    """
    from dialer.agents import accounts
    from dialer.db import session_scope

    with _errors():
        accounts.check_pin(pin := _read_pin(pin_stdin))
        engine = open_db()
        with session_scope(engine) as s:
            agent = accounts.add_agent(s, login, name=name, extension=extension, campaigns=campaign, pin=pin,
                                       now=_now())  # fmt: skip
            info = next(i for i in accounts.list_agents(s, _now()) if i.id == agent.id)
    if json_out:
        print_json(info.as_dict())
    else:
        typer.echo(f"Added agent {info.login!r} ({info.name}, extension {info.extension}"
                   f"{', campaigns ' + ', '.join(info.campaigns) if info.campaigns else ', no campaign yet'}). "
                   f"Log in: dialer agent login {info.login}")  # fmt: skip


@app.command("list", rich_help_panel=DAILY)
def list_(
    campaign: str | None = typer.Option(None, "--campaign", "-c", help="Only the agents of this campaign."),
    json_out: bool = JSON,
) -> None:
    """List agents with their session: state (and pause code), since when, and a change waiting for a call's end.

    Times are in DIALER_TIMEZONE when it is set, else UTC.

    Example: dialer agent list --campaign spring
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from rich.console import Console
    from rich.table import Table

    from dialer.agents import accounts
    from dialer.commands.campaign_edit import operator_zone
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc

    engine = open_db()
    try:
        with _errors(), session_scope(engine, write=False) as s:
            cid = svc.get_campaign(s, campaign).id if campaign else None
            rows = accounts.list_agents(s, _now(), cid)
    except svc.CampaignError as exc:
        fail(str(exc))
    # Agents may work campaigns in several zones: their times are in the operator's (DIALER_TIMEZONE), else UTC.
    try:
        zone = ZoneInfo(operator_zone("UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        fail(f"DIALER_TIMEZONE {operator_zone('UTC')!r} is not an IANA time zone (e.g. Europe/London)")
    if json_out:
        print_json([{**r.as_dict(), "since_local": r.since.astimezone(zone).isoformat()} for r in rows])
        return
    if not rows:
        typer.echo("No agents. Add one: dialer agent add LOGIN --name NAME --extension EXT --campaign CAMPAIGN")
        return
    table = Table("login", "name", "extension", "campaigns", "state", f"since ({zone.key})", "after the call")
    for r in rows:
        state = f"{r.state} ({r.pause_code})" if r.pause_code else r.state
        table.add_row(r.login, r.name, r.extension, ", ".join(r.campaigns), state,
                      r.since.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"), r.pending_change or "")  # fmt: skip
    Console().print(table)


@app.command("set", rich_help_panel=SETUP)
def set_(
    login: str = typer.Argument(..., help="The agent's login."),
    name: str | None = typer.Option(None, "--name", help="A new name."),
    extension: str | None = typer.Option(None, "--extension", help="A new extension (only while logged out)."),
    campaign: list[str] = typer.Option([], "--campaign", "-c", help="Replace the agent's campaigns (repeat)."),
    add_campaign: list[str] = typer.Option([], "--add-campaign", help="Add a campaign (repeat)."),
    remove_campaign: list[str] = typer.Option([], "--remove-campaign", help="Remove a campaign (repeat)."),
    pin: bool = typer.Option(False, "--pin", help="Set a new PIN (prompted for)."),
    pin_stdin: bool = PIN_STDIN,
    json_out: bool = JSON,
) -> None:
    """Change an agent's name, extension, campaigns or PIN. "Only me" callbacks of a campaign the agent leaves
    become anyone's.

    Example: dialer agent set alice --add-campaign autumn --extension 102
    """
    from dialer.agents import accounts
    from dialer.db import session_scope

    with _errors():
        new_pin = accounts.check_pin(_read_pin(pin_stdin)) if (pin or pin_stdin) else None
        engine = open_db()
        with session_scope(engine) as s:
            agent = accounts.update_agent(s, login, _now(), name=name, extension=extension,
                                          campaigns=campaign or None, add_campaigns=add_campaign,
                                          remove_campaigns=remove_campaign, pin=new_pin)  # fmt: skip
            info = next(i for i in accounts.list_agents(s, _now()) if i.id == agent.id)
    if json_out:
        print_json(info.as_dict())
    else:
        typer.echo(f"Updated agent {info.login!r}: {info.name}, extension {info.extension}, campaigns "
                   f"{', '.join(info.campaigns) or 'none'}{'; new PIN set' if new_pin else ''}.")  # fmt: skip


@app.command("remove", rich_help_panel=SETUP)
def remove(login: str = typer.Argument(..., help="The agent's login.")) -> None:
    """Remove a logged-out agent. Their state history and calls stay on record; their "only me" callbacks
    become anyone's.

    Example: dialer agent remove alice
    """
    from dialer.agents import accounts
    from dialer.db import session_scope

    engine = open_db()
    with _errors(), session_scope(engine) as s:
        agent = accounts.remove_agent(s, login, _now())
    typer.echo(f"Removed agent {agent.login!r}.")


@app.command("codes", rich_help_panel=SETUP)
def codes(
    campaign: str = typer.Argument(..., help="Campaign name."),
    dispositions: str | None = typer.Option(None, "--dispositions", help=_DISPOSITIONS_HELP),
    pause_codes: str | None = typer.Option(None, "--pause-codes", help=_PAUSE_CODES_HELP),
    json_out: bool = JSON,
) -> None:
    """Show (or replace) a campaign's dispositions and pause codes. Without its own, a campaign uses the
    defaults: sale, not_interested, callback, wrong_number, dnc, no_decision_maker; break, lunch, training, meeting.

    Example: dialer agent codes spring --pause-codes "break,lunch,coaching:One-to-one coaching"
    """
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc
    from dialer.outcomes import codes as lib

    engine = open_db()
    try:
        with _errors(), session_scope(engine) as s:
            cid = svc.get_campaign(s, campaign).id or 0
            if dispositions is not None:
                lib.set_dispositions(s, cid, lib.parse_dispositions(dispositions))
            if pause_codes is not None:
                lib.set_pause_codes(s, cid, lib.parse_pause_codes(pause_codes))
            disp, pauses = lib.dispositions_of(s, cid), lib.pause_codes_of(s, cid)
    except svc.CampaignError as exc:
        fail(str(exc))
    if json_out:
        print_json({"dispositions": [{"code": d.code, "label": d.label, "hotkey": d.hotkey,
                                      "meaning": d.meaning.value} for d in disp],
                    "pause_codes": [{"code": p.code, "label": p.label} for p in pauses]})  # fmt: skip
        return
    typer.echo(f"Dispositions of {campaign!r}:")
    for d in disp:
        typer.echo(f"  {d.hotkey}  {d.code:<20} {d.meaning.value:<9} {d.label}")
    typer.echo("Pause codes: " + ", ".join(f"{p.code} ({p.label})" for p in pauses))


# --- sessions -----------------------------------------------------------------------------------------------


def _presence(login: str, request: Presence, code: str | None, json_out: bool) -> None:
    from dialer.agents.sessions import set_presence
    from dialer.db import session_scope

    engine = open_db()
    with _errors(), session_scope(engine) as s:
        result = set_presence(s, login, request, _now(), code)
    if json_out:
        print_json(result.as_dict())
        return
    state = f"{result.state} ({result.pause_code})" if result.pause_code else str(result.state)
    if result.deferred:
        typer.echo(f"{result.login} is in a call ({state}): {result.pending_change} when it ends.")
    elif result.pending_change:
        typer.echo(f"{result.login}: {state}; {result.pending_change} when the call ends.")
    else:
        typer.echo(f"{result.login}: {state}.")


@app.command("login", rich_help_panel=DAILY)
def login(login: str = typer.Argument(..., help="The agent's login."), json_out: bool = JSON) -> None:
    """Log an agent in (ready): their campaigns start counting them and routing customers to their extension.

    Example: dialer agent login alice
    """
    _presence(login, Presence.LOGIN, None, json_out)


@app.command("pause", rich_help_panel=DAILY)
def pause(
    login: str = typer.Argument(..., help="The agent's login."),
    code: str = typer.Option(..., "--code", help="Pause code, e.g. break, lunch (see `dialer agent codes`)."),
    json_out: bool = JSON,
) -> None:
    """Pause an agent with a pause code; during a call the pause starts when the call ends.

    Example: dialer agent pause alice --code lunch
    """
    _presence(login, Presence.PAUSE, code, json_out)


@app.command("ready", rich_help_panel=DAILY)
def ready(login: str = typer.Argument(..., help="The agent's login."), json_out: bool = JSON) -> None:
    """Make an agent ready (after a pause or wrap-up; during a call it takes back a pause or logout asked for).

    Example: dialer agent ready alice
    """
    _presence(login, Presence.READY, None, json_out)


@app.command("logout", rich_help_panel=DAILY)
def logout(login: str = typer.Argument(..., help="The agent's login."), json_out: bool = JSON) -> None:
    """Log an agent out; during a call the logout happens when the call ends.

    Example: dialer agent logout alice
    """
    _presence(login, Presence.LOGOUT, None, json_out)


# --- dispositions and callbacks -----------------------------------------------------------------------------


def disposition(
    attempt: int = typer.Argument(..., help="The call attempt's id (dialer campaign contacts shows them)."),
    code: str = typer.Argument(..., help="The disposition code or its hotkey (see `dialer agent codes`)."),
    note: str | None = typer.Option(None, "--note", help="A note for the record."),
    callback_at: str | None = typer.Option(None, "--callback-at", help=_CALLBACK_AT_HELP),
    only_me: bool = typer.Option(False, "--only-me", help=_ONLY_ME_HELP),
    agent: str | None = typer.Option(None, "--agent", help=_AGENT_HELP),
    json_out: bool = JSON,
) -> None:
    """Save the disposition of a call an agent handled; it moves the contact on: done, retry, a scheduled
    callback, or the do-not-call list at once.

    Example: dialer disposition 42 callback --callback-at "2026-12-01 14:30" --only-me --note "after payday"
    """
    from dialer.agents.accounts import get_agent
    from dialer.agents.callbacks import callback_time_for
    from dialer.db import session_scope
    from dialer.outcomes.dispositions import save_disposition

    engine = open_db()
    now = _now()
    with _errors(), session_scope(engine) as s:
        agent_id = get_agent(s, agent).id if agent else None
        when = callback_time_for(s, attempt, callback_at, now) if callback_at else None
        r = save_disposition(s, attempt, code, now=now, agent_id=agent_id, note=note, callback_at=when,
                             only_me=only_me)  # fmt: skip
    if json_out:
        print_json({"attempt": r.attempt_id, "code": r.code, "meaning": r.meaning.value, "contact": r.contact_id,
                    "contact_state": r.contact_state, "contact_moved": r.contact_moved, "callback_id": r.callback_id,
                    "callback_next_try_at": r.callback_next_try_at.isoformat() if r.callback_next_try_at else None,
                    "dnc_added": r.dnc_added})  # fmt: skip
        return
    text = f"Attempt {r.attempt_id}: {r.code} ({r.meaning.value}); contact {r.contact_id} is {r.contact_state}"
    if r.callback_next_try_at is not None:
        text += f", callback {r.callback_id} from {r.callback_next_try_at.isoformat(timespec='minutes')} UTC"
    if not r.contact_moved:
        text += " (the contact had moved on since this call: the disposition is recorded only)"
    typer.echo(text + ".")


@callbacks_app.command("list")
def callbacks_list(
    campaign: str | None = typer.Option(None, "--campaign", "-c", help="Only this campaign's."),
    state: str = typer.Option(CallbackState.SCHEDULED.value, "--state", help="scheduled, placed, cancelled, or all."),
    json_out: bool = JSON,
) -> None:
    """List scheduled callbacks (earliest first), with the time in the contact's zone and whom each waits for.

    Example: dialer callbacks list --campaign spring --json
    """
    from rich.console import Console
    from rich.table import Table

    from dialer.agents.callbacks import list_callbacks
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc

    known = [s.value for s in CallbackState]
    if state != "all" and state not in known:
        fail(f"--state {state!r}: use {', '.join(known)} or all", EXIT_USAGE)
    engine = open_db()
    try:
        with session_scope(engine, write=False) as s:
            cid = svc.get_campaign(s, campaign).id if campaign else None
            rows = list_callbacks(s, campaign_id=cid, states=None if state == "all" else [state])
    except svc.CampaignError as exc:
        fail(str(exc))
    if json_out:
        print_json([r.as_dict() for r in rows])
        return
    if not rows:
        typer.echo("No callbacks.")
        return
    table = Table("id", "campaign", "phone", "name", "due (contact's time)", "zone", "for", "state")
    for r in rows:
        table.add_row(str(r.id), r.campaign, r.phone, r.name or "", r.due_local, r.zone, r.only_agent or "anyone",
                      r.state)  # fmt: skip
    Console().print(table)
