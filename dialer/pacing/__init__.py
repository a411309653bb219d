"""Pacing: pure policies deciding how many calls to place now (no I/O, no clock reads, no database).

The daemon and the discrete-event benchmark build the same :class:`Observation` and call the same
``policy.decide(obs)`` from :func:`make_policy`, so what the benchmark measures is what production runs; every
policy runs inside the one :class:`AbandonGovernor` that keeps the campaign's abandon cap.
"""

from __future__ import annotations

from dialer.pacing.abandon import AbandonController
from dialer.pacing.base import Policy, clamp
from dialer.pacing.factory import POLICY_NAMES, make_policy
from dialer.pacing.governor import AbandonGovernor
from dialer.pacing.observation import FinishedCall, Observation
from dialer.pacing.predictive import PredictivePolicy
from dialer.pacing.simple import ProgressivePolicy, RatioPolicy
from dialer.pacing.vicidial import VicidialPolicy

__all__ = [
    "POLICY_NAMES",
    "AbandonController",
    "AbandonGovernor",
    "FinishedCall",
    "Observation",
    "Policy",
    "PredictivePolicy",
    "ProgressivePolicy",
    "RatioPolicy",
    "VicidialPolicy",
    "clamp",
    "make_policy",
]
