"""README.md as data: its code blocks and the `dialer` command lines in them (used by the docs and walkthrough tests)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    lang: str
    lines: tuple[str, ...]
    section: str


def code_blocks(text: str | None = None) -> list[Block]:
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks: list[Block] = []
    section = ""
    current: list[str] | None = None
    lang = ""
    indent = ""
    for line in text.splitlines():
        m = FENCE.match(line)
        if current is None:
            if line.startswith("## "):
                section = line[3:].strip()
            if m:
                current, lang, indent = [], m.group(2), m.group(1)
            continue
        if m and not m.group(2):
            blocks.append(Block(lang, tuple(current), section))
            current = None
            continue
        current.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
    return blocks


def dialer_lines(text: str | None = None) -> list[tuple[str, str]]:
    """(section, command line) for every line of a shell code block that starts with `dialer ` or `$ dialer `."""
    out = []
    for block in code_blocks(text):
        if block.lang not in ("sh", "bash", "shell", "console", ""):
            continue
        for line in block.lines:
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            if line.startswith("dialer ") or line == "dialer":
                out.append((block.section, line))
    return out


def words(line: str) -> list[str]:
    """The words of one command, up to the first shell operator or comment."""
    out = []
    for word in shlex.split(line, comments=True):
        if word in ("&&", "||", "|", ";", "&"):
            break
        out.append(word)
    return out


def readme_test_command() -> str:
    """README's install-and-test line (the one ending in pytest)."""
    lines = [
        line for b in code_blocks() for line in b.lines if line.startswith("python3.11 ") and "pytest" in line
    ]
    assert len(lines) == 1, f"README must give exactly one test command, found {lines}"
    return lines[0]


def readme_slow_test_command() -> str:
    """README's second test step: the slow end-to-end tests, in the venv the first step made."""
    lines = [line for b in code_blocks() for line in b.lines if line.startswith("pytest ") and "--db" not in line]
    assert len(lines) == 1, f"README must give exactly one slow-test command, found {lines}"
    return lines[0]


def readme_postgres_test_command() -> str:
    """README's third test step: the end-to-end tests again, on PostgreSQL."""
    lines = [line for b in code_blocks() for line in b.lines if line.startswith("pytest ") and "--db" in line]
    assert len(lines) == 1, f"README must give exactly one PostgreSQL test command, found {lines}"
    return lines[0]


def demo_command() -> str:
    lines = [
        line
        for b in code_blocks()
        for line in b.lines
        if line.startswith("python3.11 ") and line.endswith("dialer demo")
    ]
    assert len(lines) == 1, f"README must give exactly one install-and-demo command, found {lines}"
    return lines[0]
