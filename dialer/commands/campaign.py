"""`dialer campaign` commands: create, load contacts, inspect, start/pause/resume/stop, change settings.

The database layer, the loader and Rich are imported inside the commands, so that `dialer --help` and the
other commands do not load SQLAlchemy or pandas.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dialer.commands.common import DAILY, EXIT_USAGE, SETUP, PanelGroup, fail, print_json
from dialer.commands.db import open_db
from dialer.outcomes.states import ContactState

if TYPE_CHECKING:
    from dialer.models import Campaign, Contact

CONTACT_STATE_NAMES = tuple(s.value for s in ContactState)

app = typer.Typer(help="Campaigns: create, load contact lists, inspect, start/pause/resume/stop, change settings.\n\n"
                  "Example: dialer campaign load campaigns/example.csv --campaign spring --from 100 --region GB",
                  cls=PanelGroup, no_args_is_help=True)  # fmt: skip

# Options shared by `create` and `load` (which creates the campaign in one step when given --from).
SIP = typer.Option(None, "--sip", help="Number or extension shown as caller id.")
AGENTS = typer.Option(None, "--agents", help="Agents working the campaign (default 1).")
EXTENSIONS = typer.Option(None, "--extensions", help="Agent extensions, comma-separated (e.g. 100,101).")
PACING = typer.Option(
    None, "--pacing", help="progressive | ratio:K | vicidial | vicidial-average | predictive."
)
ABANDON = typer.Option(None, "--abandon-target", help="Abandon-rate cap, e.g. 0.03 or 3% (max 5%).")
ABANDON_WINDOW = typer.Option(None, "--abandon-window", help="30d (US) or 24h (UK Ofcom).")
MAX_ATTEMPTS = typer.Option(None, "--max-attempts", help="Attempts per contact (default 3).")
RETRY_BUSY = typer.Option(None, "--retry-busy", help="Delay after busy, e.g. 30m (default 30m).")
RETRY_NA = typer.Option(None, "--retry-no-answer", help="Delay after no answer (default 1h).")
RETRY_FAILED = typer.Option(None, "--retry-failed", help="Delay after a failed call (default 15m).")
RETRY_ABANDONED = typer.Option(None, "--retry-abandoned", help="Delay after an abandoned call (default 72h).")
WINDOW = typer.Option(
    None, "--window", help="Calling window in the contact's local time (default 09:00-20:00)."
)
WEEKDAYS = typer.Option(None, "--weekdays", help="Calling days, e.g. mon-fri (default) or mon-sat.")
HOLIDAYS = typer.Option(None, "--holidays", help="Dates not to call, comma-separated YYYY-MM-DD.")
REGION = typer.Option(None, "--region", help="Country for numbers without a country code, e.g. GB.")
TIMEZONE = typer.Option(None, "--timezone", help="The campaign's reporting time zone (IANA, default UTC).")
ABANDON_ACTION = typer.Option(None, "--abandon-action", help="hangup or ivr_play:<file id>.")


_NOT_SETTINGS = frozenset(
    ("name", "file", "campaign", "from_", "phone_column", "name_column", "rejects", "json_out")
)


def _settings(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


@contextmanager
def _errors(reads_file: bool = False) -> Iterator[None]:
    """Campaign errors as messages and exit codes; with `reads_file`, also a file that cannot be read."""
    from dialer.ingest import campaigns as svc

    unreadable: tuple[type[Exception], ...] = ()
    if reads_file:  # the reader's module imports pandas: only commands that read a file pay for it
        from dialer.ingest.reading import LoaderError

        unreadable = (LoaderError,)
    try:
        yield
    except svc.SettingsError as exc:
        fail(str(exc), EXIT_USAGE)
    except svc.CampaignError as exc:
        fail(str(exc))
    except unreadable as exc:
        fail(str(exc))


def campaign_dict(c: Campaign, counts: dict[str, int] | None = None) -> dict[str, Any]:
    d = c.model_dump(mode="json")
    if counts is not None:
        d["contacts"] = {"total": sum(counts.values()), **{s: counts.get(s, 0) for s in CONTACT_STATE_NAMES}}
    return d


def contact_dict(c: Contact) -> dict[str, Any]:
    return c.model_dump(mode="json")


@app.command("create", rich_help_panel=SETUP)
def create(
    name: str = typer.Argument(..., help="Campaign name."),
    from_: str = typer.Option(..., "--from", help="PBX number, extension or scenario id the callbacks use."),
    sip: str | None = SIP,
    agents: int | None = AGENTS,
    extensions: str | None = EXTENSIONS,
    pacing: str | None = PACING,
    abandon_target: str | None = ABANDON,
    abandon_window: str | None = ABANDON_WINDOW,
    max_attempts: int | None = MAX_ATTEMPTS,
    retry_busy: str | None = RETRY_BUSY,
    retry_no_answer: str | None = RETRY_NA,
    retry_failed: str | None = RETRY_FAILED,
    retry_abandoned: str | None = RETRY_ABANDONED,
    window: str | None = WINDOW,
    weekdays: str | None = WEEKDAYS,
    holidays: str | None = HOLIDAYS,
    region: str | None = REGION,
    timezone: str | None = TIMEZONE,
    abandon_action: str | None = ABANDON_ACTION,
    json_out: bool = typer.Option(False, "--json", help="Print the campaign as JSON."),
) -> None:
    """Create a campaign (state draft).

    Example: dialer campaign create spring --from 100 --agents 10 --pacing predictive --region GB
    """
    settings = _settings(**{k: v for k, v in locals().items() if k not in _NOT_SETTINGS})
    # Imported after reading locals(): the options are the settings.
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc

    engine = open_db()
    with _errors(), session_scope(engine) as s:
        c = svc.create_campaign(s, name, from_, **settings)
        out = campaign_dict(c)
    if json_out:
        print_json(out)
    else:
        typer.echo(f"Created campaign {name!r} (from {from_}, pacing {out['pacing']}). "
                   f"Load contacts: dialer campaign load FILE --campaign {name}")  # fmt: skip


@app.command("load", rich_help_panel=SETUP)
def load(
    file: Path = typer.Argument(..., help="CSV (, ; tab; UTF-8 or Windows-1251) or XLSX file."),
    campaign: str = typer.Option(..., "--campaign", "-c", help="Campaign name."),
    from_: str | None = typer.Option(None, "--from", help="Create the campaign first, with this PBX number."),
    phone_column: str | None = typer.Option(None, "--phone-column", help="Column holding the numbers."),
    name_column: str | None = typer.Option(
        None, "--name-column", help="Column shown to the agent as the name."
    ),
    rejects: Path | None = typer.Option(
        None, "--rejects", help="Where to write rejected rows (default FILE.rejects.csv)."
    ),
    sip: str | None = SIP,
    agents: int | None = AGENTS,
    extensions: str | None = EXTENSIONS,
    pacing: str | None = PACING,
    abandon_target: str | None = ABANDON,
    abandon_window: str | None = ABANDON_WINDOW,
    max_attempts: int | None = MAX_ATTEMPTS,
    retry_busy: str | None = RETRY_BUSY,
    retry_no_answer: str | None = RETRY_NA,
    retry_failed: str | None = RETRY_FAILED,
    retry_abandoned: str | None = RETRY_ABANDONED,
    window: str | None = WINDOW,
    weekdays: str | None = WEEKDAYS,
    holidays: str | None = HOLIDAYS,
    region: str | None = REGION,
    timezone: str | None = TIMEZONE,
    abandon_action: str | None = ABANDON_ACTION,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Load contacts from a file into a campaign; bad rows go to a rejects CSV with their line and reason.

    A load is all or nothing: if it fails or is interrupted, none of its contacts are kept. Exit code 0 when at
    least one row of the file is in the campaign (loaded now, or already there: a re-run), 1 when nothing was
    loaded (every row rejected, or no rows) or the file cannot be read or the load failed, 2 for a wrong option or setting, 130 when interrupted
    (Ctrl-C).

    Example: dialer campaign load campaigns/example.csv --campaign spring --from 100 --region GB
    """
    settings = _settings(**{k: v for k, v in locals().items() if k not in _NOT_SETTINGS})
    # Imported after reading locals(): the options are the settings.
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc

    engine = open_db()
    with _errors(reads_file=True):
        with session_scope(engine) as s:
            existing = svc.find_campaign(s, campaign)
            if existing is None:
                if not from_:
                    raise svc.CampaignError(
                        f"no campaign named {campaign!r}: create it with `dialer campaign create {campaign} --from PBX` "
                        "or pass --from here"
                    )
                svc.create_campaign(s, campaign, from_, **settings)
                created = True
            else:
                created = False
                if settings or from_:
                    typer.echo(f"Campaign {campaign!r} exists; its settings are unchanged "
                               "(change them with `dialer campaign set`).", err=True)  # fmt: skip
        try:
            result = _run_load(engine, file, campaign, phone_column, name_column, rejects, quiet=json_out)
        except BaseException as exc:
            if created:  # the load is all or nothing: do not leave its empty campaign behind either
                _forget_campaign(engine, campaign, exc)
            raise
    if json_out:
        print_json({**result.as_dict(), "campaign_created": created})
    else:
        for line in load_summary(result, created):
            typer.echo(line)
    if not result.in_campaign:  # a script must not take a load of nothing for a load
        if created:  # as for a failed load: no empty campaign left behind
            _forget_campaign(engine, campaign, None)
        why = "every row was rejected" if result.rows_read else "the file has no data rows"
        fail(f"nothing was loaded: {why}" + (f" (see {result.rejects_path})" if result.rejects_path else ""))


def load_summary(result: Any, created: bool = False) -> list[str]:
    """The load summary an operator reads: one line per reason (count and first line), never one per row."""
    out = [f"{'Created campaign ' + repr(result.campaign) + '. ' if created else ''}"
           f"Read {result.rows_read:,} rows from {result.path} ({result.encoding}"
           f"{', delimiter ' + repr(result.delimiter) if result.delimiter else ''}; "
           f"phone column {result.phone_column!r}).",
           f"Loaded {result.loaded:,}, rejected {result.rejected:,} "
           f"({result.loaded:,} + {result.rejected:,} = {result.rows_read:,} rows read)."]  # fmt: skip
    for reason, n in result.reasons.most_common():
        out.append(f"  {n:>9,}  {reason}, first at line {result.first_lines[reason]}")
    if result.rejects_path:
        out.append(f"All rejected rows, each with its line number and reason, are in {result.rejects_path}")
    if result.extensions:
        out.append(f"{result.extensions:,} number{'s' if result.extensions != 1 else ''} had an extension, "
                   "kept in the 'extension' field.")  # fmt: skip
    if result.blank_lines:
        out.append(f"Skipped {result.blank_lines:,} blank line{'s' if result.blank_lines != 1 else ''}.")
    out.extend(f"Warning: {w}" for w in result.warnings)
    return out


def _forget_campaign(engine: Any, name: str, failure: BaseException | None) -> None:
    """Delete a campaign this load created, if the database lets us (it may be the reason the load failed)."""
    import gc
    import traceback

    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc

    # After Ctrl-C the interrupted insert's cursor lives on in the traceback's frames, and with it the write lock
    # of its (closed) SQLite connection: drop the frames' variables so the lock goes before we write again.
    e: BaseException | None = failure
    for _ in range(10):  # the chain of causes is short; a bound keeps a cyclic one from looping
        if e is None:
            break
        traceback.clear_frames(e.__traceback__)
        e = e.__cause__ or e.__context__
    gc.collect()
    try:
        with session_scope(engine) as s:
            s.delete(svc.get_campaign(s, name))
    except Exception:  # the original error is the one to report
        pass


def _run_load(
    engine: Any,
    file: Path,
    campaign: str,
    phone: str | None,
    name: str | None,
    rejects: Path | None,
    quiet: bool,
) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    show = not quiet and console.is_terminal
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        from dialer.ingest.loader import load_file

        return load_file(
            engine,
            file,
            campaign,
            phone_column=phone,
            name_column=name,
            rejects_path=rejects,
            progress=progress,
        )


@app.command("list", rich_help_panel=DAILY)
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List campaigns with their state and contact counts.

    Example: dialer campaign list --json
    """
    from rich.console import Console
    from rich.table import Table

    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc

    engine = open_db()
    with session_scope(engine, write=False) as s:
        rows = [campaign_dict(c, svc.contact_counts(s, c.id or 0)) for c in svc.list_campaigns(s)]
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo("No campaigns yet. Create one: dialer campaign create NAME --from PBX")
        return
    table = Table("name", "state", "pacing", "agents", "contacts", ContactState.PENDING, ContactState.RETRY,
                  ContactState.DONE, "from")
    for r in rows:
        cts = r["contacts"]
        table.add_row(r["name"], r["state"], r["pacing"], str(r["agents"]), str(cts["total"]),
                      str(cts[ContactState.PENDING]), str(cts[ContactState.RETRY]), str(cts[ContactState.DONE]), r["from_number"])  # fmt: skip
    Console().print(table)


@app.command("show", rich_help_panel=DAILY)
def show(
    name: str = typer.Argument(..., help="Campaign name."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a campaign's settings as you would type them (window 09:00-20:00, weekdays mon-fri, retry 30m) and its
    contact counts by state. --json gives the stored values (seconds, 0-6 weekdays, fractions) and, under "typed",
    the same settings as typed.

    Example: dialer campaign show spring --json
    """
    from rich.console import Console
    from rich.table import Table

    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc
    from dialer.ingest.typed_settings import typed_settings

    engine = open_db()
    with _errors(), session_scope(engine, write=False) as s:
        c = svc.get_campaign(s, name)
        d = campaign_dict(c, svc.contact_counts(s, c.id or 0))
        typed = typed_settings(c)
    if json_out:
        print_json({**d, "typed": typed})
        return
    contacts = d.pop("contacts")
    table = Table("setting", "value", title=f"Campaign {name}")
    for key in ("state", "pause_reason"):
        table.add_row(key, "" if d.get(key) is None else str(d[key]))
    for key, value in typed.items():  # the names `dialer campaign set` takes, values as it reads them
        table.add_row(key, value)
    for key in ("created_at", "updated_at"):
        table.add_row(key, "" if d.get(key) is None else str(d[key]))
    counts = Table("state", "contacts", title="Contacts")
    for state in CONTACT_STATE_NAMES:
        counts.add_row(state, str(contacts[state]))
    counts.add_row("total", str(contacts["total"]))
    console = Console()
    console.print(table)
    console.print(counts)


@app.command("contacts", rich_help_panel=DAILY)
def contacts(
    name: str = typer.Argument(..., help="Campaign name."),
    state: str | None = typer.Option(None, "--state", help=f"Only this state ({', '.join(CONTACT_STATE_NAMES)})."),
    limit: int = typer.Option(50, "--limit", help="At most this many (0 = all)."),
    offset: int = typer.Option(0, "--offset", help="Skip this many first."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List a campaign's contacts.

    Example: dialer campaign contacts spring --state retry --limit 20
    """
    from rich.console import Console
    from rich.table import Table

    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc

    if state is not None and state not in CONTACT_STATE_NAMES:
        fail(f"unknown state {state!r}; use one of {', '.join(CONTACT_STATE_NAMES)}", EXIT_USAGE)
    if limit < 0 or offset < 0:
        fail("--limit and --offset must not be negative", EXIT_USAGE)
    engine = open_db()
    with _errors(), session_scope(engine, write=False) as s:
        c = svc.get_campaign(s, name)
        rows = [contact_dict(x) for x in svc.list_contacts(s, c.id or 0, state, limit or None, offset)]
    if json_out:
        print_json(rows)
        return
    table = Table("id", "phone", "name", "state", "attempts", "next attempt (UTC)", "last", "line", "zones")
    for r in rows:
        zones = r["timezones"]
        table.add_row(str(r["id"]), r["phone"], r["name"] or "", r["state"], str(r["attempts"]),
                      (r["next_attempt_at"] or "")[:19], r["last_disposition"] or "", str(r["source_line"] or ""),
                      ", ".join(zones[:2]) + (f" +{len(zones) - 2}" if len(zones) > 2 else ""))  # fmt: skip
    Console().print(table)
    if not rows:
        typer.echo("No contacts match.")


def _lifecycle(name: str, action: str, reason: str | None = None) -> None:
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc

    engine = open_db()
    with _errors(), session_scope(engine) as s:
        c = svc.change_state(s, name, action, reason)
        state = c.state
    typer.echo(f"Campaign {name!r} is now {state}.")


@app.command("start", rich_help_panel=DAILY)
def start(name: str = typer.Argument(..., help="Campaign name.")) -> None:
    """Start dialing a campaign (the daemon `dialer run` places the calls).

    Example: dialer campaign start spring
    """
    _lifecycle(name, "start")


@app.command("pause", rich_help_panel=DAILY)
def pause(
    name: str = typer.Argument(..., help="Campaign name."),
    reason: str = typer.Option("paused by operator", "--reason", help="Why (shown in status)."),
) -> None:
    """Pause a running campaign: no new calls; calls in progress finish.

    Example: dialer campaign pause spring --reason "lunch"
    """
    _lifecycle(name, "pause", reason)


@app.command("resume", rich_help_panel=DAILY)
def resume(name: str = typer.Argument(..., help="Campaign name.")) -> None:
    """Resume a paused campaign.

    Example: dialer campaign resume spring
    """
    _lifecycle(name, "resume")


@app.command("stop", rich_help_panel=DAILY)
def stop(name: str = typer.Argument(..., help="Campaign name.")) -> None:
    """Stop a campaign (start it again later with `dialer campaign start`).

    Example: dialer campaign stop spring
    """
    _lifecycle(name, "stop")


@app.command("set", rich_help_panel=SETUP)
def set_(
    name: str = typer.Argument(..., help="Campaign name."),
    pairs: list[str] = typer.Argument(
        ..., help="key=value settings, e.g. pacing=ratio:1.5 window=10:00-18:00."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the campaign as JSON."),
) -> None:
    """Change campaign settings (keys: from, sip, agents, extensions, pacing, abandon_target, abandon_window,
    max_attempts, retry_busy, retry_no_answer, retry_failed, retry_abandoned, window, window_start, window_end,
    weekdays, holidays, region, timezone, abandon_action, wrapup: an agent's wrap-up limit, e.g. 45s, for
    campaigns with agents, script: the call script agents see with the contact's record, {name} and the list's
    columns filled in; script=@FILE reads it from a file).

    A change to the window, weekdays, holidays, timezone, retry delays or max_attempts re-plans the contacts
    waiting to be dialled at once: each gets the earliest next attempt the new rules allow (never before the
    retry_abandoned delay after an abandoned call); contacts in a call are left alone.

    Example: dialer campaign set spring pacing=predictive window=10:00-19:00 retry_abandoned=72h
    """
    from dialer.commands.campaign_edit import operator_zone, replan_summary
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc

    updates: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            fail(f"{pair!r}: settings are key=value, e.g. pacing=progressive", EXIT_USAGE)
        key, value = pair.split("=", 1)
        if key.strip().lower() == "script" and value.startswith("@"):
            try:
                value = Path(value[1:]).read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                fail(f"script={value}: cannot read the file: {exc}", EXIT_USAGE)
        updates[key.strip()] = value.strip()
    engine = open_db()
    with _errors(), session_scope(engine) as s:
        c, replanned = svc.change_settings(s, name, updates)
        d = campaign_dict(c)
    if json_out:
        print_json({**d, "replanned": replanned.as_dict() if replanned else None})
        return
    typer.echo(f"Updated {name!r}: " + ", ".join(f"{k}={v}" for k, v in updates.items()))
    if replanned is not None:
        typer.echo(replan_summary(replanned, operator_zone(d["timezone"])))
