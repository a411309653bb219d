"""Webhook events: store every NOTIFY_* event raw (deduplicated) and fold it into attempt outcomes and live state.

``WebhookProcessor`` takes one event (or a batch, in arrival order) at a time: it stores the raw row, matches it to
our attempt, ends the attempt through ``dialer.outcomes.transitions.complete_attempt`` when the event decides the
outcome, updates ``LiveState`` and, for NOTIFY_START, asks ``dialer.outcomes.routing`` where the answered customer
goes. Each batch is one short transaction and the event's receive time is the clock for every decision.

Invariant: a resent event (same ``dedup_key``) is stored once and folded once; its NOTIFY_START gets the answer the
first copy got. ``replay_events`` feeds stored raw events through the same processor with their receive times as the
clock, so a fresh database with the same attempts ends with the same outcomes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from dialer.contention import is_conflict, is_disconnect, retry_conflicts
from dialer.dialing.live import LiveState
from dialer.logs import log_event
from dialer.metrics import Metrics
from dialer.models import Attempt, Campaign, WebhookEvent
from dialer.outcomes.agent_states import CallStep, agent_call_step, changed_agents
from dialer.outcomes.event_fields import customer_phone, dedup_key, other_leg
from dialer.outcomes.leg_events import save_recording
from dialer.outcomes.routing import abandon_answer, caller_answer, route_customer
from dialer.outcomes.states import LIVE_ATTEMPT_STATES
from dialer.outcomes.transitions import ANSWERED, CallOutcome, complete_attempt, normalise_disposition
from dialer.zadarma.signing import WEBHOOK_SIGNED_FIELDS

log = logging.getLogger("dialer.webhooks")

_CUSTOMER_FIELD = {
    "NOTIFY_OUT_START": "destination",
    "NOTIFY_OUT_END": "destination",
    "NOTIFY_START": "caller_id",
    "NOTIFY_INTERNAL": "caller_id",
    "NOTIFY_ANSWER": "caller_id",
    "NOTIFY_END": "caller_id",
    "NOTIFY_INTERNAL_END": "caller_id",
    "NOTIFY_IVR": "caller_id",
}
_CAMPAIGN_REFRESH_S = 30.0
_ANSWER_CACHE = 10_000


def _ts(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Processed:
    """The result of one event: HTTP status, the JSON answer (NOTIFY_START), whether it was a resend."""

    status: int
    answer: dict[str, Any] | None = None
    duplicate: bool = False
    event_id: int | None = None
    attempt_id: int | None = None


@dataclass(slots=True)
class _Ref:
    """The attempt facts folding needs, read with one Core query (an ORM load costs more than the event)."""

    id: int
    campaign_id: int
    contact_id: int
    phone: str
    state: str
    pbx_call_id: str | None
    placed_at: float | None
    created_at: float | None


_ATTEMPT: sa.Table = Attempt.__table__  # type: ignore[attr-defined]
_REF_SELECT = sa.select(
    _ATTEMPT.c.id,
    _ATTEMPT.c.campaign_id,
    _ATTEMPT.c.contact_id,
    _ATTEMPT.c.phone,
    _ATTEMPT.c.state,
    _ATTEMPT.c.pbx_call_id,
    _ATTEMPT.c.sent_at,
    _ATTEMPT.c.placed_at,
    _ATTEMPT.c.created_at,
)
# Statements built once: building a statement per event costs more than running it.
_BY_ID = _REF_SELECT.where(_ATTEMPT.c.id == sa.bindparam("id"))
_BY_PBX = (
    _REF_SELECT.where(_ATTEMPT.c.pbx_call_id == sa.bindparam("pbx")).order_by(_ATTEMPT.c.id.desc()).limit(1)
)
_BY_PHONE = (
    _REF_SELECT.where(_ATTEMPT.c.phone == sa.bindparam("phone"), _ATTEMPT.c.state.in_(LIVE_ATTEMPT_STATES))
    .order_by(_ATTEMPT.c.id.desc())
    .limit(1)
)
_SET_PBX = (
    sa.update(_ATTEMPT)
    .where(_ATTEMPT.c.id == sa.bindparam("aid"), _ATTEMPT.c.pbx_call_id.is_(None))
    .values(pbx_call_id=sa.bindparam("pbx"))
)
# An abandoned customer is still on the line while the abandon action plays: what is known is written now, and the
# attempt stays live (the number stays locked) until the call's end event or the statistics end it.
_ABANDONING = (
    sa.update(_ATTEMPT)
    .where(_ATTEMPT.c.id == sa.bindparam("aid"), _ATTEMPT.c.state.in_(LIVE_ATTEMPT_STATES))
    .values(answered=True, connected=False, abandoned=True, ring_seconds=sa.bindparam("ring"))
)
_REF_CACHE = 5_000


@dataclass
class _CampaignInfo:
    abandon_action: str
    fetched_at: float


@dataclass
class ReplayResult:
    events: int = 0
    duplicates: int = 0
    completed: int = 0
    answers: dict[int, dict[str, Any]] = field(default_factory=dict)


class WebhookProcessor:
    """Stores and folds one event at a time (thread-safe; callers are serialised). The HTTP app feeds it from one
    writer thread (``dialer.outcomes.webhook_app``); a replay calls ``process`` directly."""

    def __init__(
        self, db_engine: Engine, live: LiveState, metrics: Metrics | None = None, *, time_scale: float = 1.0
    ) -> None:
        self.engine = db_engine
        self.live = live
        self.metrics = metrics or Metrics()
        # Durations we measure are wall seconds between receive times; a sped-up simulator world (``dialer run
        # --time-scale``) reports its own in world seconds, so ours are stored scaled to match (1 in production).
        self.time_scale = time_scale
        self._lock = threading.Lock()
        self._campaigns: dict[int, _CampaignInfo] = {}
        self._answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._refs: OrderedDict[int, _Ref] = OrderedDict()
        self.completed = 0  # attempts this processor ended (first completion only)
        # Called after each committed batch with the ids of the agents whose session it changed (the agents'
        # event streams, dialer.agents.feed), on the writer thread: they must only hand the news on.
        self.agent_listeners: list[Callable[[set[int]], None]] = []
        self._insert = self._insert_statement()

    def _insert_statement(self) -> Any:
        table = WebhookEvent.__table__  # type: ignore[attr-defined]
        name = self.engine.dialect.name
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return (
                sqlite_insert(table)
                .on_conflict_do_nothing(index_elements=["dedup_key"])
                .returning(table.c.id)
            )
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing(index_elements=["dedup_key"]).returning(table.c.id)
        return None

    def _store(
        self, session: Session, fields: Mapping[str, str], key: str, received_at: datetime, ok: bool
    ) -> int | None:
        """Insert the raw event; None when it is already stored."""
        values: dict[str, Any] = {
            "received_at": received_at,
            "event": fields.get("event", "")[:100],
            "pbx_call_id": (fields.get("pbx_call_id") or None),
            "dedup_key": key,
            "payload": dict(fields),
            "signature_ok": ok,
        }
        if self._insert is not None:
            result = session.connection().execute(self._insert, values)
            row = result.first()
            return None if row is None else int(row[0])
        try:  # pragma: no cover - other databases
            with session.begin_nested():
                ev = WebhookEvent(**values)
                session.add(ev)
                session.flush()
            return ev.id
        except sa.exc.IntegrityError:  # pragma: no cover
            return None

    def process(self, fields: Mapping[str, str], received_at: datetime, signature_ok: bool) -> Processed:
        """Store ``fields`` (one event) and fold it in; ``received_at`` is the clock for every live decision."""
        return self.process_batch([(fields, received_at, signature_ok)])[0]

    def process_batch(self, items: list[tuple[Mapping[str, str], datetime, bool]]) -> list[Processed]:
        """Store and fold events in order, in one transaction. A failure to fold one event is logged and leaves
        its raw row stored; a database failure fails the whole batch (nothing is committed)."""
        with self._lock:
            results, notify, agents = retry_conflicts(lambda: self._write_batch(items),
                                                      what="folding webhook events")
            for key, result in zip((dedup_key(f) for f, _, _ in items), results, strict=True):
                if result.answer is not None and not result.duplicate:
                    self._answers[key] = result.answer
            while len(self._answers) > _ANSWER_CACHE:
                self._answers.popitem(last=False)
        if notify:
            self.live.notify(notify)
        if agents:
            self._tell_agent_listeners(agents)
        return results

    def _write_batch(
        self, items: list[tuple[Mapping[str, str], datetime, bool]]
    ) -> tuple[list[Processed], list[int], set[int]]:
        """One transaction for the batch; rolled back whole on any database failure (and then run again whole
        after a conflict with another writer: the live view may see an event twice, which it tolerates)."""
        notify: list[int] = []
        results: list[Processed] = []
        session = Session(self.engine, expire_on_commit=False)
        try:
            for fields, received_at, ok in items:
                results.append(self._one(session, fields, received_at, ok, notify))
            session.commit()
            return results, notify, changed_agents(session)
        except BaseException:
            session.rollback()
            self._refs.clear()  # they may hold states the rollback undid
            raise
        finally:
            session.close()

    def _tell_agent_listeners(self, agents: set[int]) -> None:
        for listener in list(self.agent_listeners):
            try:
                listener(agents)
            except Exception as exc:  # a listener's bug must not fail the webhook
                log_event(log, logging.ERROR, "agent listener failed", error=f"{type(exc).__name__}: {exc}")

    def _one(
        self, session: Session, raw: Mapping[str, str], received_at: datetime, ok: bool, notify: list[int]
    ) -> Processed:
        fields = {str(k): str(v) for k, v in raw.items()}
        event = fields.get("event", "")
        key = dedup_key(fields)
        event_id = self._store(session, fields, key, received_at, ok)
        if event_id is None:
            self.metrics.inc("dialer_webhook_duplicates_total")
            cached = self._answers.get(key, {}) if event == "NOTIFY_START" else None
            return Processed(200, cached, duplicate=True)
        self.live.event_received(received_at.timestamp())
        # A bounded label set: a replayed old database may hold names no signing rule knows.
        self.metrics.webhook_event(event if event in WEBHOOK_SIGNED_FIELDS else "other")
        answer: dict[str, Any] | None = {} if event == "NOTIFY_START" else None
        attempt_id: int | None = None
        try:
            with session.begin_nested():
                answer, attempt_id = self._fold(session, fields, received_at, notify)
        except Exception as exc:
            if is_conflict(exc) or is_disconnect(exc):
                raise  # another writer holds its rows, or the connection is gone: the whole batch runs again
            self._refs.clear()  # the failed fold may have changed a cached attempt's state
            # The raw event stays stored, marked, and is folded again later (dialer.outcomes.refold): never lost.
            self.metrics.inc("dialer_webhook_errors_total")
            error = f"{type(exc).__name__}: {exc}"
            session.execute(sa.update(WebhookEvent).where(WebhookEvent.id == event_id)  # type: ignore[arg-type]
                            .values(fold_error=error[:500], fold_tries=1))
            log_event(log, logging.WARNING, "webhook event folding failed; it will be folded again", event=event,
                      pbx_call_id=fields.get("pbx_call_id", ""), error=error)
            answer = {} if event == "NOTIFY_START" else None
        return Processed(200, answer, event_id=event_id, attempt_id=attempt_id)

    # --- folding ---

    @property
    def lock(self) -> threading.Lock:
        """Held while events are folded: one writer of events at a time (``dialer.outcomes.refold`` takes it)."""
        return self._lock

    def forget_refs(self) -> None:
        """Drop the cached attempt facts (after a rollback they may hold states that were undone)."""
        self._refs.clear()

    def fold_late(self, session: Session, fields: dict[str, str], received_at: datetime) -> list[int]:
        """Fold a stored event again (its first folding failed), with its receive time as the clock. Its call was
        routed long ago, so a NOTIFY_START only links the call. Returns the campaigns to tick."""
        notify: list[int] = []
        self._fold(session, fields, received_at, notify, route=False)
        return notify

    def _fold(
        self, session: Session, f: dict[str, str], received_at: datetime, notify: list[int], *, route: bool = True
    ) -> tuple[dict[str, Any] | None, int | None]:
        event = f.get("event", "")
        now = received_at.timestamp()
        pbx = f.get("pbx_call_id") or None
        field_name = _CUSTOMER_FIELD.get(event)
        if event == "NOTIFY_RECORD" and pbx:
            ref = self._find_attempt(session, pbx, None)
            return None, save_recording(session, ref.id if ref is not None else None, f)
        if field_name is None:
            return None, None  # events we do not know: stored, nothing to fold
        phone = customer_phone(f.get(field_name))
        ref = self._find_attempt(session, pbx, phone)
        if ref is not None:
            self._touch(session, ref, now, out_start=event == "NOTIFY_OUT_START")
            self.live.link(pbx, ref.id)
            if pbx and ref.pbx_call_id is None:
                # The first leg seen names the call for reconciliation against statistics.
                session.connection().execute(_SET_PBX, {"aid": ref.id, "pbx": pbx})
                ref.pbx_call_id = pbx
        aid = ref.id if ref is not None else None

        if event == "NOTIFY_OUT_END" and ref is not None:
            disposition = normalise_disposition(f.get("disposition"))
            answered = disposition == ANSWERED
            finished = self.live.out_ended(ref.id, now, disposition, answered=answered)
            if not answered and ref.state in LIVE_ATTEMPT_STATES:
                ring = self._world(finished.ring_s) if finished is not None else None
                outcome = CallOutcome(
                    disposition or "no answer",
                    False,
                    False,
                    False,
                    ring_seconds=ring,
                    pbx_call_id=ref.pbx_call_id or pbx,
                    finished_at=received_at,
                    source="webhook",
                )
                self._complete(session, ref, outcome, received_at)
            notify.append(ref.campaign_id)
            return None, aid

        if event == "NOTIFY_START":
            return (self._route(session, ref, phone, pbx, received_at, notify) if route else None), aid

        extension = (f.get("internal") or "").strip()
        if event == "NOTIFY_INTERNAL":
            if extension:
                self.live.agent_ringing(pbx, extension, now, aid)
                self._agent_step(session, CallStep.ROUTED, received_at, extension, ref)
            return None, aid

        if event == "NOTIFY_INTERNAL_END":
            # An extension that rang and never answered is free again. A talked call's end waits for NOTIFY_END,
            # which completes the attempt in the same transaction: a disposition saved on call_ended finds it done.
            call = self.live.call(aid) if aid is not None else None
            if call is None or call.connected_at is None:
                self.live.agent_leg_ended(pbx, extension, now, aid)
                self._agent_step(session, CallStep.ENDED, received_at, extension or None, ref)
            return None, aid

        if event == "NOTIFY_ANSWER":
            extension = extension or (f.get("destination") or "").strip()
            if extension:
                self.live.agent_answered(pbx, extension, now, aid)
                self._agent_step(session, CallStep.ANSWERED, received_at, extension, ref)
                if ref is not None:
                    notify.append(ref.campaign_id)
            return None, aid

        if event == "NOTIFY_END":
            self._end(session, f, ref, pbx, received_at, notify)
            return None, aid
        return None, aid  # NOTIFY_OUT_START, NOTIFY_IVR: linking above was all

    def _end(
        self,
        session: Session,
        f: dict[str, str],
        ref: _Ref | None,
        pbx: str | None,
        received_at: datetime,
        notify: list[int],
    ) -> None:
        now = received_at.timestamp()
        disposition = normalise_disposition(f.get("disposition"))
        agent = (f.get("last_internal") or "").strip() or (f.get("internal") or "").strip() or None
        talk = _float(f.get("duration"))
        call = self.live.call(ref.id) if ref is not None else None
        saw_answer = call is not None and call.connected_at is not None
        connected = saw_answer or (disposition == ANSWERED and agent is not None)
        if connected and call is not None and call.agent:
            agent = call.agent
        result = self.live.call_ended(
            pbx,
            ref.id if ref is not None else None,
            now,
            agent=agent,
            connected=connected,
            talk_s=talk if connected else None,
            disposition=ANSWERED if connected else disposition,
        )
        self._agent_step(session, CallStep.ENDED, received_at, agent, ref, talked=connected)
        if ref is None:
            return
        ring = None
        if result.placed_at is not None and result.answered_at is not None:
            ring = self._world(max(0.0, result.answered_at - result.placed_at))
        if connected:
            talk_s = (
                talk
                if talk is not None
                else (self._world(result.finished.talk_s) if result.finished is not None else None)
            )
            outcome = CallOutcome(
                ANSWERED,
                True,
                True,
                False,
                agent=agent,
                talk_seconds=talk_s,
                ring_seconds=ring,
                pbx_call_id=ref.pbx_call_id or pbx,
                finished_at=received_at,
                source="webhook",
            )
        else:
            outcome = _abandoned(ring, ref.pbx_call_id or pbx, received_at)
        self._complete(session, ref, outcome, received_at)
        notify.append(ref.campaign_id)

    def _route(
        self,
        session: Session,
        ref: _Ref | None,
        phone: str | None,
        pbx: str | None,
        received_at: datetime,
        notify: list[int],
    ) -> dict[str, Any]:
        """NOTIFY_START: the answer that routes the caller. Our customer nobody can take is abandoned here, but the
        attempt ends only with the call (NOTIFY_END, or the statistics): until then the number stays locked, so no
        other campaign rings it while the abandon message plays."""
        if ref is None or ref.state not in LIVE_ATTEMPT_STATES:
            return caller_answer(session, phone)
        now = received_at.timestamp()
        notify.append(ref.campaign_id)
        answer = route_customer(
            session,
            self.live,
            campaign_id=ref.campaign_id,
            attempt_id=ref.id,
            contact_id=ref.contact_id,
            pbx_call_id=pbx,
            now=now,
        )
        if answer is not None:
            return answer
        info = self._campaign_info(session, ref.campaign_id)
        finished = self.live.abandoned(ref.id, now)
        ring = self._world(finished.ring_s) if finished is not None else None
        session.connection().execute(_ABANDONING, {"aid": ref.id, "ring": ring})
        log_event(
            log,
            logging.INFO,
            "no agent free: abandon action",
            campaign_id=ref.campaign_id,
            attempt_id=ref.id,
            action=info.abandon_action,
        )
        return abandon_answer(info.abandon_action)

    def _complete(self, session: Session, ref: _Ref, outcome: CallOutcome, received_at: datetime) -> None:
        attempt = session.get(Attempt, ref.id)
        if attempt is None:  # pragma: no cover - deleted under us
            return
        # /metrics reads the call counters from the database (dialer.metrics): nothing to count here.
        if complete_attempt(session, attempt, outcome, now=received_at):
            self.completed += 1
        ref.state = attempt.state

    @staticmethod
    def _agent_step(session: Session, step: CallStep, at: datetime, extension: str | None, ref: _Ref | None,
                    *, talked: bool = False) -> None:
        """Follow the call into its agent's session (dialer.outcomes.agent_states), if an agent session has it."""
        agent_call_step(session, step, at, extension=extension, attempt_id=ref.id if ref is not None else None,
                        campaign_id=ref.campaign_id if ref is not None else None, talked=talked)  # fmt: skip

    def _world(self, wall_s: float) -> float:
        return wall_s * self.time_scale

    # --- lookups ---

    def _find_attempt(self, session: Session, pbx: str | None, phone: str | None) -> _Ref | None:
        """Our attempt for an event: by the call id seen before, else the latest live attempt for the phone."""
        attempt_id = self.live.attempt_for(pbx)
        if attempt_id is not None:
            ref = self._refs.get(attempt_id)
            if ref is not None:
                return ref
            row = session.connection().execute(_BY_ID, {"id": attempt_id}).first()
            if row is not None:
                return self._remember(row)
        if pbx:
            row = session.connection().execute(_BY_PBX, {"pbx": pbx}).first()
            if row is not None:
                return self._remember(row)
        if phone:
            row = session.connection().execute(_BY_PHONE, {"phone": phone}).first()
            if row is not None and not other_leg(row.pbx_call_id, pbx):
                return self._remember(row)
        return None

    def _remember(self, row: Any) -> _Ref:
        ref = _Ref(
            id=row.id,
            campaign_id=row.campaign_id,
            contact_id=row.contact_id,
            phone=row.phone,
            state=row.state,
            pbx_call_id=row.pbx_call_id,
            placed_at=_ts(row.sent_at) or _ts(row.placed_at),
            created_at=_ts(row.created_at),
        )
        self._refs[ref.id] = ref
        if len(self._refs) > _REF_CACHE:
            self._refs.popitem(last=False)
        return ref

    def _touch(self, session: Session, ref: _Ref, now: float, *, out_start: bool) -> None:
        """Make sure the live state knows the call and its campaign's agents."""
        if self.live.call(ref.id) is None:
            placed = ref.placed_at
            if placed is None:
                placed = now if out_start else (ref.created_at or now)
            self.live.ensure_call(ref.campaign_id, ref.id, ref.phone, placed)
        self._campaign_info(session, ref.campaign_id, now=now)

    def _campaign_info(self, session: Session, campaign_id: int, now: float | None = None) -> _CampaignInfo:
        info = self._campaigns.get(campaign_id)
        mono = time.monotonic()
        if info is None or mono - info.fetched_at > _CAMPAIGN_REFRESH_S:
            campaign = session.get(Campaign, campaign_id)
            action = campaign.abandon_action if campaign is not None else "hangup"
            info = self._campaigns[campaign_id] = _CampaignInfo(action, mono)
            if campaign is not None and not self.live.is_configured(campaign_id):
                self.live.configure_campaign(
                    campaign_id,
                    extensions=list(campaign.agent_extensions or []),
                    agents=campaign.agents,
                    now=now or 0.0,
                )
        return info


def replay_events(
    db_engine: Engine,
    events: Iterable[WebhookEvent | Mapping[str, Any]],
    *,
    live: LiveState | None = None,
    metrics: Metrics | None = None,
) -> ReplayResult:
    """Feed stored raw events, in the order given (received order), through the live folding code into
    ``db_engine`` (a database holding the same campaigns, contacts and attempts). Events already stored there are
    duplicates and change nothing. Mappings need ``payload`` and ``received_at`` (``signature_ok`` optional)."""
    processor = WebhookProcessor(db_engine, live or LiveState(), metrics)
    out = ReplayResult()
    for ev in events:
        if isinstance(ev, WebhookEvent):
            payload, received_at, ok = ev.payload, ev.received_at, ev.signature_ok
        else:
            payload, received_at, ok = ev["payload"], ev["received_at"], bool(ev.get("signature_ok", False))
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=UTC)
        result = processor.process(payload, received_at, ok)
        out.events += 1
        out.duplicates += int(result.duplicate)
        if result.answer is not None and result.event_id is not None:
            out.answers[result.event_id] = result.answer
    out.completed = processor.completed
    return out


def _abandoned(ring: float | None, pbx_call_id: str | None, at: datetime) -> CallOutcome:
    """The customer answered and reached no agent."""
    return CallOutcome(ANSWERED, True, False, True, talk_seconds=0.0, ring_seconds=ring,
                       pbx_call_id=pbx_call_id, finished_at=at, source="webhook")

