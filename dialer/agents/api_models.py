"""The agents' HTTP API's bodies and answers, as pydantic models: requests are validated with them and every answer is
built from them, so the OpenAPI schema generated from them (``dialer.agents.openapi``) is what goes over the wire.

Invariants: a request model takes JSON of exactly its shape (strict types, no unknown fields, bounded strings and
ids), so bad input is refused before anything is read or written; an answer model lists every field it sends
(``extra="forbid"``, so a test can check real answers against it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dialer.outcomes.dispositions import MAX_NOTE
from dialer.outcomes.states import AgentState

# Ids are SQL integers: a larger number is no id of ours (and would not fit the column).
MAX_ID = 2**62
MAX_TEXT = 64


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        # A NUL is never meant, and PostgreSQL refuses it in text: refuse it here, not as a database error later.
        for name, value in self:
            if isinstance(value, str) and "\x00" in value:
                raise ValueError(f"{name} contains a NUL character")
        return self


class LoginBody(_Body):
    login: str = Field(min_length=1, max_length=MAX_TEXT, description="The agent's login.")
    pin: str = Field(min_length=1, max_length=MAX_TEXT, description="The agent's PIN (4-12 digits).")


StateName = Literal[AgentState.READY, AgentState.PAUSED, AgentState.LOGGED_OUT, "login", "pause", "logout"]


class StateBody(_Body):
    state: StateName = Field(description="`ready` (logs in when logged out), `paused` (with `code`; logs in "
                             "first when logged out) or `logged_out`; `login`, `pause` and `logout` are the same "
                             "as verbs. A pause or logout asked for during a call starts when the call ends.")
    code: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT,
                             description="The pause code (one of the agent's campaigns' codes), with `paused`.")


class LogoutBody(_Body):
    """No fields: the body may be empty or ``{}``."""


class DispositionBody(_Body):
    attempt_id: int = Field(ge=1, le=MAX_ID, description="The call attempt (from the `call` event or GET "
                            "/api/call).")
    code: str = Field(min_length=1, max_length=MAX_TEXT, description="The disposition's code or hotkey.")
    note: str | None = Field(default=None, max_length=MAX_NOTE, description="A note for the record.")
    callback_at: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT,
                                    description="For a call-back disposition: when, in the contact's local time "
                                    "(`2026-12-01 14:30`, `14:30`), with an explicit offset, or from now (`+2h`).")
    only_me: bool = Field(default=False, description="For a call back: only this agent places it (when ready).")


# --- answers --------------------------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(_Out):
    error: str = Field(description="What went wrong, for people.")
    detail: Any = Field(default=None, description="More: the fields that failed validation, a retry delay...")


class AgentOut(_Out):
    id: int
    login: str
    name: str
    extension: str


class StateOut(_Out):
    state: str = Field(description="logged_out, ready, paused, ringing, talking or wrapup.")
    pause_code: str | None = None
    since: datetime
    pending_change: str | None = Field(default=None, description="A pause (`paused:lunch`) or logout waiting for "
                                       "the end of the call.")
    wrapup_until: datetime | None = Field(default=None, description="When wrap-up ends unless a disposition ends "
                                          "it first.")
    attempt_id: int | None = Field(default=None, description="The call the agent is on or last handled.")


class CodeOut(_Out):
    code: str
    label: str


class DispositionCodeOut(_Out):
    code: str
    label: str
    hotkey: int
    meaning: str = Field(description="success, failure, retry, callback or dnc.")


class CampaignOut(_Out):
    id: int
    name: str
    state: str
    wrapup_s: int
    pause_codes: list[CodeOut]
    dispositions: list[DispositionCodeOut]


class LoginOut(_Out):
    token: str = Field(description="Send it as `Authorization: Bearer <token>`.")
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    agent: AgentOut
    state: StateOut


class MeOut(_Out):
    agent: AgentOut
    state: StateOut
    campaigns: list[CampaignOut]
    token_expires_at: datetime


class StateChangeOut(_Out):
    state: StateOut
    deferred: bool = Field(description="The change waits for the end of the agent's call.")


class LogoutOut(_Out):
    state: StateOut
    deferred: bool = Field(description="The agent is in a call: they are logged out when it ends.")


class CallbackOut(_Out):
    id: int
    campaign: str
    contact_id: int
    phone: str
    name: str | None
    zone: str
    due_at: datetime
    due_local: str = Field(description="The time asked for, in the contact's zone (YYYY-MM-DD HH:MM).")
    next_try_at: datetime
    only_agent: str | None = Field(description="The login of the only agent who may take it; null: anyone.")
    state: str
    from_attempt_id: int | None
    attempt_id: int | None
    note: str | None
    due: bool = Field(description="Its time has come.")


class CallbacksOut(_Out):
    callbacks: list[CallbackOut]


class ContactOut(_Out):
    id: int
    name: str | None
    phone: str
    fields: dict[str, Any] = Field(description="Every other column of the contact's row in the loaded list.")
    zone: str = Field(description="The contact's time zone.")
    local_time: datetime = Field(description="The time now in the contact's zone (with its UTC offset).")
    state: str
    attempts: int


class HistoryOut(_Out):
    attempt_id: int
    at: datetime
    finished_at: datetime | None
    outcome: str | None = Field(description="What the PBX said: answered, no answer, busy...")
    connected: bool | None
    abandoned: bool | None
    agent: str | None = Field(description="The login of the agent who took it.")
    disposition: str | None = Field(description="The agent's disposition code.")
    note: str | None
    talk_seconds: float | None
    current: bool = Field(description="This is the call the record is about.")


class CallRecord(_Out):
    """The screen-pop: everything about the call and its contact the agent needs while talking."""

    attempt_id: int
    attempt_state: str
    agent_state: str = Field(description="The agent's state now (ringing, talking, wrapup...).")
    campaign: str
    campaign_id: int
    script: str | None = Field(description="The campaign's call script, contact fields filled in.")
    contact: ContactOut
    history: list[HistoryOut] = Field(description="The contact's calls, newest first (this one included).")
    callback: CallbackOut | None = Field(description="The scheduled callback this call places, if it is one.")
    dispositions: list[DispositionCodeOut]
    disposition: str | None = Field(description="The disposition already saved for this call.")
    note: str | None
    wrapup_until: datetime | None


class CallOut(_Out):
    call: CallRecord | None = Field(description="null: no call is routed to the agent now.")


class DispositionOut(_Out):
    attempt_id: int
    code: str
    meaning: str
    contact_id: int
    contact_state: str
    contact_moved: bool = Field(description="false: the contact had moved on since this call; the disposition "
                                "is recorded on the call only.")
    callback: CallbackOut | None
    dnc_added: bool
    state: StateOut


class StateEvent(_Out):
    """Event ``state``: the agent's state changed (or a change was asked for during a call)."""

    state: StateOut
    from_state: str | None = None
    reason: str | None = None


class CallEndedEvent(_Out):
    """Event ``call_ended``: the call the agent was on ended."""

    attempt_id: int | None
    at: datetime
    next_state: str


class WrapupEvent(_Out):
    """Event ``wrapup_timer``: wrap-up started; it ends at ``until`` unless a disposition ends it first."""

    attempt_id: int | None
    until: datetime
    seconds: int


class EndEvent(_Out):
    """Event ``end``: the stream ends (the token expired or was revoked, or the server is stopping)."""

    reason: str
