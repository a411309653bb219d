"""Scenario files: the world a simulation runs in (agents, customers, durations, limits, faults).

A scenario is TOML; every key is optional. Clock times ("09:00") in schedules are on the *shift clock*: the
model's ``start_time`` is the moment the clock reads ``[shift] start``, so a scenario behaves the same whether the
simulator is started at 3 a.m. or at noon, and in the discrete-event driver starting at t=0.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dialer.sim.agenda import (
    AgentBreak,
    AgentShift,
    DeskConfig,
    breaks_summary,
    in_period,
    parse_breaks,
    parse_desk,
    parse_shifts,
)
from dialer.sim.units import DAY_S, Dist, ScenarioError, clock_label, parse_clock

__all__ = ["DAY_S", "AgentBreak", "AgentShift", "DeskConfig", "Dist", "Scenario", "ScenarioError", "clock_label",
           "default_scenario", "load_scenario", "parse_clock", "read_scenario_toml"]

OUTCOMES = ("answered", "no_answer", "busy", "failed", "unallocated")
WEBHOOK_PROFILES = ("full", "out-only", "pbx-only", "none")
FAULT_NAMES = (
    "error_rate",
    "server_error_rate",
    "timeout_after_processing",
    "slow_ms",
    "webhook_drop",
    "statistics_lag_s",
)


@dataclass(frozen=True, slots=True)
class AnswerPoint:
    at_s: float
    p: float


@dataclass(frozen=True, slots=True)
class Price:
    prefix: str
    price: float
    description: str


DEFAULT_PRICES: tuple[Price, ...] = (
    Price("4420", 0.009, "United Kingdom, London"),
    Price("447", 0.045, "United Kingdom, mobile"),
    Price("44", 0.012, "United Kingdom"),
    Price("1", 0.008, "USA and Canada"),
    Price("49", 0.015, "Germany"),
    Price("33", 0.016, "France"),
    Price("7", 0.02, "Russia and Kazakhstan"),
    Price("", 0.1, "Other destinations"),
)


@dataclass(slots=True)
class Scenario:
    seed: int = 1
    name: str = "default"
    timezone: str = "Europe/London"
    pbx_number: str = "442037691880"
    pbx_id: int = 1234
    # agents
    agent_count: int = 10
    extensions: list[str] = field(default_factory=list)
    wrapup: Dist = field(default_factory=lambda: Dist("const", value=0.0))
    agent_schedule: list[AgentShift] = field(default_factory=list)
    agent_breaks: list[AgentBreak] = field(default_factory=list)
    # The simulated agents at the dialer's console (HTTP simulator only); None: the PBX's agents just take calls.
    desk: DeskConfig | None = None
    # calls
    answer_probability: float = 0.3
    answer_schedule: list[AnswerPoint] = field(default_factory=list)
    answer_schedule_mode: str = "step"  # "step" | "linear"
    p_busy: float = 0.1
    p_failed: float = 0.02
    p_unallocated: float = 0.01
    ring_time: Dist = field(default_factory=lambda: Dist("uniform", low=4.0, high=14.0))
    max_ring_s: float = 25.0
    connect_grace_s: float = 2.0
    talk_time: Dist = field(default_factory=lambda: Dist("exponential", mean=180.0))
    busy_after_s: float = 3.0
    failed_after_s: float = 1.0
    ivr_message_s: float = 8.0
    fixed_numbers: dict[str, str] = field(default_factory=dict)
    caller_names: dict[str, str] = field(default_factory=dict)
    # limits
    general_per_window: int = 100
    statistics_per_window: int = 3
    window_s: float = 60.0
    # statistics
    lag_s: float = 30.0
    # webhooks
    webhook_profile: str = "full"
    notify_start_timeout_s: float = 1.0
    webhook_encoding: str = "urlencoded"  # "urlencoded" | "multipart": how the form bodies are sent
    webhook_recording: bool = False  # calls are recorded: NOTIFY_END says so, then NOTIFY_RECORD follows
    # faults
    faults: dict[str, float] = field(default_factory=dict)
    # shift
    shift_start_s: float = 9 * 3600.0
    shift_hours: float = 8.0
    # account
    balance: float = 100.0
    currency: str = "USD"
    billing: str = "per_minute"  # "per_minute" (started minutes) | "per_second"
    prices: tuple[Price, ...] = DEFAULT_PRICES
    sms_price: float = 0.08
    sips: list[str] = field(default_factory=lambda: ["00001"])
    source: str | None = None

    def __post_init__(self) -> None:
        if not self.extensions:
            need = max(self.agent_count, self.max_scheduled_agents())
            self.extensions = [str(100 + i) for i in range(need)]
        self.agent_count = max(self.agent_count, self.max_scheduled_agents())
        if len(self.extensions) < self.agent_count:
            raise ScenarioError(
                f"agents: {self.agent_count} agents but only {len(self.extensions)} extensions listed"
            )
        self.validate()

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str | None = None) -> Scenario:
        return _from_dict(d, source)

    def with_faults(self, faults: dict[str, float]) -> Scenario:
        merged = dict(self.faults)
        for key, value in faults.items():
            merged[normalise_fault_name(key)] = float(value)
        return replace(self, faults=merged)

    def validate(self) -> None:
        total = self.p_busy + self.p_failed + self.p_unallocated
        for name in ("p_busy", "p_failed", "p_unallocated", "answer_probability"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ScenarioError(f"calls.{name} must be between 0 and 1, got {v}")
        highest = max([self.answer_probability, *(p.p for p in self.answer_schedule)])
        if total + highest > 1.0 + 1e-9:
            raise ScenarioError(
                f"calls: answer probability {highest} + busy/failed/unallocated {total:g} exceed 1"
            )
        if self.webhook_profile not in WEBHOOK_PROFILES:
            raise ScenarioError(f"webhooks.profile must be one of {', '.join(WEBHOOK_PROFILES)}")
        if self.webhook_encoding not in ("urlencoded", "multipart") or not isinstance(self.webhook_recording, bool):
            raise ScenarioError('webhooks: encoding must be "urlencoded" or "multipart", recording true or false')
        if self.window_s <= 0 or self.general_per_window < 1 or self.statistics_per_window < 1:
            raise ScenarioError("limits: window_s must be > 0 and the sizes >= 1")
        if self.answer_schedule_mode not in ("step", "linear"):
            raise ScenarioError('calls.answer_schedule_mode must be "step" or "linear"')
        if self.billing not in ("per_minute", "per_second"):
            raise ScenarioError('account.billing must be "per_minute" or "per_second"')
        for number, behaviour in self.fixed_numbers.items():
            if behaviour not in OUTCOMES:
                raise ScenarioError(
                    f"fixed_numbers.{number}: {behaviour!r} is not one of {', '.join(OUTCOMES)}"
                )
        for key in self.faults:
            if key not in FAULT_NAMES:
                raise ScenarioError(f"faults: unknown fault {key!r} (known: {', '.join(FAULT_NAMES)})")

    # -- derived --------------------------------------------------------------------------------------
    def max_scheduled_agents(self) -> int:
        if not self.agent_schedule:
            return 0
        points = {s.start_s for s in self.agent_schedule}
        return max(self.scheduled_agents_at_clock(p) for p in points)

    def scheduled_agents_at_clock(self, clock_s: float) -> int:
        """Agents the schedule wants logged in at a shift-clock time (seconds since midnight, any day)."""
        if not self.agent_schedule:
            return self.agent_count
        return sum(s.count for s in self.agent_schedule if in_period(s.start_s, s.end_s, clock_s))

    def breaks_at_clock(self, clock_s: float) -> dict[str, int]:
        """Pause code -> how many agents the breaks want paused at a shift-clock time."""
        out: dict[str, int] = {}
        for b in self.agent_breaks:
            if in_period(b.start_s, b.end_s, clock_s):
                out[b.code] = out.get(b.code, 0) + b.count
        return out

    def answer_probability_at_clock(self, clock_s: float) -> float:
        pts = self.answer_schedule
        if not pts:
            return self.answer_probability
        c = clock_s % DAY_S
        if c < pts[0].at_s:
            return self.answer_probability
        prev = pts[0]
        for nxt in pts[1:]:
            if c < nxt.at_s:
                if self.answer_schedule_mode == "linear":
                    w = (c - prev.at_s) / (nxt.at_s - prev.at_s)
                    return prev.p + w * (nxt.p - prev.p)
                return prev.p
            prev = nxt
        return prev.p

    def fault(self, name: str) -> float:
        return self.faults.get(name, 0.0)

    def price_for(self, number: str) -> Price:
        """The longest matching prefix wins; the "" prefix is the catch-all."""
        digits = number.lstrip("+")
        best: Price | None = None
        for p in self.prices:
            if digits.startswith(p.prefix) and (best is None or len(p.prefix) > len(best.prefix)):
                best = p
        return best or Price("", 0.1, "Other destinations")

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "seed": self.seed,
            "timezone": self.timezone,
            "pbx_number": self.pbx_number,
            "agents": self.agent_count,
            "extensions": self.extensions[: self.agent_count],
            "agent_schedule": [
                {"start": clock_label(s.start_s), "end": clock_label(s.end_s), "count": s.count}
                for s in self.agent_schedule
            ],
            "agent_breaks": breaks_summary(self.agent_breaks),
            "desk": self.desk.summary() if self.desk is not None else None,
            "wrapup": self.wrapup.describe(),
            "answer_probability": self.answer_probability,
            "answer_schedule": [{"at": clock_label(p.at_s), "p": p.p} for p in self.answer_schedule],
            "p_busy": self.p_busy,
            "p_failed": self.p_failed,
            "p_unallocated": self.p_unallocated,
            "ring_time": self.ring_time.describe(),
            "max_ring_s": self.max_ring_s,
            "connect_grace_s": self.connect_grace_s,
            "talk_time": self.talk_time.describe(),
            "limits": {
                "general_per_window": self.general_per_window,
                "statistics_per_window": self.statistics_per_window,
                "window_s": self.window_s,
            },
            "statistics_lag_s": self.lag_s,
            "webhook_profile": self.webhook_profile,
            "faults": dict(self.faults),
            "shift": {"start": clock_label(self.shift_start_s), "hours": self.shift_hours},
            "fixed_numbers": dict(self.fixed_numbers),
        }


def normalise_fault_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    aliases = {"statistics_lag": "statistics_lag_s", "lag_s": "statistics_lag_s", "slow": "slow_ms"}
    key = aliases.get(key, key)
    if key not in FAULT_NAMES:
        raise ScenarioError(
            f"unknown fault {name!r} (known: {', '.join(n.replace('_', '-') for n in FAULT_NAMES)})"
        )
    return key


def _section(d: dict[str, Any], name: str) -> dict[str, Any]:
    sec = d.get(name, {})
    if not isinstance(sec, dict):
        raise ScenarioError(f"[{name}] must be a table")
    return sec


_KNOWN = {
    "": {
        "seed",
        "name",
        "timezone",
        "pbx_number",
        "pbx_id",
        "agents",
        "calls",
        "limits",
        "statistics",
        "webhooks",
        "faults",
        "shift",
        "account",
        "fixed_numbers",
        "caller_names",
        "prices",
        "desk",
    },
    "agents": {"count", "extensions", "wrapup", "schedule", "breaks"},
    "calls": {
        "answer_probability",
        "answer_schedule",
        "answer_schedule_mode",
        "p_busy",
        "p_failed",
        "p_unallocated",
        "ring_time",
        "max_ring_s",
        "connect_grace_s",
        "talk_time",
        "busy_after_s",
        "failed_after_s",
        "ivr_message_s",
    },
    "limits": {"general_per_window", "statistics_per_window", "window_s"},
    "statistics": {"lag_s"},
    "webhooks": {"profile", "notify_start_timeout_s", "encoding", "recording"},
    "shift": {"start", "hours"},
    "account": {"balance", "currency", "billing", "sms_price", "sips"},
}


def _check_keys(d: dict[str, Any], section: str) -> None:
    known = _KNOWN[section]
    for key in d:
        if key not in known:
            where = f"[{section}]" if section else "top level"
            raise ScenarioError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def _num(sec: dict[str, Any], key: str, default: float, where: str) -> float:
    v = sec.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ScenarioError(f"{where}.{key}: expected a number, got {v!r}")
    return float(v)


def _from_dict(d: dict[str, Any], source: str | None) -> Scenario:
    _check_keys(d, "")
    kw: dict[str, Any] = {"source": source}
    for key in ("seed", "pbx_id"):
        if key in d:
            kw[key] = int(d[key])
    for key in ("name", "timezone", "pbx_number"):
        if key in d:
            kw[key] = str(d[key])
    if "timezone" in kw:
        _check_timezone(kw["timezone"])

    agents = _section(d, "agents")
    _check_keys(agents, "agents")
    if "count" in agents:
        kw["agent_count"] = int(agents["count"])
    if "extensions" in agents:
        kw["extensions"] = [str(x) for x in agents["extensions"]]
        kw.setdefault("agent_count", len(kw["extensions"]))
    if "wrapup" in agents:
        kw["wrapup"] = Dist.parse(agents["wrapup"], "agents.wrapup")
    if "schedule" in agents:
        kw["agent_schedule"] = parse_shifts(agents["schedule"])
        # With a schedule and no explicit count, the team is as large as the schedule's busiest moment.
        kw.setdefault("agent_count", 0)
    if "breaks" in agents:
        kw["agent_breaks"] = parse_breaks(agents["breaks"])
    if "desk" in d:
        kw["desk"] = parse_desk(d["desk"])

    calls = _section(d, "calls")
    _check_keys(calls, "calls")
    for key in (
        "answer_probability",
        "p_busy",
        "p_failed",
        "p_unallocated",
        "max_ring_s",
        "connect_grace_s",
        "busy_after_s",
        "failed_after_s",
        "ivr_message_s",
    ):
        if key in calls:
            kw[key] = _num(calls, key, 0.0, "calls")
    for key in ("ring_time", "talk_time"):
        if key in calls:
            kw[key] = Dist.parse(calls[key], f"calls.{key}")
    if "answer_schedule_mode" in calls:
        kw["answer_schedule_mode"] = str(calls["answer_schedule_mode"])
    if "answer_schedule" in calls:
        pts = []
        for i, item in enumerate(calls["answer_schedule"]):
            where = f"calls.answer_schedule[{i}]"
            pts.append(AnswerPoint(parse_clock(item.get("at"), where + ".at"), _num(item, "p", 0.0, where)))
        pts.sort(key=lambda p: p.at_s)
        for p in pts:
            if not 0 <= p.p <= 1:
                raise ScenarioError(f"calls.answer_schedule: p must be between 0 and 1, got {p.p}")
        kw["answer_schedule"] = pts

    limits = _section(d, "limits")
    _check_keys(limits, "limits")
    if "general_per_window" in limits:
        kw["general_per_window"] = int(limits["general_per_window"])
    if "statistics_per_window" in limits:
        kw["statistics_per_window"] = int(limits["statistics_per_window"])
    if "window_s" in limits:
        kw["window_s"] = _num(limits, "window_s", 60.0, "limits")

    stats = _section(d, "statistics")
    _check_keys(stats, "statistics")
    if "lag_s" in stats:
        kw["lag_s"] = _num(stats, "lag_s", 30.0, "statistics")

    hooks = _section(d, "webhooks")
    _check_keys(hooks, "webhooks")
    if "profile" in hooks:
        kw["webhook_profile"] = str(hooks["profile"])
    if "notify_start_timeout_s" in hooks:
        kw["notify_start_timeout_s"] = _num(hooks, "notify_start_timeout_s", 1.0, "webhooks")
    kw.update({f"webhook_{key}": hooks[key] for key in ("encoding", "recording") if key in hooks})

    faults = _section(d, "faults")
    kw["faults"] = {normalise_fault_name(k): _num(faults, k, 0.0, "faults") for k in faults}

    shift = _section(d, "shift")
    _check_keys(shift, "shift")
    if "start" in shift:
        kw["shift_start_s"] = parse_clock(shift["start"], "shift.start")
    if "hours" in shift:
        kw["shift_hours"] = _num(shift, "hours", 8.0, "shift")

    account = _section(d, "account")
    _check_keys(account, "account")
    if "balance" in account:
        kw["balance"] = _num(account, "balance", 100.0, "account")
    if "currency" in account:
        kw["currency"] = str(account["currency"])
    if "billing" in account:
        kw["billing"] = str(account["billing"])
    if "sms_price" in account:
        kw["sms_price"] = _num(account, "sms_price", 0.08, "account")
    if "sips" in account:
        kw["sips"] = [str(s) for s in account["sips"]]

    if "fixed_numbers" in d:
        kw["fixed_numbers"] = {k.lstrip("+"): str(v) for k, v in _section(d, "fixed_numbers").items()}
    if "caller_names" in d:
        kw["caller_names"] = {k.lstrip("+"): str(v) for k, v in _section(d, "caller_names").items()}
    if "prices" in d:
        prices = []
        for prefix, item in _section(d, "prices").items():
            if isinstance(item, dict):
                prices.append(
                    Price(prefix.lstrip("+"), float(item["price"]), str(item.get("description", prefix)))
                )
            else:
                prices.append(Price(prefix.lstrip("+"), float(item), prefix))
        if not any(p.prefix == "" for p in prices):
            prices.append(Price("", 0.1, "Other destinations"))
        kw["prices"] = tuple(prices)
    try:
        return Scenario(**kw)
    except TypeError as exc:
        raise ScenarioError(str(exc)) from None


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScenarioError(f"timezone: unknown IANA zone {name!r}") from None


def read_scenario_toml(path: str | Path) -> dict[str, Any]:
    """The TOML of a scenario file as a dict, or a ScenarioError that says what is wrong with the file."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {p} is not valid TOML: {exc}") from None


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    data = read_scenario_toml(p)
    data.setdefault("name", p.stem)
    return Scenario.from_dict(data, source=str(p))


def default_scenario() -> Scenario:
    """10 agents, answer probability 0.3, ring 4-14 s, lognormal talk of 3 minutes, 5 s wrap-up."""
    return Scenario(
        wrapup=Dist("const", value=5.0),
        talk_time=Dist("lognormal", mean=180.0, sigma=0.6),
    )
