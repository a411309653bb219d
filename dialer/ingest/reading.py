"""Reading a contact file (CSV or XLSX, as a CRM or Excel exported it) into a table of string cells, and finding
its phone, name and other columns.

Invariant: every data row of the file is a row of the table, with the physical line (or spreadsheet row) it
started on; a row the parser cannot fit under the header is kept and flagged (``Table.ragged``), never dropped.
A file that cannot be read at all raises ``LoaderError`` with a one-line message for the operator.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

PHONE_HEADERS = (
    "phone", "phonenumber", "phone_number", "number", "mobile", "mobilephone", "mobilenumber", "cell",
    "cellphone", "msisdn", "tel", "telephone", "telnumber", "e164", "contactnumber", "телефон", "номер",
    "номертелефона", "мобильный", "мобильныйтелефон", "сотовый", "тел",
)  # fmt: skip
NAME_HEADERS = ("name", "fullname", "contactname", "customer", "customername", "client", "clientname",
                "имя", "фио", "клиент", "контакт", "названиеклиента")  # fmt: skip
FIRST_NAME_HEADERS = ("firstname", "givenname", "first", "имя")
LAST_NAME_HEADERS = ("lastname", "surname", "familyname", "last", "фамилия")
TZ_HEADERS = ("timezone", "tz", "timezoneiana", "часовойпояс")
REGION_HEADERS = ("region", "country", "countrycode", "страна")
PRIORITY_HEADERS = ("priority", "приоритет")

# pandas reports rows it could not fit under the header in warnings, not errors: these are the two shapes.
_SKIPPED = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")
_TRUNCATED = "does not match length of data"


class LoaderError(Exception):
    """The file cannot be read at all; the message is one line for the operator."""


@dataclass
class Table:
    """A parsed file: string cells, the physical line each row started on, how it was read.

    ``extra_columns`` hold the values of rows with more fields than the header (flagged in ``ragged``): they
    exist so those rows reach the rejects file whole; they are not contact fields."""

    frame: pd.DataFrame
    lines: pd.Series
    encoding: str
    delimiter: str
    has_header: bool
    blank_lines: int = 0
    ragged: pd.Series | None = None
    extra_columns: list[str] = field(default_factory=list)


# --- reading -----------------------------------------------------------------------------------------------


def _key(header: str) -> str:
    return re.sub(r"[\W_]+", "", str(header).strip().lower())


def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding) for UTF-8 (with or without BOM), UTF-16 with a BOM, Windows-1251, or UTF-8 and
    Windows-1251 mixed line by line (``_decode_lines``); LoaderError otherwise."""
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise LoaderError(
                f"the file starts with a UTF-8 BOM but is not valid UTF-8 (byte {exc.start})"
            ) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        enc = "utf-16"
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError:
            raise LoaderError(
                "the file looks like UTF-16 but cannot be decoded; save it as UTF-8 CSV"
            ) from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    return _decode_lines(data)


MIXED_ENCODING = "utf-8+cp1251 (line by line)"
_EOL = re.compile(rb"(\r\n|\r|\n)")
_CYRILLIC = re.compile("[\u0400-\u04ff]")


def _decode_lines(data: bytes) -> tuple[str, str]:
    """A file that is not UTF-8 as a whole, decoded line by line: Windows-1251, or a mix of UTF-8 and
    Windows-1251 lines (two exports pasted together). A line that is not UTF-8 is taken as Windows-1251 only when
    that reading is unambiguous (``_plain_cyrillic``); otherwise the file is refused with those line numbers:
    never silently misread (``José`` must not become ``JosГ©``, nor Latin-1 ``Ünïcödé`` become ``Ьnпcцdй``)."""
    parts = _EOL.split(data)
    texts: list[str] = []
    utf8_lines = 0
    bad: list[int] = []
    for i, part in enumerate(parts):
        if i % 2:  # a line ending
            texts.append(part.decode("ascii"))
            continue
        try:
            line = part.decode("utf-8")
            utf8_lines += any(b >= 0x80 for b in part)
        except UnicodeDecodeError:
            try:
                line = part.decode("cp1251")
            except UnicodeDecodeError:
                line = ""
                bad.append(i // 2 + 1)
            else:
                if not _plain_cyrillic(line):
                    bad.append(i // 2 + 1)
        texts.append(line)
    if bad:
        shown = ", ".join(str(n) for n in bad[:20]) + (f" and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise LoaderError(
            f"cannot decode the file: line(s) {shown} are neither UTF-8 nor clearly Windows-1251 (Cyrillic); "
            "fix them or save the file as UTF-8 CSV"
        )
    return "".join(texts), MIXED_ENCODING if utf8_lines else "cp1251"


def _plain_cyrillic(line: str) -> bool:
    """Printable, with Cyrillic letters, and no word mixing Latin and Cyrillic letters (``Ьnпcцdй`` is Latin-1
    read as Windows-1251)."""
    if not _CYRILLIC.search(line) or not all(ch.isprintable() or ch == "\t" for ch in line):
        return False
    return not any(_LATIN.search(word) and _CYRILLIC.search(word) for word in re.findall(r"[^\W\d_]+", line))


_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")


def sniff_delimiter(text: str) -> str:
    """The delimiter among , ; tab | that splits the first lines most consistently."""
    lines = [ln for ln in text[:100_000].split("\n") if ln.strip()][:50]
    if not lines:
        return ","
    best, best_score = ",", -1.0
    for delim in (",", ";", "\t", "|"):
        try:
            counts = [len(row) - 1 for row in csv.reader(lines, delimiter=delim)]
        except csv.Error:  # a quoted field longer than the csv module allows: not this delimiter's fault
            counts = [ln.count(delim) for ln in lines]
        if not counts or counts[0] == 0:
            continue
        consistent = sum(1 for c in counts if c == counts[0]) / len(counts)
        score = consistent * 10 + min(counts[0], 50) / 50
        if score > best_score:
            best, best_score = delim, score
    return best


def _looks_like_phone(value: str) -> bool:
    digits = re.sub(r"\D", "", str(value))
    return 7 <= len(digits) <= 17 and len(digits) >= 0.6 * len(str(value).strip())


def read_table(path: Path) -> Table:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LoaderError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LoaderError(f"{path}: is a directory, not a CSV or XLSX file") from None
    except OSError as exc:
        raise LoaderError(f"{path}: cannot read it ({exc.strerror})") from None
    if not data.strip():
        raise LoaderError(f"{path}: the file is empty")
    if data.startswith(b"PK\x03\x04"):
        return _read_xlsx(path)
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise LoaderError(f"{path}: old Excel .xls files are not supported; save it as .xlsx or CSV")
    if re.match(rb"(?:\xef\xbb\xbf)?\s*<(?:!doctype|html|\?xml|table)", data[:1024], re.IGNORECASE):
        # CRMs often export an HTML or XML table named .xls: Excel opens it, we cannot.
        raise LoaderError(
            f"{path}: is a web page or XML, not CSV or XLSX; open it in Excel and save it as .xlsx or CSV"
        )
    if b"\x00" in data[:65536] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise LoaderError(f"{path}: looks like a binary file, not CSV or XLSX")
    text, encoding = decode(data)
    del data
    if "\r" in text:
        # Old Mac files end lines with a bare CR: make every line end a LF, so line numbers count them too.
        text = re.sub(r"\r(?!\n)", "\n", text)
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise LoaderError(
            f"{path}: line {line} holds a NUL byte (binary data); remove it or export the file again"
        )
    if not text.strip():
        raise LoaderError(f"{path}: the file is empty")
    delimiter = sniff_delimiter(text)
    return _parse_csv(text, encoding, delimiter)


def _first_lines(text: str) -> tuple[int, str]:
    """(number of blank lines before the first non-blank one, that line)."""
    lead, pos = 0, 0
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        line = text[pos:end]
        if line.strip():
            return lead, line.rstrip("\r")
        lead += 1
        pos = end + 1
    return lead, ""


def _read_csv(
    text: str, delimiter: str, has_header: bool, lead: int, width: int | None
) -> tuple[pd.DataFrame, int]:
    """The frame and, when some rows did not fit under the header, the most fields any of them had (else 0)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            frame = pd.read_csv(
                io.StringIO(text),
                sep=delimiter,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=False,
                # Wide enough for every row: the header line is skipped and named from the first read.
                header=0 if has_header and not width else None,
                names=list(range(width)) if width else None,
                skiprows=lead + 1 if has_header and width else lead,
                engine="c",
                on_bad_lines="warn",
                index_col=False,
            )
        except pd.errors.EmptyDataError:
            raise LoaderError("the file has no rows") from None
        except (pd.errors.ParserError, ValueError, OverflowError, MemoryError) as exc:
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            if m := re.search(r"EOF inside string starting at row (\d+)", msg):
                line = int(m.group(1)) + 1  # pandas counts rows from the top of the file, from 0
                msg = f"a quote opened on or after line {line} is never closed; fix the quotes or export it again"
            raise LoaderError(f"cannot parse the file as CSV: {msg}") from None
    widest = 0
    for w in caught:
        message = str(w.message)
        widest = max([widest, *(int(m.group(3)) for m in _SKIPPED.finditer(message))])
        if _TRUNCATED in message:
            widest = max(widest, frame.shape[1] + 1)
    return frame, widest


def _max_fields(text: str, delimiter: str) -> int:
    """The most fields any record has (quoted fields may hold delimiters and newlines)."""
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)  # a long notes field is data, not an error
    try:
        return max((len(r) for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)), default=0)
    except csv.Error:
        return max((ln.count(delimiter) + 1 for ln in text.split("\n")), default=0)
    finally:
        csv.field_size_limit(limit)


def _parse_csv(text: str, encoding: str, delimiter: str) -> Table:
    lead, first_line = _first_lines(text)
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        header_cells = next(csv.reader([first_line], delimiter=delimiter), [])
    except csv.Error:
        header_cells = first_line.split(delimiter)
    finally:
        csv.field_size_limit(limit)
    has_header = not any(_looks_like_phone(c) for c in header_cells)
    quoted = '"' in text
    frame, widest = _read_csv(text, delimiter, has_header, lead, None)
    ragged: pd.Series | None = None
    extra: list[str] = []
    if widest:
        # Some rows have more fields than the header: read again wide enough for all of them, so that none is
        # lost; those with values beyond the header are flagged and end up in the rejects file.
        header = list(frame.columns)
        width = max(widest, _max_fields(text, delimiter), len(header))
        frame, still = _read_csv(text, delimiter, has_header, lead, width)
        if still:
            raise LoaderError("cannot split the rows into fields consistently; check the file's quotes")
        named = len(header) if has_header else width
        extra = [f"extra{i + 1}" for i in range(width - named)]
        frame.columns = [*header[:named], *extra] if has_header else list(range(width))
        frame = frame.fillna("")
        if extra:
            ragged = (frame[extra] != "").any(axis=1)
    if not has_header:
        frame.columns = [f"column{i + 1}" for i in range(frame.shape[1])]
    else:
        frame.columns = [*_unique_headers(frame.columns[: frame.shape[1] - len(extra)]), *extra]
    frame = frame.fillna("")
    start = lead + (2 if has_header else 1)
    lines = pd.Series(range(start, start + len(frame)), index=frame.index, dtype="int64")
    if quoted:
        # A quoted field may hold newlines: each row starts after all the newlines of the rows before it.
        newlines = pd.Series(0, index=frame.index, dtype="int64")
        for c in frame.columns:
            col_ = frame[c]
            has = col_.str.contains("\n", regex=False)
            if has.any():
                newlines = newlines + col_.str.count("\n").where(has, 0)
        lines = lines + newlines.cumsum().shift(1, fill_value=0)
    return Table(frame, lines, encoding, delimiter, has_header, ragged=ragged, extra_columns=extra)


def _unique_headers(cols: Any) -> list[str]:
    out: list[str] = []
    seen: Counter[str] = Counter()
    for i, c in enumerate(cols):
        name = str(c).strip() or f"column{i + 1}"
        if name.startswith("Unnamed: "):
            name = f"column{i + 1}"
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _read_xlsx(path: Path) -> Table:
    try:
        raw = pd.read_excel(path, dtype=object, header=None, engine="openpyxl")
    except Exception as exc:  # openpyxl raises many types for corrupt files
        raise LoaderError(
            f"{path}: cannot read it as XLSX ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    if raw.empty:
        raise LoaderError(f"{path}: the spreadsheet is empty")
    cells = raw.map(_xlsx_cell)
    # Excel row numbers are the "line numbers" of a spreadsheet; skip leading empty rows.
    nonblank = cells.apply(lambda r: any(v.strip() for v in r), axis=1)
    first = int(nonblank.to_numpy().argmax())
    header_cells = list(cells.iloc[first])
    has_header = not any(_looks_like_phone(c) for c in header_cells)
    body = cells.iloc[first + 1 :] if has_header else cells.iloc[first:]
    body = body.reset_index(drop=True)
    if has_header:
        body.columns = _unique_headers(header_cells)
    else:
        body.columns = [f"column{i + 1}" for i in range(body.shape[1])]
    start = first + (2 if has_header else 1)
    lines = pd.Series(range(start, start + len(body)), index=body.index, dtype="int64")
    return Table(body, lines, "xlsx", "", has_header)


def _xlsx_cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e17:
        return str(int(v))
    return str(v)


# --- column mapping ----------------------------------------------------------------------------------------


def find_column(columns: list[str], keys: tuple[str, ...]) -> str | None:
    by_key = {_key(c): c for c in reversed(columns)}
    for k in keys:
        if k in by_key:
            return by_key[k]
    return None


def pick_column(table: Table, wanted: str | None, what: str, keys: tuple[str, ...]) -> str | None:
    cols = _data_columns(table)
    if wanted:
        if wanted in cols:
            return wanted
        by_key = {_key(c): c for c in cols}
        if _key(wanted) in by_key:
            return by_key[_key(wanted)]
        if wanted.isdigit() and 1 <= int(wanted) <= len(cols):
            return cols[int(wanted) - 1]
        raise LoaderError(f"no {what} column {wanted!r}; the columns are: {_shown(cols)}")
    return find_column(cols, keys)


def _shown(cols: list[str]) -> str:
    """Column names for a one-line message: the first 20, each cut to 40 characters."""
    names = [c if len(c) <= 40 else c[:39] + "…" for c in cols[:20]]
    return ", ".join(names) + (f" and {len(cols) - 20} more" if len(cols) > 20 else "")


def _data_columns(table: Table) -> list[str]:
    return [str(c) for c in table.frame.columns if c not in table.extra_columns]


def find_phone_column(table: Table, wanted: str | None) -> str:
    found = pick_column(table, wanted, "phone", PHONE_HEADERS)
    if found:
        return found
    cols = _data_columns(table)
    for c in cols:
        if "phone" in _key(c) or "телефон" in _key(c):
            return c
    # No header names a phone column: take the column whose values look most like numbers.
    sample = table.frame.head(200)
    scores = {c: sum(_looks_like_phone(v) for v in sample[c]) for c in cols}
    best = max(scores, key=lambda c: scores[c]) if scores else None
    if best is None or scores[best] == 0:
        raise LoaderError(f"cannot find the phone column (columns: {_shown(cols)}); pass --phone-column NAME")
    return best
