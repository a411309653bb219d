"""The Zadarma simulator: one call model (``model``), scenario files (``scenario``), the HTTP server (``server``)."""

from __future__ import annotations

from dialer.sim.model import CallModel, ModelEvent, SimAgent, SimCall
from dialer.sim.scenario import Dist, Scenario, ScenarioError, default_scenario, load_scenario

__all__ = [
    "CallModel",
    "Dist",
    "ModelEvent",
    "Scenario",
    "ScenarioError",
    "SimAgent",
    "SimCall",
    "default_scenario",
    "load_scenario",
]
