"""Failures around a command, not in its input: a read-only, locked or full database, a full disk, Ctrl-C, a bug.
Each ends with one line on stderr and a non-zero exit (130 for Ctrl-C), never a traceback (unless -vv), and leaves
nothing half-written: a load that fails or is interrupted keeps none of its contacts (nor the campaign it created).

How each failure is produced, as a user would meet it (tests run as root, which ignores file modes):
- read-only: the database file made immutable (`chattr +i`, so the open falls back to read-only as for a file
  without write permission), and a read-only SQLite URI (`?mode=ro`) where chattr is not available;
- locked: another connection holds `BEGIN EXCLUSIVE`; the busy timeout is cut to 0.3 s for the test;
- full disk: the database on a 640 KiB tmpfs when this process may mount one, and always a simulated SQLITE_FULL
  raised by the driver on the second chunk of a load (in-process);
- Ctrl-C: SIGINT to a real `dialer campaign load` whose progress bar is on a pseudo-terminal, at each stage (slow),
  and a KeyboardInterrupt raised in-process in the middle of the insert.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Cli, clean_env

ROOT = Path(__file__).resolve().parent.parent


def _people(path: Path, n: int, start: int = 0) -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write("phone,name,email\n")
        for i in range(start, start + n):
            f.write(f"+447{911 + i // 1_000_000}{i % 1_000_000:06d},Person {i},p{i}@example.com\n")
    return path


def _one_line(res: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    assert res.returncode == code, out
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _count(db: Path, sql: str, *args: object) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()


def _contacts(db: Path) -> int:
    return _count(db, "SELECT count(*) FROM contact")


def _campaigns(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM campaign"))
    finally:
        conn.close()


@pytest.fixture
def loaded(cli: Cli, tmp_path: Path) -> Path:
    """A database with campaign 'base' holding 50 contacts; its path."""
    cli.ok("campaign", "load", str(_people(tmp_path / "base.csv", 50)), "--campaign", "base", "--from", "100")
    db = tmp_path / "dialer.db"
    assert _contacts(db) == 50
    return db


# Commands that write, each as a user would run it against the database of `loaded`.
def _writers(tmp_path: Path) -> list[list[str]]:
    more = str(_people(tmp_path / "more.csv", 20, start=1000))
    return [
        ["campaign", "create", "new", "--from", "100"],
        ["campaign", "load", more, "--campaign", "base"],
        ["campaign", "load", more, "--campaign", "fresh", "--from", "100"],
        ["campaign", "set", "base", "agents=3"],
        ["campaign", "start", "base"],
        ["dnc", "add", "+447911000001"],
    ]


# --- read-only --------------------------------------------------------------------------------------------


@contextmanager
def _immutable(path: Path) -> Iterator[None]:
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not available")
    res = subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False)
    if res.returncode:
        pytest.skip(f"cannot make a file immutable here: {res.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_read_only_database_file(cli: Cli, tmp_path: Path, loaded: Path) -> None:
    before = _contacts(loaded), _campaigns(loaded)
    with _immutable(loaded):
        for args in _writers(tmp_path):
            _one_line(cli(*args), 1, "read-only")
        assert "base" in cli.ok("campaign", "list")  # reading still works
    assert (_contacts(loaded), _campaigns(loaded)) == before


def test_read_only_database_uri(cli: Cli, tmp_path: Path, loaded: Path) -> None:
    before = _contacts(loaded), _campaigns(loaded)
    env = {"DIALER_DATABASE_URL": f"sqlite:///file:{loaded}?mode=ro&uri=true"}
    for args in _writers(tmp_path):
        _one_line(cli(*args, env=env), 1, "read-only")
    assert "base" in cli.ok("campaign", "list", env=env)
    assert (_contacts(loaded), _campaigns(loaded)) == before


# --- locked -----------------------------------------------------------------------------------------------


def test_locked_database(cli: Cli, tmp_path: Path, loaded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dialer import db as dialer_db

    monkeypatch.setattr(dialer_db, "BUSY_TIMEOUT_MS", 300)
    before = _contacts(loaded), _campaigns(loaded)
    holder = sqlite3.connect(loaded, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        for args in _writers(tmp_path):
            _one_line(cli(*args), 1, "locked", "run the command again")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (_contacts(loaded), _campaigns(loaded)) == before


# --- full disk ----------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 640 KiB tmpfs (needs the right to mount; skipped otherwise)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=640k", "tmpfs", str(mnt)], capture_output=True,
                         check=False)  # fmt: skip
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_real(cli: Cli, tmp_path: Path, tiny_disk: Path) -> None:
    db = tiny_disk / "dialer.db"
    env = {"DIALER_DATABASE_URL": f"sqlite:///{db}"}
    cli.ok("campaign", "create", "c", "--from", "100", env=env)
    big = _people(tmp_path / "big.csv", 20_000)
    _one_line(cli("campaign", "load", str(big), "--campaign", "c", env=env), 1, "full", "nothing")
    _one_line(cli("campaign", "load", str(big), "--campaign", "new", "--from", "1", env=env), 1, "full")
    assert _contacts(db) == 0 and _campaigns(db) == ["c"]
    # The rejects file on the full disk: the load stops before inserting anything, with one line.
    try:
        with (tiny_disk / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError:
        pass
    dupes = tmp_path / "dupes.csv"
    dupes.write_text("phone\n" + "+447911000001\n" * 40_000, encoding="utf-8")
    res = cli("campaign", "load", str(dupes), "--campaign", "c", "--rejects", str(tiny_disk / "r.csv"), env=env)
    _one_line(res, 1, "rejects file", "No space left")
    assert _contacts(db) == 0


def test_full_disk_simulated(cli: Cli, tmp_path: Path, loaded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLITE_FULL from the driver on the second chunk of a load: the first chunk is rolled back too."""
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

    from dialer.ingest import loader

    monkeypatch.setattr(loader, "CHUNK", 7)
    chunks = []

    def full(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO contact"):
            chunks.append(statement)
            if len(chunks) == 2:
                raise sqlite3.OperationalError("database or disk is full")

    sa.event.listen(Engine, "before_cursor_execute", full)
    try:
        more = _people(tmp_path / "more.csv", 20, start=1000)
        _one_line(cli("campaign", "load", str(more), "--campaign", "base"), 1, "disk", "full", "nothing")
        chunks.clear()
        _one_line(cli("campaign", "load", str(more), "--campaign", "fresh", "--from", "1"), 1, "full")
    finally:
        sa.event.remove(Engine, "before_cursor_execute", full)
    assert _contacts(loaded) == 50 and _campaigns(loaded) == ["base"]


# --- Ctrl-C -----------------------------------------------------------------------------------------------


def test_ctrl_c_in_process_rolls_the_load_back(
    cli: Cli, tmp_path: Path, loaded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

    from dialer.ingest import loader

    monkeypatch.setattr(loader, "CHUNK", 5)
    chunks = []

    def interrupt(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO contact"):
            chunks.append(statement)
            if len(chunks) == 3:
                raise KeyboardInterrupt

    sa.event.listen(Engine, "after_cursor_execute", interrupt)
    try:
        more = _people(tmp_path / "more.csv", 20, start=1000)
        _one_line(cli("campaign", "load", str(more), "--campaign", "base"), 130, "interrupted")
        chunks.clear()
        _one_line(cli("campaign", "load", str(more), "--campaign", "fresh", "--from", "1"), 130, "interrupted")
    finally:
        sa.event.remove(Engine, "after_cursor_execute", interrupt)
    assert _contacts(loaded) == 50 and _campaigns(loaded) == ["base"]


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB012]|\r")


def _load_and_interrupt(tmp_path: Path, db: Path, big: Path, campaign: str, stage: str) -> tuple[int, str]:
    """Run `dialer campaign load` with its progress on a terminal and SIGINT it once ``stage`` shows.
    Returns (exit code, output without terminal control sequences)."""
    import pty

    env = {k: v for k, v in clean_env(DIALER_DATABASE_URL=f"sqlite:///{db}").items() if v is not None}
    env.update(PATH=os.environ.get("PATH", "/usr/bin:/bin"), HOME=str(tmp_path), TERM="xterm", COLUMNS="100")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer", "campaign", "load", str(big), "--campaign", campaign, "--from", "100"],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=ROOT,
    )  # fmt: skip
    os.close(slave)
    out = b""
    sent = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if not sent and stage.encode() in out:
                proc.send_signal(signal.SIGINT)
                sent = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert sent, f"never saw the {stage!r} stage:\n{out.decode(errors='replace')}"
    return code, _ANSI.sub("", out.decode("utf-8", errors="replace"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["reading", "normalising", "inserting"])
def test_ctrl_c_during_a_real_load(cli: Cli, tmp_path: Path, loaded: Path, stage: str) -> None:
    big = _people(tmp_path / "big.csv", 300_000, start=10_000)
    for campaign in ("base", "fresh"):  # an existing campaign, and one the load creates
        code, out = _load_and_interrupt(tmp_path, loaded, big, campaign, stage)
        assert code == 130, out
        assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
        text = [ln.strip() for ln in out.splitlines() if ln.strip() and stage not in ln and "━" not in ln]
        assert text[-1:] and text[-1].startswith("Error: interrupted"), out
        assert sum(ln.startswith("Error:") for ln in text) == 1, out
        assert _contacts(loaded) == 50 and _campaigns(loaded) == ["base"]


# --- anything else --------------------------------------------------------------------------------------------


def test_unexpected_error_is_one_line_and_vv_shows_the_traceback(
    cli: Cli, tmp_path: Path, loaded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dialer.ingest import loader

    def boom(*args: object, **kw: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(loader, "load_file", boom)
    more = str(_people(tmp_path / "more.csv", 3))
    line = _one_line(cli("campaign", "load", more, "--campaign", "base"), 1, "RuntimeError: boom", "-vv")
    assert "second line" not in line
    res = cli("-vv", "campaign", "load", more, "--campaign", "base")
    assert res.returncode == 1 and "Traceback" in res.stderr and "RuntimeError: boom" in res.stderr


def test_a_file_that_is_not_a_database(cli: Cli, tmp_path: Path) -> None:
    notdb = tmp_path / "contacts.csv"
    notdb.write_text("phone\n+447911123456\n" * 200, encoding="utf-8")
    res = cli("campaign", "list", env={"DIALER_DATABASE_URL": f"sqlite:///{notdb}"})
    assert res.returncode != 0 and "Traceback" not in res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not a" in lines[0] and "database" in lines[0], res.stderr
