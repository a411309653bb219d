"""`dialer dnc` through the command line (in-process): numbers on the list are never loaded, and adding one later
marks it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import Cli


def _json(res: subprocess.CompletedProcess[str]) -> object:
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_dnc_before_and_after_loading(tmp_path: Path, cli: Cli) -> None:
    dnc_file = tmp_path / "tps.csv"
    dnc_file.write_text("Номер телефона;Комментарий\n+44 7911 123458;tps\nnonsense;x\n", encoding="cp1251")
    imported = _json(cli("dnc", "import", str(dnc_file), "--json"))
    assert imported["added"] == 1 and imported["unreadable"] == 1  # type: ignore[index]
    assert imported["unreadable_rows"][0]["line"] == 3  # type: ignore[index]
    added = _json(
        cli("dnc", "add", "07911 123456", "--region", "GB", "--reason", "asked", "--json")
    )
    assert added["added"] == 1 and added["numbers"] == ["+447911123456"]  # type: ignore[index]
    again = _json(cli("dnc", "add", "+447911123456", "--json"))
    assert again["added"] == 0 and again["already_listed"] == 1  # type: ignore[index]
    bad = cli("dnc", "add", "+44 12")
    assert bad.returncode == 2 and "invalid number" in bad.stderr and "Traceback" not in bad.stderr

    contacts = tmp_path / "list.csv"
    contacts.write_text("phone,name\n+447911123456,On list\n+447911123457,Fine\n+447911123458,Imported\n"
                        "+447911123459,Later\n", encoding="utf-8")  # fmt: skip
    res = _json(
        cli("campaign", "load", str(contacts), "--campaign", "c", "--from", "100", "--json")
    )
    assert (res["loaded"], res["reasons"]) == (2, {"do not call": 2})  # type: ignore[index]

    marked = _json(cli("dnc", "add", "+447911123459", "--campaign", "c", "--json"))
    assert marked["contacts_marked"] == 1  # type: ignore[index]
    states = {c["phone"]: c["state"] for c in _json(cli("campaign", "contacts", "c", "--json"))}  # type: ignore[union-attr]
    assert states == {"+447911123457": "pending", "+447911123459": "dnc"}

    listing = _json(cli("dnc", "list", "--json"))
    assert {(e["phone"], e["campaign"]) for e in listing} == {  # type: ignore[union-attr]
        ("+447911123456", None), ("+447911123458", None), ("+447911123459", "c")}  # fmt: skip
    assert "Removed 1 entry" in cli("dnc", "remove", "+447911123456").stdout
    assert len(_json(cli("dnc", "list", "--json"))) == 2  # type: ignore[arg-type]
