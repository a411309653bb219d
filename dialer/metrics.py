"""Prometheus text exposition (format 0.0.4), hand-written: a handful of counters and gauges needs no library.

The call counters (placed, answered, connected, abandoned, per campaign) are read from the database when scraped,
with the report's definitions (``dialer.reporting.figures.call_counts_by_campaign``): whatever ended an attempt
(a webhook, reconciliation, another process, a run before a restart), ``/metrics`` equals ``dialer report``.
Campaign series are labelled by id and name and exist only for campaigns in the database. The webhook counters
count events in this process. Gauges that describe the present (live calls, agents, API budget) are read when
scraped, from the live state and the API client's ``RateBudget`` the daemon hands over (``metrics.budget``).
The live state is read through ``LiveGauges``, the few things a scrape needs (``dialer.dialing.live.LiveState``
fits), so this module and the live state never import each other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from dialer.reporting.figures import CallCounts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Counter name -> (help, the CallCounts field it shows): read from the database at scrape time.
_CALL_COUNTERS: dict[str, tuple[str, str]] = {
    "dialer_calls_placed_total": ("Calls placed (completed attempts, as the report counts them), per campaign.", "calls"),
    "dialer_calls_answered_total": ("Placed calls the customer answered, per campaign.", "answered"),
    "dialer_calls_connected_total": ("Answered calls an agent took, per campaign.", "connected"),
    "dialer_calls_abandoned_total": ("Answered calls no agent took (abandoned), per campaign.", "abandoned"),
}
_COUNTERS: dict[str, str] = {
    "dialer_webhook_events_total": "Webhook events accepted and stored, per event type (duplicates not counted).",
    "dialer_webhook_duplicates_total": "Webhook events received again and ignored.",
    "dialer_webhook_signature_failures_total": "Webhook requests refused for a missing or wrong signature.",
    "dialer_webhook_malformed_total": "Webhook requests refused as malformed.",
    "dialer_webhook_errors_total": "Webhook events stored but not folded because of an error.",
    "dialer_webhook_unknown_events_total": "Webhook requests refused for an event name with no signing rule.",
    "dialer_webhook_rate_limited_total": "Webhook requests refused unread: their source was over its failure budget.",
}


class CampaignGauges(Protocol):
    """One campaign's live figures at scrape time (``dialer.dialing.live_types.LiveView`` fits)."""

    @property
    def agents_logged_in(self) -> int: ...
    @property
    def idle(self) -> int: ...
    @property
    def talking_since(self) -> tuple[float, ...]: ...
    @property
    def wrapup_since(self) -> tuple[float, ...]: ...
    @property
    def ringing_since(self) -> tuple[float, ...]: ...
    @property
    def waiting(self) -> int: ...


class LiveGauges(Protocol):
    """What a scrape reads of the live state (``dialer.dialing.live.LiveState`` fits)."""

    @property
    def last_event_at(self) -> float | None: ...

    def campaigns(self) -> list[int]: ...

    def view(self, campaign_id: int, now: float) -> CampaignGauges: ...


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(parts) + "}" if parts else ""


def campaign_labels(campaign_id: int, name: str | None = None) -> str:
    """``{campaign="3",campaign_name="spring"}``: every campaign series carries both (the name when known)."""
    pairs = [("campaign", str(campaign_id))]
    if name is not None:
        pairs.append(("campaign_name", name))
    return _labels(pairs)


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Metrics:
    """Thread-safe counters plus scrape-time gauges."""

    def __init__(self, budget: Any = None, db: Engine | None = None) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        # Anything with ``snapshot() -> {group: {"remaining": .., "limit": ..}}`` (dialer.zadarma.budget.RateBudget).
        self.budget = budget
        # The database the call counters and campaign names are read from (None: no campaign series).
        self.db = db

    def inc(self, name: str, value: float = 1.0, **labels: object) -> None:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + value

    def get(self, name: str, **labels: object) -> float:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        with self._lock:
            return self._values.get(key, 0.0)

    # --- the events the dialer counts ---

    def webhook_event(self, event: str) -> None:
        self.inc("dialer_webhook_events_total", event=event)

    # --- exposition ---

    def render(self, live: LiveGauges | None = None, now: float | None = None) -> str:
        """The exposition text. Reads the database (when ``db`` is set): call it off the event loop."""
        now = time.time() if now is None else now
        with self._lock:
            values = dict(self._values)
        calls = self._campaign_calls()
        names = {cid: name for cid, (name, _) in calls.items()}
        out: list[str] = []
        for name, (help_text, field) in _CALL_COUNTERS.items():
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} counter")
            out.extend(
                f"{name}{campaign_labels(cid, cname)} {_num(getattr(counts, field))}"
                for cid, (cname, counts) in calls.items()
            )
        for name, help_text in _COUNTERS.items():
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} counter")
            rows = sorted((labels, v) for (n, labels), v in values.items() if n == name) or [((), 0.0)]
            out.extend(f"{name}{_labels(labels)} {_num(v)}" for labels, v in rows)
        out.extend(self._budget_lines())
        out.extend(self._dial_reason_lines())
        out.extend(self._team_lines(names))
        if live is not None:
            out.extend(self._live_lines(live, now, names if self.db is not None else None))
        return "\n".join(out) + "\n"

    def _campaign_calls(self) -> dict[int, tuple[str, CallCounts]]:
        if self.db is None:
            return {}
        from dialer.db import reader
        from dialer.reporting.figures import call_counts_by_campaign

        with reader(self.db).connect() as conn:
            return call_counts_by_campaign(conn)

    def _dial_reason_lines(self) -> list[str]:
        """Why each campaign is or is not dialling: 1 for its current reason, 0 for every other (a closed set)."""
        if self.db is None:
            return []
        from dialer.dialing.status import campaign_reasons
        from dialer.dialing.why import Reason

        name = "dialer_campaign_dial_reason"
        out = [f"# HELP {name} Why the campaign is or is not dialling: 1 for its current reason (dialer status says more).",
               f"# TYPE {name} gauge"]  # fmt: skip
        for cid, cname, code in campaign_reasons(self.db):
            out.extend(
                f"{name}{_labels([('campaign', str(cid)), ('campaign_name', cname), ('reason', r.value)])} "
                f"{int(r.value == code)}"
                for r in Reason
            )
        return out

    def _team_lines(self, names: dict[int, str]) -> list[str]:
        """Agents by state and scheduled callbacks (all, and those due), per campaign, read from the database."""
        if self.db is None:
            return []
        from dialer.dialing.status import team_figures

        teams = team_figures(self.db)
        agents, scheduled, due = "dialer_agents", "dialer_callbacks_scheduled", "dialer_callbacks_due"
        out = [f"# HELP {agents} The campaign's agents in each state (campaigns with agents).",
               f"# TYPE {agents} gauge"]  # fmt: skip
        for cid, fig in sorted(teams.items()):
            if cid in names:
                out.extend(f"{agents}{_labels([('campaign', str(cid)), ('campaign_name', names[cid]), ('state', st)])} "
                           f"{n}" for st, n in fig.agents.items())  # fmt: skip
        for name, text, attr in ((scheduled, "Callbacks scheduled and not yet placed", "callbacks_scheduled"),
                                 (due, "Scheduled callbacks whose time has come", "callbacks_due")):  # fmt: skip
            out += [f"# HELP {name} {text}, per campaign.", f"# TYPE {name} gauge"]
            out.extend(f"{name}{campaign_labels(cid, cname)} {getattr(teams[cid], attr) if cid in teams else 0}"
                       for cid, cname in sorted(names.items()))  # fmt: skip
        return out

    def _budget_lines(self) -> list[str]:
        if self.budget is None:
            return []
        try:
            snap = self.budget.snapshot()
        except Exception:  # a scrape must never fail because of the budget object
            return []
        out = [
            "# HELP dialer_api_budget_remaining API requests left in the current rate-limit window, per group.",
            "# TYPE dialer_api_budget_remaining gauge",
        ]
        out += [
            f'dialer_api_budget_remaining{{group="{_escape(g)}"}} {_num(s["remaining"])}'
            for g, s in sorted(snap.items())
        ]
        out += [
            "# HELP dialer_api_budget_limit API requests allowed per rate-limit window, per group.",
            "# TYPE dialer_api_budget_limit gauge",
        ]
        out += [
            f'dialer_api_budget_limit{{group="{_escape(g)}"}} {_num(s["limit"])}'
            for g, s in sorted(snap.items())
        ]
        return out

    def _live_lines(self, live: LiveGauges, now: float, names: dict[int, str] | None) -> list[str]:
        """Per-campaign live gauges; with ``names`` (the database's campaigns) only for campaigns that exist."""
        gauges: dict[str, list[str]] = {
            "dialer_live_calls_ringing": [],
            "dialer_live_calls_waiting": [],
            "dialer_live_agents_logged_in": [],
            "dialer_live_agents_idle": [],
            "dialer_live_agents_talking": [],
            "dialer_live_agents_wrapup": [],
        }
        for campaign_id in live.campaigns():
            if names is not None and campaign_id not in names:
                continue  # deleted, or never a campaign: no series for it
            view = live.view(campaign_id, now)
            lab = campaign_labels(campaign_id, None if names is None else names[campaign_id])
            gauges["dialer_live_calls_ringing"].append(
                f"dialer_live_calls_ringing{lab} {len(view.ringing_since)}"
            )
            gauges["dialer_live_calls_waiting"].append(f"dialer_live_calls_waiting{lab} {view.waiting}")
            gauges["dialer_live_agents_logged_in"].append(
                f"dialer_live_agents_logged_in{lab} {view.agents_logged_in}"
            )
            gauges["dialer_live_agents_idle"].append(f"dialer_live_agents_idle{lab} {view.idle}")
            gauges["dialer_live_agents_talking"].append(
                f"dialer_live_agents_talking{lab} {len(view.talking_since)}"
            )
            gauges["dialer_live_agents_wrapup"].append(
                f"dialer_live_agents_wrapup{lab} {len(view.wrapup_since)}"
            )
        out: list[str] = []
        for name, rows in gauges.items():
            out.append(f"# HELP {name} Live state from PBX webhooks, per campaign.")
            out.append(f"# TYPE {name} gauge")
            out.extend(rows)
        last = live.last_event_at
        out.append(
            "# HELP dialer_webhook_last_event_age_seconds Seconds since the last webhook event (-1: none yet)."
        )
        out.append("# TYPE dialer_webhook_last_event_age_seconds gauge")
        out.append(
            f"dialer_webhook_last_event_age_seconds {_num(round(now - last, 3)) if last is not None else -1}"
        )
        return out
