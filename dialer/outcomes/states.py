"""Every state a campaign, a contact or an attempt can be in, and which moves between them are legal.

The names are ``StrEnum`` members, so they are stored as plain text and compare equal to it; code outside
``dialer.outcomes`` names states only through these enums (``tests/test_states.py`` checks that no state name is
written as a bare string anywhere else). This module imports nothing from the project: ``dialer.models`` uses it.

```
contact: pending -> dialing -> done (reached an agent)
                           \\-> retry (due at next_attempt_at) -> dialing ...
                           \\-> exhausted (attempt cap) | invalid (unallocated number) | dnc
         done -(agent disposition)-> done (success or failure) | retry | callback | dnc | exhausted
         callback (a scheduled callback waits) -> dialing ...
attempt: placing -> placed -> completed
                 \\-> uncertain -> completed | not_placed
                 \\-> failed (Zadarma refused the number) | not_placed (never sent, or refused for the account)
agent:   logged_out -> ready <-> paused(code); ready -> ringing -> talking -> wrapup -> ready
         (pausing or logging out in a call waits for its end; wrap-up ends with a disposition or its limit)
callback: scheduled -> placed (an attempt was claimed for it) | cancelled; placed -> scheduled (never sent)
```

A connected call moves its contact to ``done`` at once (so campaigns without agents end there); the agent's
disposition is the one thing that may move a contact out of ``done`` again, and only for the attempt that put it
there (``dialer.outcomes.dispositions``). Final failures (not interested, wrong number) stay ``done``: the contact
was reached, and the attempt's ``agent_disposition`` says how it ended.
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
    # Reached, and the agent scheduled a callback: the ``callback`` row says when (and for whom).
    CALLBACK = "callback"


class AttemptState(StrEnum):
    PLACING = "placing"
    PLACED = "placed"
    UNCERTAIN = "uncertain"
    COMPLETED = "completed"
    NOT_PLACED = "not_placed"
    FAILED = "failed"


class AgentState(StrEnum):
    """Where an agent is: presence they choose (logged out, ready, paused) or a call the webhooks report."""

    LOGGED_OUT = "logged_out"
    READY = "ready"
    PAUSED = "paused"
    RINGING = "ringing"
    TALKING = "talking"
    WRAPUP = "wrapup"


class Presence(StrEnum):
    """What an agent (or a supervisor for them) asks for: the requests that move ``AgentState``."""

    LOGIN = "login"
    READY = "ready"
    PAUSE = "pause"
    LOGOUT = "logout"


class CallbackState(StrEnum):
    SCHEDULED = "scheduled"
    PLACED = "placed"
    CANCELLED = "cancelled"


class DispositionMeaning(StrEnum):
    """What an agent's disposition does to the contact."""

    SUCCESS = "success"  # final: done
    FAILURE = "failure"  # final: done (reached, no sale)
    RETRY = "retry"  # retry after the campaign's no-answer delay
    CALLBACK = "callback"  # a callback at the time the agent gives
    DNC = "dnc"  # the number goes on the do-not-call list at once; the contact ends


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
    ContactState.CALLBACK: ContactResult.PENDING,
}

# Contacts the claim query may pick, read in this order (each its own index range).
DUE_CONTACT_STATES: tuple[ContactState, ...] = (ContactState.PENDING, ContactState.RETRY)
# Contacts waiting to be dialled: due by their own time, or by their scheduled callback's.
WAITING_CONTACT_STATES: tuple[ContactState, ...] = (*DUE_CONTACT_STATES, ContactState.CALLBACK)
# Contacts that still have work: waiting, or with a call under way.
OPEN_CONTACT_STATES: tuple[ContactState, ...] = (*WAITING_CONTACT_STATES, ContactState.DIALING)
# Nothing moves a contact out of these (the DNC list or a disposition put it there for good), except the agent's
# disposition of the call that made it ``done`` (``dialer.outcomes.dispositions``).
FINAL_CONTACT_STATES: frozenset[ContactState] = frozenset(
    {ContactState.DONE, ContactState.EXHAUSTED, ContactState.INVALID, ContactState.DNC}
)
# An attempt in one of these may be a real call right now: one per number at a time (a partial unique index).
LIVE_ATTEMPT_STATES: tuple[AttemptState, ...] = (AttemptState.PLACING, AttemptState.PLACED, AttemptState.UNCERTAIN)
# Attempts that never became a call.
UNPLACED_ATTEMPT_STATES: tuple[AttemptState, ...] = (AttemptState.FAILED, AttemptState.NOT_PLACED)

# An agent in one of these counts for pacing ("logged in and not paused, plus those in calls").
WORKING_AGENT_STATES: tuple[AgentState, ...] = (
    AgentState.READY, AgentState.RINGING, AgentState.TALKING, AgentState.WRAPUP
)
# A call holds the agent: pausing or logging out waits for its end.
IN_CALL_AGENT_STATES: tuple[AgentState, ...] = (AgentState.RINGING, AgentState.TALKING)

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


# A campaign paused with a reason starting with this is the daemon's to resume when the balance recovers.
LOW_BALANCE = "low balance"


def sql_list(states: tuple[StrEnum, ...]) -> str:
    """``'a', 'b'`` for raw SQL (index predicates, export views); values are our own constants, never input."""
    return ", ".join(f"'{s.value}'" for s in states)
