"""Reconciliation: Zadarma's PBX statistics are the record of truth for every call we placed.

Pulls ``/v1/statistics/pbx/`` (and ``/v1/statistics/`` for cost) within the statistics budget, stores every
row once, matches the customer leg (``out_``) and the PBX leg (``in_``) of each predicted callback to its
attempt by number and time, and ends attempts through the same state machine the webhooks use. Running it
again changes nothing; rows that arrive late are still matched because the fetch window reaches back to
the oldest attempt statistics have not confirmed yet.
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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import Session, col, select

from dialer.db import session_scope
from dialer.kv import put_value
from dialer.logs import log_event
from dialer.models import Attempt, Campaign, Contact, EventLog, KeyValue, StatRow, utcnow
from dialer.outcomes import ANSWERED, CallOutcome, attempt_not_placed, complete_attempt, normalise_disposition
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
    # An uncertain attempt with no customer leg this long after it was sent did not happen.
    uncertain_grace_s: float = 900.0
    # An answered customer leg whose PBX leg has not shown up after this long: the customer reached no agent.
    pbx_leg_grace_s: float = 300.0
    # How far apart the callback's time and the customer leg's start may be.
    match_tolerance_s: float = 90.0
    # Completed attempts statistics have not confirmed yet are looked for this far back.
    confirm_horizon_s: float = 86400.0
    page_limit: int = 1000
    fetch_cost_every: int = 5


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
        self._runs = 0
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

    def from_account(self, text: str) -> datetime | None:
        try:
            naive = datetime.strptime(text.strip(), STAT_FORMAT)
        except ValueError:
            return None
        return naive.replace(tzinfo=UTC) - self.account_offset()

    # -- the run --------------------------------------------------------------------------------------

    def run_once(self, *, since: datetime | None = None, stop: threading.Event | None = None) -> ReconcileResult:
        with self._lock:
            return self._run(since, stop)

    def _run(self, since: datetime | None, stop: threading.Event | None) -> ReconcileResult:
        result = ReconcileResult()
        now = datetime.fromtimestamp(self.clock(), UTC)
        start = since or self._window_start(now)
        end = now
        try:
            result.window = (start.isoformat(), end.isoformat())
            complete = self._fetch_pbx(start, end, result, stop)
            self._runs += 1
            if complete and (self._runs % self.config.fetch_cost_every == 1 or since is not None):
                self._fetch_cost(start, end, result, stop)
            if complete:
                with session_scope(self.db) as s:
                    put_value(s, WATERMARK_KEY, end.isoformat())
            else:
                result.incomplete = True
        except BudgetExhausted:
            result.incomplete = True
        except ZadarmaError as exc:
            result.errors.append(str(exc))
            result.incomplete = True
            log_event(log, logging.WARNING, "statistics request failed; will retry next run", error=str(exc))
        self.match(now, result, since=start)
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
                    col(Attempt.state).in_(("placing", "placed", "uncertain")),
                    sa.and_(col(Attempt.state) == "completed", ~confirmed),
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

    def _fetch_pbx(
        self, start: datetime, end: datetime, result: ReconcileResult, stop: threading.Event | None
    ) -> bool:
        limit = self.config.page_limit
        for p_start, p_end in self._periods(start, end):
            skip = 0
            while True:
                if stop is not None and stop.is_set():
                    return False
                assert self.client is not None
                page = self.client.pbx_statistics(
                    self.to_account(p_start), self.to_account(p_end), skip=skip, limit=limit,
                    wait_for_budget=self.wait_for_budget,
                )
                result.requests += 1
                rows = [r.model_dump() for r in page.stats]
                result.rows_fetched += len(rows)
                result.rows_new += self.store_rows("pbx", rows)
                if len(rows) < limit:
                    break
                skip += limit
        return True

    def _fetch_cost(
        self, start: datetime, end: datetime, result: ReconcileResult, stop: threading.Event | None
    ) -> None:
        limit = self.config.page_limit
        for p_start, p_end in self._periods(start, end):
            skip = 0
            while True:
                if stop is not None and stop.is_set():
                    return
                assert self.client is not None
                page = self.client.statistics(
                    self.to_account(p_start), self.to_account(p_end), skip=skip, limit=limit,
                    wait_for_budget=self.wait_for_budget,
                )
                result.requests += 1
                rows = [r.model_dump(by_alias=True) for r in page.stats]
                result.rows_fetched += len(rows)
                result.rows_new += self.store_rows("calls", rows)
                if len(rows) < limit:
                    break
                skip += limit

    # -- storing --------------------------------------------------------------------------------------

    def store_rows(self, source: str, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows not seen before; a row already stored is left as it is. Returns how many were new."""
        if not rows:
            return 0
        records: list[dict[str, Any]] = []
        for raw in rows:
            clean = {k: _plain(v) for k, v in raw.items()}
            callstart = self.from_account(str(clean.get("callstart", "")))
            if source == "pbx":
                key = "|".join(str(clean.get(k, "")) for k in ("pbx_call_id", "call_id", "destination", "callstart"))
                number = None
                records.append({
                    "source": source, "row_key": key, "callstart": callstart,
                    "pbx_call_id": clean.get("pbx_call_id") or None, "clid": clean.get("clid"),
                    "destination": clean.get("destination"), "disposition": clean.get("disposition"),
                    "seconds": _int(clean.get("seconds")), "sip": clean.get("sip"), "cost": None, "raw": clean,
                })
            else:
                key = "|".join(str(clean.get(k, "")) for k in ("id", "to", "callstart"))
                number = clean.get("to")
                records.append({
                    "source": source, "row_key": key, "callstart": callstart, "pbx_call_id": None,
                    "clid": clean.get("from"), "destination": number, "disposition": clean.get("disposition"),
                    "seconds": _int(clean.get("billseconds")), "sip": clean.get("sip"),
                    "cost": _float(clean.get("billcost", clean.get("cost"))), "raw": clean,
                })
        keys = [str(r["row_key"]) for r in records]
        new = 0
        with session_scope(self.db) as s:
            existing: set[str] = set()
            for chunk in _chunks(keys, 500):
                existing.update(s.exec(
                    select(StatRow.row_key).where(StatRow.source == source, col(StatRow.row_key).in_(chunk))
                ).all())
            fresh = [r for r in records if r["row_key"] not in existing]
            seen: set[str] = set()
            now = utcnow()
            to_insert = []
            for r in fresh:
                if r["row_key"] in seen:
                    continue
                seen.add(r["row_key"])
                to_insert.append({**r, "fetched_at": now})
            if to_insert:
                s.execute(sa.insert(StatRow), to_insert)
                new = len(to_insert)
        return new

    # -- matching -------------------------------------------------------------------------------------

    def match(
        self, now: datetime, result: ReconcileResult | None = None, *, since: datetime | None = None
    ) -> ReconcileResult:
        """Match stored rows to attempts and end the attempts they explain. Idempotent.

        ``since`` limits the work to the fetch window, which already reaches back to the oldest attempt that
        statistics have not confirmed.
        """
        result = result or ReconcileResult()
        cfg = self.config
        tol = timedelta(seconds=cfg.match_tolerance_s)
        with session_scope(self.db) as s, s.no_autoflush:
            horizon = now - timedelta(seconds=cfg.confirm_horizon_s)
            if since is not None:
                horizon = max(horizon, since)
            attempts = s.exec(
                select(Attempt).where(
                    col(Attempt.created_at) >= horizon - tol,
                    col(Attempt.state).in_(("placing", "placed", "uncertain", "completed")),
                )
            ).all()
            if not attempts:
                return result
            rows = s.exec(
                select(StatRow).where(
                    col(StatRow.source) == "pbx",
                    sa.or_(col(StatRow.callstart) >= horizon - tol, col(StatRow.callstart).is_(None)),
                )
            ).all()
            by_id = {a.id: a for a in attempts}
            out_of: dict[int, StatRow] = {}
            in_of: dict[int, StatRow] = {}
            for r in rows:
                if r.attempt_id in by_id:
                    (in_of if _is_pbx_leg(r) else out_of)[r.attempt_id] = r  # type: ignore[index]

            # Customer legs: same number, nearest in time to when we sent the callback.
            index: dict[str, list[tuple[float, int]]] = defaultdict(list)
            for a in attempts:
                if a.id not in out_of and a.id is not None:
                    index[_digits(a.phone)].append((_ref_time(a).timestamp(), a.id))
            for lst in index.values():
                lst.sort()
            for r in rows:
                if r.attempt_id is not None or _is_pbx_leg(r) or r.callstart is None:
                    continue
                cands = index.get(_digits(r.destination or ""))
                if not cands:
                    continue
                aid = _nearest(cands, r.callstart.timestamp(), tol.total_seconds())
                if aid is None:
                    continue
                r.attempt_id = aid
                s.add(r)
                out_of[aid] = r
                result.matched += 1

            # PBX legs: the same call token when Zadarma gives one, else the customer's number just after.
            token_to_attempt = {
                row.pbx_call_id[4:]: aid for aid, row in out_of.items()
                if row.pbx_call_id and row.pbx_call_id.startswith("out_")
            }
            answered_index: dict[str, list[tuple[float, int]]] = defaultdict(list)
            for aid, row in out_of.items():
                if aid not in in_of and normalise_disposition(row.disposition) == ANSWERED and row.callstart:
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
                r.attempt_id = aid_opt
                s.add(r)
                in_of[aid_opt] = r
                result.matched += 1

            # Cost rows.
            cost_rows = s.exec(
                select(StatRow).where(StatRow.source == "calls", col(StatRow.attempt_id).is_(None),
                                      col(StatRow.callstart) >= horizon - tol)
            ).all()
            cost_index: dict[str, list[tuple[float, int]]] = defaultdict(list)
            for aid, row in out_of.items():
                if row.callstart is not None:
                    cost_index[_digits(by_id[aid].phone)].append((row.callstart.timestamp(), aid))
            for lst in cost_index.values():
                lst.sort()
            for r in cost_rows:
                cands = cost_index.get(_digits(r.destination or ""))
                if not cands or r.callstart is None:
                    continue
                aid_opt = _nearest(cands, r.callstart.timestamp(), 5.0)
                if aid_opt is None:
                    continue
                r.attempt_id = aid_opt
                s.add(r)
                attempt = by_id[aid_opt]
                if r.cost is not None and attempt.cost != r.cost:
                    attempt.cost = r.cost
                    s.add(attempt)

            # Outcomes. The contacts and campaigns they move are loaded in bulk first, and nothing is flushed
            # until the end: per-attempt round trips made 100,000 attempts take minutes.
            contact_ids = sorted({by_id[aid].contact_id for aid in out_of})
            # Held here so the session's (weak) identity map keeps them for complete_attempt's lookups.
            loaded: list[Any] = [s.get(Campaign, cid) for cid in {a.campaign_id for a in attempts}]
            for chunk in _chunks(contact_ids, 900):
                loaded.extend(s.exec(select(Contact).where(col(Contact.id).in_(chunk))).all())
            for aid, out_row in out_of.items():
                attempt = by_id[aid]
                outcome = self._outcome(out_row, in_of.get(aid), now)
                if outcome is None:
                    continue
                was_uncertain = attempt.state == "uncertain"
                if attempt.state == "completed" and _same(attempt, outcome):
                    continue
                if complete_attempt(s, attempt, outcome, now=now):
                    result.completed += 1
                    if was_uncertain:
                        result.resolved_uncertain += 1

            # Uncertain attempts with no customer leg long after they were sent did not happen.
            grace = timedelta(seconds=cfg.uncertain_grace_s)
            for a in attempts:
                if a.state != "uncertain" or a.id in out_of:
                    continue
                sent = a.sent_at or a.created_at
                if now - sent >= grace:
                    attempt_not_placed(s, a, "no call in Zadarma's statistics: the callback did not happen")
                    s.add(EventLog(campaign_id=a.campaign_id, level="info", kind="uncertain_resolved",
                                   message=f"attempt {a.id} to {a.phone}: no call found, contact due again"))
                    result.not_placed += 1
                    result.resolved_uncertain += 1
        return result

    def _outcome(self, out_row: StatRow, in_row: StatRow | None, now: datetime) -> CallOutcome | None:
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
        ring = None
        if in_row.callstart is not None and started is not None:
            ring = max(0.0, (in_row.callstart - started).total_seconds())
        talk = float(in_row.seconds or 0) if connected else 0.0
        finished = in_row.callstart + timedelta(seconds=talk) if in_row.callstart else None
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


def _same(a: Attempt, o: CallOutcome) -> bool:
    return (
        a.disposition == o.disposition
        and bool(a.answered) == o.answered
        and bool(a.connected) == o.connected
        and bool(a.abandoned) == o.abandoned
        and (o.talk_seconds is None or a.talk_seconds == o.talk_seconds)
        and (o.agent is None or a.agent == o.agent)
        and (o.pbx_call_id is None or a.pbx_call_id == o.pbx_call_id)
    )


def _is_pbx_leg(r: StatRow) -> bool:
    return bool(r.pbx_call_id and r.pbx_call_id.startswith("in_"))


def _ref_time(a: Attempt) -> datetime:
    return a.placed_at or a.sent_at or a.created_at


def _digits(number: str) -> str:
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


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
