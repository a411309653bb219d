"""Helpers shared by command modules: output, errors, exit codes.

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

# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_API = 4
EXIT_AMBIGUOUS = 5


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
