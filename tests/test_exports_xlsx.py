"""The XLSX export read back with openpyxl: sheets, chart, inert formula text, local times, sheet overflow."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

import openpyxl
import pytest

from dialer.reporting.reports import Report, build_report
from dialer.reporting.xlsx_export import export_xlsx
from tests.test_reports_build import CAMPAIGN, EVIL_NAME, NOW, TZ, Sample, build_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    s = build_sample(tmp_path_factory.mktemp("xlsx"))
    yield s
    s.engine.dispose()


@pytest.fixture(scope="module")
def report(sample: Sample) -> Report:
    return build_report(sample.engine, CAMPAIGN, now=NOW)


@pytest.fixture(scope="module")
def book_path(sample: Sample, report: Report, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("out") / "report.xlsx"
    rows: list[int] = []
    export_xlsx(sample.engine, report, path, progress=rows.append)
    assert sum(rows) == report.contacts_total + report.attempts_total
    return path


def rows_of(ws: openpyxl.worksheet.worksheet.Worksheet) -> list[dict[str, object]]:
    values = list(ws.iter_rows(values_only=True))
    header = [str(h) for h in values[0]]
    return [dict(zip(header, row, strict=True)) for row in values[1:]]


def test_sheets_and_summary(book_path: Path, report: Report) -> None:
    wb = openpyxl.load_workbook(book_path)
    assert wb.sheetnames == ["Summary", "Contacts", "Attempts", "Hourly", "Agents", "Dispositions"]
    summary = {row[2]: (row[0], row[1]) for row in wb["Summary"].iter_rows(min_row=2, values_only=True)}
    assert summary["timezone"][1] == TZ
    assert summary["abandon_rate"][1] == pytest.approx(0.4)
    assert summary["calls_placed"][1] == 7 and summary["contacts_reached"][1] == 3
    assert summary["occupancy"][1] == pytest.approx(0.38)
    # The report time is a real Excel datetime, in New York time, and its label names the zone.
    label, value = summary["generated_at"]
    assert value == datetime(2026, 11, 26, 7, 0) and TZ in str(label)
    rate_cell = next(c for c in wb["Summary"]["C"] if c.value == "abandon_rate")
    assert wb["Summary"].cell(rate_cell.row, 2).number_format == "0.0%"


def test_formula_text_stays_inert(book_path: Path) -> None:
    wb = openpyxl.load_workbook(book_path)
    contacts = wb["Contacts"]
    header = [c.value for c in contacts[1]]
    name_cell = contacts.cell(2, header.index("name") + 1)
    assert name_cell.value == EVIL_NAME and name_cell.data_type == "s"
    bob = contacts.cell(3, header.index("account") + 1)
    assert bob.value == "=1+2" and bob.data_type == "s"
    for ws in wb:
        assert not ws._hyperlinks  # no link was made from '=HYPERLINK(...)' or anything else
        assert all(c.data_type != "f" for row in ws.iter_rows() for c in row)
    with zipfile.ZipFile(book_path) as z:
        sheets = [n for n in z.namelist() if n.startswith("xl/worksheets/sheet")]
        assert len(sheets) == 6
        for n in sheets:
            xml = z.read(n).decode()
            assert "<f>" not in xml
            ElementTree.fromstring(xml)  # well-formed, escapes and all


def test_contacts_sheet_has_input_fields_and_outcomes(book_path: Path) -> None:
    rows = rows_of(openpyxl.load_workbook(book_path)["Contacts"])
    assert len(rows) == 8
    bob = rows[1]
    assert (bob["phone"], bob["name"], bob["account"], bob["city"]) == (
        "+12025550102",
        "Bob",
        "=1+2",
        "@SUM(A1)",
    )
    assert (bob["final_state"], bob["state"], bob["attempts"]) == ("reached", "done", 2)
    assert rows[2]["note"] == "x" and rows[2]["final_state"] == "exhausted"
    # XML-special characters and a leading space survive; a control character is kept in Excel's _xHHHH_ escape.
    assert rows[3]["memo"] in (" a & b <c>\x01", " a & b <c>_x0001_")
    assert rows[3]["score"] == 7  # a number in the input stays a number
    assert [r["final_state"] for r in rows[4:]] == ["invalid", "pending", "pending", "dnc"]


def test_times_are_local_excel_datetimes(book_path: Path) -> None:
    wb = openpyxl.load_workbook(book_path)
    attempts = rows_of(wb["Attempts"])
    key = f"call_time ({TZ})"
    assert key in attempts[0]
    # 04:30 UTC on the 26th is 23:30 on the 25th in New York; 14:00 UTC on 1 October is 10:00 (EDT).
    assert attempts[0][key] == datetime(2026, 11, 25, 23, 30)
    assert attempts[3][key] == datetime(2026, 11, 25, 23, 50)  # no Zadarma time: when it was sent
    assert attempts[5][key] == datetime(2026, 10, 1, 10, 0)
    assert wb["Attempts"]["D2"].is_date
    assert (attempts[1]["answered"], attempts[1]["connected"], attempts[1]["abandoned"]) == (
        True,
        False,
        True,
    )
    assert attempts[7]["error"] == "bad number" and attempts[7]["answered"] is None
    hourly = rows_of(wb["Hourly"])
    assert [h[f"hour ({TZ})"] for h in hourly] == [
        datetime(2026, 10, 1, 10),
        datetime(2026, 11, 10, 10),
        datetime(2026, 11, 25, 23),
        datetime(2026, 11, 26, 0),
    ]
    assert [(h["answered"], h["abandoned"]) for h in hourly] == [(1, 0), (1, 1), (1, 0), (2, 1)]


def test_native_chart_of_answers_and_abandons_on_hourly(book_path: Path) -> None:
    with zipfile.ZipFile(book_path) as z:
        names = z.namelist()
        assert "xl/charts/chart1.xml" in names
        chart = z.read("xl/charts/chart1.xml").decode()
        # The Hourly sheet is the fourth: its drawing holds the chart.
        rels = z.read("xl/worksheets/_rels/sheet4.xml.rels").decode()
        drawing = re.search(r'Target="\.\./drawings/(drawing\d+\.xml)"', rels)
        assert drawing is not None
        assert "chart1.xml" in z.read(f"xl/drawings/_rels/{drawing.group(1)}.rels").decode()
    assert "<c:barChart>" in chart
    assert "Hourly!$A$2:$A$5" in chart  # categories: the four hours
    assert "Hourly!$C$2:$C$5" in chart and "Hourly!$E$2:$E$5" in chart  # answered, abandoned
    assert "Hourly!$C$1" in chart and "Hourly!$E$1" in chart


def test_timezone_override_moves_times(sample: Sample, tmp_path: Path) -> None:
    report = build_report(sample.engine, CAMPAIGN, now=NOW, tz="Asia/Kolkata")
    path = export_xlsx(sample.engine, report, tmp_path / "kolkata.xlsx")
    attempts = rows_of(openpyxl.load_workbook(path)["Attempts"])
    assert attempts[0]["call_time (Asia/Kolkata)"] == datetime(2026, 11, 26, 10, 0)  # UTC+05:30


def test_long_tables_continue_on_further_sheets(sample: Sample, report: Report, tmp_path: Path) -> None:
    path = export_xlsx(sample.engine, report, tmp_path / "small.xlsx", max_rows=4)  # header + 3 rows a sheet
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == [
        "Summary",
        "Contacts",
        "Contacts (2)",
        "Contacts (3)",
        "Attempts",
        "Attempts (2)",
        "Attempts (3)",
        "Hourly",  # an hour a row: never near the limit
        "Agents",
        "Dispositions",
    ]
    contacts = [r for name in ("Contacts", "Contacts (2)", "Contacts (3)") for r in rows_of(wb[name])]
    assert [r["contact_id"] for r in contacts] == list(range(1, 9))
    assert [wb[n].max_row for n in ("Contacts", "Contacts (2)", "Contacts (3)")] == [4, 4, 3]
    attempts = [r for name in ("Attempts", "Attempts (2)", "Attempts (3)") for r in rows_of(wb[name])]
    assert [r["attempt_id"] for r in attempts] == list(range(1, 10))
    assert wb["Contacts (2)"]["A1"].value == "contact_id"  # every part has its header
    with pytest.raises(ValueError):
        export_xlsx(sample.engine, report, tmp_path / "bad.xlsx", max_rows=1)


def test_empty_campaign_still_has_every_sheet(sample: Sample, tmp_path: Path) -> None:
    report = build_report(sample.engine, "other", now=NOW)
    path = export_xlsx(sample.engine, report, tmp_path / "empty.xlsx")
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Summary", "Contacts", "Attempts", "Hourly", "Agents", "Dispositions"]
    assert wb["Agents"].max_row == 1 and wb["Agents"]["B1"].value == "login"  # the header of a team of none
    assert wb["Contacts"].max_row == 1 and wb["Attempts"]["A1"].value == "attempt_id"


def test_a_sheet_too_big_for_a_plain_zip_member_is_written_as_zip64(
    sample: Sample, report: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A million contacts of 20 fields make a sheet XML past 2 GiB, which zipfile refuses without zip64 (found by
    benchmarks/bench_report_memory.py); here the threshold is lowered so every sheet takes that path."""
    import dialer.reporting.xlsx_export as xlsx

    monkeypatch.setattr(xlsx, "_ZIP64_CELLS", 0)
    path = export_xlsx(sample.engine, report, tmp_path / "zip64.xlsx")
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
    book = openpyxl.load_workbook(path, read_only=True)
    assert len(rows_of(book["Contacts"])) == report.contacts_total
