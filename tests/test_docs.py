"""The docs stay true: the generated CLI reference, help texts with examples, and the README's commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dialer.docs import find, help_text, is_group, is_option, render_markdown, root_command, walk
from tests.readme_support import (
    CI_RUN,
    README,
    ROOT,
    demo_command,
    dialer_lines,
    readme_postgres_test_command,
    readme_slow_test_command,
    readme_test_command,
    words,
)
from tests.test_readme_walkthrough import HANDLED

CLI_MD = ROOT / "docs" / "cli.md"


def test_cli_reference_is_up_to_date() -> None:
    assert CLI_MD.read_text(encoding="utf-8") == render_markdown(), (
        "docs/cli.md is out of date: regenerate it with `python -m dialer.docs > docs/cli.md`"
    )


def test_cli_reference_lists_every_command() -> None:
    text = CLI_MD.read_text(encoding="utf-8")
    paths = [" ".join(n.path) for n in walk()]
    assert len(paths) > 40
    for path in paths:
        assert f"\n## {path}\n" in text


def _option_names(command: Any) -> set[str]:
    names: set[str] = {"--help", "-h"}
    for p in command.params:
        if is_option(p):
            names.update(p.opts)
            names.update(p.secondary_opts)
    return names


def check_command_line(argv: list[str]) -> list[str]:
    """Problems with one `dialer ...` command line: unknown command path, unknown option (empty = fine)."""
    assert argv[0] == "dialer"
    root = root_command()
    rest = argv[1:]
    root_opts = _option_names(root)
    while rest and rest[0].startswith("-"):
        opt = rest.pop(0)
        # -vv is -v twice.
        if opt not in root_opts and not re.fullmatch(r"-v+", opt):
            return [f"{' '.join(argv)}: unknown global option {opt}"]
    if not rest:
        return []
    path, command = find(rest, root)
    if not path:
        return [f"{' '.join(argv)}: {rest[0]!r} is not a dialer command"]
    remaining = rest[len(path) :]
    if is_group(command) and remaining and not remaining[0].startswith("-"):
        return [f"{' '.join(argv)}: {remaining[0]!r} is not a subcommand of dialer {' '.join(path)}"]
    known = _option_names(command)
    problems = []
    for word in remaining:
        if word.startswith("--") or re.fullmatch(r"-[A-Za-z]", word):
            name = word.split("=", 1)[0]
            if name not in known:
                problems.append(f"{' '.join(argv)}: dialer {' '.join(path)} has no option {name}")
    return problems


def test_every_command_has_help_and_an_example() -> None:
    missing = []
    bad_examples = []
    for node in walk():
        text = help_text(node.command)
        examples = [
            line.removeprefix("Example: ").strip()
            for line in text.splitlines()
            if line.startswith("Example: ")
        ]
        if not text or not examples:
            missing.append(" ".join(node.path))
            continue
        for example in examples:
            # An example may set variables or chain commands: check every `dialer ...` part of it.
            for part in re.split(r"\s*(?:&&|\|\||[;&|])\s*", example):
                tokens = [t for t in part.split() if not re.fullmatch(r"[A-Z_]+=\S*", t)]
                if tokens and tokens[0] == "dialer":
                    bad_examples += check_command_line(words(" ".join(tokens)))
    assert not missing, f"commands without help text or an `Example:` line: {missing}"
    assert not bad_examples, bad_examples


def test_check_command_line_catches_mistakes() -> None:
    assert check_command_line(["dialer", "campaign", "start", "spring"]) == []
    assert check_command_line(["dialer", "-v", "--log-json", "run", "--webhook-port", "8088"]) == []
    assert check_command_line(["dialer", "campaign", "strat", "spring"])
    assert check_command_line(["dialer", "campain", "start"])
    assert check_command_line(["dialer", "report", "spring", "--xls", "x.xlsx"])
    assert check_command_line(["dialer", "--verbosity", "run"])


def test_readme_commands_are_real_commands() -> None:
    lines = dialer_lines()
    assert len(lines) >= 10, lines
    problems = [p for _section, line in lines for p in check_command_line(words(line))]
    assert not problems, problems


def test_readme_commands_are_exercised_by_a_test() -> None:
    """Every `dialer` line in README code blocks is run by tests/test_readme_walkthrough.py (which fails on a line
    it does not know how to run), `dialer demo` by tests/test_demo.py, and the install-and-test line by .ci/run."""
    lines = {line for _section, line in dialer_lines()}
    assert lines <= HANDLED, sorted(lines - HANDLED)
    assert demo_command().endswith("&& dialer demo")
    assert '"dialer", "demo"' in (ROOT / "tests" / "test_demo.py").read_text()


def test_readme_test_commands_are_what_ci_runs() -> None:
    """CI runs README's three steps, in order and nothing after them: the quick suite, the slow tests, then the
    end-to-end tests on PostgreSQL."""
    ci_lines = [line for line in CI_RUN.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ci_lines[-3:] == [readme_test_command(), readme_slow_test_command(), readme_postgres_test_command()]
    assert readme_postgres_test_command() == "pytest -q -m e2e --db postgres"
    assert (
        readme_test_command()
        == "python3.11 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[dev]' && pytest -q"
    )
    assert readme_slow_test_command() == "pytest -q -m slow"


def test_pytest_q_is_the_quick_suite_and_m_slow_the_rest() -> None:
    """`pytest -q` leaves the slow tests out by default; `-m slow` on the command line replaces that default."""
    import tomllib

    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "-m 'not slow'" in options["addopts"]
    assert any(m.startswith("slow:") for m in options["markers"])


def test_readme_install_lines_are_single_pasteable_lines() -> None:
    for line in (demo_command(), readme_test_command()):
        assert "\\" not in line
        assert line.startswith("python3.11 -m venv .venv && . .venv/bin/activate && pip install ")
    assert (ROOT / "campaigns" / "example.csv").is_file()


def test_readme_sections_in_order_and_local_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    order = [
        "## Try it",
        "## A real campaign",
        "## How pacing works",
        "## Configuration",
        "## Operations",
        "## Scaling",
        "## Troubleshooting",
    ]
    positions = [text.find(h) for h in order]
    assert all(p >= 0 for p in positions), dict(zip(order, positions, strict=True))
    assert positions == sorted(positions)
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if target.startswith("http") or target == "BENCHMARKS.md":  # BENCHMARKS.md comes with the release
            continue
        assert (ROOT / target).exists(), target


def test_readme_documents_every_setting() -> None:
    from dialer.settings import Settings

    text = README.read_text(encoding="utf-8")
    for field in Settings.model_fields.values():
        assert f"`{field.validation_alias}`" in text, field.validation_alias
    assert "`DIALER_CONFIG`" in text


def test_systemd_unit_runs_the_daemon() -> None:
    unit = (ROOT / "contrib" / "dialer.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = exec_start.removeprefix("ExecStart=").split()
    assert Path(argv[0]).name == "dialer"
    assert check_command_line(["dialer", *argv[1:]]) == []
    assert "KillSignal=SIGTERM" in unit
