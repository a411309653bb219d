"""Outcomes: the one state machine, and the two sources that drive it (webhooks in real time, statistics).

Nothing is imported here on purpose: ``dialer.models`` imports ``dialer.outcomes.states``, so this package's
``__init__`` must stay free of anything that imports the models.
"""
