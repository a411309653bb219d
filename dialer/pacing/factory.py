"""``make_policy(spec)``: the one place a campaign's ``pacing`` string becomes a policy object."""

from __future__ import annotations

from dialer.pacing.base import Policy
from dialer.pacing.governor import AbandonGovernor
from dialer.pacing.predictive import PredictivePolicy
from dialer.pacing.simple import ProgressivePolicy, RatioPolicy
from dialer.pacing.vicidial import VicidialPolicy

POLICY_NAMES = ("progressive", "ratio:K", "vicidial", "vicidial-average", "predictive")

_VICIDIAL_KEYS = {
    "intensity": "intensity",
    "diff": "dl_diff_target",
    "dl_diff_target": "dl_diff_target",
    "max": "max_level",
    "target": "drop_target",
    "drop_target": "drop_target",
}
_PREDICTIVE_KEYS = {
    "target": "abandon_target",
    "margin": "margin_z",
    "gain": "gain",
    "threshold": "initial_threshold",
}


def _options(text: str, allowed: dict[str, str], spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in allowed:
            raise ValueError(
                f"pacing {spec!r}: unknown option {part!r} (known: {', '.join(sorted(allowed))})"
            )
        try:
            out[allowed[key.strip()]] = float(value)
        except ValueError:
            raise ValueError(f"pacing {spec!r}: {key.strip()} needs a number, got {value!r}") from None
    return out


def make_policy(spec: str, abandon_target: float = 0.03) -> AbandonGovernor:
    """Build a fresh policy from a campaign's pacing string, inside the abandon governor that keeps the
    campaign's cap whatever the policy does (``dialer.pacing.governor``; the policy itself is ``.inner``).

    ``progressive``, ``ratio:K`` (e.g. ``ratio:1.5``), ``vicidial`` (ADAPT_TAPERED), ``vicidial-average``
    (ADAPT_AVERAGE), ``predictive``. VICIdial and predictive accept tuning options after a colon, e.g.
    ``vicidial:intensity=20,diff=1`` or ``predictive:margin=1.0``. ``abandon_target`` is the campaign's cap.
    """
    return AbandonGovernor(_policy(spec, abandon_target), abandon_target)


def _policy(spec: str, abandon_target: float) -> Policy:
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name == "progressive" and not rest:
        return ProgressivePolicy()
    if name == "ratio":
        try:
            k = float(rest)
        except ValueError:
            raise ValueError(f"pacing {spec!r}: ratio needs a number, e.g. ratio:1.5") from None
        if not 0 < k <= 10:
            raise ValueError(f"pacing {spec!r}: ratio must be in (0, 10]")
        return RatioPolicy(k)
    if name in ("vicidial", "vicidial-tapered", "vicidial-average"):
        opts = _options(rest, _VICIDIAL_KEYS, spec)
        opts.setdefault("drop_target", abandon_target)
        policy = VicidialPolicy(mode="average" if name == "vicidial-average" else "tapered", **opts)
        if rest:
            policy.name = spec.strip()
        return policy
    if name == "predictive":
        opts = _options(rest, _PREDICTIVE_KEYS, spec)
        opts.setdefault("abandon_target", abandon_target)
        pred = PredictivePolicy(**opts)  # type: ignore[arg-type]
        if rest:
            pred.name = spec.strip()
        return pred
    raise ValueError(f"unknown pacing {spec!r} (known: {', '.join(POLICY_NAMES)})")
