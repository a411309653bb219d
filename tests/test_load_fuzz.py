"""`dialer campaign load` on awkward files, generated here: never a traceback, exit 0 when the file was read (every
row loaded or rejected, loaded + rejected == rows read == contacts in the database) and 1 with one line on stderr
when it cannot be read at all.

The files are what CRMs, Excel and broken exports produce: encodings and BOMs, delimiters, CR-only / CRLF / mixed
line ends, NULs and binary junk, fields beyond the csv module's limit, 1 and 3,000 columns, ragged rows, formulas,
empty and header-only files, broken XLSX, phone extensions, quoting accidents.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Cli

UK = [f"+44 7911 {123000 + i}" for i in range(400)]  # valid UK mobiles, distinct


@dataclass(frozen=True)
class Case:
    name: str
    content: bytes | Callable[[Path], None]
    exit: int  # 0: read (rows loaded or rejected), 1: cannot be read
    rows: int | None = None  # data rows the file has, when known
    loaded: int | None = None
    suffix: str = ".csv"
    extensions: int | None = None


def _csv(rows: list[list[str]], delim: str = ",", eol: str = "\n", enc: str = "utf-8") -> bytes:
    return eol.join(delim.join(r) for r in rows).encode(enc) + eol.encode(enc)


def _people(n: int, delim: str = ",") -> list[list[str]]:
    return [["phone", "name", "city"]] + [[UK[i], f"Person {i}", "Leeds"] for i in range(n)]


def _xlsx(rows: list[list[object]]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from openpyxl import Workbook

        wb = Workbook()
        ws = wb.active
        assert ws is not None
        for r in rows:
            ws.append(r)
        wb.save(path)

    return write


def _zip_junk(path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "not a workbook")
    path.write_bytes(buf.getvalue())


def _directory(path: Path) -> None:
    path.mkdir()


def _many_columns(path: Path) -> None:
    header = ["phone"] + [f"c{i}" for i in range(2999)]
    rows = [header] + [[UK[i]] + [str(i * j % 97) for j in range(2999)] for i in range(20)]
    path.write_bytes(_csv(rows))


def _big_dupes(path: Path) -> None:
    rows = [["phone", "name"]] + [[UK[i % 100], f"n{i}"] for i in range(3000)]
    path.write_bytes(_csv(rows))


HUGE = "x" * 300_000  # beyond csv.field_size_limit() (131,072)

CASES = [
    Case("utf8", _csv(_people(5)), 0, 5, 5),
    Case("utf8-bom", b"\xef\xbb\xbf" + _csv(_people(5)), 0, 5, 5),
    Case("cp1251", _csv([["Телефон", "ФИО"], [UK[0], "Иван Петров"], [UK[1], "Анна"]], ";", "\r\n", "cp1251"),
         0, 2, 2),
    Case("utf16le-bom", b"\xff\xfe" + "\r\n".join(",".join(r) for r in _people(3)).encode("utf-16-le"), 0, 3, 3),
    Case("utf16be-bom", b"\xfe\xff" + "\n".join(",".join(r) for r in _people(3)).encode("utf-16-be"), 0, 3, 3),
    Case("semicolon", _csv(_people(4), ";"), 0, 4, 4),
    Case("tab", _csv(_people(4), "\t"), 0, 4, 4),
    Case("pipe", _csv(_people(4), "|"), 0, 4, 4),
    Case("cr-only", _csv(_people(6), eol="\r"), 0, 6, 6),
    Case("crlf", _csv(_people(6), eol="\r\n"), 0, 6, 6),
    Case("mixed-eol", b"phone,name\r\n" + f"{UK[0]},a\n{UK[1]},b\r{UK[2]},c\r\n".encode(), 0, 3, 3),
    Case("bom-cr-semicolon", b"\xef\xbb\xbf" + _csv(_people(3), ";", "\r"), 0, 3, 3),
    Case("nul-late", _csv(_people(3)) + b"x" * 70_000 + b"\x00\n", 1),
    Case("nul-early", b"phone\n\x00\x00\x00" + UK[0].encode() + b"\n", 1),
    Case("binary-junk", bytes(range(256)) * 40, 1),
    Case("gzip", b"\x1f\x8b\x08\x00" + bytes(range(200)) * 3, 1),
    Case("old-xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, 1),
    # Latin-1 read as Windows-1251 would be mojibake (Ьnпcцdй): refused, never silently misread.
    Case("latin1-as-cp1251", "phone,name\n+447911123456,Ünïcödé\n".encode("latin-1"), 1),
    Case("undecodable", b"phone,name\n+447911123456,\x98\x98\n", 1),  # 0x98 is in neither UTF-8 nor cp1251
    Case("bom-bad-utf8", b"\xef\xbb\xbfphone\n\xff\xfe\xfa\n", 1),
    Case("huge-notes", f'phone,notes\n{UK[0]},"{HUGE}"\n{UK[1]},short\n'.encode(), 0, 2, 2),
    Case("huge-unquoted", f"phone,notes\n{UK[0]},{HUGE}\n".encode(), 0, 1, 1),
    Case("huge-phone", f"phone,name\n{'7' * 300_000},x\n{UK[1]},y\n".encode(), 0, 2, 1),
    Case("huge-header", f"phone,{HUGE}\n{UK[0]},a\n".encode(), 0, 1, 1),
    Case("huge-line-no-delim", ("a" * 400_000 + "\n").encode(), 1),
    Case("one-column", _csv([["phone"]] + [[u] for u in UK[:10]]), 0, 10, 10),
    Case("one-column-headerless", _csv([[u] for u in UK[:10]]), 0, 10, 10),
    Case("3000-columns", _many_columns, 0, 20, 20),
    Case("ragged", b"phone,name\n" + f"{UK[0]},a,extra,more\n{UK[1]}\n{UK[2]},c\n{UK[3]},d,\n".encode(), 0, 4, 3),
    Case("ragged-first-row", b"phone,name\n" + f"{UK[0]},a,x\n{UK[1]},b\n".encode(), 0, 2, 1),
    Case("trailing-delimiters", _csv([[*r, ""] for r in _people(4)]), 0, 4, 4),
    Case("formulas", b"phone,name\n" + f'{UK[0]},=HYPERLINK("http://x")\n=1+2,@SUM(A1)\n'
         f"{UK[1]},\"=cmd|' /C calc'!A0\"\n-2+3,+x\n".encode(), 0, 4, 2),
    Case("empty", b"", 1),
    Case("whitespace", b"  \n\t\n\r\n", 1),
    # Nothing loaded is a failure a script can see (exit 1), even when the file itself was fine.
    Case("header-only", b"phone,name\n", 1),
    Case("header-only-crlf-bom", b"\xef\xbb\xbfphone;name\r\n", 1),
    Case("only-delimiters", b"phone,name\n,,\n,\n,,,\n", 1),
    Case("xlsx-broken-zip", b"PK\x03\x04" + bytes(range(256)) * 8, 1, suffix=".xlsx"),
    Case("xlsx-zip-not-workbook", _zip_junk, 1, suffix=".xlsx"),
    Case("xlsx-ok", _xlsx([["Phone", "Name"], [447911123456, "Ann"], ["07911 123457", "Bob"], [None, None],
                          ["4.47911E+11", "Mangled"]]), 0, 3, 2, suffix=".xlsx"),
    Case("xlsx-empty", _xlsx([]), 1, suffix=".xlsx"),
    Case("extensions", b"phone,name\n" + f"{UK[0]} ext 12,a\n{UK[1]} x7,b\n+7 912 345 67 89 доб. 3,c\n"
         f"{UK[3]} ext. 44,d\n{UK[4]} #55,e\n{UK[5]},f\n".encode(), 0, 6, 6, extensions=5),
    Case("unbalanced-quote", b'phone,name\n' + f'{UK[0]},"Ann\n{UK[1]},Bob\n'.encode(), 1),
    Case("quoted-newlines", b"phone,notes\n" + f'{UK[0]},"line1\nline2\r\nline3"\n{UK[1]},ok\n'.encode(), 0, 2, 2),
    Case("quoted-delimiters", b"phone,name\n" + f'"{UK[0]}","Smith, John"\n"{UK[1]}","a ""quoted"" b"\n'.encode(),
         0, 2, 2),
    Case("excel-scientific", b"phone\n4.47911E+11\n4.47911123456E+11\n", 0, 2, 1),
    Case("duplicates", _big_dupes, 0, 3000, 100),
    Case("blank-lines", b"\n\n\nphone,name\n\n" + f"{UK[0]},a\n   \n\n{UK[1]},b\n,\n\n".encode(), 0, 2, 2),
    Case("no-phone-column", b"name,city\nAnn,Leeds\nBob,York\n", 1),
    Case("duplicate-headers", b"phone,name,name,phone\n" + f"{UK[0]},a,b,{UK[1]}\n".encode(), 0, 1, 1),
    Case("unicode-separators",
         b"phone,notes\n" + f"{UK[0]},a\u2028b\x85c\x1cd\x0be\n{UK[1]},\U0001f600\n".encode(), 0, 2, 2),
    Case("html-as-xls", b"<html><body><table><tr><td>phone</td></tr></table></body></html>\n", 1, suffix=".xls"),
    Case("json", json.dumps([{"phone": UK[0]}]).encode(), 1),  # read as a header alone: nothing loaded
    Case("bad-columns", b"phone,timezone,country,priority\n" + f"{UK[0]},Mars/Base,ZZ,high\n{UK[1]},,GB,9e99\n"
         f"{UK[2]},Europe/London,,-1\n".encode(), 0, 3, 2),
    Case("directory", _directory, 1),
]


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One database with the schema, copied for each case (creating the schema is the slow part)."""
    from dialer.db import open_database

    path = tmp_path_factory.mktemp("fuzz") / "template.db"
    engine = open_database(f"sqlite:///{path}")
    engine.dispose()
    yield path


def _contacts(db: Path, campaign: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM contact JOIN campaign ON campaign.id = contact.campaign_id "
            "WHERE campaign.name = ?",
            (campaign,),
        ).fetchone()
    return int(row[0])


def _campaigns(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM campaign")]


def test_there_are_at_least_40_awkward_files() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("json_out", [True, False], ids=["json", "text"])
def test_awkward_file_loads_or_fails_in_one_line(
    case: Case, json_out: bool, cli: Cli, tmp_path: Path, template_db: Path
) -> None:
    db = tmp_path / "dialer.db"
    shutil.copy(template_db, db)
    path = tmp_path / f"{case.name}{case.suffix}"
    if callable(case.content):
        case.content(path)
    else:
        path.write_bytes(case.content)
    args = ["campaign", "load", str(path), "--campaign", "fuzz", "--from", "100", "--region", "GB"]
    res = cli(*args, *(["--json"] if json_out else []))
    output = res.stdout + res.stderr
    assert "Traceback" not in output and "Exception" not in output, output
    assert res.returncode == case.exit, output
    if case.exit:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
        assert _campaigns(db) == []  # a failed load leaves nothing behind, not even the campaign it created
        return
    if not json_out:
        assert "rows read" in res.stdout and len(res.stdout.splitlines()) < 20, res.stdout
        return
    out = json.loads(res.stdout)
    assert out["loaded"] + out["rejected"] == out["rows_read"]
    assert _contacts(db, "fuzz") == out["loaded"]
    assert sum(out["reasons"].values()) == out["rejected"]
    if case.rows is not None:
        assert out["rows_read"] == case.rows, out
    if case.loaded is not None:
        assert out["loaded"] == case.loaded, out
    if case.extensions is not None:
        assert out["extensions"] == case.extensions, out
    if out["rejected"]:
        rejects = Path(out["rejects_file"])
        if not rejects.is_absolute():
            rejects = tmp_path / rejects
        limit = csv.field_size_limit(1_000_000)  # the rejects file holds the huge fields too
        try:
            with rejects.open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        finally:
            csv.field_size_limit(limit)
        assert len(rows) == out["rejected"]
        assert min(int(r["line"]) for r in rows) == min(out["first_lines"].values())


def test_extensions_are_kept_in_the_extension_field(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "ext.csv"
    path.write_text(
        "phone,name,extension\n"
        f"{UK[0]} ext 12,a,\n{UK[1]} x7,b,\n+7 912 345 67 89 доб. 3,c,\n{UK[3]} ext. 44,d,\n{UK[4]} #55,e,\n"
        f"{UK[5]},f,\n{UK[6]} ext 1,g,900\n",
        encoding="utf-8",
    )
    out = cli.ok("campaign", "load", str(path), "--campaign", "x", "--from", "100", "--region", "GB")
    assert "6 numbers had an extension, kept in the 'extension' field." in out, out
    contacts = json.loads(cli.ok("campaign", "contacts", "x", "--limit", "0", "--json"))
    got = {c["phone"]: c["fields"].get("extension") for c in contacts}
    assert got == {
        "+447911123000": "12", "+447911123001": "7", "+79123456789": "3", "+447911123003": "44",
        "+447911123004": "55", "+447911123005": "", "+447911123006": "900",  # the file's own column wins
    }  # fmt: skip


def test_summary_groups_each_reason_with_its_count_and_first_line(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "dupes.csv"
    rows = ["phone,name"] + [f"{UK[i % 100]},n{i}" for i in range(4_526)] + ["not a number,a", ",b", "12,c"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = cli.ok("campaign", "load", str(path), "--campaign", "d", "--from", "100", "--region", "GB")
    lines = out.splitlines()
    assert "Loaded 100, rejected 4,429 (100 + 4,429 = 4,529 rows read)." in lines, out
    assert "      4,426  duplicate of an earlier line, first at line 102" in lines, out
    assert "          2  invalid number, first at line 4528" in lines, out
    assert "          1  empty phone number, first at line 4529" in lines, out
    assert any(ln.startswith("All rejected rows, each with its line number and reason, are in ") for ln in lines)
    assert len(lines) == 6, out
