"""Dialing: the daemon's tick (observe, pace, claim, place), its live view of calls and agents, and status."""
