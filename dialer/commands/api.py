"""`dialer api`: every Zadarma API method the project uses, one subcommand each.

The Zadarma client (httpx), the settings and Rich are imported when a subcommand runs, not when the CLI starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from dialer.commands.common import (
    EXIT_AMBIGUOUS,
    EXIT_API,
    EXIT_CONFIG,
    fail,
    print_json,
    to_jsonable,
)

if TYPE_CHECKING:
    from rich.console import Console

    from dialer.zadarma import ZadarmaClient

app = typer.Typer(
    help="Call the Zadarma API directly (balance, callbacks, SIP, SMS, statistics).\n\n"
    "Credentials come from ZADARMA_KEY / ZADARMA_SECRET; ZADARMA_API_URL points at the simulator.\n\n"
    "Example: dialer api balance --json",
    no_args_is_help=True,
)
sip_app = typer.Typer(help="SIP lines: list, caller id, redirection.\n\nExample: dialer api sip list", no_args_is_help=True)
pbx_app = typer.Typer(help="PBX extensions.\n\nExample: dialer api pbx internal", no_args_is_help=True)
app.add_typer(sip_app, name="sip")
app.add_typer(pbx_app, name="pbx")

_options: dict[str, Any] = {"sandbox": False, "format": "json"}


def _console() -> Console:
    from rich.console import Console

    return Console()


JsonOpt = typer.Option(False, "--json", help="Print the parsed response as JSON.")


@app.callback()
def api_main(
    sandbox: bool = typer.Option(False, "--sandbox", help="Use https://api-sandbox.zadarma.com."),
    response_format: str = typer.Option("json", "--format", help="Ask Zadarma for 'json' or 'xml'."),
) -> None:
    """Call the Zadarma API directly.

    Example: dialer api --format xml timezone
    """
    if response_format not in ("json", "xml"):
        fail("--format must be json or xml", 2)
    _options.update(sandbox=sandbox, format=response_format)


@contextmanager
def _client() -> Iterator[ZadarmaClient]:
    from dialer.settings import SANDBOX_API_URL, ConfigError, load_settings
    from dialer.zadarma import AmbiguousError, AuthError, ZadarmaClient, ZadarmaError

    try:
        settings = load_settings(**({"zadarma_api_url": SANDBOX_API_URL} if _options["sandbox"] else {}))
        client = ZadarmaClient.from_settings(settings, response_format=_options["format"])
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    try:
        yield client
    except AuthError as exc:
        fail(f"{exc}. Check ZADARMA_KEY and ZADARMA_SECRET (and ZADARMA_API_URL: {client.base_url}).", EXIT_API)
    except AmbiguousError as exc:
        fail(f"{exc}. The request may have been carried out; check before repeating it.", EXIT_AMBIGUOUS)
    except ZadarmaError as exc:
        fail(str(exc), EXIT_API)
    except ValueError as exc:
        fail(str(exc), 2)
    finally:
        client.close()


def _show(result: Any, as_json: bool, render: Callable[[dict[str, Any]], None] | None = None) -> None:
    data = to_jsonable(result)
    if as_json:
        print_json(data)
    elif render is not None:
        render(data)
    else:
        _kv_table(data)


def _kv_table(data: dict[str, Any], title: str | None = None) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in data.items():
        if key == "status":
            continue
        table.add_row(key, _cell(value))
    _console().print(table)


def _rows_table(rows: list[dict[str, Any]], columns: list[str] | None = None, title: str | None = None) -> None:
    from rich.table import Table

    if not rows:
        _console().print(f"{title or 'result'}: no rows")
        return
    cols = columns or list(rows[0].keys())
    table = Table(title=title)
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*(_cell(row.get(col, "")) for col in cols))
    _console().print(table)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value)


@app.command()
def balance(as_json: bool = JsonOpt) -> None:
    """Show the account balance.

    Example: dialer api balance
    """
    with _client() as client:
        _show(client.balance(), as_json)


@app.command()
def price(number: str = typer.Argument(..., help="Number to price, e.g. 442037691881."),
          caller_id: str = typer.Option(None, "--caller-id", help="Caller id the call would show."),
          as_json: bool = JsonOpt) -> None:
    """Show the price per minute of a call to NUMBER.

    Example: dialer api price 442037691881
    """
    with _client() as client:
        _show(client.price(number, caller_id), as_json, lambda d: _kv_table(d["info"]))


@app.command()
def timezone(as_json: bool = JsonOpt) -> None:
    """Show the account timezone (statistics dates are in it).

    Example: dialer api timezone
    """
    with _client() as client:
        _show(client.timezone(), as_json)


@app.command()
def callback(
    from_: str = typer.Argument(..., metavar="FROM", help="Your number, SIP, extension or PBX scenario."),
    to: str = typer.Argument(..., help="The number to connect to."),
    sip: str = typer.Option(None, "--sip", help="SIP whose caller id is shown."),
    predicted: bool = typer.Option(False, "--predicted", help="Ring TO first; connect FROM only if TO answers."),
    as_json: bool = JsonOpt,
) -> None:
    """Place one callback. It is never re-sent after an ambiguous failure (exit code 5).

    Example: dialer api callback 100 442037691881 --predicted
    """
    with _client() as client:
        _show(client.callback(from_, to, sip=sip, predicted=predicted), as_json)


@sip_app.command("list")
def sip_list(as_json: bool = JsonOpt) -> None:
    """List SIP lines.

    Example: dialer api sip list --json
    """
    with _client() as client:
        result = client.sip_list()
        _show(result, as_json, lambda d: _rows_table(d["sips"], title=f"SIP lines ({d.get('left', 0)} left)"))


@sip_app.command("callerid")
def sip_callerid(sip_id: str = typer.Argument(..., metavar="ID", help="SIP line id, e.g. 00001."),
                 number: str = typer.Argument(..., help="The number to show as caller id."),
                 as_json: bool = JsonOpt) -> None:
    """Set the caller id shown for SIP ID.

    Example: dialer api sip callerid 00001 442037691880
    """
    with _client() as client:
        _show(client.set_caller_id(sip_id, number), as_json)


@sip_app.command("redirection")
def sip_redirection(sip_id: str = typer.Argument(None, metavar="[ID]", help="SIP line id (default: every line)."),
                    as_json: bool = JsonOpt) -> None:
    """Show call forwarding of one SIP or all.

    Example: dialer api sip redirection 00001
    """
    with _client() as client:
        _show(client.sip_redirection(sip_id), as_json, lambda d: _rows_table(d["info"], title="Redirection"))


@sip_app.command("redirect")
def sip_redirect(
    sip_id: str = typer.Argument(..., metavar="ID", help="SIP line id, e.g. 00001."),
    on: bool = typer.Option(False, "--on", help="Turn forwarding on."),
    off: bool = typer.Option(False, "--off", help="Turn forwarding off."),
    number: str = typer.Option(None, "--number", help="Forward to this phone number."),
    as_json: bool = JsonOpt,
) -> None:
    """Turn forwarding of SIP ID on or off, or point it at a number (exactly one of the options).

    Example: dialer api sip redirect 00001 --number 442037691880
    """
    if sum([on, off, number is not None]) != 1:
        fail("give exactly one of --on, --off or --number N", 2)
    with _client() as client:
        result = client.set_redirection(sip_id, number=number) if number else client.set_redirection(sip_id, on=on)
        _show(result, as_json)


@app.command()
def sms(numbers: list[str] = typer.Argument(..., metavar="NUMBER...", help="Numbers to send the SMS to."),
        message: str = typer.Option(..., "--message", "-m", help="Text to send."),
        sender: str = typer.Option(None, "--sender", help="Sender name or number."),
        language: str = typer.Option(None, "--language", help="Language of the message, passed to Zadarma."),
        as_json: bool = JsonOpt) -> None:
    """Send an SMS to one or more numbers.

    Example: dialer api sms 442037691881 --message "We tried to call you"
    """
    with _client() as client:
        _show(client.send_sms(numbers, message, sender=sender, language=language), as_json)


DateOpt = "YYYY-MM-DD HH:MM:SS in the account timezone"
SkipOpt = "Skip this many rows (to page through a long period)."
LimitOpt = "At most this many rows."


@app.command()
def statistics(start: str = typer.Option(..., "--start", help=DateOpt),
               end: str = typer.Option(..., "--end", help=DateOpt),
               sip: str = typer.Option(None, "--sip", help="Only calls of this SIP line."),
               skip: int = typer.Option(None, "--skip", help=SkipOpt), limit: int = typer.Option(None, "--limit", help=LimitOpt),
               as_json: bool = JsonOpt) -> None:
    """Calls and their cost over a period (3 requests a minute).

    Example: dialer api statistics --start "2026-11-01 00:00:00" --end "2026-11-26 23:59:59"
    """
    with _client() as client:
        result = client.statistics(start, end, sip=sip, skip=skip, limit=limit)
        _show(result, as_json, lambda d: _rows_table(
            d["stats"], ["callstart", "from", "to", "disposition", "billseconds", "cost", "currency"], "Calls"))


@app.command("pbx-stats")
def pbx_stats(start: str = typer.Option(..., "--start", help=DateOpt),
              end: str = typer.Option(..., "--end", help=DateOpt),
              call_type: str = typer.Option(None, "--call-type", help="in or out"),
              skip: int = typer.Option(None, "--skip", help=SkipOpt), limit: int = typer.Option(None, "--limit", help=LimitOpt),
              as_json: bool = JsonOpt) -> None:
    """PBX call legs over a period (version 2; 3 requests a minute).

    Example: dialer api pbx-stats --start "2026-11-26 00:00:00" --end "2026-11-26 23:59:59" --json
    """
    with _client() as client:
        result = client.pbx_statistics(start, end, call_type=call_type, skip=skip, limit=limit)
        _show(result, as_json, lambda d: _rows_table(
            d["stats"], ["callstart", "pbx_call_id", "clid", "destination", "disposition", "seconds"], "PBX legs"))


@pbx_app.command("internal")
def pbx_internal(as_json: bool = JsonOpt) -> None:
    """List the PBX's extensions.

    Example: dialer api pbx internal
    """
    with _client() as client:
        _show(client.pbx_internal(), as_json)


@pbx_app.command("status")
def pbx_status(extension: str = typer.Argument(..., metavar="EXT", help="Extension, e.g. 100."),
               as_json: bool = JsonOpt) -> None:
    """Is extension EXT online?

    Example: dialer api pbx status 100
    """
    with _client() as client:
        _show(client.pbx_internal_status(extension), as_json)

