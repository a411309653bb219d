"""The loader on what CRMs and Excel actually export: every row is loaded or rejected with a reason, or the file
gets a one-line error; loaded + rejected == rows read, always."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from dialer import db
from dialer.ingest import campaigns, loader
from dialer.models import Contact
from tests.conftest import Cli


@pytest.fixture()
def engine(tmp_path: Path) -> Engine:
    e = db.open_database(f"sqlite:///{tmp_path / 'l.db'}")
    with db.session_scope(e) as s:
        campaigns.create_campaign(s, "c", "100", region="GB")
    yield e
    e.dispose()


def _load(engine: Engine, path: Path, **kw: object) -> loader.LoadResult:
    res = loader.load_file(engine, path, "c", **kw)  # type: ignore[arg-type]
    assert res.loaded + res.rejected == res.rows_read
    return res


def _contacts(engine: Engine) -> list[Contact]:
    with db.session_scope(engine, write=False) as s:
        return campaigns.list_contacts(s, 1, limit=None)


def _rejects(res: loader.LoadResult) -> list[dict[str, str]]:
    assert res.rejects_path
    with open(res.rejects_path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


ROWS = [
    ("Телефон", "ФИО", "Город"),
    ("+44 7911 123456", "Иван Петров", "Москва"),
    ("07911 123457", "Анна", "Тверь"),
]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1251"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_encodings_delimiters_and_russian_headers(
    engine: Engine, tmp_path: Path, encoding: str, delimiter: str
) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes("\r\n".join(delimiter.join(r) for r in ROWS).encode(encoding) + b"\r\n")
    res = _load(engine, path)
    assert (res.rows_read, res.loaded, res.rejected) == (2, 2, 0)
    assert res.delimiter == delimiter and res.encoding == encoding
    assert res.phone_column == "Телефон" and res.name_column == "ФИО"
    got = {c.phone: (c.name, c.fields) for c in _contacts(engine)}
    assert got == {"+447911123456": ("Иван Петров", {"Город": "Москва"}),
                   "+447911123457": ("Анна", {"Город": "Тверь"})}  # fmt: skip


def test_xlsx_with_numbers_as_numbers(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.xlsx"
    pd.DataFrame(
        {
            "Mobile": [447911123456, "07911 123457", 4.42079e11, None, "4.42079E+11"],
            "Name": ["A", "B", "C", "D", "E"],
        }
    ).to_excel(path, index=False)
    res = _load(engine, path)
    assert (res.rows_read, res.loaded, res.rejected) == (5, 3, 2)
    rej = {r["line"]: r["reason"] for r in _rejects(res)}
    # A numeric cell holds its exact value (however Excel displays it); only text in E notation lost digits.
    assert rej == {"5": "empty phone number", "6": "number mangled by Excel (scientific notation)"}
    assert sorted(c.phone for c in _contacts(engine)) == ["+442079000000", "+447911123456", "+447911123457"]


def test_quoted_fields_with_newlines_keep_original_line_numbers(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        'phone,name,notes\n+447911123456,Ann,"two\nlines"\n+447911123457,Bob,"three\nline\nnote"\n'
        "12345,Bad,x\n+447911123456,Ann again,dup\n",
        encoding="utf-8",
    )
    res = _load(engine, path)
    assert (res.rows_read, res.loaded, res.rejected) == (4, 2, 2)
    rej = _rejects(res)
    assert [(r["line"], r["reason"], r["phone"]) for r in rej] == [
        ("7", "invalid number", "12345"),
        ("8", "duplicate of line 2", "+447911123456"),
    ]
    assert {c.phone: c.source_line for c in _contacts(engine)} == {"+447911123456": 2, "+447911123457": 4}
    assert _contacts(engine)[1].fields["notes"] == "three\nline\nnote"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("8 (495) 123-45-67", "RU", "+74951234567"),
        ("+7 495 1234567", "GB", "+74951234567"),
        ("0044 20 7946 0000", "GB", "+442079460000"),
        ("tel:+442079460000", "GB", "+442079460000"),
        ("4.42079460000E+11", "GB", "+442079460000"),
        ("447911123456", "GB", "+447911123456"),
        ("+1 (212) 555-0199", "GB", None),
        ("4.42079E+11", "GB", "number mangled by Excel (scientific notation)"),
        ("12", "GB", "invalid number"),
        ("+999 123", "GB", "invalid number"),
    ],
)
def test_number_formats(tmp_path: Path, raw: str, region: str, expected: str | None) -> None:
    e = db.open_database(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        with db.session_scope(e) as s:
            campaigns.create_campaign(s, "c", "100", region=region)
        path = tmp_path / "n.csv"
        pd.DataFrame({"phone": [raw]}).to_csv(path, index=False)
        res = _load(e, path)
        if expected is None:  # 555-01xx is fictional but phonenumbers calls it valid: loaded
            assert res.loaded == 1
        elif expected.startswith("+"):
            assert res.loaded == 1, res.reasons
            assert _contacts(e)[0].phone == expected
        else:
            assert res.reasons == {expected: 1}
    finally:
        e.dispose()


def test_blank_lines_are_skipped_not_counted(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("\n\nphone,name\n\n+447911123456,Ann\n   \n\n+447911123457,Bob\n,\n\n", encoding="utf-8")
    res = _load(engine, path)
    assert (res.rows_read, res.loaded, res.rejected) == (2, 2, 0)
    assert {c.phone: c.source_line for c in _contacts(engine)} == {"+447911123456": 5, "+447911123457": 8}


def test_header_only_file_loads_nothing(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone,name\n", encoding="utf-8")
    res = _load(engine, path)
    assert (res.rows_read, res.loaded, res.rejected, res.rejects_path) == (0, 0, 0, None)


def test_headerless_file_finds_the_phone_column(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("Ann,+447911123456\nBob,07911 123457\n", encoding="utf-8")
    res = _load(engine, path)
    assert (res.rows_read, res.loaded, res.phone_column) == (2, 2, "column2")
    assert _contacts(engine)[0].source_line == 1


def test_a_10000_character_field_is_kept(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    long = "x" * 10_000
    path.write_text(f'phone,notes\n+447911123456,"{long}"\n+447911123457,short\n', encoding="utf-8")
    res = _load(engine, path)
    assert (res.rows_read, res.loaded) == (2, 2)
    assert _contacts(engine)[0].fields["notes"] == long


def test_timezone_and_region_columns(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone,country,timezone\n8 (495) 123-45-67,RU,\n+12125550199,,America/Chicago\n"
                    "+447911123456,,Mars/Olympus\n", encoding="utf-8")  # fmt: skip
    res = _load(engine, path)
    assert (res.loaded, res.rejected) == (2, 1)
    assert res.reasons == {"unknown time zone in the timezone column": 1}
    got = {c.phone: c.timezones for c in _contacts(engine)}
    assert got == {"+74951234567": ["Europe/Moscow"], "+12125550199": ["America/Chicago"]}


def test_numbers_never_callable_in_the_window_are_rejected(tmp_path: Path) -> None:
    e = db.open_database(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with db.session_scope(e) as s:
            campaigns.create_campaign(s, "c", "100", region="GB", window="09:00-12:00")
        path = tmp_path / "list.csv"
        # A Russian mobile may be anywhere from Kaliningrad (UTC+2) to Kamchatka (UTC+12): no common 3 hours.
        path.write_text("phone\n+7 912 345 67 89\n+44 7911 123456\n", encoding="utf-8")
        res = _load(e, path)
        assert res.reasons == {"not callable in any window": 1} and res.loaded == 1
    finally:
        e.dispose()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"\x00\x01\x02\x03binary\x00\xff" * 50, "binary"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "binary"),
        (b"phone\n\x81\x98\x98\xff\xfe\x81\n", "decode"),
    ],
)
def test_unreadable_files_get_a_one_line_error(tmp_path: Path, cli: Cli, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    res = cli("campaign", "load", str(path), "--campaign", "c", "--from", "100")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr


def test_missing_file_and_unknown_column_are_one_line_errors(tmp_path: Path, cli: Cli) -> None:
    res = cli("campaign", "load", str(tmp_path / "nope.csv"), "--campaign", "c", "--from", "100")
    assert res.returncode == 1 and "no such file" in res.stderr and "Traceback" not in res.stderr
    path = tmp_path / "l.csv"
    path.write_text("phone\n+447911123456\n", encoding="utf-8")
    res = cli("campaign", "load", str(path), "--campaign", "c", "--phone-column", "mobile")
    assert res.returncode == 1 and "no campaign named 'c'" in res.stderr  # the failed load left no campaign
    res = cli("campaign", "load", str(path), "--campaign", "c", "--from", "1", "--phone-column", "mobile")
    assert res.returncode == 1 and "no phone column 'mobile'" in res.stderr, res.stderr


def test_rejects_file_never_holds_a_live_formula(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        "phone,name,=HYPERLINK(\"x\")\n=cmd|' /C calc'!A0,@SUM(1;2),+1+1\n12345,-2+3,-3.5\n", encoding="utf-8"
    )
    res = _load(engine, path)
    assert res.rejected == 2
    with open(res.rejects_path or "", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["line", "reason", "phone", "name", "'=HYPERLINK(\"x\")"]
    assert rows[1][2:] == ["'=cmd|' /C calc'!A0", "'@SUM(1;2)", "'+1+1"]
    assert rows[2][2:] == ["12345", "'-2+3", "-3.5"]  # a plain number stays as it is


def test_a_file_mixing_utf8_and_windows_1251_is_decoded_line_by_line(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes("phone,name\n+447911123456,José\n".encode() + "+447911123457,Иван Петров\n".encode("cp1251"))
    res = _load(engine, path)
    assert res.loaded == 2 and res.encoding == "utf-8+cp1251 (line by line)"
    assert sorted(c.name or "" for c in _contacts(engine)) == ["José", "Иван Петров"]


def test_a_line_neither_utf8_nor_clearly_windows_1251_is_refused_with_its_number(
    engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        "phone,name\n+447911123456,José\n".encode()
        + "+447911123457,Иван\n".encode("cp1251")
        + "+447911123458,Ünïcödé\n".encode("latin-1")
        + b"+447911123459,\x98\n"
    )
    with pytest.raises(loader.LoaderError, match=r"line\(s\) 4, 5 are neither UTF-8 nor clearly Windows-1251"):
        loader.load_file(engine, path, "c")
    assert _contacts(engine) == []


def test_ragged_rows_are_rejected_with_a_reason_not_cut(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("phone,name\n+447911123456,Ann,extra,more\n+447911123457,Bob\n", encoding="utf-8")
    res = _load(engine, path)
    assert (res.loaded, res.rejected) == (1, 1)
    (row,) = _rejects(res)
    assert row["line"] == "2" and "field" in row["reason"] and "extra" in ",".join(row.values())


def test_wide_and_bloated_rows_are_capped_with_a_warning(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    header = ["phone", "name", *(f"c{i}" for i in range(3000))]
    rows = [header, ["+447911123456", "N" * 20_000, *("x" * 12_000 if i == 0 else str(i) for i in range(3000))]]
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    res = _load(engine, path)
    assert res.loaded == 1
    assert any("3,000 custom columns: kept the first 200" in w and "'c200'" in w for w in res.warnings)
    assert any("2 field(s) longer than 10,000 characters were cut" in w for w in res.warnings)
    (contact,) = _contacts(engine)
    assert len(contact.fields) == loader.MAX_CUSTOM_COLUMNS and "c200" not in contact.fields
    assert len(contact.fields["c0"]) == 10_000 and len(contact.name or "") == 10_000
