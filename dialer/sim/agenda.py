"""The agents' side of a scenario: when agents log in and out (``[agents] schedule``), when they take breaks
(``[agents] breaks``), and how the simulated agents work through the dialer's agents API (``[desk]``).

Shifts and breaks belong to the world (the call model applies them in both drivers); the desk is what the HTTP
simulator's agents do as people at the dialer's console (``dialer.sim.desk``): log in with a PIN, go ready, pause
with a code, log out, and save a disposition after each call, drawn from the probabilities given here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dialer.sim.units import DAY_S, Dist, ScenarioError, clock_label, parse_clock

DEFAULT_DESK_DISPOSITIONS: dict[str, float] = {
    "sale": 0.2,
    "not_interested": 0.4,
    "callback": 0.2,
    "wrong_number": 0.05,
    "dnc": 0.05,
    "no_decision_maker": 0.1,
}
DESK_KEYS = {"login", "pin", "api_url", "dispositions", "callback_after", "only_me", "note", "retry_s"}


@dataclass(frozen=True, slots=True)
class AgentShift:
    """``count`` agents logged in from ``start`` to ``end`` (seconds on the shift clock, end may pass midnight)."""

    start_s: float
    end_s: float
    count: int


@dataclass(frozen=True, slots=True)
class AgentBreak:
    """``count`` of the logged-in agents paused with pause code ``code`` from ``start`` to ``end`` (shift clock).
    An agent in a call when their break starts takes it after the call (as the dialer defers a pause)."""

    start_s: float
    end_s: float
    count: int
    code: str = "break"


@dataclass(frozen=True, slots=True)
class DeskConfig:
    """The simulated agents at the dialer's console. ``login`` is a template (``{extension}``, ``{index}``);
    every agent has the same ``pin``. ``callback_after`` is in world seconds after the call; ``only_me`` is the
    share of callbacks kept for the same agent."""

    login: str = "agent{extension}"
    pin: str = "2468"
    api_url: str | None = None  # None: the origin of the webhook URL (the daemon serves /api beside its webhooks)
    dispositions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DESK_DISPOSITIONS))
    callback_after: Dist = field(default_factory=lambda: Dist("uniform", low=600.0, high=1800.0))
    only_me: float = 0.5
    note: str = "simulated agent"
    retry_s: float = 0.2  # wall seconds between tries of a request the dialer refused for now (daemon not up yet...)

    def login_for(self, extension: str, index: int) -> str:
        return self.login.format(extension=extension, index=index)

    def summary(self) -> dict[str, Any]:
        return {
            "login": self.login,
            "api_url": self.api_url,
            "dispositions": dict(self.dispositions),
            "callback_after": self.callback_after.describe(),
            "only_me": self.only_me,
        }


def in_period(start_s: float, end_s: float, clock_s: float) -> bool:
    """The shift-clock time (seconds since midnight, any day) falls in ``[start, end)``; an end after midnight
    also covers the early hours of the next day."""
    c = clock_s % DAY_S
    return start_s <= c < end_s or start_s <= c + DAY_S < end_s


def _period(item: Any, where: str) -> tuple[float, float]:
    if not isinstance(item, dict):
        raise ScenarioError(f'{where}: expected a table like {{start="09:00", end="17:00", count=5}}')
    start = parse_clock(item.get("start", "00:00"), where + ".start")
    end = parse_clock(item.get("end", "24:00"), where + ".end")
    return start, end + DAY_S if end <= start else end


def _count(item: dict[str, Any], where: str) -> int:
    value = item.get("count", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScenarioError(f"{where}.count: expected a whole number >= 0, got {value!r}")
    return value


def _periods(raw: Any, where: str) -> list[tuple[str, dict[str, Any], float, float, int]]:
    """Each table of a list of periods with its place, start, end and count."""
    if not isinstance(raw, list):
        raise ScenarioError(f"{where}: expected a list of tables")
    out = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        start, end = _period(item, at)
        out.append((at, item, start, end, _count(item, at)))
    return out


def parse_shifts(raw: Any) -> list[AgentShift]:
    return [AgentShift(start, end, count) for _, _, start, end, count in _periods(raw, "agents.schedule")]


def parse_breaks(raw: Any) -> list[AgentBreak]:
    out = []
    for where, item, start, end, count in _periods(raw, "agents.breaks"):
        code = str(item.get("code", "break"))
        if not code or len(code) > 32:
            raise ScenarioError(f"{where}.code: expected a pause code like \"break\" or \"lunch\"")
        out.append(AgentBreak(start, end, count, code))
    return out


def breaks_summary(breaks: list[AgentBreak]) -> list[dict[str, Any]]:
    return [{"start": clock_label(b.start_s), "end": clock_label(b.end_s), "count": b.count, "code": b.code}
            for b in breaks]  # fmt: skip


def parse_desk(raw: Any) -> DeskConfig:
    if not isinstance(raw, dict):
        raise ScenarioError("[desk] must be a table")
    for key in raw:
        if key not in DESK_KEYS:
            raise ScenarioError(f"[desk]: unknown key {key!r} (known: {', '.join(sorted(DESK_KEYS))})")
    kw: dict[str, Any] = {}
    for key in ("login", "pin", "api_url", "note"):
        if key in raw:
            kw[key] = str(raw[key])
    if "login" in kw:
        try:
            kw["login"].format(extension="100", index=0)
        except (KeyError, IndexError, ValueError):
            raise ScenarioError("desk.login: a template with {extension} or {index}, e.g. \"agent{extension}\"") from None
    for key in ("only_me", "retry_s"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ScenarioError(f"desk.{key}: expected a number >= 0, got {value!r}")
            kw[key] = float(value)
    if kw.get("only_me", 0.0) > 1:
        raise ScenarioError("desk.only_me: a share between 0 and 1")
    if "callback_after" in raw:
        kw["callback_after"] = Dist.parse(raw["callback_after"], "desk.callback_after")
    if "dispositions" in raw:
        table = raw["dispositions"]
        if not isinstance(table, dict) or not table:
            raise ScenarioError("desk.dispositions: a table of code = probability, e.g. {sale = 0.2, dnc = 0.05}")
        probs = {}
        for code, p in table.items():
            if isinstance(p, bool) or not isinstance(p, int | float) or p < 0:
                raise ScenarioError(f"desk.dispositions.{code}: expected a probability >= 0, got {p!r}")
            probs[str(code)] = float(p)
        if sum(probs.values()) <= 0:
            raise ScenarioError("desk.dispositions: the probabilities add up to 0")
        kw["dispositions"] = probs
    return DeskConfig(**kw)
