"""docs/architecture.md is the map: it names every package, names nothing that does not exist, and its rules hold."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dialer"
DOC = ROOT / "docs" / "architecture.md"


def _packages() -> set[str]:
    return {f"dialer/{p.parent.relative_to(PACKAGE).as_posix()}/" for p in PACKAGE.rglob("__init__.py")
            if p.parent != PACKAGE}


def _imports(path: Path) -> set[str]:
    """Every ``dialer...`` module a file imports, at any depth (lazy imports inside functions included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dialer"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("dialer"))
    return out


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_every_package_is_on_the_map_and_the_map_names_only_real_ones() -> None:
    named = set(re.findall(r"`(dialer/[a-z_]+/)`", DOC.read_text(encoding="utf-8")))
    assert named == _packages()


def test_every_module_the_map_names_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    for path in re.findall(r"`(dialer/[a-z_/]+\.py)`", text):
        assert (ROOT / path).is_file(), path
    for dotted in re.findall(r"`((?:ingest|dialing|outcomes|reporting|sim)\.[a-z_]+)", text):
        assert (PACKAGE / (dotted.replace(".", "/") + ".py")).is_file(), dotted


def test_the_library_never_imports_the_commands() -> None:
    offenders = [
        _module(p) for p in PACKAGE.rglob("*.py")
        if "commands" not in p.parts and p.name not in ("cli.py", "docs.py")
        and any(m.startswith("dialer.commands") for m in _imports(p))
    ]
    assert offenders == []


def test_zadarma_and_pacing_stand_alone() -> None:
    for name in ("zadarma", "pacing"):
        for p in (PACKAGE / name).rglob("*.py"):
            outside = {m for m in _imports(p) if not m.startswith(f"dialer.{name}")}
            assert outside == set(), (p, outside)


def test_metrics_and_live_state_do_not_import_each_other() -> None:
    assert not any(m.startswith("dialer.dialing.live") for m in _imports(PACKAGE / "metrics.py"))
    assert not any(m.startswith("dialer.metrics") for m in _imports(PACKAGE / "dialing" / "live.py"))


def test_only_the_commands_and_the_demo_import_the_web_console() -> None:
    offenders = [
        _module(p) for p in PACKAGE.rglob("*.py")
        if not {"web", "commands"} & set(p.parts) and p.name not in ("cli.py", "docs.py", "demo.py")
        and any(m.startswith("dialer.web") for m in _imports(p))
    ]
    assert offenders == []


def test_no_module_is_over_600_lines() -> None:
    long = {_module(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


def test_no_merge_conflict_markers_are_left() -> None:
    markers = ("<<<<<<< ", ">>>>>>> ", "=======\n")
    found = [
        f"{p.relative_to(ROOT)}:{n}"
        for top in ("dialer", "tests", "docs", "alembic", "benchmarks")
        for p in (ROOT / top).rglob("*") if p.suffix in (".py", ".md", ".toml", ".html", ".js", ".css")
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True), 1)
        if line.startswith(markers)
    ]
    assert found == []
