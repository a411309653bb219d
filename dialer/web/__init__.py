"""The web console: the agents' desk (``/agent``) and the supervisors' wallboard (``/``), server-rendered."""

from __future__ import annotations
