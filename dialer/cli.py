"""The ``dialer`` command line: thin wiring of Typer command groups that live in ``dialer/commands/``."""

from __future__ import annotations

import typer

from dialer import __version__
from dialer.commands import api, bench, campaign, db, demo, dnc, report, run, sim, webhooks
from dialer.logs import setup_logging

app = typer.Typer(
    name="dialer",
    help="Predictive-dialer campaign engine for the Zadarma cloud PBX.\n\n"
    "Example: dialer sim serve & ZADARMA_API_URL=http://127.0.0.1:8765 dialer api balance",
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
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-v info, -vv debug)."),
    log_json: bool = typer.Option(False, "--log-json", help="Log one JSON object per line."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Predictive-dialer campaign engine for the Zadarma cloud PBX.

    Example: dialer campaign load campaigns/example.csv --campaign spring --from 100
    """
    setup_logging(verbose, json_lines=log_json)


app.add_typer(api.app, name="api")
app.add_typer(sim.app, name="sim")
app.add_typer(campaign.app, name="campaign")
app.add_typer(dnc.app, name="dnc")
app.add_typer(db.app, name="db")
app.add_typer(bench.app, name="bench")
app.add_typer(webhooks.app, name="webhooks")
app.command("run")(run.run)
app.command("status")(run.status)
app.command("reconcile")(run.reconcile)
app.command("report")(report.report)
app.command("demo")(demo.demo)


if __name__ == "__main__":  # pragma: no cover
    app()
