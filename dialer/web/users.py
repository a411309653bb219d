"""The console's password logins (supervisors): adding, listing, disabling and checking them.

Invariants: a password is never stored, printed or logged, only its scrypt hash, made and checked by the same
functions as the agents' PINs (``dialer.agents.accounts``: one KDF in the project); checking costs the same whether
the name exists or not; a disabled user logs in no more (and their open sessions end at their next request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlmodel import Session, col, select

from dialer.agents.accounts import hash_pin, verify_pin
from dialer.models import WebUser

_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MIN_PASSWORD = 10
# Checked against when the name does not exist, so a wrong name costs what a wrong password costs.
_DUMMY_HASH = hash_pin("not a password", salt=b"\1" * 16)


class Role(StrEnum):
    """What a console login may do. Supervisors see the wallboard and run campaigns; agents use their PIN."""

    SUPERVISOR = "supervisor"


class UserError(ValueError):
    """A user operation is not possible; the message says why and what to do."""


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    role: str
    created_at: datetime
    disabled: bool


def normalise_name(name: str) -> str:
    return (name or "").strip().lower()


def find_user(session: Session, name: str) -> WebUser | None:
    return session.exec(select(WebUser).where(col(WebUser.name) == normalise_name(name))).first()


def add_user(session: Session, name: str, password: str, role: Role, now: datetime) -> WebUser:
    value = normalise_name(name)
    if not _NAME.fullmatch(value):
        raise UserError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    if len(password or "") < MIN_PASSWORD:
        raise UserError(f"a password is at least {MIN_PASSWORD} characters")
    if find_user(session, value) is not None:
        raise UserError(f"user {value!r} already exists (change the password with `dialer user password`)")
    user = WebUser(name=value, role=Role(role).value, password_hash=hash_pin(password), created_at=now)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, name: str, password: str) -> WebUser:
    user = find_user(session, name)
    if user is None:
        raise UserError(f"no user {name!r} (see `dialer user list`)")
    if len(password or "") < MIN_PASSWORD:
        raise UserError(f"a password is at least {MIN_PASSWORD} characters")
    user.password_hash = hash_pin(password)
    session.add(user)
    session.flush()
    return user


def disable_user(session: Session, name: str, now: datetime) -> WebUser:
    user = find_user(session, name)
    if user is None:
        raise UserError(f"no user {name!r} (see `dialer user list`)")
    user.disabled_at = user.disabled_at or now
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> list[UserInfo]:
    rows = session.exec(select(WebUser).order_by(col(WebUser.name))).all()
    return [UserInfo(u.id or 0, u.name, u.role, u.created_at, u.disabled_at is not None) for u in rows]


def authenticate_user(session: Session, name: str, password: str) -> WebUser | None:
    """The enabled user with this name and password, else None (the same work either way)."""
    user = find_user(session, name)
    ok = verify_pin(password, user.password_hash if user is not None else _DUMMY_HASH)
    return user if ok and user is not None and user.disabled_at is None else None


def active_user(session: Session, user_id: int) -> WebUser | None:
    user = session.get(WebUser, user_id)
    return user if user is not None and user.disabled_at is None else None
