"""Agents' accounts: adding, changing, listing and removing agents, the campaigns they work, and their PINs.

Invariants: a PIN is never stored, printed or logged: only ``scrypt$N$r$p$salt$hash`` with a random 16-byte salt per
PIN (``hashlib.scrypt``, the standard library's memory-hard KDF); checking a PIN compares in constant time and costs
the same whether the login exists or not. A login names one agent among those not removed; a removed agent keeps its
row (its state events and calls stay on record), its "only me" callbacks become anyone's and its API sessions end
(as they do when its PIN changes). Every check runs before anything is written, so a refused change leaves the
database as it was.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dialer.agents.tokens import revoke_agent_tokens
from dialer.models import Agent, AgentCampaign, Campaign
from dialer.outcomes.agent_states import is_ready
from dialer.outcomes.callbacks import release_agent_callbacks
from dialer.outcomes.dispositions import ErrorKind
from dialer.outcomes.states import AgentState, CampaignState

# scrypt cost: 2^14 x 8 x 128 bytes = 16 MiB and ~50 ms per check; a PIN's few digits need a slow hash.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32
_LOGIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
_EXTENSION = re.compile(r"[0-9A-Za-z_\-]{1,20}")
_PIN = re.compile(r"[0-9]{4,12}")


class AgentError(ValueError):
    """An agent operation is not possible; ``kind`` says which way (the API's 404/403/409/422)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --- PINs ---------------------------------------------------------------------------------------------------


def check_pin(pin: str) -> str:
    if not _PIN.fullmatch(pin or ""):
        raise AgentError(ErrorKind.INVALID, "a PIN is 4 to 12 digits")
    return pin


def hash_pin(pin: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(pin.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_LEN)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(key).decode()}"


def verify_pin(pin: str, stored: str) -> bool:
    """Whether ``pin`` is the PIN ``stored`` was made from (constant-time compare; False for a malformed hash)."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.urlsafe_b64decode(key)
        if len(want) < 16:
            return False
        got = hashlib.scrypt(pin.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=128 * int(n) * int(r) * int(p) + 2**20)  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


# Checked against when the login does not exist, so a wrong login costs what a wrong PIN costs.
_DUMMY_HASH = hash_pin("0000", salt=b"\0" * 16)


def authenticate(session: Session, login: str, pin: str) -> Agent | None:
    """The agent with this login and PIN, else None (the same work either way)."""
    agent = find_agent(session, login)
    ok = verify_pin(pin, agent.pin_hash if agent is not None else _DUMMY_HASH)
    return agent if ok and agent is not None else None


# --- reading ------------------------------------------------------------------------------------------------


def normalise_login(login: str) -> str:
    return (login or "").strip().lower()


def find_agent(session: Session, login: str) -> Agent | None:
    return session.exec(
        select(Agent).where(col(Agent.login) == normalise_login(login), col(Agent.removed_at).is_(None))
    ).first()


def get_agent(session: Session, login: str) -> Agent:
    agent = find_agent(session, login)
    if agent is None:
        raise AgentError(ErrorKind.NOT_FOUND, f"no agent {login!r} (see `dialer agent list`)")
    return agent


def campaign_ids_of(session: Session, agent_id: int) -> list[int]:
    q = sa.select(col(AgentCampaign.campaign_id)).where(col(AgentCampaign.agent_id) == agent_id)
    return sorted(int(i) for i in session.execute(q).scalars())


@dataclass(frozen=True)
class AgentInfo:
    """An agent as listed: account and session (a wrap-up whose limit has passed shows as ``ready``)."""

    id: int
    login: str
    name: str
    extension: str
    campaigns: list[str]
    state: str
    pause_code: str | None
    since: datetime
    pending_change: str | None  # a pause (``paused:lunch``) or logout waiting for the end of the call
    attempt_id: int | None

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["since"] = self.since.isoformat()
        return d


def list_agents(session: Session, now: datetime, campaign_id: int | None = None) -> list[AgentInfo]:
    q = select(Agent).where(col(Agent.removed_at).is_(None)).order_by(col(Agent.login))
    if campaign_id is not None:
        q = q.join(AgentCampaign, col(AgentCampaign.agent_id) == col(Agent.id)).where(
            col(AgentCampaign.campaign_id) == campaign_id
        )
    agents = list(session.exec(q).all())
    names = {cid: name for cid, name in session.execute(sa.select(col(Campaign.id), col(Campaign.name)))}
    by_agent: dict[int, list[str]] = {}
    for agent_id, cid in session.execute(sa.select(col(AgentCampaign.agent_id), col(AgentCampaign.campaign_id))):
        by_agent.setdefault(agent_id, []).append(names.get(cid, str(cid)))
    out = []
    for a in agents:
        state, since = a.state, a.state_since
        if state == AgentState.WRAPUP and is_ready(state, a.wrapup_until, now) and a.wrapup_until is not None:
            state, since = AgentState.READY, a.wrapup_until
        pending = a.pending_state + (f":{a.pending_code}" if a.pending_code else "") if a.pending_state else None
        out.append(AgentInfo(a.id or 0, a.login, a.name, a.extension, sorted(by_agent.get(a.id or 0, [])), state,
                             a.pause_code if state == AgentState.PAUSED else None, since, pending,
                             a.attempt_id))  # fmt: skip
    return out


# --- writing ------------------------------------------------------------------------------------------------


def _check_login(login: str) -> str:
    value = normalise_login(login)
    if not _LOGIN.fullmatch(value):
        raise AgentError(ErrorKind.INVALID, f"login {login!r}: use 1-40 letters, digits, '.', '_' or '-' "
                         "(starting with a letter or digit)")  # fmt: skip
    return value


def _check_name(name: str) -> str:
    value = (name or "").strip()
    if not 1 <= len(value) <= 100:
        raise AgentError(ErrorKind.INVALID, "an agent's name is 1-100 characters")
    return value


def _check_extension(extension: str) -> str:
    value = (extension or "").strip()
    if not _EXTENSION.fullmatch(value):
        raise AgentError(ErrorKind.INVALID, f"extension {extension!r}: give the PBX extension, e.g. 101")
    return value


def _campaigns(session: Session, names: Iterable[str]) -> list[int]:
    ids = []
    for name in dict.fromkeys(n.strip() for n in names if n.strip()):
        c = session.exec(select(Campaign).where(col(Campaign.name) == name)).first()
        if c is None or c.state == CampaignState.DELETED:
            raise AgentError(ErrorKind.NOT_FOUND, f"no campaign named {name!r} (see `dialer campaign list`)")
        ids.append(c.id or 0)
    return ids


def add_agent(
    session: Session, login: str, *, name: str, extension: str, campaigns: Sequence[str], pin: str, now: datetime
) -> Agent:
    login = _check_login(login)
    name, extension = _check_name(name), _check_extension(extension)
    check_pin(pin)
    campaign_ids = _campaigns(session, campaigns)
    if find_agent(session, login) is not None:
        raise AgentError(ErrorKind.CONFLICT, f"agent {login!r} already exists (change it with `dialer agent set`)")
    agent = Agent(login=login, name=name, extension=extension, pin_hash=hash_pin(pin),
                  state=AgentState.LOGGED_OUT, state_since=now, created_at=now, updated_at=now)  # fmt: skip
    session.add(agent)
    session.flush()
    for cid in campaign_ids:
        session.add(AgentCampaign(agent_id=agent.id or 0, campaign_id=cid))
    session.flush()
    return agent


def update_agent(
    session: Session,
    login: str,
    now: datetime,
    *,
    name: str | None = None,
    extension: str | None = None,
    campaigns: Sequence[str] | None = None,
    add_campaigns: Sequence[str] = (),
    remove_campaigns: Sequence[str] = (),
    pin: str | None = None,
) -> Agent:
    """Change an agent's name, extension (only while logged out), campaigns (replace, add, remove) or PIN."""
    agent = get_agent(session, login)
    new_name = _check_name(name) if name is not None else None
    new_ext = _check_extension(extension) if extension is not None else None
    if new_ext is not None and new_ext != agent.extension and agent.state != AgentState.LOGGED_OUT:
        raise AgentError(ErrorKind.CONFLICT, f"agent {agent.login!r} is logged in: log out before changing the "
                         "extension")  # fmt: skip
    if pin is not None:
        check_pin(pin)
    current = campaign_ids_of(session, agent.id or 0)
    wanted = _campaigns(session, campaigns) if campaigns is not None else list(current)
    adding, removing = _campaigns(session, add_campaigns), set(_campaigns(session, remove_campaigns))
    wanted = [c for c in dict.fromkeys([*wanted, *adding]) if c not in removing]
    if new_name is not None:
        agent.name = new_name
    if new_ext is not None:
        agent.extension = new_ext
    if pin is not None:
        agent.pin_hash = hash_pin(pin)
        revoke_agent_tokens(session, agent.id or 0, now)  # a new PIN ends every API session of the old one
    if set(wanted) != set(current):
        session.execute(sa.delete(AgentCampaign).where(col(AgentCampaign.agent_id) == agent.id))
        for cid in wanted:
            session.add(AgentCampaign(agent_id=agent.id or 0, campaign_id=cid))
        release_agent_callbacks(session, agent.id or 0, now, keep_campaigns=wanted)
    agent.updated_at = now
    session.add(agent)
    session.flush()
    return agent


def remove_agent(session: Session, login: str, now: datetime) -> Agent:
    """Remove a logged-out agent: the account goes, its history stays."""
    agent = get_agent(session, login)
    if agent.state != AgentState.LOGGED_OUT:
        raise AgentError(ErrorKind.CONFLICT, f"agent {agent.login!r} is {agent.state}: log them out first")
    agent.removed_at = now
    agent.updated_at = now
    session.add(agent)
    session.execute(sa.delete(AgentCampaign).where(col(AgentCampaign.agent_id) == agent.id))
    release_agent_callbacks(session, agent.id or 0, now)
    revoke_agent_tokens(session, agent.id or 0, now)
    session.flush()
    return agent
