"""`dialer campaign` end to end through real subprocesses: load the example list, inspect, validate, lifecycle."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dialer import db
from dialer.ingest import campaigns

EXAMPLE = Path(__file__).resolve().parent.parent / "campaigns" / "example.csv"


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    return subprocess.run([sys.executable, "-m", "dialer", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False, cwd=tmp_path)  # fmt: skip


def _ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    return res.stdout


def test_example_list_loads_and_shows_settings_and_counts(tmp_path: Path) -> None:
    rejects = tmp_path / "example.rejects.csv"
    out = json.loads(_ok(_cli(tmp_path, "campaign", "load", str(EXAMPLE), "--campaign", "spring", "--from", "100",
                              "--region", "GB", "--agents", "5", "--pacing", "ratio:1.5", "--rejects", str(rejects),
                              "--json")))  # fmt: skip
    with EXAMPLE.open(encoding="utf-8") as f:
        data_rows = sum(1 for _ in csv.reader(f)) - 1
    assert out["rows_read"] == data_rows >= 190
    assert out["loaded"] + out["rejected"] == out["rows_read"]
    assert out["campaign_created"] is True and 3 <= out["rejected"] <= 15
    assert {"invalid number", "number mangled by Excel (scientific notation)", "empty phone number"} <= set(
        out["reasons"]
    )
    assert any(r.startswith("duplicate of line ") for r in out["reasons"])
    with rejects.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == out["rejected"]
    assert all(r["line"].isdigit() and r["reason"] and "Name" in r for r in rows)

    show = json.loads(_ok(_cli(tmp_path, "campaign", "show", "spring", "--json")))
    assert show["from_number"] == "100" and show["agents"] == 5 and show["pacing"] == "ratio:1.5"
    assert show["window_start"] == "09:00" and show["retry_abandoned_s"] == 259200
    assert show["contacts"]["pending"] == out["loaded"] == show["contacts"]["total"]
    text = _ok(_cli(tmp_path, "campaign", "show", "spring"))
    assert "pending" in text and str(out["loaded"]) in text

    contacts = json.loads(_ok(_cli(tmp_path, "campaign", "contacts", "spring", "--state", "pending", "--limit", "0",
                                   "--json")))  # fmt: skip
    assert len(contacts) == out["loaded"]
    first = contacts[0]
    assert first["phone"].startswith("+") and first["timezones"] and first["source_line"] == 2
    assert set(first["fields"]) == {"Email", "Account", "Notes"} and first["name"]
    assert (
        json.loads(_ok(_cli(tmp_path, "campaign", "contacts", "spring", "--state", "done", "--json"))) == []
    )

    listing = json.loads(_ok(_cli(tmp_path, "campaign", "list", "--json")))
    assert [c["name"] for c in listing] == ["spring"]

    again = json.loads(_ok(_cli(tmp_path, "campaign", "load", str(EXAMPLE), "--campaign", "spring", "--rejects",
                                str(tmp_path / "again.csv"), "--json")))  # fmt: skip
    assert again["loaded"] == 0 and again["rejected"] == again["rows_read"]
    assert again["reasons"]["duplicate: already in the campaign"] == out["loaded"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--window", "20:00-09:00"], "start must be before the end"),
        (["--window", "25:00-26:00"], "not a time of day"),
        (["--pacing", "turbo"], "unknown pacing policy 'turbo'"),
        (["--pacing", "ratio:7"], "between 1 and 5"),
        (["--abandon-target", "0.06"], "at most 0.05"),
        (["--abandon-target", "0"], "above 0"),
        (["--timezone", "Europe/Atlantis"], "unknown time zone"),
        (["--region", "XX"], "unknown region 'XX'"),
        (["--weekdays", "mon-funday"], "not a day"),
        (["--holidays", "2026-13-01"], "not a date"),
        (["--retry-busy", "soon"], "not a duration"),
        (["--abandon-window", "7d"], "30d"),
        (["--agents", "0"], "between 1 and"),
    ],
)
def test_invalid_settings_get_clear_errors(tmp_path: Path, option: list[str], message: str) -> None:
    engine = db.open_database(f"sqlite:///{tmp_path / 'v.db'}")
    try:
        key = option[0].removeprefix("--").replace("-", "_")
        with pytest.raises(campaigns.SettingsError, match=re.escape(message)), db.session_scope(engine) as s:
            campaigns.create_campaign(s, "x", "100", **{key: option[1]})
    finally:
        engine.dispose()


def test_invalid_settings_exit_2_on_the_command_line(tmp_path: Path) -> None:
    for option, message in ((["--window", "20:00-09:00"], "start must be before the end"),
                            (["--pacing", "turbo"], "unknown pacing policy 'turbo'")):  # fmt: skip
        res = _cli(tmp_path, "campaign", "create", "x", "--from", "100", *option)
        assert res.returncode == 2, res.stdout
        assert message in res.stderr and "Traceback" not in res.stderr


def test_lifecycle_and_set(tmp_path: Path) -> None:
    _ok(
        _cli(
            tmp_path,
            "campaign",
            "create",
            "c",
            "--from",
            "100",
            "--weekdays",
            "mon-sat",
            "--retry-busy",
            "45m",
        )
    )
    shown = json.loads(_ok(_cli(tmp_path, "campaign", "show", "c", "--json")))
    assert (
        shown["state"] == "draft"
        and shown["weekdays"] == [0, 1, 2, 3, 4, 5]
        and shown["retry_busy_s"] == 2700
    )
    dup = _cli(tmp_path, "campaign", "create", "c", "--from", "100")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad = _cli(tmp_path, "campaign", "resume", "c")
    assert bad.returncode == 1 and "cannot resume" in bad.stderr
    assert "running" in _ok(_cli(tmp_path, "campaign", "start", "c"))
    assert "paused" in _ok(_cli(tmp_path, "campaign", "pause", "c", "--reason", "lunch"))
    assert json.loads(_ok(_cli(tmp_path, "campaign", "show", "c", "--json")))["pause_reason"] == "lunch"
    assert "running" in _ok(_cli(tmp_path, "campaign", "resume", "c"))
    assert "stopped" in _ok(_cli(tmp_path, "campaign", "stop", "c"))
    out = json.loads(_ok(_cli(tmp_path, "campaign", "set", "c", "pacing=predictive", "window=10:00-18:30",
                              "retry_abandoned=3d", "abandon_target=2%", "region=gb", "--json")))  # fmt: skip
    assert (out["pacing"], out["window_start"], out["window_end"]) == ("predictive", "10:00", "18:30")
    assert (out["retry_abandoned_s"], out["abandon_target"], out["default_region"]) == (259200, 0.02, "GB")
    bad_set = _cli(tmp_path, "campaign", "set", "c", "colour=blue")
    assert bad_set.returncode == 2 and "unknown setting 'colour'" in bad_set.stderr
    missing = _cli(tmp_path, "campaign", "show", "nope")
    assert missing.returncode == 1 and "no campaign named 'nope'" in missing.stderr
