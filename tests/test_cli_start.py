"""`dialer --help` and `dialer --version` start fast: importing the CLI loads none of the heavy libraries.

Every command imports what it needs inside itself, so this checks which modules an import of ``dialer.cli``
leaves in ``sys.modules`` (in a fresh interpreter), not how long it takes: timings belong to
benchmarks/bench_cli_start.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "pandas",
    "phonenumbers",
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "uvicorn",
    "starlette",
    "httpx",
    "matplotlib",
    "openpyxl",
    "xlsxwriter",
)


def _imported_by(code: str) -> set[str]:
    probe = f"{code}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return {name.split(".", 1)[0] for name in json.loads(out.splitlines()[-1])}


def test_importing_the_cli_loads_no_heavy_library() -> None:
    loaded = _imported_by("import dialer.cli")
    assert "typer" in loaded  # the probe works
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_building_the_help_loads_no_heavy_library() -> None:
    # `dialer --help` also builds every command's parameters from its signature.
    loaded = _imported_by("import typer.main, dialer.cli; typer.main.get_command(dialer.cli.app)")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
