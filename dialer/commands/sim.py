"""`dialer sim`: run the Zadarma API simulator, check scenario files."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import typer

from dialer.commands.common import EXIT_USAGE, fail, print_json
from dialer.sim.credentials import DEFAULT_PORT, DEMO_KEY, DEMO_SECRET

app = typer.Typer(
    help="The built-in Zadarma API simulator (no account, no cost).\n\n"
    f"Without --key/--secret and without ZADARMA_KEY/ZADARMA_SECRET it uses the public demo pair "
    f"key {DEMO_KEY} / secret {DEMO_SECRET}.\n\n"
    "Example: dialer sim serve --scenario campaigns/scenarios/default.toml --time-scale 10",
    no_args_is_help=True,
)


def _parse_faults(values: list[str]) -> dict[str, float]:
    from dialer.sim.scenario import ScenarioError, normalise_fault_name

    faults: dict[str, float] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep:
            fail(
                f"--fault {item!r}: expected name=value, e.g. --fault timeout-after-processing=0.1",
                EXIT_USAGE,
            )
        try:
            faults[normalise_fault_name(name)] = float(raw)
        except ScenarioError as exc:
            fail(str(exc), EXIT_USAGE)
        except ValueError:
            fail(f"--fault {item!r}: {raw!r} is not a number", EXIT_USAGE)
    return faults


def _load(path: Path | None) -> Any:
    from dialer.sim.scenario import ScenarioError, default_scenario, load_scenario

    try:
        return load_scenario(path) if path is not None else default_scenario()
    except ScenarioError as exc:
        fail(str(exc), EXIT_USAGE)


@app.command()
def serve(
    scenario: Path | None = typer.Option(None, "--scenario", "-s", help="Scenario TOML (default: built-in)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", help="Port (0 picks a free one)."),
    time_scale: float = typer.Option(1.0, "--time-scale", "-x", help="Speed-up: durations / X, limits x X."),
    key: str | None = typer.Option(
        None, "--key", help="API key to accept (default $ZADARMA_KEY or the demo key)."
    ),
    secret: str | None = typer.Option(
        None, "--secret", help="API secret (default $ZADARMA_SECRET or the demo secret)."
    ),
    webhook_url: str | None = typer.Option(None, "--webhook-url", help="Where to POST PBX notifications."),
    fault: list[str] = typer.Option(
        [],
        "--fault",
        help="Inject a fault, repeatable: error-rate, server-error-rate, timeout-after-processing, slow-ms, "
        "webhook-drop, statistics-lag-s (e.g. --fault timeout-after-processing=0.1).",
    ),
) -> None:
    """Serve the Zadarma API v1 over a simulated call centre until Ctrl-C.

    Example: dialer sim serve --time-scale 10 --fault error-rate=0.05
    """
    if time_scale <= 0:
        fail("--time-scale must be > 0", EXIT_USAGE)
    faults = _parse_faults(fault)
    sc = _load(scenario)
    env_key, env_secret = os.environ.get("ZADARMA_KEY"), os.environ.get("ZADARMA_SECRET")
    if key is None and secret is None and env_key and env_secret:
        key, secret, origin = env_key, env_secret, "env"
    elif key is None and secret is None:
        key, secret, origin = DEMO_KEY, DEMO_SECRET, "demo"
    elif not key or not secret:
        fail("give both --key and --secret (or neither)", EXIT_USAGE)
    else:
        origin = "cli"
    assert key is not None and secret is not None

    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on such sockets (else Nagle adds ~40 ms a response).
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror} (try --port 0 for a free port)")
    sock.listen(512)
    sock.set_inheritable(True)
    bound_port = sock.getsockname()[1]

    import uvicorn

    from dialer.sim.harness import create_app

    app_ = create_app(
        sc, key=key, secret=secret, time_scale=time_scale, webhook_url=webhook_url, faults=faults
    )
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound_port}"
    typer.echo(
        f"Zadarma simulator on {url}  scenario={sc.name}  agents={sc.agent_count}  "
        f"time-scale={time_scale:g}x  webhooks={webhook_url or 'off'}"
    )
    if faults:
        typer.echo("faults: " + ", ".join(f"{k}={v:g}" for k, v in faults.items()))
    if sc.desk is not None:
        typer.echo(f"simulated agents log in to the dialer's /api as {sc.desk.login} (see /_sim/desk)")
    typer.echo("Point the client at it:")
    typer.echo(f"  export ZADARMA_API_URL={url}")
    typer.echo(f"  export ZADARMA_KEY={key}")
    if origin == "demo":
        typer.echo(f"  export ZADARMA_SECRET={secret}   # public demo secret")
    else:
        typer.echo(
            f"  export ZADARMA_SECRET=...   # the secret from {'$ZADARMA_SECRET' if origin == 'env' else '--secret'}"
        )
    typer.echo(f"Ground truth: {url}/_sim/calls  {url}/_sim/stats   (Ctrl-C to stop)")
    config = uvicorn.Config(
        app_, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)

    def _stopped(signum: int, frame: object) -> None:
        # uvicorn shuts down gracefully on SIGTERM and then re-raises it: end here with exit code 0.
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        server.run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    typer.echo("simulator stopped")


class _Stopped(Exception):
    pass


@app.command("scenario")
def scenario_cmd(
    path: Path = typer.Argument(..., help="Scenario TOML to validate."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Validate a scenario file and print what world it describes.

    Example: dialer sim scenario campaigns/scenarios/small-team.toml --json
    """
    sc = _load(path)
    summary = sc.summary()
    if as_json:
        print_json(summary)
        return
    for name, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = ", ".join(
                " ".join(str(x) for x in v.values()) if isinstance(v, dict) else str(v) for v in value
            )
            value = value or "-"
        typer.echo(f"{name:20} {value}")
