"""`dialer user` and `dialer web`: the web console's logins, and serving the console alone against the database.

Thin: each command parses, calls ``dialer.web`` and prints. A password is never taken on the command line (it
would sit in the shell history and the process list): it is prompted for with hidden input, or read from standard
input with ``--password-stdin``. The database layer and the web server are imported inside the commands.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from dialer.commands.common import EXIT_CONFIG, EXIT_USAGE, PanelGroup, fail, print_json
from dialer.commands.db import open_db

app = typer.Typer(help="Logins of the web console (supervisors; agents log in to the desk with their PIN).\n\n"
                  "Example: dialer user add carol --role supervisor", cls=PanelGroup,
                  no_args_is_help=True)  # fmt: skip

PASSWORD_STDIN = typer.Option(False, "--password-stdin", help="Read the password from standard input (one line) "
                              "instead of prompting for it.")  # fmt: skip


@contextmanager
def _errors() -> Iterator[None]:
    from dialer.web.users import UserError

    try:
        yield
    except UserError as exc:
        fail(str(exc), EXIT_USAGE)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password (at least 10 characters)", hide_input=True, confirmation_prompt=True))


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Login name (letters, digits, '.', '_', '@', '-')."),
    role: str = typer.Option("supervisor", "--role", help="What the login may do: supervisor (the wallboard, "
                             "campaign actions, uploads, reports)."),
    password_stdin: bool = PASSWORD_STDIN,
) -> None:
    """Add a console login. The password is prompted for, or read with --password-stdin; only its hash is kept.

    Example: dialer user add carol --role supervisor
    """
    from dialer.db import session_scope
    from dialer.models import utcnow
    from dialer.web.users import Role, UserError, add_user

    if role not in {r.value for r in Role}:
        fail(f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}", EXIT_USAGE)
    with _errors():
        password = _read_password(password_stdin)
        if not password:
            raise UserError("the password is empty")
        with session_scope(open_db()) as s:
            user = add_user(s, name, password, Role(role), utcnow())
    typer.echo(f"Added {user.role} {user.name!r}. Log in at the console's /login page.")


@app.command("password")
def password(
    name: str = typer.Argument(..., help="Login name."),
    password_stdin: bool = PASSWORD_STDIN,
) -> None:
    """Set a new password for a console login.

    Example: dialer user password carol
    """
    from dialer.db import session_scope
    from dialer.web.users import set_password

    with _errors():
        new = _read_password(password_stdin)
        with session_scope(open_db()) as s:
            user = set_password(s, name, new)
    typer.echo(f"Changed the password of {user.name!r}.")


@app.command("disable")
def disable(name: str = typer.Argument(..., help="Login name.")) -> None:
    """Disable a console login: it logs in no more, and its open sessions end at their next request.

    Example: dialer user disable carol
    """
    from dialer.db import session_scope
    from dialer.models import utcnow
    from dialer.web.users import disable_user

    with _errors(), session_scope(open_db()) as s:
        user = disable_user(s, name, utcnow())
    typer.echo(f"Disabled {user.name!r}.")


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the console logins.

    Example: dialer user list --json
    """
    from dialer.db import session_scope
    from dialer.web.users import list_users

    with session_scope(open_db(), write=False) as s:
        users = list_users(s)
    if json_out:
        print_json([{**u.__dict__, "created_at": u.created_at.isoformat()} for u in users])
        return
    for u in users:
        typer.echo(f"{u.name:<24} {u.role:<12} {'disabled' if u.disabled else 'active'}")
    if not users:
        typer.echo("No console logins yet: dialer user add NAME --role supervisor")


def web(
    port: int = typer.Option(None, "--port", help="Port to serve the console on. Default: DIALER_WEB_PORT, else 8090."),
    host: str = typer.Option(None, "--host", help="Address to listen on. Default: DIALER_WEB_HOST (127.0.0.1)."),
) -> None:
    """Serve the web console alone against the database: the wallboard, campaign actions, uploads and reports,
    and the agent desk (calls reach agents through the daemon: run `dialer run --web-port` for the live desk).

    Log in at http://HOST:PORT/login (supervisors, `dialer user add`) or /agent/login (agents, their PIN). Stops on
    Ctrl-C.

    Example: dialer web --port 8090 --host 0.0.0.0
    """
    from dialer.settings import ConfigError, load_settings
    from dialer.web.serve import serve_forever

    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    chosen = port if port is not None else (settings.web_port or 8090)
    where = host or settings.web_host
    typer.echo(f"Console on http://{where}:{chosen}/ (Ctrl-C stops it)")
    serve_forever(open_db(), where, chosen)

