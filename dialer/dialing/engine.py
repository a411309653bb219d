"""The pacing tick: observe -> policy -> claim -> place, and the rules that keep every call accounted for.

Write-ahead: each attempt row is committed as ``placing`` before its callback request leaves. A callback
is re-sent only by the client and only when the request provably never reached Zadarma; anything
ambiguous makes the attempt ``uncertain`` until reconciliation finds out whether the call happened. A refused
callback counts against its contact only when the refusal is about its number; any other refusal (key, balance,
account) gives the attempt back and pauses the campaigns it reaches (``dialer.outcomes.refusals``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine as DbEngine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from dialer.db import session_scope
from dialer.dialing.why_store import Explainer
from dialer.ingest.campaigns import next_due_contacts
from dialer.ingest.phones import callable_now, next_window_start
from dialer.kv import add_to_value
from dialer.logs import log_event
from dialer.models import Attempt, Campaign, Contact, EventLog, utcnow
from dialer.outcomes.refusals import pause_for_refusal
from dialer.outcomes.states import LIVE_ATTEMPT_STATES, OPEN_CONTACT_STATES, AttemptState, CampaignState
from dialer.outcomes.transitions import (
    attempt_not_placed,
    attempt_placed,
    attempt_uncertain,
    attempts_in_flight_uncertain,
    claim_contact,
    fail_attempt,
    placing_attempts,
)
from dialer.pacing import make_policy
from dialer.pacing.base import Policy, why_held
from dialer.pacing.observation import FinishedCall, Observation
from dialer.reporting.figures import ABANDON_WINDOWS, agent_seconds_key, call_counts, window_start
from dialer.zadarma import (
    GENERAL,
    AmbiguousError,
    BudgetExhausted,
    NotSentError,
    Refusal,
    RejectedError,
    ZadarmaClient,
    classify_refusal,
)

log = logging.getLogger("dialer.engine")


class LiveSource(Protocol):
    """What the engine needs from the webhook live state (dialer.dialing.live.LiveState)."""

    def call_placed(self, campaign_id: int, attempt_id: int, phone: str, placed_at: float) -> None: ...

    def call_failed(self, campaign_id: int, attempt_id: int) -> None: ...


@dataclass
class EngineConfig:
    """Knobs of the tick. Every delay is a setting so a sped-up simulator world can be paced well."""

    tick_s: float = 1.0
    # General requests kept back from pacing for balance checks and other clients' stragglers.
    general_reserve: int = 1
    claim_overfetch: int = 4
    place_workers: int = 4
    # Counts over the legal window are re-read from the database this often; in between they are updated live.
    counts_refresh_s: float = 30.0
    # Only for a sped-up simulator world, whose PBX reports durations in world seconds: agent time is counted
    # in the same unit so occupancy means what it says. Always 1 against Zadarma.
    time_scale: float = 1.0


@dataclass
class TickResult:
    campaign_id: int
    decided: int = 0
    claimed: int = 0
    placed: int = 0
    uncertain: int = 0
    failed: int = 0
    not_placed: int = 0
    skipped_window: int = 0


@dataclass
class _CampaignRuntime:
    policy: Policy
    pacing: str
    last_finished_id: int = 0
    counts_at: float = 0.0
    answered_window: int = 0
    abandoned_window: int = 0
    answered_today: int = 0
    abandoned_today: int = 0
    last_tick: float = 0.0
    agent_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Why the campaign is (not) dialling, kept between ticks: stored and logged when it changes.
    why: Explainer = field(default_factory=Explainer)


@dataclass
class _Sent:
    attempt: Attempt
    state: AttemptState
    sent_at: datetime | None = None
    placed_at: datetime | None = None
    error: str | None = None
    # Set when Zadarma refused the callback: whom the refusal is about, and what it said.
    refusal: Refusal | None = None
    said: str = ""


ObserveHook = Callable[[Campaign, float], Observation | None]


class Engine:
    """One per daemon. Thread-safe per campaign: each campaign's tick runs under its own lock."""

    def __init__(
        self,
        db: DbEngine,
        client: ZadarmaClient,
        *,
        config: EngineConfig | None = None,
        live: LiveSource | None = None,
        live_observer: ObserveHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.client = client
        self.config = config or EngineConfig()
        self.live = live
        # Returns the live (webhook) observation of a campaign, or None when live data is unavailable.
        self.live_observer = live_observer
        self.clock = clock
        self._runtime: dict[int, _CampaignRuntime] = {}
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=self.config.place_workers, thread_name_prefix="place")
        self._inflight: set[int] = set()
        self._inflight_lock = threading.Lock()
        self._running_count = 1

    # -- lifecycle ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop placing new calls at once; requests already sent are allowed to finish."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def close(self, timeout: float = 8.0) -> None:
        """Wait for in-flight requests; whatever is still in flight after ``timeout`` becomes uncertain."""
        self.stop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._inflight_lock:
                if not self._inflight:
                    break
            time.sleep(0.05)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._inflight_lock:
            leftover = set(self._inflight)
        if leftover:
            self._mark_uncertain(leftover, "daemon stopped while the request was in flight")
        self.release_unsent()

    def recover(self) -> int:
        """At start-up: an attempt left in ``placing`` by a crash may or may not have been sent. Treat it as
        uncertain so reconciliation decides; never re-send it blindly."""
        with session_scope(self.db) as s:
            stale = placing_attempts(s)
            now = utcnow()
            for attempt in stale:
                attempt_uncertain(attempt, "daemon stopped before the outcome of the request was known", now)
                s.add(attempt)
            if stale:
                s.add(EventLog(level="warning", kind="recovered",
                               message=f"{len(stale)} attempts left in '{AttemptState.PLACING}' by a previous run are now uncertain"))
        if stale:
            log_event(log, logging.WARNING, "recovered attempts left placing", count=len(stale))
        return len(stale)

    def release_unsent(self) -> int:
        """On a clean stop: attempts claimed but whose request never left are given back."""
        with session_scope(self.db) as s:
            rows = placing_attempts(s)
            with self._inflight_lock:
                inflight = set(self._inflight)
            # Anything still 'placing' that is not in flight was claimed but never sent.
            rows = [a for a in rows if a.id not in inflight]
            for attempt in rows:
                attempt_not_placed(s, attempt, "daemon stopped before sending")
        return len(rows)

    # -- the tick ------------------------------------------------------------------------------------

    def running_campaign_ids(self) -> list[int]:
        with session_scope(self.db, write=False) as s:
            ids = list(s.exec(select(Campaign.id).where(Campaign.state == CampaignState.RUNNING)).all())
        self._running_count = max(1, len(ids))
        return [i for i in ids if i is not None]

    def runtime(self, campaign: Campaign) -> _CampaignRuntime:
        assert campaign.id is not None
        rt = self._runtime.get(campaign.id)
        if rt is None or rt.pacing != campaign.pacing:
            rt = _CampaignRuntime(make_policy(campaign.pacing, campaign.abandon_target), campaign.pacing)
            self._runtime[campaign.id] = rt
        return rt

    def budget_share(self) -> int:
        """Callbacks this campaign may send now: the general budget left (minus the reserve), shared fairly."""
        available = self.client.budget.available(GENERAL, reserve=self.config.general_reserve)
        share, extra = divmod(available, self._running_count)
        return share + (1 if extra else 0)

    def tick(self, campaign_id: int) -> TickResult:
        result = TickResult(campaign_id)
        if self.stopping:
            return result
        with session_scope(self.db, write=False) as s:
            campaign = s.get(Campaign, campaign_id)
        if campaign is None or campaign.state != CampaignState.RUNNING:
            return result
        rt = self.runtime(campaign)
        if not rt.lock.acquire(blocking=False):
            return result  # the previous tick of this campaign is still placing
        try:
            now = self.clock()
            if rt.last_tick:
                rt.agent_seconds += max(0.0, now - rt.last_tick) * _agents(campaign) * self.config.time_scale
            rt.last_tick = now
            obs = self.observe(campaign, rt, now)
            n = max(0, min(rt.policy.decide(obs), obs.budget))
            result.decided = n
            if n and not self.stopping:
                attempts = self.claim(campaign, n, result)
                result.claimed = len(attempts)
                self._place_all(campaign, attempts, result)
            self._explain(campaign, rt, obs, n, result, now)
            if not result.claimed and not self._has_work(campaign_id):
                self._finish(campaign_id)
        finally:
            rt.lock.release()
        if result.claimed or result.failed:
            log_event(log, logging.INFO, "tick", campaign=campaign.name, decided=result.decided,
                      placed=result.placed, uncertain=result.uncertain, failed=result.failed)
        return result

    def _explain(self, campaign: Campaign, rt: _CampaignRuntime, obs: Observation, n: int, result: TickResult,
                 now: float) -> None:
        """Why this tick placed what it placed (dialer.dialing.why); never lets a fault there stop the dialling."""
        try:
            rt.why.update(
                self.db, campaign, now, obs, decided=n, claimed=result.claimed, skipped_window=result.skipped_window,
                policy_reason=why_held(rt.policy, obs) if n == 0 else "",
                budget_reset_in=self.client.budget.reset_in(GENERAL) if obs.budget <= 0 else None,
            )
        except Exception:
            log.exception("could not work out why campaign %s is (not) dialling", campaign.name)

    # -- observe -------------------------------------------------------------------------------------

    def observe(self, campaign: Campaign, rt: _CampaignRuntime, now: float) -> Observation:
        budget = self.budget_share()
        self._refresh_counts(campaign, rt, now)
        tz = _zone(campaign.timezone)
        local = datetime.fromtimestamp(now, tz)
        time_of_day = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        common: dict[str, Any] = {
            "answered_window": rt.answered_window,
            "abandoned_window": rt.abandoned_window,
            "answered_today": rt.answered_today,
            "abandoned_today": rt.abandoned_today,
            "budget": budget,
            "time_of_day": time_of_day,
        }
        live_obs = self.live_observer(campaign, now) if self.live_observer else None
        if live_obs is not None:
            return _replace(live_obs, **common)
        # No real-time events: every call whose outcome we do not know yet may be ringing or talking.
        with session_scope(self.db, write=False) as s:
            pending = s.exec(
                select(Attempt.sent_at, Attempt.created_at).where(
                    col(Attempt.campaign_id) == campaign.id, col(Attempt.state).in_(LIVE_ATTEMPT_STATES)
                )
            ).all()
            finished_rows = s.exec(
                select(Attempt)
                .where(Attempt.campaign_id == campaign.id, col(Attempt.state) == AttemptState.COMPLETED,
                       col(Attempt.id) > rt.last_finished_id)
                .order_by(col(Attempt.id))
            ).all()
        if finished_rows:
            rt.last_finished_id = max(a.id or 0 for a in finished_rows)
        ringing = tuple(sorted((a or b).timestamp() for a, b in pending))
        agents = _agents(campaign)
        return Observation(
            now=now,
            agents_logged_in=agents,
            idle=agents,
            ringing_since=ringing,
            finished=tuple(_finished(a, self.config.time_scale) for a in finished_rows),
            live=False,
            **common,
        )

    def _refresh_counts(self, campaign: Campaign, rt: _CampaignRuntime, now: float) -> None:
        if now - rt.counts_at < self.config.counts_refresh_s and rt.counts_at:
            return
        now_dt = datetime.fromtimestamp(now, UTC)
        window = campaign.abandon_window if campaign.abandon_window in ABANDON_WINDOWS else "30d"
        midnight = datetime.fromtimestamp(now, _zone(campaign.timezone)).replace(
            hour=0, minute=0, second=0, microsecond=0
        ).astimezone(UTC)
        assert campaign.id is not None
        with session_scope(self.db, write=False) as s:
            legal = call_counts(s, campaign.id, window_start(now_dt, window))
            today = call_counts(s, campaign.id, midnight)
        rt.answered_window, rt.abandoned_window = legal.answered, legal.abandoned
        rt.answered_today, rt.abandoned_today = today.answered, today.abandoned
        rt.counts_at = now

    # -- claim ---------------------------------------------------------------------------------------

    def claim(self, campaign: Campaign, n: int, result: TickResult | None = None) -> list[Attempt]:
        """Atomically pick up to ``n`` due, callable contacts and commit an attempt in ``placing`` for each.

        One person, one live call: the due query skips numbers already in a live call in any campaign, and the
        unique index on live attempts' numbers refuses a claim that raced past it (another campaign's tick, or
        another daemon on PostgreSQL, claimed the same number since the query read). Each claim is written in
        its own SAVEPOINT, so a lost race costs that one contact (it stays due), never the rest of the batch.
        """
        assert campaign.id is not None
        # The engine's clock, not the wall's: which contacts are due and inside their window (tests freeze it).
        now = datetime.fromtimestamp(self.clock(), UTC)
        claimed: list[Attempt] = []
        lost = 0
        try:
            with session_scope(self.db) as s:
                candidates = next_due_contacts(
                    s, campaign.id, now, n * self.config.claim_overfetch + 8,
                    max_attempts=campaign.max_attempts, lock=True,
                )
                for contact in candidates:
                    if len(claimed) >= n:
                        break
                    if not self._in_window(campaign, contact, now, s):
                        if result is not None:
                            result.skipped_window += 1
                        continue
                    attempt = _claim_one(s, contact, campaign.id, now)
                    if attempt is None:
                        lost += 1
                    else:
                        claimed.append(attempt)
        except IntegrityError:
            # Every claim was checked in its savepoint, so this is not a number race; nothing was committed.
            log_event(log, logging.WARNING, "claim refused by the database; retrying next tick",
                      campaign=campaign.name)
            return []
        if lost:
            log_event(log, logging.INFO, "numbers claimed elsewhere at the same moment; skipped",
                      campaign=campaign.name, skipped=lost)
        return claimed

    def _in_window(self, campaign: Campaign, contact: Contact, now: datetime, s: Session) -> bool:
        args = (contact.timezones, now, campaign.window_start, campaign.window_end, campaign.weekdays,
                campaign.holidays)
        if callable_now(*args, fallback_zone=campaign.timezone):
            return True
        nxt = next_window_start(*args, fallback_zone=campaign.timezone)
        contact.next_attempt_at = nxt or (now + timedelta(days=1))
        contact.updated_at = now
        s.add(contact)
        return False

    # -- place ---------------------------------------------------------------------------------------

    def _place_all(self, campaign: Campaign, attempts: list[Attempt], result: TickResult) -> None:
        """Send the callbacks in parallel, then record every outcome in one transaction."""
        if not attempts:
            return
        with self._inflight_lock:
            self._inflight.update(a.id or 0 for a in attempts)
        try:
            futures = [self._pool.submit(self._send, campaign, a) for a in attempts]
            sent = [f.result() for f in futures]
            self._record(campaign, sent, result)
        finally:
            with self._inflight_lock:
                self._inflight.difference_update(a.id or 0 for a in attempts)

    def place(self, campaign: Campaign, attempt: Attempt) -> str:
        """Send one callback for a committed ``placing`` attempt and record what became of it."""
        result = TickResult(campaign.id or 0)
        self._place_all(campaign, [attempt], result)
        for outcome in (AttemptState.PLACED, AttemptState.UNCERTAIN, AttemptState.FAILED, AttemptState.NOT_PLACED):
            if getattr(result, outcome):
                return outcome
        return AttemptState.NOT_PLACED

    def _send(self, campaign: Campaign, attempt: Attempt) -> _Sent:
        """The request itself. Runs on the placing pool; touches no database."""
        if self.stopping:
            return _Sent(attempt, AttemptState.NOT_PLACED, error="daemon stopping before sending")
        sent_at = utcnow()
        try:
            res = self.client.callback(campaign.from_number, attempt.phone, sip=campaign.sip, predicted=True,
                                       wait_for_budget=False)
        except AmbiguousError as exc:
            return _Sent(attempt, AttemptState.UNCERTAIN, sent_at=sent_at, error=str(exc))
        except RejectedError as exc:
            # Only a refusal about this number is the contact's failure; any other would refuse every
            # contact, so the attempt is given back (and the campaign paused) instead of spent.
            refusal = classify_refusal(exc)
            if refusal == Refusal.NUMBER:
                return _Sent(attempt, AttemptState.FAILED, sent_at=sent_at, error=str(exc), refusal=refusal,
                             said=exc.message)
            return _Sent(attempt, AttemptState.NOT_PLACED, sent_at=sent_at, refusal=refusal, said=exc.message,
                         error=f"refused for a reason not about the number ({refusal}): {exc}")
        except (NotSentError, BudgetExhausted) as exc:
            return _Sent(attempt, AttemptState.NOT_PLACED, error=f"not sent: {exc}")
        except Exception as exc:  # a bug must not leave the attempt unexplained
            log.exception("unexpected error placing a callback")
            return _Sent(attempt, AttemptState.UNCERTAIN, sent_at=sent_at,
                         error=f"unexpected: {type(exc).__name__}: {exc}")
        placed_at = datetime.fromtimestamp(res.time, UTC) if res.time else utcnow()
        return _Sent(attempt, AttemptState.PLACED, sent_at=sent_at, placed_at=placed_at)

    def _record(self, campaign: Campaign, sent: list[_Sent], result: TickResult) -> None:
        now = utcnow()
        refused: dict[Refusal, str] = {}
        paused: list[str] = []
        with session_scope(self.db) as s:
            for item in sent:
                attempt = s.get(Attempt, item.attempt.id)
                if attempt is None:
                    continue
                if attempt.state != AttemptState.PLACING:
                    # A webhook already ended this call (a fast busy): keep its outcome, add what we know.
                    attempt.sent_at = attempt.sent_at or item.sent_at
                    attempt.placed_at = attempt.placed_at or item.placed_at
                    s.add(attempt)
                    setattr(result, item.state, getattr(result, item.state) + 1)
                    continue
                attempt.sent_at = item.sent_at
                if item.state == AttemptState.PLACED:
                    attempt_placed(attempt, item.placed_at, now)
                    s.add(attempt)
                elif item.state == AttemptState.UNCERTAIN:
                    attempt_uncertain(attempt, item.error or "", now)
                    s.add(attempt)
                elif item.state == AttemptState.FAILED:
                    fail_attempt(s, attempt, item.error or "rejected", now=now)
                else:
                    # "Try again later" waits the failed-call delay; an account refusal stays due (paused below).
                    later = item.refusal == Refusal.TRANSIENT
                    due_at = now + timedelta(seconds=campaign.retry_failed_s) if later else None
                    attempt_not_placed(s, attempt, item.error or "not sent", now=now, due_at=due_at)
                    if item.refusal is not None:
                        refused.setdefault(item.refusal, item.said)
                setattr(result, item.state, getattr(result, item.state) + 1)
            # The widest cause names the pause; a narrower one finds the campaign paused already.
            causes = [r for r in (Refusal.AUTH, Refusal.MONEY, Refusal.ACCOUNT) if r in refused]
            for refusal in causes:
                paused += pause_for_refusal(s, campaign.id or 0, refusal, refused[refusal], now)
        if paused:
            log_event(log, logging.ERROR, "campaigns paused: Zadarma refused a callback for a reason not about "
                      "the number; no contact's attempt was spent", campaigns=paused, refusal=causes[0],
                      said=refused[causes[0]])
        for item in sent:
            if item.state == AttemptState.UNCERTAIN:
                log_event(log, logging.WARNING, "callback outcome unknown; reconciliation will decide",
                          campaign=campaign.name, attempt=item.attempt.id, error=item.error)
            if self.live is None:
                continue
            if item.state == AttemptState.PLACED:
                self.live.call_placed(campaign.id or 0, item.attempt.id or 0, item.attempt.phone,
                                      (item.sent_at or now).timestamp())
            elif item.state in (AttemptState.FAILED, AttemptState.NOT_PLACED):
                self.live.call_failed(campaign.id or 0, item.attempt.id or 0)

    def _mark_uncertain(self, attempt_ids: set[int], reason: str) -> None:
        with session_scope(self.db) as s:
            attempts_in_flight_uncertain(s, attempt_ids, reason, utcnow())

    # -- campaign end --------------------------------------------------------------------------------

    def _has_work(self, campaign_id: int) -> bool:
        with session_scope(self.db, write=False) as s:
            contact = s.exec(
                select(Contact.id).where(
                    col(Contact.campaign_id) == campaign_id, col(Contact.state).in_(OPEN_CONTACT_STATES)
                ).limit(1)
            ).first()
            if contact is not None:
                return True
            live = s.exec(
                select(Attempt.id).where(
                    col(Attempt.campaign_id) == campaign_id, col(Attempt.state).in_(LIVE_ATTEMPT_STATES)
                ).limit(1)
            ).first()
            return live is not None

    def _finish(self, campaign_id: int) -> None:
        with session_scope(self.db) as s:
            campaign = s.get(Campaign, campaign_id)
            if campaign is None or campaign.state != CampaignState.RUNNING:
                return
            campaign.state = CampaignState.FINISHED
            campaign.updated_at = utcnow()
            s.add(campaign)
            s.add(EventLog(campaign_id=campaign_id, kind="campaign_finished", message="every contact is in a final state"))
        log_event(log, logging.INFO, "campaign finished", campaign=campaign.name)

    def store_agent_seconds(self) -> None:
        """Logged-in agent time per campaign, for occupancy in reports."""
        with session_scope(self.db) as s:
            for cid, rt in self._runtime.items():
                delta, rt.agent_seconds = rt.agent_seconds, 0.0
                add_to_value(s, agent_seconds_key(cid), delta)


def _claim_one(s: Session, contact: Contact, campaign_id: int, now: datetime) -> Attempt | None:
    """Claim one contact inside a SAVEPOINT; None if the live-call index refused it (its number is in a call).

    ``begin_nested`` flushes earlier work first, so a rollback here undoes only this contact's claim (the ORM
    expires the contact, which reloads as it was) and the batch's other claims stand."""
    try:
        with s.begin_nested():
            attempt = claim_contact(contact, campaign_id, now)
            s.add(contact)
            s.add(attempt)
    except IntegrityError:
        return None
    return attempt


def _agents(campaign: Campaign) -> int:
    return len(campaign.agent_extensions) or max(1, campaign.agents)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except Exception:
        return ZoneInfo("UTC")


def _finished(a: Attempt, time_scale: float = 1.0) -> FinishedCall:
    """A stored call as pacing sees it: on the wall clock, so a sped-up world's stored (world) seconds are
    scaled down."""
    start = (a.placed_at or a.sent_at or a.created_at).timestamp()
    end = (a.finished_at or a.updated_at).timestamp()
    talk = float(a.talk_seconds or 0.0) / time_scale
    return FinishedCall(
        placed_at=start,
        ended_at=max(end, start),
        answered=bool(a.answered),
        connected=bool(a.connected),
        abandoned=bool(a.abandoned),
        ring_s=float(a.ring_seconds) / time_scale if a.ring_seconds is not None else max(0.0, end - start - talk),
        talk_s=talk,
        disposition=a.disposition or "",
    )


def _replace(obs: Observation, **changes: Any) -> Observation:
    from dataclasses import replace

    return replace(obs, **changes)
