"""The units a scenario is written in: durations drawn from a distribution (``Dist``), clock times on the shift
clock (``parse_clock``, ``clock_label``), and the error a wrong value raises (``ScenarioError``).

Kept apart from ``scenario`` so the agents' side of a scenario (``agenda``) reads the same units without importing
the whole scenario.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

DAY_S = 86400.0


class ScenarioError(ValueError):
    """The scenario file or dict is wrong; the message names the key."""


@dataclass(frozen=True, slots=True)
class Dist:
    """A duration distribution in seconds: const, uniform, exponential, lognormal or normal (truncated at 0)."""

    kind: str = "const"
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    sigma: float = 0.0

    @classmethod
    def parse(cls, raw: Any, where: str) -> Dist:
        if isinstance(raw, int | float):
            return cls("const", value=float(raw))
        if not isinstance(raw, dict):
            raise ScenarioError(
                f'{where}: expected a number or a table like {{dist="exponential", mean=180}}'
            )
        kind = str(raw.get("dist", raw.get("kind", "const")))
        try:
            if kind == "const":
                d = cls("const", value=float(raw.get("value", raw.get("mean", 0.0)) or 0.0))
            elif kind == "uniform":
                d = cls("uniform", low=float(raw["low"]), high=float(raw["high"]))
                if d.high < d.low:
                    raise ScenarioError(f"{where}: uniform high < low")
            elif kind == "exponential":
                d = cls("exponential", mean=float(raw["mean"]))
            elif kind in ("lognormal", "normal"):
                d = cls(
                    kind,
                    mean=float(raw["mean"]),
                    sigma=float(raw.get("sigma", 0.5 if kind == "lognormal" else 0)),
                )
            else:
                raise ScenarioError(
                    f"{where}: unknown dist {kind!r} (const, uniform, exponential, lognormal, normal)"
                )
        except KeyError as exc:
            raise ScenarioError(f"{where}: {kind} distribution needs {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ScenarioError):
                raise
            raise ScenarioError(f"{where}: {exc}") from None
        if d.expected() < 0 or d.low < 0 or d.value < 0:
            raise ScenarioError(f"{where}: durations cannot be negative")
        return d

    def sample(self, rng: random.Random) -> float:
        k = self.kind
        if k == "exponential":
            return rng.expovariate(1.0 / self.mean) if self.mean > 0 else 0.0
        if k == "uniform":
            return self.low + (self.high - self.low) * rng.random()
        if k == "lognormal":
            # ``mean`` is the mean of the duration itself (what an operator knows), not of its log.
            s = self.sigma
            mu = math.log(self.mean) - s * s / 2 if self.mean > 0 else 0.0
            return rng.lognormvariate(mu, s) if self.mean > 0 else 0.0
        if k == "normal":
            return max(0.0, rng.gauss(self.mean, self.sigma))
        return self.value

    def expected(self) -> float:
        k = self.kind
        if k == "uniform":
            return (self.low + self.high) / 2
        if k in ("exponential", "lognormal", "normal"):
            return self.mean
        return self.value

    def describe(self) -> str:
        k = self.kind
        if k == "uniform":
            return f"uniform {self.low:g}-{self.high:g} s"
        if k == "exponential":
            return f"exponential mean {self.mean:g} s"
        if k in ("lognormal", "normal"):
            return f"{k} mean {self.mean:g} s sigma {self.sigma:g}"
        return f"{self.value:g} s"


def parse_clock(value: Any, where: str) -> float:
    """ "09:30" or "09:30:15" -> seconds since midnight; "24:00" allowed as an end."""
    if isinstance(value, int | float):
        return float(value)
    try:
        parts = [int(x) for x in str(value).split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        h, m = parts[0], parts[1]
        s = parts[2] if len(parts) == 3 else 0
        if not (0 <= h <= 24 and 0 <= m < 60 and 0 <= s < 60):
            raise ValueError
    except ValueError:
        raise ScenarioError(f'{where}: expected a clock time like "09:00", got {value!r}') from None
    return float(h * 3600 + m * 60 + s)


def clock_label(seconds: float) -> str:
    s = int(seconds) % int(DAY_S) if seconds < DAY_S else int(seconds - DAY_S)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}"
