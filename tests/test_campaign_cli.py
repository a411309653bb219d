"""`dialer campaign` end to end through the command line (in-process): load the example list, inspect, validate,
lifecycle."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest

from dialer import db
from dialer.ingest import campaigns
from tests.conftest import Cli

EXAMPLE = Path(__file__).resolve().parent.parent / "campaigns" / "example.csv"


def _ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    return res.stdout


def test_example_list_loads_and_shows_settings_and_counts(tmp_path: Path, cli: Cli) -> None:
    rejects = tmp_path / "example.rejects.csv"
    out = json.loads(_ok(cli("campaign", "load", str(EXAMPLE), "--campaign", "spring", "--from", "100",
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
    # Duplicates are one reason in the summary (with the first line), each its own line in the rejects file.
    assert out["reasons"]["duplicate of an earlier line"] >= 1
    assert set(out["first_lines"]) == set(out["reasons"])
    with rejects.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == out["rejected"]
    dups = [r for r in rows if r["reason"].startswith("duplicate of line ")]
    assert len(dups) == out["reasons"]["duplicate of an earlier line"]
    assert min(int(r["line"]) for r in dups) == out["first_lines"]["duplicate of an earlier line"]
    assert all(r["line"].isdigit() and r["reason"] and "Name" in r for r in rows)

    show = json.loads(_ok(cli("campaign", "show", "spring", "--json")))
    assert show["from_number"] == "100" and show["agents"] == 5 and show["pacing"] == "ratio:1.5"
    assert show["window_start"] == "09:00" and show["retry_abandoned_s"] == 259200
    assert show["contacts"]["pending"] == out["loaded"] == show["contacts"]["total"]
    text = _ok(cli("campaign", "show", "spring"))
    assert "pending" in text and str(out["loaded"]) in text

    contacts = json.loads(_ok(cli("campaign", "contacts", "spring", "--state", "pending", "--limit", "0",
                                   "--json")))  # fmt: skip
    assert len(contacts) == out["loaded"]
    first = contacts[0]
    assert first["phone"].startswith("+") and first["timezones"] and first["source_line"] == 2
    assert set(first["fields"]) == {"Email", "Account", "Notes"} and first["name"]
    assert (
        json.loads(_ok(cli("campaign", "contacts", "spring", "--state", "done", "--json"))) == []
    )

    listing = json.loads(_ok(cli("campaign", "list", "--json")))
    assert [c["name"] for c in listing] == ["spring"]

    again = json.loads(_ok(cli("campaign", "load", str(EXAMPLE), "--campaign", "spring", "--rejects",
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


def test_invalid_settings_exit_2_on_the_command_line(cli: Cli) -> None:
    for option, message in ((["--window", "20:00-09:00"], "start must be before the end"),
                            (["--pacing", "turbo"], "unknown pacing policy 'turbo'")):  # fmt: skip
        res = cli("campaign", "create", "x", "--from", "100", *option)
        assert res.returncode == 2, res.stdout
        assert message in res.stderr and "Traceback" not in res.stderr


def test_lifecycle_and_set(cli: Cli) -> None:
    _ok(
        cli(
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
    shown = json.loads(_ok(cli("campaign", "show", "c", "--json")))
    assert (
        shown["state"] == "draft"
        and shown["weekdays"] == [0, 1, 2, 3, 4, 5]
        and shown["retry_busy_s"] == 2700
    )
    dup = cli("campaign", "create", "c", "--from", "100")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad = cli("campaign", "resume", "c")
    assert bad.returncode == 1 and "cannot resume" in bad.stderr
    assert "running" in _ok(cli("campaign", "start", "c"))
    assert "paused" in _ok(cli("campaign", "pause", "c", "--reason", "lunch"))
    assert json.loads(_ok(cli("campaign", "show", "c", "--json")))["pause_reason"] == "lunch"
    assert "running" in _ok(cli("campaign", "resume", "c"))
    assert "stopped" in _ok(cli("campaign", "stop", "c"))
    out = json.loads(_ok(cli("campaign", "set", "c", "pacing=predictive", "window=10:00-18:30",
                              "retry_abandoned=3d", "abandon_target=2%", "region=gb", "--json")))  # fmt: skip
    assert (out["pacing"], out["window_start"], out["window_end"]) == ("predictive", "10:00", "18:30")
    assert (out["retry_abandoned_s"], out["abandon_target"], out["default_region"]) == (259200, 0.02, "GB")
    bad_set = cli("campaign", "set", "c", "colour=blue")
    assert bad_set.returncode == 2 and "unknown setting 'colour'" in bad_set.stderr
    missing = cli("campaign", "show", "nope")
    assert missing.returncode == 1 and "no campaign named 'nope'" in missing.stderr


def test_show_prints_settings_as_typed_and_json_keeps_raw_values(cli: Cli) -> None:
    _ok(cli("campaign", "create", "typed", "--from", "100", "--weekdays", "mon-fri,sun", "--window", "09:00-20:00",
            "--retry-busy", "30m", "--retry-no-answer", "1h30m", "--abandon-target", "2.5%",
            "--holidays", "2026-12-25,2026-12-26"))  # fmt: skip
    text = _ok(cli("campaign", "show", "typed"))
    rows = dict(re.findall(r"│ (\w+)\s+│ (.*?)\s+│", text))
    assert rows["weekdays"] == "mon-fri,sun" and rows["window"] == "09:00-20:00"
    assert (rows["retry_busy"], rows["retry_no_answer"], rows["retry_abandoned"]) == ("30m", "1h30m", "3d")
    assert rows["abandon_target"] == "2.5%" and rows["holidays"] == "2026-12-25,2026-12-26"
    shown = json.loads(_ok(cli("campaign", "show", "typed", "--json")))
    assert (shown["weekdays"], shown["retry_busy_s"], shown["abandon_target"]) == ([0, 1, 2, 3, 4, 6], 1800, 0.025)
    assert shown["typed"]["weekdays"] == "mon-fri,sun" and shown["typed"]["retry_busy"] == "30m"
    # What show prints is what `campaign set` takes: setting it all back changes nothing.
    stored = {k: v for k, v in shown.items() if k not in ("typed", "contacts", "updated_at")}
    again = json.loads(_ok(cli("campaign", "set", "typed", *(f"{k}={v}" for k, v in shown["typed"].items()),
                                "--json")))  # fmt: skip
    assert {k: again[k] for k in stored} == stored
