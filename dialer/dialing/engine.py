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
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine as DbEngine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from dialer.agents.presence import TeamPresence
from dialer.contention import lock_rows, retry_conflicts
from dialer.db import session_scope
from dialer.dialing import claiming
from dialer.dialing.observing import (
    CampaignRuntime,
    LiveSource,
    Observed,
    ObserveHook,
    configured_agents,
    observe,
)
from dialer.kv import add_to_value
from dialer.logs import log_event
from dialer.models import Agent, Attempt, Campaign, Contact, EventLog, utcnow
from dialer.outcomes.refusals import pause_for_refusal
from dialer.outcomes.states import (
    LIVE_ATTEMPT_STATES,
    OPEN_CONTACT_STATES,
    AgentState,
    AttemptState,
    CampaignState,
)
from dialer.outcomes.transitions import (
    attempt_not_placed,
    attempt_placed,
    attempt_uncertain,
    attempts_in_flight_uncertain,
    fail_attempt,
    placing_attempts,
)
from dialer.pacing import make_policy
from dialer.pacing.base import why_held
from dialer.pacing.observation import Observation
from dialer.reporting.figures import agent_seconds_key
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

_ATTEMPT: sa.Table = Attempt.__table__  # type: ignore[attr-defined]
_CONTACT: sa.Table = Contact.__table__  # type: ignore[attr-defined]
log = logging.getLogger("dialer.engine")
_DISPOSING = (AgentState.RINGING, AgentState.TALKING, AgentState.WRAPUP)


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
    callbacks: int = 0  # of the claimed, scheduled callbacks
    agents: int = 0  # what pacing saw: agents logged in (and not paused), and idle
    idle: int = 0


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
        self._runtime: dict[int, CampaignRuntime] = {}
        self._stopping = threading.Event()
        # Set while the daemon holds dialling (a full disk, dialer.dialing.disk): ticks place nothing meanwhile.
        self.hold: Callable[[], bool] = lambda: False
        self._pool = ThreadPoolExecutor(max_workers=self.config.place_workers, thread_name_prefix="place")
        self._inflight: set[int] = set()
        self._inflight_lock = threading.Lock()
        # The heartbeat thread drains the agent-seconds counters the tick threads add to.
        self._seconds_lock = threading.Lock()
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

    def runtime(self, campaign: Campaign) -> CampaignRuntime:
        assert campaign.id is not None
        rt = self._runtime.get(campaign.id)
        if rt is None or rt.pacing != campaign.pacing:
            rt = CampaignRuntime(make_policy(campaign.pacing, campaign.abandon_target), campaign.pacing)
            self._runtime[campaign.id] = rt
        return rt

    def budget_share(self) -> int:
        """Callbacks this campaign may send now: the general budget left (minus the reserve), shared fairly."""
        available = self.client.budget.available(GENERAL, reserve=self.config.general_reserve)
        share, extra = divmod(available, self._running_count)
        return share + (1 if extra else 0)

    def tick(self, campaign_id: int) -> TickResult:
        result = TickResult(campaign_id)
        if self.stopping or self.hold():
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
            seen = self.observe(campaign, rt, now)
            obs, team = seen.obs, seen.team
            agents = team.working if team is not None else configured_agents(campaign)
            if rt.last_tick:
                with self._seconds_lock:
                    rt.agent_seconds += max(0.0, now - rt.last_tick) * agents * self.config.time_scale
            rt.last_tick = now
            n = max(0, min(rt.policy.decide(obs), obs.budget))
            if team is not None and team.working == 0:
                n = 0  # agents, but none logged in and not paused: no call, whatever the policy says
            result.decided, result.agents, result.idle = n, obs.agents_logged_in, obs.idle
            if team is not None and result.agents != rt.team_size:
                # The decision log of a team change: a pause or logout is paced for from this tick on.
                log_event(log, logging.INFO, "pacing for a new team size", campaign=campaign.name,
                          agents=result.agents, was=rt.team_size, idle=result.idle, decided=n)  # fmt: skip
                rt.team_size = result.agents
            if n and not self.stopping:
                attempts = self.claim(campaign, n, result)
                result.claimed = len(attempts)
                self._place_all(campaign, attempts, result)
            self._explain(campaign, rt, obs, n, result, now, team)
            if not result.claimed and not self._has_work(campaign_id):
                self._finish(campaign_id)
        finally:
            rt.lock.release()
        if result.claimed or result.failed:
            log_event(log, logging.INFO, "tick", campaign=campaign.name, decided=result.decided,
                      placed=result.placed, uncertain=result.uncertain, failed=result.failed)
        return result

    def _explain(self, campaign: Campaign, rt: CampaignRuntime, obs: Observation, n: int, result: TickResult,
                 now: float, team: TeamPresence | None) -> None:
        """Why this tick placed what it placed (dialer.dialing.why); never lets a fault there stop the dialling."""
        try:
            rt.why.update(
                self.db, campaign, now, obs, decided=n, claimed=result.claimed, skipped_window=result.skipped_window,
                policy_reason=why_held(rt.policy, obs) if n == 0 else "",
                budget_reset_in=self.client.budget.reset_in(GENERAL) if obs.budget <= 0 else None,
                team=team.describe() if team is not None else None,
            )
        except Exception:
            log.exception("could not work out why campaign %s is (not) dialling", campaign.name)

    # -- observe and claim (dialer.dialing.observing, dialer.dialing.claiming) ----------------------------

    def observe(self, campaign: Campaign, rt: CampaignRuntime, now: float) -> Observed:
        return observe(self.db, campaign, rt, now, budget=self.budget_share(), live=self.live,
                       live_observer=self.live_observer, time_scale=self.config.time_scale,
                       refresh_s=self.config.counts_refresh_s)  # fmt: skip

    def claim(self, campaign: Campaign, n: int, result: TickResult | None = None) -> list[Attempt]:
        """Atomically pick up to ``n`` due calls (scheduled callbacks first) and commit an attempt in ``placing``
        for each (``dialer.dialing.claiming``); an agent an "only me" callback is for is held for it."""
        # The engine's clock, not the wall's: which contacts are due and inside their window (tests freeze it).
        now = datetime.fromtimestamp(self.clock(), UTC)
        try:
            got = claiming.claim(self.db, campaign, n, now, overfetch=self.config.claim_overfetch)
        except IntegrityError:
            # Every claim was checked in its savepoint, so this is not a number race; nothing was committed.
            log_event(log, logging.WARNING, "claim refused by the database; retrying next tick",
                      campaign=campaign.name)
            return []
        if result is not None:
            result.skipped_window += got.skipped_window
            result.callbacks += got.callbacks
        if got.lost:
            log_event(log, logging.INFO, "numbers claimed elsewhere at the same moment; skipped",
                      campaign=campaign.name, skipped=got.lost)
        if self.live is not None:
            for attempt_id, extension in got.holds.items():
                self.live.hold_agent(extension, attempt_id, now.timestamp())
        return got.attempts

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
                                       wait_for_budget=False, reserve=self.config.general_reserve)
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
        counts, causes, refused, paused = retry_conflicts(lambda: self._write_sent(campaign, sent, now),
                                                          what="recording placed callbacks")
        for state, n in counts.items():
            setattr(result, state, getattr(result, state) + n)
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
                self.live.call_failed(campaign.id or 0, item.attempt.id or 0, now.timestamp())

    def _write_sent(self, campaign: Campaign, sent: list[_Sent], now: datetime
                    ) -> tuple[Counter[str], list[Refusal], dict[Refusal, str], list[str]]:
        """What became of each callback, in one transaction (run again whole after a conflict)."""
        counts: Counter[str] = Counter()
        refused: dict[Refusal, str] = {}
        paused: list[str] = []
        with session_scope(self.db) as s:
            # Attempts, then contacts, each by id: the order every writer of several rows locks them in.
            lock_rows(s, _ATTEMPT, [item.attempt.id or 0 for item in sent])
            lock_rows(s, _CONTACT, [item.attempt.contact_id for item in sent])
            for item in sent:
                attempt = s.get(Attempt, item.attempt.id)
                if attempt is None:
                    continue
                if attempt.state != AttemptState.PLACING:
                    # A webhook already ended this call (a fast busy): keep its outcome, add what we know.
                    attempt.sent_at = attempt.sent_at or item.sent_at
                    attempt.placed_at = attempt.placed_at or item.placed_at
                    s.add(attempt)
                    counts[item.state] += 1
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
                counts[item.state] += 1
            # The widest cause names the pause; a narrower one finds the campaign paused already.
            causes: list[Refusal] = [r for r in (Refusal.AUTH, Refusal.MONEY, Refusal.ACCOUNT) if r in refused]
            for refusal in causes:
                paused += pause_for_refusal(s, campaign.id or 0, refusal, refused[refusal], now)
        return counts, causes, refused, paused

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
            if live is not None:
                return True
            # An agent still on (or wrapping up) one of its calls may yet give a disposition that reopens a contact.
            agent = s.exec(
                select(Agent.id).where(col(Agent.campaign_id) == campaign_id, col(Agent.removed_at).is_(None),
                                       col(Agent.state).in_(_DISPOSING))
                .limit(1)
            ).first()  # fmt: skip
            return agent is not None

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
        with self._seconds_lock:
            drained = []
            for cid, rt in list(self._runtime.items()):
                drained.append((cid, rt.agent_seconds))
                rt.agent_seconds = 0.0
        with session_scope(self.db) as s:
            for cid, delta in drained:
                add_to_value(s, agent_seconds_key(cid), delta)
