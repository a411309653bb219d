"""`dialer dnc` commands: the do-not-call list (global, or scoped to one campaign).

phonenumbers, the database layer and Rich are imported inside the commands that use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from dialer.commands.common import EXIT_USAGE, fail, print_json
from dialer.commands.db import open_db

app = typer.Typer(help="The do-not-call list: numbers that are never loaded and never dialled.\n\n"
                  "Example: dialer dnc import tps-export.csv --region GB",
                  no_args_is_help=True)  # fmt: skip

CAMPAIGN = typer.Option(None, "--campaign", "-c", help="Only for this campaign (default: every campaign).")
REGION = typer.Option(
    None, "--region", help="Country for numbers without a country code (default: the campaign's)."
)


def _region(session: object, campaign: str | None, region: str | None) -> tuple[object, str | None]:
    from dialer.ingest import campaigns as svc
    from dialer.ingest import phones

    camp = svc.get_campaign(session, campaign) if campaign else None  # type: ignore[arg-type]
    reg = region or (camp.default_region if camp is not None else None)
    if reg and not phones.is_region(reg):
        raise svc.SettingsError(f"unknown region {reg!r}: use a two-letter country code such as GB")
    return camp, reg


@app.command("add")
def add(
    numbers: list[str] = typer.Argument(
        ..., help="Numbers in any format (+44..., 07700 900123 with --region GB)."
    ),
    campaign: str | None = CAMPAIGN,
    region: str | None = REGION,
    reason: str | None = typer.Option(None, "--reason", help="Why (e.g. 'asked not to be called')."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add numbers to the do-not-call list; matching contacts not yet finished are marked dnc and never dialled.

    Example: dialer dnc add +447700900123 "020 7946 0000" --region GB --reason "asked not to be called"
    """
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc
    from dialer.ingest import phones

    engine = open_db()
    try:
        with session_scope(engine) as s:
            camp, reg = _region(s, campaign, region)
            normalised, bad = [], []
            for raw in numbers:
                res = phones.normalize_one(raw, reg)
                (normalised.append(res.e164) if res.e164 else bad.append(f"{raw!r}: {res.reason}"))
            if bad:
                raise svc.SettingsError("not added, fix these numbers first: " + "; ".join(bad))
            added, marked = svc.add_dnc(s, normalised, camp, reason)  # type: ignore[arg-type]
    except (svc.SettingsError, svc.CampaignError) as exc:
        fail(str(exc), EXIT_USAGE)
    if json_out:
        print_json({"added": added, "already_listed": len(set(normalised)) - added, "contacts_marked": marked,
                    "numbers": sorted(set(normalised))})  # fmt: skip
    else:
        typer.echo(f"Added {added} number(s) to the do-not-call list"
                   f"{' of campaign ' + repr(campaign) if campaign else ''}; "
                   f"{marked} contact(s) marked dnc.")  # fmt: skip


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="CSV/XLSX with a phone column (or one number per line)."),
    campaign: str | None = CAMPAIGN,
    region: str | None = REGION,
    phone_column: str | None = typer.Option(None, "--phone-column", help="Column holding the numbers."),
    reason: str | None = typer.Option("imported", "--reason", help="Reason recorded for every entry."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Import a do-not-call file; numbers that cannot be read are listed, the rest are added.

    Example: dialer dnc import tps-export.csv --region GB
    """
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc
    from dialer.ingest import phones
    from dialer.ingest.reading import LoaderError, find_phone_column, read_table

    engine = open_db()
    try:
        table = read_table(file)
        col = find_phone_column(table, phone_column)
        with session_scope(engine) as s:
            camp, reg = _region(s, campaign, region)
            raw = table.frame[col]
            keep = raw.str.strip() != ""
            norm = phones.normalize_many(raw[keep].reset_index(drop=True), reg)
            lines = table.lines[keep].reset_index(drop=True)
            good = norm["e164"].dropna().tolist()
            bad = [(int(lines[i]), str(raw[keep].iloc[i]), str(norm["reason"][i]))
                   for i in norm.index[norm["e164"].isna()]]  # fmt: skip
            added, marked = svc.add_dnc(s, good, camp, reason)  # type: ignore[arg-type]
    except LoaderError as exc:
        fail(str(exc))
    except (svc.SettingsError, svc.CampaignError) as exc:
        fail(str(exc), EXIT_USAGE)
    summary = {"rows_read": int(keep.sum()), "added": added, "already_listed": len(set(good)) - added,
               "unreadable": len(bad), "contacts_marked": marked,
               "unreadable_rows": [{"line": ln, "value": v, "reason": r} for ln, v, r in bad[:1000]]}  # fmt: skip
    if json_out:
        print_json(summary)
        return
    typer.echo(f"Read {summary['rows_read']} numbers: added {added}, already listed {summary['already_listed']}, "
               f"unreadable {len(bad)}; {marked} contact(s) marked dnc.")  # fmt: skip
    for ln, v, r in bad[:20]:
        typer.echo(f"  line {ln}: {v!r}: {r}", err=True)
    if len(bad) > 20:
        typer.echo(f"  ... and {len(bad) - 20} more (use --json for all)", err=True)


@app.command("list")
def list_(
    campaign: str | None = CAMPAIGN,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List do-not-call entries (all, or one campaign's own).

    Example: dialer dnc list --json
    """
    from rich.console import Console
    from rich.table import Table

    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc

    engine = open_db()
    try:
        with session_scope(engine, write=False) as s:
            camp = svc.get_campaign(s, campaign) if campaign else None
            names = {c.id: c.name for c in svc.list_campaigns(s, include_deleted=True)}
            rows: list[dict[str, Any]] = [{"phone": e.phone, "campaign": names.get(e.campaign_id) if e.campaign_id else None,
                     "reason": e.reason, "created_at": e.created_at.isoformat()}
                    for e in svc.list_dnc(s, camp)]  # fmt: skip
    except svc.CampaignError as exc:
        fail(str(exc), EXIT_USAGE)
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo("The do-not-call list is empty.")
        return
    table = Table("phone", "scope", "reason", "added (UTC)")
    for r in rows:
        table.add_row(r["phone"], r["campaign"] or "all campaigns", r["reason"] or "", r["created_at"][:19])
    Console().print(table)


@app.command("remove")
def remove(
    numbers: list[str] = typer.Argument(..., help="Numbers to take off the list."),
    campaign: str | None = CAMPAIGN,
    region: str | None = REGION,
) -> None:
    """Remove numbers from the do-not-call list (contacts already marked dnc stay so).

    Example: dialer dnc remove +447700900123
    """
    from dialer.db import session_scope
    from dialer.ingest import campaigns as svc
    from dialer.ingest import phones

    engine = open_db()
    try:
        with session_scope(engine) as s:
            camp, reg = _region(s, campaign, region)
            normalised = []
            for raw in numbers:
                res = phones.normalize_one(raw, reg)
                if res.e164 is None:
                    raise svc.SettingsError(f"{raw!r}: {res.reason}")
                normalised.append(res.e164)
            removed = svc.remove_dnc(s, normalised, camp)  # type: ignore[arg-type]
    except (svc.SettingsError, svc.CampaignError) as exc:
        fail(str(exc), EXIT_USAGE)
    typer.echo(f"Removed {removed} entr{'y' if removed == 1 else 'ies'}.")
