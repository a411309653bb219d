"""Every state a campaign, a contact or an attempt can be in, and which moves between them are legal.

The names are ``StrEnum`` members, so they are stored as plain text and compare equal to it; code outside
``dialer.outcomes`` names states only through these enums (``tests/test_states.py`` checks that no state name is
written as a bare string anywhere else). This module imports nothing from the project: ``dialer.models`` uses it.

```
contact: pending -> dialing -> done (reached an agent)
                           \\-> retry (due at next_attempt_at) -> dialing ...
                           \\-> exhausted (attempt cap) | invalid (unallocated number) | dnc
attempt: placing -> placed -> completed
                 \\-> uncertain -> completed | not_placed
                 \\-> failed (Zadarma refused the number) | not_placed (never sent, or refused for the account)
```
"""

from __future__ import annotations

from enum import StrEnum


class CampaignState(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FINISHED = "finished"
    # Deleted without --purge: hidden and renamed, kept only so its call attempts stay on record. Terminal.
    DELETED = "deleted"


class ContactState(StrEnum):
    PENDING = "pending"
    DIALING = "dialing"
    RETRY = "retry"
    DONE = "done"
    EXHAUSTED = "exhausted"
    INVALID = "invalid"
    DNC = "dnc"


class AttemptState(StrEnum):
    PLACING = "placing"
    PLACED = "placed"
    UNCERTAIN = "uncertain"
    COMPLETED = "completed"
    NOT_PLACED = "not_placed"
    FAILED = "failed"


class ContactResult(StrEnum):
    """How reports group contacts: reached, out of attempts, bad number, do not call, or still to call."""

    REACHED = "reached"
    EXHAUSTED = "exhausted"
    INVALID = "invalid"
    DNC = "dnc"
    PENDING = "pending"


RESULT_OF_STATE: dict[str, ContactResult] = {
    ContactState.DONE: ContactResult.REACHED,
    ContactState.EXHAUSTED: ContactResult.EXHAUSTED,
    ContactState.INVALID: ContactResult.INVALID,
    ContactState.DNC: ContactResult.DNC,
    ContactState.PENDING: ContactResult.PENDING,
    ContactState.RETRY: ContactResult.PENDING,
    ContactState.DIALING: ContactResult.PENDING,
}

# Contacts the claim query may pick, read in this order (each its own index range).
DUE_CONTACT_STATES: tuple[ContactState, ...] = (ContactState.PENDING, ContactState.RETRY)
# Contacts that still have work: due, or with a call under way.
OPEN_CONTACT_STATES: tuple[ContactState, ...] = (*DUE_CONTACT_STATES, ContactState.DIALING)
# Nothing moves a contact out of these (a disposition or the DNC list put it there for good).
FINAL_CONTACT_STATES: frozenset[ContactState] = frozenset(
    {ContactState.DONE, ContactState.EXHAUSTED, ContactState.INVALID, ContactState.DNC}
)
# An attempt in one of these may be a real call right now: one per number at a time (a partial unique index).
LIVE_ATTEMPT_STATES: tuple[AttemptState, ...] = (AttemptState.PLACING, AttemptState.PLACED, AttemptState.UNCERTAIN)
# Attempts that never became a call.
UNPLACED_ATTEMPT_STATES: tuple[AttemptState, ...] = (AttemptState.FAILED, AttemptState.NOT_PLACED)

# Campaign lifecycle: action -> (states it works from, state it leads to).
CAMPAIGN_ACTIONS: dict[str, tuple[frozenset[CampaignState], CampaignState]] = {
    "start": (
        frozenset({CampaignState.DRAFT, CampaignState.STOPPED, CampaignState.FINISHED}),
        CampaignState.RUNNING,
    ),
    "pause": (frozenset({CampaignState.RUNNING}), CampaignState.PAUSED),
    "resume": (frozenset({CampaignState.PAUSED}), CampaignState.RUNNING),
    "stop": (
        frozenset({CampaignState.DRAFT, CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.FINISHED}),
        CampaignState.STOPPED,
    ),
    # Never while running: `dialer campaign delete` also refuses while any of its calls is live.
    "delete": (
        frozenset({CampaignState.DRAFT, CampaignState.PAUSED, CampaignState.STOPPED, CampaignState.FINISHED}),
        CampaignState.DELETED,
    ),
}
# No action leads out of these.
TERMINAL_CAMPAIGN_STATES: frozenset[CampaignState] = frozenset({CampaignState.DELETED})


def sql_list(states: tuple[StrEnum, ...]) -> str:
    """``'a', 'b'`` for raw SQL (index predicates, export views); values are our own constants, never input."""
    return ", ".join(f"'{s.value}'" for s in states)
