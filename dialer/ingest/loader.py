"""Contact lists (CSV or XLSX, as a CRM or Excel exported them) -> contact rows, and a rejects report.

Nothing is lost: every data row is either loaded or written to the rejects CSV with its original line number,
its original values and the reason, and ``loaded + rejected == rows_read`` always. Blank lines are not rows.

Speed (1,000,000 rows in well under 30 s): pandas parses the file, numbers are normalised once per distinct raw
string with ``phones.normalize_many``, and rows are inserted with the DB-API ``executemany`` in chunks, values
pre-serialised (no ORM object per row).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from dialer.db import session_scope
from dialer.ingest import campaigns, phones
from dialer.models import Campaign, Contact, utcnow
from dialer.outcomes.states import ContactState

Progress = Callable[[str, int, int], None]  # (stage, done, total)

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

CHUNK = 50_000


class LoaderError(Exception):
    """The file cannot be read at all; the message is one line for the operator."""


@dataclass
class LoadResult:
    campaign: str
    path: str
    rows_read: int = 0
    loaded: int = 0
    rejected: int = 0
    blank_lines: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    rejects_path: str | None = None
    phone_column: str = ""
    name_column: str | None = None
    encoding: str = ""
    delimiter: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "file": self.path,
            "rows_read": self.rows_read,
            "loaded": self.loaded,
            "rejected": self.rejected,
            "blank_lines": self.blank_lines,
            "reasons": dict(self.reasons.most_common()),
            "rejects_file": self.rejects_path,
            "phone_column": self.phone_column,
            "name_column": self.name_column,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
        }


@dataclass
class Table:
    """A parsed file: string cells, the physical line each row started on, how it was read."""

    frame: pd.DataFrame
    lines: pd.Series
    encoding: str
    delimiter: str
    has_header: bool
    blank_lines: int = 0


# --- reading -----------------------------------------------------------------------------------------------


def _key(header: str) -> str:
    return re.sub(r"[\W_]+", "", str(header).strip().lower())


def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding) for UTF-8 (with or without BOM) or Windows-1251; LoaderError otherwise."""
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
    try:
        text = data.decode("cp1251")
    except UnicodeDecodeError:
        raise LoaderError(
            "cannot decode the file: it is neither UTF-8 nor Windows-1251; save it as UTF-8 CSV"
        ) from None
    sample = text[:200_000]
    plausible = sum(1 for ch in sample if ch.isprintable() or ch in "\r\n\t")
    cyr = sum(1 for ch in sample if "\u0400" <= ch <= "\u04ff")
    if plausible < 0.98 * len(sample) or (cyr == 0 and any(b >= 0x80 for b in data[:200_000])):
        raise LoaderError(
            "cannot decode the file: it is neither UTF-8 nor Windows-1251; save it as UTF-8 CSV"
        )
    return text, "cp1251"


def sniff_delimiter(text: str) -> str:
    """The delimiter among , ; tab | that splits the first lines most consistently."""
    lines = [ln for ln in text[:100_000].splitlines() if ln.strip()][:50]
    if not lines:
        return ","
    best, best_score = ",", -1.0
    for delim in (",", ";", "\t", "|"):
        counts = []
        for row in csv.reader(lines, delimiter=delim):
            counts.append(len(row) - 1)
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
    if b"\x00" in data[:65536] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise LoaderError(f"{path}: looks like a binary file, not CSV or XLSX")
    text, encoding = decode(data)
    del data
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


def _parse_csv(text: str, encoding: str, delimiter: str) -> Table:
    lead, first_line = _first_lines(text)
    header_cells = next(csv.reader([first_line], delimiter=delimiter))
    has_header = not any(_looks_like_phone(c) for c in header_cells)
    quoted = '"' in text
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            header=0 if has_header else None,
            skiprows=lead,
            engine="c",
            on_bad_lines="warn",
            index_col=False,
        )
    except pd.errors.EmptyDataError:
        raise LoaderError("the file has no rows") from None
    except (pd.errors.ParserError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise LoaderError(f"cannot parse the file as CSV: {msg}") from None
    del text
    if not has_header:
        frame.columns = [f"column{i + 1}" for i in range(frame.shape[1])]
    else:
        frame.columns = _unique_headers(frame.columns)
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
    return Table(frame, lines, encoding, delimiter, has_header)


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


def _find(columns: list[str], keys: tuple[str, ...]) -> str | None:
    by_key = {_key(c): c for c in reversed(columns)}
    for k in keys:
        if k in by_key:
            return by_key[k]
    return None


def pick_column(table: Table, wanted: str | None, what: str, keys: tuple[str, ...]) -> str | None:
    cols = list(table.frame.columns)
    if wanted:
        if wanted in cols:
            return wanted
        by_key = {_key(c): c for c in cols}
        if _key(wanted) in by_key:
            return by_key[_key(wanted)]
        if wanted.isdigit() and 1 <= int(wanted) <= len(cols):
            return cols[int(wanted) - 1]
        raise LoaderError(f"no {what} column {wanted!r}; the columns are: {', '.join(cols)}")
    return _find(cols, keys)


def find_phone_column(table: Table, wanted: str | None) -> str:
    found = pick_column(table, wanted, "phone", PHONE_HEADERS)
    if found:
        return found
    cols = list(table.frame.columns)
    for c in cols:
        if "phone" in _key(c) or "телефон" in _key(c):
            return c
    # No header names a phone column: take the column whose values look most like numbers.
    sample = table.frame.head(200)
    scores = {c: sum(_looks_like_phone(v) for v in sample[c]) for c in cols}
    best = max(scores, key=lambda c: scores[c]) if scores else None
    if best is None or scores[best] == 0:
        raise LoaderError(
            f"cannot find the phone column (columns: {', '.join(cols)}); pass --phone-column NAME"
        )
    return best


# --- loading -----------------------------------------------------------------------------------------------


def load_file(
    engine: Engine,
    path: str | Path,
    campaign_name: str,
    *,
    phone_column: str | None = None,
    name_column: str | None = None,
    rejects_path: str | Path | None = None,
    progress: Progress | None = None,
) -> LoadResult:
    path = Path(path)
    say = progress or (lambda stage, done, total: None)
    with session_scope(engine, write=False) as s:
        campaign = campaigns.get_campaign(s, campaign_name)
    say("reading", 0, 1)
    table = read_table(path)
    frame = table.frame
    result = LoadResult(
        campaign=campaign.name, path=str(path), encoding=table.encoding, delimiter=table.delimiter
    )
    blank = _blank_rows(frame)
    result.blank_lines = int(blank.sum())
    if result.blank_lines:
        frame, lines = frame[~blank], table.lines[~blank]
    else:
        lines = table.lines
    result.rows_read = len(frame)

    phone_col = find_phone_column(table, phone_column)
    name_col = pick_column(table, name_column, "name", NAME_HEADERS)
    first_col = last_col = None
    if name_col is None:
        first_col = _find(list(frame.columns), FIRST_NAME_HEADERS)
        last_col = _find(list(frame.columns), LAST_NAME_HEADERS)
    tz_col = _find(list(frame.columns), TZ_HEADERS)
    region_col = _find(list(frame.columns), REGION_HEADERS)
    prio_col = _find(list(frame.columns), PRIORITY_HEADERS)
    result.phone_column, result.name_column = phone_col, name_col or first_col
    say("reading", 1, 1)

    reason = pd.Series(None, index=frame.index, dtype=object)

    # Numbers: normalised once per distinct (raw value, region).
    raw = frame[phone_col].str.strip()
    regions = pd.Series(campaign.default_region or "", index=frame.index, dtype=object)
    if region_col is not None:
        rc = frame[region_col].str.strip().str.upper()
        regions = rc.where(rc.map(phones.is_region), regions)
    e164 = pd.Series(None, index=frame.index, dtype=object)
    zones = pd.Series(None, index=frame.index, dtype=object)
    norm_reason = pd.Series(None, index=frame.index, dtype=object)
    for region, idx in regions.groupby(regions).groups.items():
        sub = raw[idx]
        uniq = pd.Series(sub.unique())
        say("normalising", 0, len(uniq))
        norm = phones.normalize_many(uniq, str(region) or None)
        norm.index = uniq.values
        e164[idx] = sub.map(norm["e164"]).values
        norm_reason[idx] = sub.map(norm["reason"]).values
        zones[idx] = sub.map(norm["timezones"]).values
        say("normalising", len(uniq), len(uniq))
    reason = norm_reason

    if tz_col is not None:
        tzv = frame[tz_col].str.strip()
        given = tzv != ""
        valid_tz = tzv.map(lambda z: phones.is_timezone(z) if z else False)
        reason[given & ~valid_tz & reason.isna()] = "unknown time zone in the " + tz_col + " column"
        use = given & valid_tz
        zones[use] = tzv[use].map(lambda z: (z,))

    ok = reason.isna()
    candidates = e164.where(ok)
    first_line = lines.groupby(candidates).transform("min")
    dup = ok & candidates.duplicated(keep="first")
    reason[dup] = "duplicate of line " + first_line[dup].astype("int64").astype(str)

    with session_scope(engine, write=False) as s:
        existing = set(
            s.execute(sa.select(col(Contact.phone)).where(col(Contact.campaign_id) == campaign.id)).scalars()
        )
        dnc = campaigns.dnc_phones(s, campaign.id)
    ok = reason.isna()
    if existing:
        already = ok & e164.isin(existing)
        reason[already] = "duplicate: already in the campaign"
    ok = reason.isna()
    if dnc:
        reason[ok & e164.isin(dnc)] = "do not call"

    ok = reason.isna()
    key = (campaign.window_start, campaign.window_end, tuple(campaign.weekdays), campaign.timezone)
    never = [z for z in set(zones[ok]) if not phones.ever_callable(tuple(z), *key)]
    if never:
        reason[ok & zones.isin(never)] = "not callable in any window"

    ok = reason.isna()
    result.rejected = int((~ok).sum())
    result.reasons = Counter(reason[~ok].tolist())
    if result.rejected:
        result.rejects_path = str(_write_rejects(frame, lines, reason, path, rejects_path))

    accepted = frame[ok]
    names = _names(accepted, name_col, first_col, last_col)
    special = {c for c in (phone_col, name_col, first_col, last_col, tz_col, region_col, prio_col) if c}
    others = [c for c in frame.columns if c not in special]
    result.loaded = _insert(
        engine,
        campaign,
        accepted,
        e164[ok],
        zones[ok],
        names,
        lines[ok],
        others,
        accepted[prio_col] if prio_col else None,
        say,
    )
    return result


def _blank_rows(frame: pd.DataFrame) -> pd.Series:
    if not len(frame.columns):
        return pd.Series(False, index=frame.index)
    # Only a row whose first cell is empty can be blank: check the other cells of those rows alone.
    blank = frame.iloc[:, 0].str.strip() == ""
    for c in frame.columns[1:]:
        if not blank.any():
            break
        blank[blank] = frame.loc[blank, c].str.strip() == ""
    return blank


def _names(frame: pd.DataFrame, name_col: str | None, first: str | None, last: str | None) -> pd.Series:
    if name_col is not None:
        s = frame[name_col].str.strip()
    elif first is not None or last is not None:
        parts = [frame[c].str.strip() for c in (first, last) if c is not None]
        s = parts[0] if len(parts) == 1 else (parts[0] + " " + parts[1]).str.strip()
    else:
        return pd.Series(None, index=frame.index, dtype=object)
    return s.where(s != "", None)


def _write_rejects(
    frame: pd.DataFrame, lines: pd.Series, reason: pd.Series, path: Path, target: str | Path | None
) -> Path:
    out = Path(target) if target else path.with_name(path.stem + ".rejects.csv")
    bad = reason.notna()
    rej = frame[bad].copy()
    rej.insert(0, "reason", reason[bad])
    rej.insert(0, "line", lines[bad])
    try:
        rej.to_csv(out, index=False, encoding="utf-8")
    except OSError as exc:
        raise LoaderError(f"cannot write the rejects file {out}: {exc.strerror}") from None
    return out


def _insert(
    engine: Engine,
    campaign: Campaign,
    frame: pd.DataFrame,
    e164: pd.Series,
    zones: pd.Series,
    names: pd.Series,
    lines: pd.Series,
    others: list[str],
    priority: pd.Series | None,
    say: Progress,
) -> int:
    n = len(frame)
    if n == 0:
        return 0
    dialect = engine.dialect
    sqlite = dialect.name == "sqlite"
    now = utcnow()
    # Values shared by every row go into the statement itself: fewer parameters to bind per row.
    stamp = now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else now.isoformat()
    if others:
        fields_json = frame[others].to_json(orient="records", lines=True, force_ascii=False).splitlines()
    else:
        fields_json = ["{}"] * n
    zone_text = {z: json.dumps(list(z)) for z in set(zones)}
    zone_json = [zone_text[z] for z in zones]
    prio = (
        pd.to_numeric(priority, errors="coerce").fillna(0).astype("int64").tolist()
        if priority is not None
        else None
    )
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    cid = int(campaign.id or 0)
    sql = (
        f"INSERT INTO {Contact.__tablename__} (campaign_id, phone, name, fields, timezones, source_line, priority, "
        "state, attempts, created_at, updated_at) "
        f"VALUES ({cid}, {mark}, {mark}, {mark}, {mark}, {mark}, {mark if prio is not None else '0'}, "
        f"'{ContactState.PENDING.value}', 0, '{stamp}', '{stamp}')"
    )
    phones_l, names_l, lines_l = e164.tolist(), names.tolist(), lines.astype("int64").tolist()
    done = 0
    say("inserting", 0, n)
    for start in range(0, n, CHUNK):
        end = min(start + CHUNK, n)
        cols = [phones_l[start:end], names_l[start:end], fields_json[start:end], zone_json[start:end],
                lines_l[start:end]]  # fmt: skip
        if prio is not None:
            cols.append(prio[start:end])
        rows = list(zip(*cols, strict=True))
        with engine.begin() as conn:
            if sqlite:
                # A big page cache keeps the unique index's random inserts in memory.
                conn.exec_driver_sql("PRAGMA cache_size = -262144")
            conn.exec_driver_sql(sql, rows)
        done = end
        say("inserting", done, n)
    if sqlite:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA cache_size = -2000")
    return done
