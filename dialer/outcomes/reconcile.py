"""Reconciliation: Zadarma's PBX statistics are the record of truth for every call we placed.

Pulls ``/v1/statistics/pbx/`` (and ``/v1/statistics/`` for cost) within the statistics budget, stores every
row once, matches the customer leg (``out_``) and the PBX leg (``in_``) of each predicted callback to its
attempt by number and time, and ends attempts through the same state machine the webhooks use. Running it
again changes nothing; rows that arrive late are still matched because the fetch window reaches back to
the oldest attempt statistics have not confirmed yet. A fetch the budget cuts short continues where it stopped
on the next run. An uncertain callback with no call in the statistics is declared never placed only once they
provably cover its time (``dialer.outcomes.coverage``, learned from the rows as they are first stored).

This module holds the polling, paging and matching; the bulk reads and writes that make 100,000 attempts
affordable, and the ending of matched attempts, are in ``dialer.outcomes.reconcile_bulk``.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import Session, col, select

from dialer.contention import retry_conflicts
from dialer.db import session_scope
from dialer.kv import get_value, put_value
from dialer.logs import log_event
from dialer.models import Attempt, KeyValue, StatRow
from dialer.outcomes.coverage import learn_from_rows, read_coverage, unseen_rows
from dialer.outcomes.reconcile_bulk import (
    StatRecord,
    complete_matched,
    insert_stat_rows,
    read_attempts,
    read_costed,
    read_pbx_rows,
    read_unlinked_costs,
    ref_time,
    resolve_uncertain,
)
from dialer.outcomes.states import LIVE_ATTEMPT_STATES, AttemptState
from dialer.outcomes.transitions import ANSWERED, CallOutcome, normalise_disposition
from dialer.zadarma import BudgetExhausted, ZadarmaClient, ZadarmaError

log = logging.getLogger("dialer.reconcile")

STAT_FORMAT = "%Y-%m-%d %H:%M:%S"
WATERMARK_KEY = "reconcile:watermark"
OFFSET_KEY = "reconcile:account_offset_s"
MAX_PERIOD = timedelta(days=29)
_CLID_NUMBER = re.compile(r"\(?\+?(\d{5,})\)?\s*$")


@dataclass
class ReconcileConfig:
    """Times in seconds. A sped-up simulator world scales them down."""

    overlap_s: float = 300.0
    # The least time before an uncertain attempt with no customer leg may count as never placed; the statistics
    # must also cover its time (dialer.outcomes.coverage), whatever this says.
    uncertain_grace_s: float = 900.0
    # An answered customer leg whose PBX leg has not shown up after this long: the customer reached no agent.
    pbx_leg_grace_s: float = 300.0
    # How far apart the callback's time and the customer leg's start may be.
    match_tolerance_s: float = 90.0
    # Completed attempts statistics have not confirmed yet are looked for this far back.
    confirm_horizon_s: float = 86400.0
    page_limit: int = 1000
    fetch_cost_every: int = 5
    # A sped-up simulator world's: its statistics give durations in world seconds but real timestamps, so a
    # duration between two timestamps is scaled up and a world duration after a timestamp scaled down.
    time_scale: float = 1.0


class _Cursor(NamedTuple):
    """Where a statistics fetch stands: its window (``start``..``end``) and the next page's period and skip."""

    start: datetime
    period_start: datetime
    end: datetime
    skip: int


@dataclass
class ReconcileResult:
    requests: int = 0
    rows_fetched: int = 0
    rows_new: int = 0
    matched: int = 0
    completed: int = 0
    resolved_uncertain: int = 0
    not_placed: int = 0
    incomplete: bool = False
    window: tuple[str, str] = ("", "")
    errors: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        db: DbEngine,
        client: ZadarmaClient | None,
        *,
        config: ReconcileConfig | None = None,
        clock: Callable[[], float] = time.time,
        wait_for_budget: bool = False,
        account_offset: timedelta | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.config = config or ReconcileConfig()
        self.clock = clock
        # The daemon never blocks on the budget (what is left is fetched next run); the CLI may wait.
        self.wait_for_budget = wait_for_budget
        # Known offset (tests, benchmarks); otherwise asked of /v1/info/timezone/ once.
        self._offset: timedelta | None = account_offset
        self._windows = 0  # fetch windows completed: cost rows are fetched with every fetch_cost_every-th
        self._resume: dict[str, _Cursor] = {}
        self._lock = threading.Lock()

    # -- account time ---------------------------------------------------------------------------------

    def account_offset(self) -> timedelta:
        """The account timezone's UTC offset, from ``/v1/info/timezone/`` (datetime minus unixtime)."""
        if self._offset is None:
            if self.client is None:
                raise RuntimeError("no API client to ask the account timezone")
            info = self.client.timezone()
            local = datetime.strptime(info.datetime, STAT_FORMAT).replace(tzinfo=UTC)
            seconds = (local - datetime.fromtimestamp(info.unixtime, UTC)).total_seconds()
            # Offsets are whole quarter hours; rounding absorbs the second that passed while answering.
            self._offset = timedelta(seconds=round(seconds / 900) * 900)
            with session_scope(self.db) as s:
                put_value(s, OFFSET_KEY, self._offset.total_seconds())
        return self._offset

    def to_account(self, moment: datetime) -> str:
        return (moment.astimezone(UTC) + self.account_offset()).strftime(STAT_FORMAT)

    # -- the run --------------------------------------------------------------------------------------

    def run_once(self, *, since: datetime | None = None, stop: threading.Event | None = None) -> ReconcileResult:
        with self._lock:
            return self._run(since, stop)

    def _run(self, since: datetime | None, stop: threading.Event | None) -> ReconcileResult:
        result = ReconcileResult()
        now = datetime.fromtimestamp(self.clock(), UTC)
        # A window the budget cut short is continued where it stopped, not begun again: otherwise a window
        # of more pages than one run's budget would re-read its first pages forever.
        resume = self._resume.get("pbx") if since is None else None
        window = resume or _Cursor(since or self._window_start(now), since or self._window_start(now), now, 0)
        try:
            result.window = (window.start.isoformat(), window.end.isoformat())
            complete = self._fetch("pbx", window, result, stop)
            if complete:
                self._windows += 1
                with session_scope(self.db) as s:
                    put_value(s, WATERMARK_KEY, window.end.isoformat())
                cost = self._resume.get("calls") if since is None else None
                if cost is None and (self._windows % self.config.fetch_cost_every == 1 or since is not None):
                    cost = _Cursor(window.start, window.start, window.end, 0)
                if cost is not None:
                    complete = self._fetch("calls", cost, result, stop)
            result.incomplete = not complete
        except BudgetExhausted:
            result.incomplete = True
        except ZadarmaError as exc:
            result.errors.append(str(exc))
            result.incomplete = True
            log_event(log, logging.WARNING, "statistics request failed; will retry next run", error=str(exc))
        self.match(now, result, since=window.start)
        if result.completed or result.not_placed or result.rows_new:
            log_event(log, logging.INFO, "reconciled", rows_new=result.rows_new, completed=result.completed,
                      resolved_uncertain=result.resolved_uncertain, not_placed=result.not_placed,
                      requests=result.requests)
        return result

    def _window_start(self, now: datetime) -> datetime:
        with session_scope(self.db, write=False) as s:
            mark = s.get(KeyValue, WATERMARK_KEY)
            watermark = _parse_iso(mark.value) if mark is not None else None
            oldest = self._oldest_unconfirmed(s, now)
        candidates = [t for t in (oldest, watermark) if t is not None]
        if not candidates:
            return now - timedelta(hours=1)
        start = min(candidates) - timedelta(seconds=self.config.overlap_s)
        return max(start, now - timedelta(days=30) + timedelta(minutes=5))

    def _oldest_unconfirmed(self, s: Session, now: datetime) -> datetime | None:
        horizon = now - timedelta(seconds=self.config.confirm_horizon_s)
        confirmed = sa.exists().where(col(StatRow.attempt_id) == col(Attempt.id))
        row = s.exec(
            select(sa.func.min(Attempt.created_at)).where(
                col(Attempt.created_at) >= horizon,
                sa.or_(
                    col(Attempt.state).in_(LIVE_ATTEMPT_STATES),
                    sa.and_(col(Attempt.state) == AttemptState.COMPLETED, ~confirmed),
                ),
            )
        ).one()
        value = row[0] if isinstance(row, tuple) else row
        if isinstance(value, str):  # SQLite aggregate bypasses the column type
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value if isinstance(value, datetime) else None

    def _periods(self, start: datetime, end: datetime) -> Iterable[tuple[datetime, datetime]]:
        cursor = start
        while cursor < end:
            stop = min(end, cursor + MAX_PERIOD)
            yield cursor, stop
            cursor = stop

    def _fetch(
        self, source: str, cursor: _Cursor, result: ReconcileResult, stop: threading.Event | None
    ) -> bool:
        """Page ``source`` ("pbx" or "calls") from ``cursor`` to its end, storing each page as it comes.

        Returns False when stopped; a budget or API error propagates. Either way the cursor of the next page
        is kept, so the next run continues there (rows that arrive meanwhile only shift pages later, so
        continuing may re-read a row, never skip one).
        """
        limit = self.config.page_limit
        period_start, skip = cursor.period_start, cursor.skip
        for p_start, p_end in self._periods(period_start, cursor.end):
            while True:
                self._resume[source] = _Cursor(cursor.start, p_start, cursor.end, skip)
                if stop is not None and stop.is_set():
                    return False
                assert self.client is not None
                rows: list[dict[str, Any]]
                if source == "pbx":
                    pbx = self.client.pbx_statistics(
                        self.to_account(p_start), self.to_account(p_end), skip=skip, limit=limit,
                        wait_for_budget=self.wait_for_budget,
                    )
                    rows = [r.model_dump() for r in pbx.stats]
                else:
                    calls = self.client.statistics(
                        self.to_account(p_start), self.to_account(p_end), skip=skip, limit=limit,
                        wait_for_budget=self.wait_for_budget,
                    )
                    rows = [r.model_dump(by_alias=True) for r in calls.stats]
                result.requests += 1
                result.rows_fetched += len(rows)
                result.rows_new += self.store_rows(source, rows)
                if len(rows) < limit:
                    break
                skip += limit
            skip = 0
        del self._resume[source]
        return True

    # -- storing --------------------------------------------------------------------------------------

    def store_rows(self, source: str, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows not seen before; a row already stored is left as it is. Returns how many were new."""
        if not rows:
            return 0
        records: dict[str, dict[str, Any]] = {}
        now = datetime.fromtimestamp(self.clock(), UTC)  # the watermark's clock: coverage compares the two
        offset = self.account_offset()
        for raw in rows:
            clean = {k: v if type(v) in _JSON_SCALARS else _plain(v) for k, v in raw.items()}
            get = clean.get
            callstart = _parse_account_time(str(get("callstart", "")), offset)
            if source == "pbx":
                # The key format is stored: changing it would store every row again.
                key = f"{get('pbx_call_id', '')}|{get('call_id', '')}|{get('destination', '')}|{get('callstart', '')}"
                record = {
                    "source": source, "row_key": key, "callstart": callstart,
                    "pbx_call_id": get("pbx_call_id") or None, "clid": get("clid"),
                    "destination": get("destination"), "disposition": get("disposition"),
                    "seconds": _int(get("seconds")), "sip": get("sip"), "cost": None, "raw": clean,
                }
            else:
                key = f"{get('id', '')}|{get('to', '')}|{get('callstart', '')}"
                record = {
                    "source": source, "row_key": key, "callstart": callstart, "pbx_call_id": None,
                    "clid": get("from"), "destination": get("to"),
                    "disposition": get("disposition"), "seconds": _int(get("billseconds")),
                    "sip": get("sip"), "cost": _float(get("billcost", get("cost"))), "raw": clean,
                }
            records.setdefault(key, record)
        with session_scope(self.db) as s:
            # How late rows first show up is what tells when the statistics cover an uncertain call's time.
            first_seen = unseen_rows(s, source, records) if source == "pbx" else []
            new = insert_stat_rows(s, list(records.values()), fetched_at=now)
            learn_from_rows(s, first_seen, now, self.config.time_scale)
        return new

    # -- matching -------------------------------------------------------------------------------------

    def match(
        self, now: datetime, result: ReconcileResult | None = None, *, since: datetime | None = None
    ) -> ReconcileResult:
        """Match stored rows to attempts and end the attempts they explain. Idempotent.

        ``since`` limits the work to the fetch window, which already reaches back to the oldest attempt that
        statistics have not confirmed.

        Rows and attempts are read as plain tuples and written back in bulk by ``dialer.outcomes.reconcile_bulk``:
        ORM objects for 100,000 attempts cost most of a minute. The decisions still come from
        ``dialer.outcomes.transitions`` (``attempt_completion``, ``contact_transition``), the same functions
        ``complete_attempt`` uses.
        """
        result = result or ReconcileResult()
        part = retry_conflicts(lambda: self._match(now, since), what="reconciling statistics")
        result.matched += part.matched
        result.completed += part.completed
        result.resolved_uncertain += part.resolved_uncertain
        result.not_placed += part.not_placed
        return result

    def _match(self, now: datetime, since: datetime | None) -> ReconcileResult:
        """One run of :meth:`match`, in two transactions (matched calls, then callbacks that never rang): run
        again whole after a conflict with another writer."""
        result = ReconcileResult()
        cfg = self.config
        tol = timedelta(seconds=cfg.match_tolerance_s)
        tol_s = tol.total_seconds()
        horizon = now - timedelta(seconds=cfg.confirm_horizon_s)
        if since is not None:
            horizon = max(horizon, since)
        reach = horizon - tol
        with session_scope(self.db) as s:
            attempts = read_attempts(s, reach)
            if not attempts:
                return result
            rows = read_pbx_rows(s, reach)
            by_id = {a.id: a for a in attempts}
            out_of: dict[int, StatRecord] = {}
            in_of: dict[int, StatRecord] = {}
            for r in rows:
                if r.attempt_id is not None and r.attempt_id in by_id:
                    (in_of if _is_pbx_leg(r) else out_of)[r.attempt_id] = r
            row_links: list[dict[str, Any]] = []

            # Customer legs: the call id the webhooks gave the attempt, else the same number nearest in time to
            # when we sent the callback. Start times have whole seconds and a sped-up or busy call centre rings
            # one number several times a second, so an attempt that knows its customer leg's id takes only that
            # row: a row of an earlier call must never end a later call that is still ringing (that would free
            # the number for another campaign while the customer is on the line).
            by_leg = {a.pbx_call_id: a.id for a in attempts
                      if a.id not in out_of and a.pbx_call_id and a.pbx_call_id.startswith("out_")}
            index: dict[str, list[tuple[float, int]]] = defaultdict(list)
            for a in attempts:
                if a.id not in out_of and a.pbx_call_id not in by_leg:
                    index[_digits(a.phone)].append((ref_time(a).timestamp(), a.id))
            for lst in index.values():
                lst.sort()
            for r in rows:
                if r.attempt_id is not None or r.callstart is None or _is_pbx_leg(r):
                    continue
                aid: int | None = by_leg.pop(r.pbx_call_id, None) if r.pbx_call_id else None
                if aid is None:
                    cands = index.get(_digits(r.destination or ""))
                    if not cands:
                        continue
                    aid = _nearest(cands, r.callstart.timestamp(), tol_s)
                if aid is None:
                    continue
                out_of[aid] = r
                row_links.append({"b_id": r.id, "attempt_id": aid})
                result.matched += 1

            # PBX legs: the same call token when Zadarma gives one, else the customer's number just after.
            token_to_attempt = {
                row.pbx_call_id[4:]: aid for aid, row in out_of.items()
                if row.pbx_call_id and row.pbx_call_id.startswith("out_")
            }
            answered_index: dict[str, list[tuple[float, int]]] = defaultdict(list)
            for aid, row in out_of.items():
                if aid not in in_of and row.callstart and normalise_disposition(row.disposition) == ANSWERED:
                    answered_index[_digits(by_id[aid].phone)].append((row.callstart.timestamp(), aid))
            for lst in answered_index.values():
                lst.sort()
            for r in rows:
                if r.attempt_id is not None or not _is_pbx_leg(r):
                    continue
                aid_opt: int | None = None
                if r.pbx_call_id and r.pbx_call_id.startswith("in_"):
                    aid_opt = token_to_attempt.get(r.pbx_call_id[3:])
                if aid_opt is None and r.callstart is not None:
                    number = _clid_number(r.clid or "")
                    cands = answered_index.get(number or "")
                    if cands:
                        aid_opt = _nearest_after(cands, r.callstart.timestamp(), 180.0)
                if aid_opt is None or aid_opt in in_of:
                    continue
                in_of[aid_opt] = r
                row_links.append({"b_id": r.id, "attempt_id": aid_opt})
                result.matched += 1

            # Cost rows (``/v1/statistics/``): one per customer leg, at the same second.
            costed = read_costed(s, reach)
            cost_index: dict[str, list[tuple[float, int]]] = defaultdict(list)
            for aid, row in out_of.items():
                if row.callstart is not None and aid not in costed:
                    cost_index[_digits(by_id[aid].phone)].append((row.callstart.timestamp(), aid))
            for lst in cost_index.values():
                lst.sort()
            new_cost: dict[int, float] = {}
            for row_id, callstart, destination, cost in read_unlinked_costs(s, reach):
                cands = cost_index.get(_digits(destination or ""))
                if not cands or callstart is None:
                    continue
                aid_opt = _nearest(cands, callstart.timestamp(), 5.0)
                if aid_opt is None:
                    continue
                row_links.append({"b_id": row_id, "attempt_id": aid_opt})
                if cost is not None and by_id[aid_opt].cost != cost:
                    new_cost[aid_opt] = cost

            # Outcomes, in the order the attempts were made so a contact ends where its latest call puts it.
            completed, resolved = complete_matched(
                s, by_id, ((aid, self._outcome(out_of[aid], in_of.get(aid), now)) for aid in sorted(out_of)),
                new_cost, row_links, now,
            )
            result.completed += completed
            result.resolved_uncertain += resolved

        # Uncertain attempts with no customer leg long after they were sent did not happen.
        with session_scope(self.db) as s:
            coverage = read_coverage(s, _parse_iso(get_value(s, WATERMARK_KEY)), cfg.uncertain_grace_s, now)
            not_placed = resolve_uncertain(s, attempts, out_of, coverage, now)
            result.not_placed += not_placed
            result.resolved_uncertain += not_placed
        return result

    def _outcome(self, out_row: StatRecord, in_row: StatRecord | None, now: datetime) -> CallOutcome | None:
        disposition = normalise_disposition(out_row.disposition)
        started = out_row.callstart
        if disposition != ANSWERED:
            return CallOutcome(disposition=disposition, answered=False, connected=False, abandoned=False,
                               talk_seconds=0.0, pbx_call_id=out_row.pbx_call_id, started_at=started)
        if in_row is None:
            age = (now - (out_row.fetched_at or now)).total_seconds()
            if age < self.config.pbx_leg_grace_s:
                return None  # the PBX leg may still be on its way
            return CallOutcome(disposition=ANSWERED, answered=True, connected=False, abandoned=True,
                               talk_seconds=0.0, pbx_call_id=out_row.pbx_call_id, started_at=started)
        connected = normalise_disposition(in_row.disposition) == ANSWERED
        scale = self.config.time_scale
        ring = None
        if in_row.callstart is not None and started is not None:
            ring = max(0.0, (in_row.callstart - started).total_seconds()) * scale
        talk = float(in_row.seconds or 0) if connected else 0.0
        finished = in_row.callstart + timedelta(seconds=talk / scale) if in_row.callstart else None
        return CallOutcome(
            disposition=ANSWERED,
            answered=True,
            connected=connected,
            abandoned=not connected,
            agent=(in_row.destination or None) if connected else None,
            talk_seconds=talk,
            ring_seconds=ring,
            pbx_call_id=out_row.pbx_call_id,
            started_at=started,
            finished_at=finished,
        )


def _is_pbx_leg(r: StatRecord) -> bool:
    return bool(r.pbx_call_id and r.pbx_call_id.startswith("in_"))


def _digits(number: str) -> str:
    bare = number[1:] if number.startswith("+") else number
    if bare.isdigit():
        return bare
    return "".join(ch for ch in number if ch.isdigit())


def _clid_number(clid: str) -> str | None:
    """``"Name (48539923725)"``, ``"+48539923725"`` or a bare number -> its digits."""
    m = _CLID_NUMBER.search(clid.strip())
    if m:
        return m.group(1)
    digits = _digits(clid)
    return digits or None


def _nearest(cands: list[tuple[float, int]], t: float, tol: float) -> int | None:
    """Closest unused candidate within ``tol`` seconds; used ones are removed so matching is one-to-one."""
    i = bisect.bisect_left(cands, (t, -1))
    best: int | None = None
    for j in (i - 1, i):
        if 0 <= j < len(cands) and abs(cands[j][0] - t) <= tol and (
            best is None or abs(cands[j][0] - t) < abs(cands[best][0] - t)
        ):
            best = j
    if best is None:
        return None
    return cands.pop(best)[1]


def _nearest_after(cands: list[tuple[float, int]], t: float, within: float) -> int | None:
    """The latest candidate that started at most ``within`` seconds before ``t`` (and not after it)."""
    i = bisect.bisect_right(cands, (t + 1.0, 1 << 62)) - 1
    if i >= 0 and t - cands[i][0] <= within:
        return cands.pop(i)[1]
    return None


def _parse_iso(value: Any) -> datetime | None:
    try:
        dt = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(v: Any) -> Any:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


def _int(v: Any) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _parse_account_time(text: str, offset: timedelta) -> datetime | None:
    """``YYYY-MM-DD HH:MM:SS`` in the account's zone -> aware UTC (None if it is not such a time)."""
    text = text.strip()
    try:
        naive = datetime.fromisoformat(text)  # far faster than strptime, and 130,000 rows add up
    except ValueError:
        return None
    if len(text) != 19 or naive.tzinfo is not None:
        try:
            naive = datetime.strptime(text, STAT_FORMAT)
        except ValueError:
            return None
    return naive.replace(tzinfo=UTC) - offset
