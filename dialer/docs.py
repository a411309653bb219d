"""The CLI reference (docs/cli.md), generated from the Typer app so it cannot drift from the code.

Regenerate with ``python -m dialer.docs > docs/cli.md``; tests/test_docs.py fails when the file is stale.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import typer.main

HEADER = """# CLI reference

Generated from the Typer app by `python -m dialer.docs > docs/cli.md`: do not edit by hand
(`tests/test_docs.py` fails when this file is out of date). Every command also answers `--help`.
"""


# Typer ships its own copy of Click (typer._click), so commands and parameters are recognised by what they
# offer, not by isinstance checks against the click package.
Command = Any
Context = Any
Param = Any


@dataclass(frozen=True)
class Node:
    """One command of the tree with the Click context that names it."""

    path: tuple[str, ...]
    command: Command
    ctx: Context

    @property
    def is_group(self) -> bool:
        return is_group(self.command)


def is_group(command: Command) -> bool:
    return hasattr(command, "list_commands")


def root_command() -> Command:
    from dialer.cli import app

    return typer.main.get_command(app)


def walk(command: Command | None = None) -> Iterator[Node]:
    """Every command and group, parents before children, in the order ``--help`` lists them."""
    command = command or root_command()
    yield from _walk(command, command.context_class(command, info_name="dialer"), ("dialer",))


def _walk(command: Command, ctx: Context, path: tuple[str, ...]) -> Iterator[Node]:
    if command.hidden:
        return
    yield Node(path, command, ctx)
    if is_group(command):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                yield from _walk(sub, sub.context_class(sub, info_name=name, parent=ctx), (*path, name))


def find(words: list[str], root: Command | None = None) -> tuple[list[str], Command]:
    """The longest command path named by ``words`` (stopping at the first word that is not a subcommand)."""
    command = root or root_command()
    ctx = command.context_class(command, info_name="dialer")
    used: list[str] = []
    for word in words:
        if not is_group(command):
            break
        sub = command.get_command(ctx, word)
        if sub is None:
            break
        command, ctx = sub, sub.context_class(sub, info_name=word, parent=ctx)
        used.append(word)
    return used, command


def is_option(param: Param) -> bool:
    return getattr(param, "param_type_name", "") == "option"


def help_text(command: Command) -> str:
    return inspect.cleandoc(command.help or "").strip()


def usage(node: Node) -> str:
    pieces = node.command.collect_usage_pieces(node.ctx)
    return " ".join([node.ctx.command_path, *pieces])


def _param_line(param: Param, ctx: Context) -> str:
    """The same names, metavar, help and default that ``--help`` shows."""
    record = param.get_help_record(ctx)
    if record is None:
        names, text = param.name, ""
    else:
        names, text = record
    # A count option (-v, -vv) is repeatable like a multiple one.
    if (param.multiple or getattr(param, "count", False)) and "repeatable" not in text.lower():
        text += "  [repeatable]"
    text = " ".join(text.split()).replace("|", "\\|")
    return f"- `{names}`: {text}".rstrip()


def _markdown_help(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.startswith("Example: "):
            line = f"Example: `{line.removeprefix('Example: ').strip()}`"
        lines.append(line)
    return "\n".join(lines)


def _anchor(path: tuple[str, ...]) -> str:
    return "-".join(path)


def render_markdown() -> str:
    nodes = list(walk())
    out = [HEADER, "## Commands", ""]
    for node in nodes:
        indent = "  " * (len(node.path) - 1)
        first = " ".join(help_text(node.command).split("\n\n", 1)[0].split())
        out.append(f"{indent}- [`{' '.join(node.path)}`](#{_anchor(node.path)}): {first}")
    out.append("")
    for node in nodes:
        out.append(f"## {' '.join(node.path)}")
        out.append("")
        out.append("```")
        out.append(usage(node))
        out.append("```")
        out.append("")
        out.append(_markdown_help(help_text(node.command)))
        out.append("")
        arguments = [p for p in node.command.params if not is_option(p)]
        options = [p for p in node.command.params if is_option(p) and not p.hidden]
        if arguments:
            out.append("Arguments:")
            out.append("")
            out.extend(_param_line(p, node.ctx) for p in arguments)
            out.append("")
        if options:
            out.append("Options:")
            out.append("")
            out.extend(_param_line(p, node.ctx) for p in options)
            out.append("")
        if node.is_group:
            # Listed under the same panels as in `--help` ("Commands" where a group has none).
            panels: dict[str, list[Node]] = {}
            for n in nodes:
                if n.path[:-1] == node.path:
                    panels.setdefault(getattr(n.command, "rich_help_panel", None) or "Commands", []).append(n)
            for panel, subs in panels.items():
                out.append(f"{panel}: " + ", ".join(f"[`{n.path[-1]}`](#{_anchor(n.path)})" for n in subs))
                out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    import sys

    sys.stdout.write(render_markdown())


if __name__ == "__main__":
    main()
