"""Sessions of the agents' HTTP API: issuing, checking and revoking bearer tokens, and the wrong-PIN rate limit.

A token is 32 random bytes (URL-safe text) handed to the agent once; the database keeps only its SHA-256 (a
random 256-bit secret needs no slow hash: nobody can guess one from its digest), so a copy of the database or a
backup logs nobody in. Tokens expire (``expires_at``), end at logout (``revoked_at``), and all of an agent's end
when their PIN changes or the agent is removed. Chosen over signed stateless tokens because logout must really end
a session and there is then no server secret to keep outside the database.

Invariants: ``check_token`` accepts only an unrevoked, unexpired token of an agent who is not removed; the wrong-PIN
limiter refuses a login or an address that failed too often lately before any PIN is checked (so a locked login
costs no hashing), and it lives in the daemon's memory (one daemon per database).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dialer.models import Agent, AgentToken

DEFAULT_TTL_S = 12 * 3600  # one shift
_TOKEN_BYTES = 32
# A token is URL-safe base64 of 32 bytes: 43 characters. Anything much longer is not one of ours.
MAX_TOKEN_LEN = 128


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class Issued:
    token: str
    expires_at: datetime


def issue_token(session: Session, agent: Agent, now: datetime, *, ttl_s: float = DEFAULT_TTL_S,
                client: str | None = None) -> Issued:
    """A new session for ``agent``: the token (shown once) and when it expires."""
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    expires = now + timedelta(seconds=ttl_s)
    session.add(AgentToken(agent_id=agent.id or 0, token_hash=token_digest(token), created_at=now,
                           expires_at=expires, client=(client or "")[:100] or None))  # fmt: skip
    session.flush()
    return Issued(token, expires)


def check_token(session: Session, token: str, now: datetime) -> tuple[Agent, AgentToken] | None:
    """The agent and session of a valid token, else None (unknown, expired, revoked, or the agent removed)."""
    if not token or len(token) > MAX_TOKEN_LEN:
        return None
    row = session.exec(
        select(AgentToken, Agent)
        .join(Agent, col(Agent.id) == col(AgentToken.agent_id))
        .where(col(AgentToken.token_hash) == token_digest(token), col(AgentToken.revoked_at).is_(None),
               col(AgentToken.expires_at) > now, col(Agent.removed_at).is_(None))
    ).first()  # fmt: skip
    if row is None:
        return None
    tok, agent = row
    return agent, tok


def revoke_token(session: Session, token_id: int, now: datetime) -> None:
    session.execute(sa.update(AgentToken).where(col(AgentToken.id) == token_id, col(AgentToken.revoked_at).is_(None))
                    .values(revoked_at=now))  # fmt: skip


def revoke_agent_tokens(session: Session, agent_id: int, now: datetime) -> int:
    """End every session of an agent (their PIN changed, or they were removed)."""
    result = session.execute(
        sa.update(AgentToken).where(col(AgentToken.agent_id) == agent_id, col(AgentToken.revoked_at).is_(None))
        .values(revoked_at=now).execution_options(synchronize_session=False)
    )  # fmt: skip
    return int(getattr(result, "rowcount", 0) or 0)


# --- wrong PINs -----------------------------------------------------------------------------------------------


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)


class LoginLimiter:
    """Wrong PINs per login and per client address over a sliding window. Thread-safe; memory is bounded by
    forgetting keys whose failures all fell out of the window (checked every so often)."""

    def __init__(self, *, per_login: int = 5, per_client: int = 20, window_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.per_login = per_login
        self.per_client = per_client
        self.window_s = window_s
        self._now = clock
        self._lock = threading.Lock()
        self._logins: dict[str, _Failures] = {}
        self._clients: dict[str, _Failures] = {}
        self._last_prune = 0.0

    def retry_after(self, login: str, client: str) -> float:
        """Seconds until this login and address may try again (0: now)."""
        now = self._now()
        with self._lock:
            waits = [self._wait(self._logins.get(login), self.per_login, now),
                     self._wait(self._clients.get(client), self.per_client, now)]  # fmt: skip
        return max(waits)

    def failed(self, login: str, client: str) -> None:
        now = self._now()
        with self._lock:
            self._prune(now)
            for table, key in ((self._logins, login), (self._clients, client)):
                table.setdefault(key, _Failures()).times.append(now)

    def succeeded(self, login: str) -> None:
        with self._lock:
            self._logins.pop(login, None)

    def _wait(self, entry: _Failures | None, limit: int, now: float) -> float:
        if entry is None:
            return 0.0
        while entry.times and entry.times[0] <= now - self.window_s:
            entry.times.popleft()
        if len(entry.times) < limit:
            return 0.0
        # The oldest failure that keeps the count at the limit must leave the window first.
        return max(0.0, entry.times[len(entry.times) - limit] + self.window_s - now)

    def _prune(self, now: float) -> None:
        if now - self._last_prune < 60.0:
            return
        self._last_prune = now
        for table in (self._logins, self._clients):
            for key in [k for k, v in table.items() if not v.times or v.times[-1] <= now - self.window_s]:
                del table[key]
