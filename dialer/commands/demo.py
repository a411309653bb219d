"""`dialer demo`: a whole campaign against the built-in simulator, with nothing to configure."""

from __future__ import annotations

from pathlib import Path

import typer

from dialer.commands.common import EXIT_ERROR, EXIT_USAGE, fail

EXIT_INTERRUPTED = 130


def demo(
    max_seconds: float = typer.Option(
        90.0,
        "--max-seconds",
        help="Stop placing new calls after this many seconds (calls in flight then get up to 15 s to end).",
    ),
    time_scale: float = typer.Option(
        30.0, "--time-scale", "-x", help="Speed of the simulated world (30 = a 2-minute call lasts 4 s)."
    ),
    xlsx: Path = typer.Option(
        Path("demo-results.xlsx"), "--xlsx", metavar="FILE", help="Where to write the results workbook."
    ),
    workdir: Path | None = typer.Option(
        None,
        "--dir",
        metavar="DIR",
        help="Keep the demo's database, log and rejects here "
        "(default: a temporary directory, deleted at the end).",
    ),
    contacts: Path | None = typer.Option(
        None, "--contacts", metavar="FILE", help="Contact list to call (default: campaigns/example.csv)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live display and no report table."),
    web: bool = typer.Option(False, "--web", help="Also serve the web console (wallboard, agent desk) while the "
                             "demo runs; its address and a login are printed."),
    web_port: int = typer.Option(0, "--web-port", help="Port for --web (default: a free one)."),
) -> None:
    """Run a whole campaign against the built-in Zadarma simulator: no account, no credentials, no setup.

    Starts the simulator and the daemon in this process, loads campaigns/example.csv into a throwaway SQLite
    database, dials it with predictive pacing while showing live progress, reconciles, prints the report and
    writes demo-results.xlsx. Leaves nothing running. Ctrl-C stops it cleanly.

    With --web the wallboard is served too: open the printed address and log in with the printed name and password
    to watch the campaign live (use a longer --max-seconds to watch for longer).

    Example: dialer demo --max-seconds 60 --xlsx /tmp/demo.xlsx
    """
    from rich.console import Console

    from dialer.asgi_thread import free_port
    from dialer.demo import DemoError, DemoOptions, DemoResult, run_demo

    console = Console(highlight=False)

    def show_urls(r: DemoResult) -> None:
        console.print(
            f"Simulator: {r.sim_url}  Webhooks: {r.webhook_url}  Database: {r.database}", soft_wrap=True
        )
        if r.web_url and r.web_login:
            console.print(f"Web console: {r.web_url}  (log in as {r.web_login[0]}, password {r.web_login[1]})",
                          soft_wrap=True)

    opts = DemoOptions(
        xlsx=xlsx,
        workdir=workdir,
        contacts=contacts,
        max_seconds=max_seconds,
        time_scale=time_scale,
        quiet=quiet,
        web_port=(web_port or free_port()) if web else 0,
    )
    try:
        run_demo(opts, console, on_urls=show_urls)
    except DemoError as exc:
        fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OSError as exc:
        fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", EXIT_ERROR)
