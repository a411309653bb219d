"""`dialer campaign reschedule | delete | remove`: re-plan waiting contacts, delete a campaign, remove contacts.

Registered on the `dialer campaign` group by ``register`` (dialer/cli.py). Like every command module it imports
only Typer at the top; the database layer loads inside the commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from dialer.commands.campaign import _errors
from dialer.commands.common import EXIT_USAGE, SETUP, fail, print_json
from dialer.commands.db import open_db
from dialer.outcomes.states import DUE_CONTACT_STATES, ContactState

if TYPE_CHECKING:
    from dialer.ingest.removal import DeleteResult, RemoveResult
    from dialer.ingest.replan import ReplanResult

DUE_STATE_NAMES = tuple(s.value for s in DUE_CONTACT_STATES)


def register(app: typer.Typer) -> None:
    app.command("reschedule", rich_help_panel=SETUP)(reschedule)
    app.command("remove", rich_help_panel=SETUP)(remove)
    app.command("delete", rich_help_panel=SETUP)(delete)


def operator_zone(campaign_zone: str) -> str:
    """The zone times are shown in: DIALER_TIMEZONE when set, else the campaign's."""
    from dialer.settings import ConfigError, load_settings

    try:
        return load_settings().timezone or campaign_zone
    except ConfigError:
        return campaign_zone


def replan_summary(r: ReplanResult, zone: str) -> str:
    """One paragraph on a re-plan, times in ``zone``."""
    from dialer.dialing.why import format_time
    from dialer.models import utcnow

    text = (f"Re-planned {r.contacts:,} contacts waiting to be dialled: {r.moved:,} moved; {r.due_now:,} due now"
            + (f", the others from {format_time(r.next_at, zone, utcnow())}" if r.next_at else "") + ".")  # fmt: skip
    if r.exhausted:
        text += f" {r.exhausted:,} already used the new max_attempts and are now {ContactState.EXHAUSTED}."
    return text


def reschedule(
    name: str = typer.Argument(..., help="Campaign name."),
    state: str | None = typer.Option(
        None, "--state", help=f"Only contacts in this state ({' or '.join(DUE_STATE_NAMES)}; default both)."
    ),
    now: bool = typer.Option(
        False,
        "--now",
        help="Due now: drop the retry delays. Calling windows and the retry_abandoned lock after "
        "an abandoned call still apply.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Re-plan the contacts waiting to be dialled under the campaign's current rules.

    Each gets the earliest next attempt its window, weekdays, holidays and retry delays allow now (never before
    the retry_abandoned delay after an abandoned call). Contacts in a call are left alone. Changing those
    settings with `dialer campaign set` does this by itself.

    Example: dialer campaign reschedule spring --state retry --now
    """
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc
    from dialer.ingest.replan import replan
    from dialer.models import utcnow

    if state is not None and state not in DUE_STATE_NAMES:
        fail(f"--state {state!r}: use {' or '.join(DUE_STATE_NAMES)}", EXIT_USAGE)
    states = (ContactState(state),) if state else DUE_CONTACT_STATES
    engine = open_db()
    with _errors(), session_scope(engine) as s:
        campaign = svc.get_campaign(s, name)
        result = replan(s, campaign, utcnow(), states=states, legal_only=now)
        zone = campaign.timezone
    if json_out:
        print_json(result.as_dict())
        return
    typer.echo(replan_summary(result, operator_zone(zone)))


def delete(
    name: str = typer.Argument(..., help="Campaign name."),
    purge: bool = typer.Option(
        False,
        "--purge",
        help="Delete everything: also its call attempts, contacts, event log and do-not-call "
        "entries. Also removes what an earlier delete kept (NAME~deleted-ID).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print what was deleted and kept as JSON."),
) -> None:
    """Delete a campaign. Refuses while it is running (stop it first) or while any of its calls is in progress.

    Without --purge: its contacts never dialled are deleted; the campaign is hidden from lists and renamed
    NAME~deleted-ID, so NAME is free again, and keeps its call attempts, the contacts they belong to, its event
    log and its own do-not-call entries (its report still works under the new name). --purge deletes all of it.

    Example: dialer campaign delete spring
    """
    from dialer.db import session_scope
    from dialer.ingest.removal import delete_campaign
    from dialer.models import utcnow

    engine = open_db()
    with _errors(), session_scope(engine) as s:
        result = delete_campaign(s, name, purge=purge, now=utcnow())
    if json_out:
        print_json(result.as_dict())
        return
    typer.echo(_delete_text(result))


def _delete_text(r: DeleteResult) -> str:
    if r.purged:
        return (f"Deleted campaign {r.name!r} and everything it held: {r.contacts_removed:,} contacts, "
                f"{r.attempts_removed:,} call attempts, {r.events_removed:,} event log entries, "
                f"{r.dnc_removed:,} do-not-call entries of its own.")  # fmt: skip
    text = f"Deleted campaign {r.name!r}: {r.contacts_removed:,} contacts never dialled removed."
    if r.contacts_kept or r.attempts_kept or r.events_kept:
        text += (f" Kept for the record, as campaign {r.kept_as!r} (hidden from lists): {r.contacts_kept:,} "
                 f"contacts with {r.attempts_kept:,} call attempts, and {r.events_kept:,} event log entries. "
                 f"`dialer campaign delete {r.kept_as} --purge` removes them.")  # fmt: skip
    return text + f" The name {r.name!r} is free again."


def remove(
    name: str = typer.Argument(..., help="Campaign name."),
    phone: list[str] = typer.Option(
        None,
        "--phone",
        help="A number to remove, as in the list (the campaign's region applies); repeat the "
        "option or separate numbers with commas.",
    ),
    source: str | None = typer.Option(
        None,
        "--source",
        help="Remove the contacts loaded from this file (matched by its name, e.g. spring.csv).",
    ),
    purge: bool = typer.Option(
        False, "--purge", help="Also remove contacts that have been called, with their call attempts."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print what was removed and kept as JSON."),
) -> None:
    """Remove contacts from a campaign, by number or by the file they were loaded from.

    A contact in a call is never removed. A contact with call attempts on record is kept (and still dialled)
    unless --purge; to stop calling it and keep its record, put the number on the do-not-call list instead
    (`dialer dnc add`).

    Example: dialer campaign remove spring --source old-list.csv
    """
    from pathlib import Path

    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc
    from dialer.ingest import phones
    from dialer.ingest.removal import remove_contacts

    raw = [p.strip() for item in phone or [] for p in item.split(",") if p.strip()]
    if not raw and source is None:
        fail("say which contacts: --phone NUMBER (repeatable) or --source FILE", EXIT_USAGE)
    engine = open_db()
    with _errors(), session_scope(engine) as s:
        campaign = svc.get_campaign(s, name)
        numbers = [phones.normalize_one(p, campaign.default_region).e164 or p for p in raw]
        result = remove_contacts(s, campaign, phones=numbers, purge=purge,
                                 source_file=Path(source).name if source is not None else None)  # fmt: skip
    if json_out:
        print_json(result.as_dict())
        return
    typer.echo(_remove_text(result, name, source))


def _remove_text(r: RemoveResult, name: str, source: str | None) -> str:
    lines = [f"Removed {r.removed:,} of the {r.matched:,} matching contacts from {name!r}"
             + (f" ({r.attempts_removed:,} call attempts with them)." if r.attempts_removed else ".")]  # fmt: skip
    if r.kept_with_calls:
        lines.append(f"Kept {len(r.kept_with_calls):,} with call attempts on record (still dialled): "
                     f"{_some(r.kept_with_calls)}. --purge removes them with their attempts; `dialer dnc add` "
                     "stops calling them and keeps the record.")  # fmt: skip
    if r.in_call:
        lines.append(
            f"Kept {len(r.in_call):,} in a call now: {_some(r.in_call)}. Run again when the call ends."
        )
    if r.not_found:
        lines.append(f"Not in the campaign: {_some(r.not_found)}.")
    if source is not None and not r.matched:
        lines.append("No contact was loaded from a file of that name (contacts loaded before this dialer "
                     "version recorded source files have none).")  # fmt: skip
    return "\n".join(lines)


def _some(items: list[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n:,} more" if len(items) > n else "")
