"""Contact lists (CSV or XLSX, as a CRM or Excel exported them) -> contact rows, and a rejects report.

Nothing is lost: every data row is either loaded or written to the rejects CSV with its original line number,
its original values and the reason, and ``loaded + rejected == rows_read`` always. Blank lines are not rows.
A load is one transaction: when it fails or is interrupted half-way, no contact of it is in the database.
A phone extension ("ext 12", "x12", "доб. 12") is kept in the contact's ``extension`` field.

Speed (1,000,000 rows in well under 30 s): pandas parses the file (``reading``), numbers are normalised once per
distinct raw string with ``phones.normalize_many``, and rows are inserted with the DB-API ``executemany`` in
chunks, values pre-serialised (no ORM object per row).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from dialer.cells import formula_safe_cells
from dialer.db import session_scope
from dialer.ingest import campaigns, phones
from dialer.ingest.reading import (
    FIRST_NAME_HEADERS,
    LAST_NAME_HEADERS,
    NAME_HEADERS,
    PRIORITY_HEADERS,
    REGION_HEADERS,
    TZ_HEADERS,
    LoaderError,
    find_column,
    find_phone_column,
    pick_column,
    read_table,
)
from dialer.models import Campaign, Contact, utcnow
from dialer.outcomes.states import ContactState

Progress = Callable[[str, int, int], None]  # (stage, done, total)

# A load this big on PostgreSQL is followed by ANALYZE (see _insert).
ANALYZE_AFTER_ROWS = 1_000
CHUNK = 50_000
EXTENSION_FIELD = "extension"
# Every in-file duplicate has its own reason in the rejects file ("duplicate of line 5"); summaries count them
# under this one.
DUPLICATE_IN_FILE = "duplicate of an earlier line"
RAGGED = "more fields than the header (an unquoted delimiter inside a value?)"


@dataclass
class LoadResult:
    """What a load did. ``reasons`` counts rejected rows by reason, in-file duplicates as one reason, and
    ``first_lines`` gives the first line each reason was seen at."""

    campaign: str
    path: str
    rows_read: int = 0
    loaded: int = 0
    rejected: int = 0
    blank_lines: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    first_lines: dict[str, int] = field(default_factory=dict)
    extensions: int = 0
    rejects_path: str | None = None
    phone_column: str = ""
    name_column: str | None = None
    encoding: str = ""
    delimiter: str = ""
    # What the load changed or left out without rejecting a row (columns over the cap, fields cut short).
    warnings: list[str] = field(default_factory=list)

    @property
    def in_campaign(self) -> int:
        """Rows of the file that are in the campaign after the load: loaded now, or already there (a re-run).
        0 means the load achieved nothing, which the command reports as a failure."""
        return self.loaded + self.reasons.get(ALREADY_IN_CAMPAIGN, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "file": self.path,
            "rows_read": self.rows_read,
            "loaded": self.loaded,
            "rejected": self.rejected,
            "blank_lines": self.blank_lines,
            "reasons": dict(self.reasons.most_common()),
            "first_lines": {r: self.first_lines[r] for r, _ in self.reasons.most_common()},
            "extensions": self.extensions,
            "rejects_file": self.rejects_path,
            "phone_column": self.phone_column,
            "name_column": self.name_column,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "warnings": self.warnings,
        }


ALREADY_IN_CAMPAIGN = "duplicate: already in the campaign"
# Bounds on what one list may store per contact, so one wide or bloated row cannot blow up the database, the
# exports and their memory (a 3,000-column row took the contacts export from 387 KB to 15 MB).
MAX_CUSTOM_COLUMNS = 200
MAX_FIELD_CHARS = 10_000


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
    columns = [c for c in frame.columns if c not in table.extra_columns]

    phone_col = find_phone_column(table, phone_column)
    name_col = pick_column(table, name_column, "name", NAME_HEADERS)
    first_col = last_col = None
    if name_col is None:
        first_col = find_column(columns, FIRST_NAME_HEADERS)
        last_col = find_column(columns, LAST_NAME_HEADERS)
    tz_col = find_column(columns, TZ_HEADERS)
    region_col = find_column(columns, REGION_HEADERS)
    prio_col = find_column(columns, PRIORITY_HEADERS)
    result.phone_column, result.name_column = phone_col, name_col or first_col
    say("reading", 1, 1)

    # Numbers: normalised once per distinct (raw value, region).
    raw = frame[phone_col].str.strip()
    regions = pd.Series(campaign.default_region or "", index=frame.index, dtype=object)
    if region_col is not None:
        rc = frame[region_col].str.strip().str.upper()
        regions = rc.where(rc.map(phones.is_region), regions)
    e164 = pd.Series(None, index=frame.index, dtype=object)
    zones = pd.Series(None, index=frame.index, dtype=object)
    norm_reason = pd.Series(None, index=frame.index, dtype=object)
    extension = pd.Series(None, index=frame.index, dtype=object)
    for region, idx in regions.groupby(regions).groups.items():
        sub = raw[idx]
        uniq = pd.Series(sub.unique())
        say("normalising", 0, len(uniq))
        norm = phones.normalize_many(uniq, str(region) or None)
        norm.index = uniq.values
        e164[idx] = sub.map(norm["e164"]).values
        norm_reason[idx] = sub.map(norm["reason"]).values
        zones[idx] = sub.map(norm["timezones"]).values
        extension[idx] = sub.map(norm["extension"]).values
        say("normalising", len(uniq), len(uniq))
    reason = norm_reason
    if table.ragged is not None:
        reason[table.ragged.reindex(frame.index, fill_value=False)] = RAGGED

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
        reason[already] = ALREADY_IN_CAMPAIGN
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
    if result.rejected:
        grouped = reason[~ok].map(lambda r: DUPLICATE_IN_FILE if r.startswith("duplicate of line ") else r)
        result.reasons = Counter(grouped.tolist())
        result.first_lines = {str(r): int(n) for r, n in lines[~ok].groupby(grouped).min().items()}
    if result.rejected:
        result.rejects_path = str(_write_rejects(frame, lines, reason, path, rejects_path))

    accepted = frame[ok]
    special = {c for c in (phone_col, name_col, first_col, last_col, tz_col, region_col, prio_col) if c}
    others = [c for c in columns if c not in special]
    others, accepted = _capped(accepted, others, [c for c in (name_col, first_col, last_col) if c], result)
    names = _names(accepted, name_col, first_col, last_col)
    fields = _fields(accepted, others, extension[ok])
    result.extensions = int(extension[ok].notna().sum())
    result.loaded = _insert(
        engine,
        campaign,
        fields,
        e164[ok],
        zones[ok],
        names,
        lines[ok],
        accepted[prio_col] if prio_col else None,
        say,
        source_file=path.name,
    )
    return result


def _capped(
    frame: pd.DataFrame, others: list[str], names: list[str], result: LoadResult
) -> tuple[list[str], pd.DataFrame]:
    """At most ``MAX_CUSTOM_COLUMNS`` custom columns (the first ones, in file order) and ``MAX_FIELD_CHARS``
    characters a field or name; what is left out or cut is said in ``result.warnings``."""
    if len(others) > MAX_CUSTOM_COLUMNS:
        dropped = others[MAX_CUSTOM_COLUMNS:]
        shown = ", ".join(repr(str(c)[:40]) for c in dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        result.warnings.append(
            f"the file has {len(others):,} custom columns: kept the first {MAX_CUSTOM_COLUMNS} as contact fields, "
            f"left out {len(dropped):,} ({shown})"
        )
        others = others[:MAX_CUSTOM_COLUMNS]
    cut = 0
    for c in [*others, *names]:
        long = frame[c].str.len() > MAX_FIELD_CHARS
        if long.any():
            if cut == 0:
                frame = frame.copy()
            cut += int(long.sum())
            frame.loc[long, c] = frame.loc[long, c].str.slice(0, MAX_FIELD_CHARS)
    if cut:
        result.warnings.append(f"{cut:,} field(s) longer than {MAX_FIELD_CHARS:,} characters were cut to "
                               f"{MAX_FIELD_CHARS:,}")  # fmt: skip
    return others, frame


def _fields(frame: pd.DataFrame, others: list[str], extension: pd.Series) -> list[str]:
    """Each contact's other columns as JSON text, plus its phone extension (unless the file's own
    ``extension`` column already holds one)."""
    n = len(frame)
    if n == 0:
        return []
    if others:
        # split("\n"), not splitlines(): JSON escapes newlines, but not U+2028 or U+0085 inside values.
        out = frame[others].to_json(orient="records", lines=True, force_ascii=False).rstrip("\n").split("\n")
    else:
        out = ["{}"] * n
    if len(out) != n:  # pragma: no cover - pandas' JSON lines are one per row
        raise RuntimeError(f"{len(out)} JSON rows for {n} contacts")
    for i in extension.reset_index(drop=True).dropna().index:
        d = json.loads(out[i])
        if not str(d.get(EXTENSION_FIELD) or "").strip():
            d[EXTENSION_FIELD] = extension.iloc[i]
            out[i] = json.dumps(d, ensure_ascii=False)
    return out


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
    # A rejected row is written as it came, so it may hold a formula: the same guard as the report CSVs.
    for name in rej.columns:
        if not pd.api.types.is_numeric_dtype(rej[name]):
            rej[name] = formula_safe_cells(rej[name].tolist())
    rej.columns = formula_safe_cells([str(c) for c in rej.columns])
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
    fields_json: list[str],
    e164: pd.Series,
    zones: pd.Series,
    names: pd.Series,
    lines: pd.Series,
    priority: pd.Series | None,
    say: Progress,
    *,
    source_file: str,
) -> int:
    """Insert the contacts in one transaction (chunked only for progress): all of them or, on any error or
    Ctrl-C, none. Each records ``source_file``, the loaded file's name (`dialer campaign remove --source`)."""
    n = len(fields_json)
    if n == 0:
        return 0
    dialect = engine.dialect
    sqlite = dialect.name == "sqlite"
    now = utcnow()
    # Values shared by every row go into the statement itself: fewer parameters to bind per row.
    stamp = now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else now.isoformat()
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
        f"INSERT INTO {Contact.__tablename__} (campaign_id, phone, name, fields, timezones, source_line, source_file, "
        "priority, state, attempts, created_at, updated_at) "
        f"VALUES ({cid}, {mark}, {mark}, {mark}, {mark}, {mark}, {mark}, {mark if prio is not None else '0'}, "
        f"'{ContactState.PENDING.value}', 0, '{stamp}', '{stamp}')"
    )
    phones_l, names_l, lines_l = e164.tolist(), names.tolist(), lines.astype("int64").tolist()
    say("inserting", 0, n)
    with engine.begin() as conn:
        if sqlite:
            # A big page cache keeps the unique index's random inserts in memory.
            conn.exec_driver_sql("PRAGMA cache_size = -262144")
        for start in range(0, n, CHUNK):
            end = min(start + CHUNK, n)
            # The file name is bound, not written into the statement: it is the user's text.
            cols = [phones_l[start:end], names_l[start:end], fields_json[start:end], zone_json[start:end],
                    lines_l[start:end], [source_file] * (end - start)]  # fmt: skip
            if prio is not None:
                cols.append(prio[start:end])
            conn.exec_driver_sql(sql, list(zip(*cols, strict=True)))
            say("inserting", end, n)
        if sqlite:
            conn.exec_driver_sql("PRAGMA cache_size = -2000")
    if dialect.name == "postgresql" and n >= ANALYZE_AFTER_ROWS:
        # Fresh statistics at once: until autovacuum gets to it the planner takes the table for empty, and the
        # due query then scans and sorts every contact on every tick (15 s at 1,000,000 contacts).
        with engine.connect() as conn:
            conn.exec_driver_sql(f"ANALYZE {Contact.__tablename__}")
            conn.commit()
    return n
