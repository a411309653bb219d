"""Helpers shared by command modules: output, errors, exit codes, and the help panels commands are listed in.

Imported by every command module, so by every `dialer` invocation: it imports nothing heavier than Typer
(pydantic and the settings load only when a command prints a model or reads its configuration).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
# A wrong setting (environment, dialer.toml, the database file it names) is a wrong option too: one code for both.
EXIT_CONFIG = EXIT_USAGE
EXIT_API = 4
EXIT_AMBIGUOUS = 5
# 6 is `dialer db`'s schema mismatch (commands/db.py). 7: another daemon already runs on this database.
EXIT_DAEMON_RUNNING = 7

# The panels `dialer --help` (and `dialer campaign --help`) sort commands into, in the order they are listed.
DAILY = "Daily use"
SETUP = "Campaign setup"
OPERATIONS = "Operations"
DEVELOPER = "Developer tools"
PANELS = (DAILY, SETUP, OPERATIONS, DEVELOPER)


class PanelGroup(TyperGroup):
    """A command group listing its commands panel by panel, in PANELS order (registration order within a panel).

    Typer orders panels by their first command; this keeps `--help` and docs/cli.md (which walks
    ``list_commands``) in the same, deliberate order. Commands without a panel come last.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        def rank(name: str) -> int:
            panel = getattr(self.commands[name], "rich_help_panel", None)
            return PANELS.index(panel) if panel in PANELS else len(PANELS)

        return sorted(super().list_commands(ctx), key=rank)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def to_jsonable(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return to_jsonable(value.model_dump(by_alias=True, mode="python"))
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return float(value) if value == value.to_integral_value() or abs(value) < 10**15 else str(value)
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable(value), ensure_ascii=False, indent=2, default=str))


@contextmanager
def config_errors() -> Iterator[None]:
    from dialer.settings import ConfigError

    try:
        yield
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
