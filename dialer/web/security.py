"""The console's sessions and forms: a signed session cookie, its CSRF token, and the secret that signs them.

The session lives in the cookie itself, signed (itsdangerous, HMAC-SHA1 over the JSON with a timestamp) with a
secret kept in the database (``kv``: made once, shared by the daemon's console and `dialer web` on the same
database, so a restart logs nobody out). An agent's cookie carries the agents' API session token
(``dialer.agents.tokens``), so logging out, a PIN change or removal end it exactly as they end an API session; a
supervisor's names the user, checked on every request.

Invariants: the cookie is HttpOnly and SameSite=Strict (never sent with a request another site starts); a session
older than ``max_age_s`` or with a bad signature is no session; every form a session posts carries its CSRF token
(``check_csrf``, constant-time), and the pages before login hand out an anonymous session for that token.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response

from dialer.db import session_scope
from dialer.kv import get_value, put_value

COOKIE = "dialer_console"
SECRET_KEY = "web:secret"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


class Kind(StrEnum):
    """Who a session belongs to."""

    ANONYMOUS = "anonymous"
    AGENT = "agent"
    SUPERVISOR = "supervisor"


@dataclass(frozen=True)
class Who:
    kind: Kind
    csrf: str
    agent_id: int = 0
    token: str = ""
    user_id: int = 0
    name: str = ""


def anonymous() -> Who:
    return Who(Kind.ANONYMOUS, secrets.token_urlsafe(24))


def console_secret(db: Engine) -> str:
    """The signing secret, made on first use and kept in the database."""
    with session_scope(db) as s:
        value = get_value(s, SECRET_KEY)
        if not isinstance(value, str) or len(value) < 32:
            value = secrets.token_urlsafe(48)
            put_value(s, SECRET_KEY, value)
        return value


class Sessions:
    """Reading and writing the session cookie."""

    def __init__(self, secret: str, *, max_age_s: float, secure: bool = False) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="dialer-console-session")
        self.max_age_s = max_age_s
        self.secure = secure

    def read(self, request: Request) -> Who | None:
        raw = request.cookies.get(COOKIE)
        if not raw or len(raw) > 4096:
            return None
        try:
            data: Any = self._signer.loads(raw, max_age=int(self.max_age_s))
            return Who(**{**data, "kind": Kind(data["kind"])})
        except (BadSignature, TypeError, KeyError, ValueError):
            return None

    def write(self, response: Response, who: Who) -> None:
        response.set_cookie(COOKIE, self._signer.dumps(asdict(who)), max_age=int(self.max_age_s), httponly=True,
                            samesite="strict", secure=self.secure, path="/")  # fmt: skip

    @staticmethod
    def clear(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def check_csrf(who: Who, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(str(sent).encode(), who.csrf.encode())
