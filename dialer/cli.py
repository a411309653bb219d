"""The ``dialer`` command line: thin wiring of Typer command groups that live in ``dialer/commands/``.

Every `dialer` invocation imports this module and all command modules, so they import only Typer at the top:
SQLAlchemy, pandas, phonenumbers, httpx, uvicorn and the settings load inside the command that uses them
(tests/test_cli_start.py checks it; benchmarks/bench_cli_start.py times it).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperOption

from dialer import __version__
from dialer.commands import (
    agent,
    api,
    bench,
    campaign,
    campaign_edit,
    db,
    demo,
    dnc,
    report,
    run,
    sim,
    web,
    webhooks,
)
from dialer.commands.common import DAILY, DEVELOPER, OPERATIONS, SETUP, PanelGroup
from dialer.commands.errors import one_line_errors
from dialer.logs import setup_logging


def _show_flags_as_flags() -> None:
    """Typer's Rich help prints a type after every option, flags too (`--json <bool>`, `-v <int>`), as if
    they took a value; print none for flags and count options, as the plain help and docs/cli.md do."""
    value_type = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return value_type(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_show_flags_as_flags()

app = typer.Typer(
    name="dialer",
    cls=PanelGroup,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dialer {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, show_default=False, help="More log output: -v info, -vv debug."
    ),
    log_json: bool = typer.Option(False, "--log-json", help="Log one JSON object per line."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Predictive-dialer campaign engine for the Zadarma cloud PBX.

    A campaign: load a contact list, start the campaign, run the daemon that places the calls, report.
    No account yet? `dialer demo` runs a whole campaign against the built-in simulator.

    Example: dialer campaign load customers.csv --campaign spring --from 0-1 --region GB && dialer campaign start spring && dialer run --until-finished && dialer report spring --xlsx spring.xlsx
    """
    # Whatever the command raises passes through here on its way out: one line, never a traceback (unless -vv).
    ctx.with_resource(one_line_errors(verbose))
    setup_logging(verbose, json_lines=log_json)


app.command("run", rich_help_panel=DAILY)(run.run)
app.command("status", rich_help_panel=DAILY)(run.status)
app.command("report", rich_help_panel=DAILY)(report.report)
campaign_edit.register(campaign.app)
app.add_typer(campaign.app, name="campaign", rich_help_panel=DAILY)
app.add_typer(agent.app, name="agent", rich_help_panel=DAILY)
app.command("disposition", rich_help_panel=DAILY)(agent.disposition)
app.add_typer(agent.callbacks_app, name="callbacks", rich_help_panel=DAILY)
app.command("web", rich_help_panel=DAILY)(web.web)
app.add_typer(web.app, name="user", rich_help_panel=SETUP)
app.add_typer(dnc.app, name="dnc", rich_help_panel=SETUP)
app.add_typer(db.app, name="db", rich_help_panel=SETUP)
app.command("reconcile", rich_help_panel=OPERATIONS)(run.reconcile)
app.add_typer(webhooks.app, name="webhooks", rich_help_panel=OPERATIONS)
app.command("demo", rich_help_panel=DEVELOPER)(demo.demo)
app.add_typer(sim.app, name="sim", rich_help_panel=DEVELOPER)
app.add_typer(api.app, name="api", rich_help_panel=DEVELOPER)
app.add_typer(bench.app, name="bench", rich_help_panel=DEVELOPER)


if __name__ == "__main__":  # pragma: no cover
    app()
