"""`dialer webhooks` commands: serve the PBX webhook receiver alone, replay stored events."""

from __future__ import annotations

import logging

import typer

from dialer.commands.common import EXIT_CONFIG, config_errors, fail, print_json

app = typer.Typer(help="The PBX webhook receiver (Zadarma NOTIFY_* events).\n\n"
                  "Example: dialer webhooks serve --port 8088 --path /zadarma",
                  no_args_is_help=True)

DEFAULT_PORT = 8088


@app.command("serve")
def serve(
    host: str | None = typer.Option(
        None, "--host", help="Interface to listen on (default DIALER_WEBHOOK_HOST)."
    ),
    port: int | None = typer.Option(
        None, "--port", help=f"Port (default DIALER_WEBHOOK_PORT or {DEFAULT_PORT})."
    ),
    path: str | None = typer.Option(None, "--path", help="URL path of the receiver (default /zadarma)."),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Accept unsigned events (unsafe: anyone can forge call events)."
    ),
    wrapup: float = typer.Option(0.0, "--wrapup", min=0, help="Agents' wrap-up seconds after each call."),
) -> None:
    """Run the webhook receiver on its own, e.g. behind a reverse proxy (the daemon serves it too).

    Reads ZADARMA_SECRET and DIALER_DATABASE_URL. Point the PBX's notification URL at http(s)://HOST/PATH.

    Example: dialer webhooks serve --host 0.0.0.0 --port 8088 --path /zadarma
    """
    import uvicorn

    from dialer.asgi_thread import check_listen
    from dialer.db import DatabaseVersionError, open_database
    from dialer.dialing.live import LiveState
    from dialer.outcomes.webhook_app import create_webhook_app
    from dialer.settings import load_settings

    with config_errors():
        settings = load_settings()
    secret = settings.zadarma_secret.get_secret_value()
    verify = settings.webhook_verify and not no_verify
    if verify and not secret:
        fail(
            "ZADARMA_SECRET is not set: the receiver needs it to check each event's Signature. "
            "Export it, or pass --no-verify to accept unsigned events (unsafe).",
            EXIT_CONFIG,
        )
    if not verify:
        typer.secho(
            "WARNING: webhook signature verification is OFF: anyone who can reach this URL can forge call events.",
            err=True,
            fg=typer.colors.YELLOW,
        )
    try:
        engine = open_database(settings.database_url)
    except DatabaseVersionError as exc:
        fail(str(exc), EXIT_CONFIG)
    host = host or settings.webhook_host
    port = port or settings.webhook_port or DEFAULT_PORT
    path = path or settings.webhook_path
    with config_errors():
        check_listen(host, port, "--port / DIALER_WEBHOOK_PORT")
    web = create_webhook_app(engine, secret=secret, live=LiveState(wrapup_s=wrapup), path=path, verify=verify)
    shown = path if path.startswith("/") else "/" + path
    typer.echo(
        f"webhook receiver on http://{host}:{port}{shown} (health: /healthz, metrics: /metrics)", err=True
    )
    logging.getLogger("dialer.webhooks").setLevel(logging.INFO)
    try:
        uvicorn.run(web, host=host, port=port, log_level="warning", access_log=False)
    finally:
        engine.dispose()


@app.command("replay")
def replay(
    source: str = typer.Option(..., "--from", help="Database URL holding the stored raw events."),
    since_id: int = typer.Option(0, "--since-id", min=0, help="Only events with a larger id."),
    wrapup: float = typer.Option(0.0, "--wrapup", min=0, help="Agents' wrap-up seconds (as when served)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Feed stored webhook events, in received order, into DIALER_DATABASE_URL and rebuild call outcomes.

    The target must hold the same campaigns, contacts and attempts (e.g. a backup restored from before the events);
    events it already stores are duplicates and change nothing.

    Example: DIALER_DATABASE_URL=sqlite:///restored.db dialer webhooks replay --from sqlite:///dialer.db
    """
    from sqlmodel import Session, select

    from dialer.db import DatabaseVersionError, open_database, reader
    from dialer.dialing.live import LiveState
    from dialer.models import WebhookEvent
    from dialer.outcomes.events import replay_events
    from dialer.settings import load_settings

    with config_errors():
        settings = load_settings()
    try:
        src = open_database(source)
        dst = open_database(settings.database_url)
    except DatabaseVersionError as exc:
        fail(str(exc), EXIT_CONFIG)
    if src.url == dst.url:
        fail("--from is the target database itself: every event would be a duplicate", 2)
    try:
        with Session(reader(src)) as s:
            events = list(
                s.exec(
                    select(WebhookEvent)
                    .where(WebhookEvent.id > since_id)  # type: ignore[operator]
                    .order_by(WebhookEvent.id)  # type: ignore[arg-type]
                )
            )
        result = replay_events(dst, events, live=LiveState(wrapup_s=wrapup))
    finally:
        src.dispose()
        dst.dispose()
    summary = {
        "events": result.events,
        "duplicates": result.duplicates,
        "attempts_completed": result.completed,
    }
    if as_json:
        print_json(summary)
    else:
        typer.echo(
            f"replayed {result.events} events ({result.duplicates} already stored); "
            f"{result.completed} attempts completed"
        )
