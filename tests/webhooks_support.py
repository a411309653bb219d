"""Shared helpers for the webhook tests: a seeded database and Zadarma-shaped events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from dialer.db import open_database, session_scope
from dialer.models import Attempt, Campaign, Contact
from dialer.zadarma.signing import webhook_signature
from tests.conftest import PBX_NUMBER, SECRET

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_db(tmp_path: Path, name: str = "dialer.db") -> Engine:
    return open_database(f"sqlite:///{tmp_path / name}")


@dataclass
class Seeded:
    campaign_id: int
    contact_ids: list[int]
    attempt_ids: list[int]
    phones: list[str]


def seed(
    engine: Engine,
    *,
    n: int = 3,
    extensions: list[str] | None = None,
    agents: int = 2,
    abandon_action: str = "hangup",
    name: str = "spring",
    phone_base: int = 442037690000,
    sent_at: datetime = T0,
) -> Seeded:
    """A running campaign with ``n`` contacts, each with one placed attempt."""
    with session_scope(engine) as s:
        camp = Campaign(
            name=name,
            from_number=PBX_NUMBER,
            agents=agents,
            agent_extensions=["100", "101"] if extensions is None else extensions,
            abandon_action=abandon_action,
            state="running",
        )
        s.add(camp)
        s.flush()
        contacts, attempts, phones = [], [], []
        for i in range(n):
            phone = f"+{phone_base + i + 1}"
            contact = Contact(
                campaign_id=camp.id, phone=phone, name=f"Customer {i}", state="dialing", attempts=1
            )
            s.add(contact)
            s.flush()
            attempt = Attempt(
                campaign_id=camp.id, contact_id=contact.id, phone=phone, state="placed", sent_at=sent_at
            )
            s.add(attempt)
            s.flush()
            contacts.append(contact.id)
            attempts.append(attempt.id)
            phones.append(phone)
        assert camp.id is not None
        return Seeded(camp.id, contacts, attempts, phones)


def digits(phone: str) -> str:
    return phone.lstrip("+")


def call_start(t: float = 0.0) -> str:
    return at(t).strftime("%Y-%m-%d %H:%M:%S")


def out_start(phone: str, token: str, t: float = 0.0) -> dict[str, str]:
    return {
        "event": "NOTIFY_OUT_START",
        "call_start": call_start(t),
        "pbx_call_id": f"out_{token}",
        "destination": digits(phone),
        "internal": PBX_NUMBER,
    }


def out_end(phone: str, token: str, disposition: str, t: float = 0.0, duration: int = 0) -> dict[str, str]:
    return {
        "event": "NOTIFY_OUT_END",
        "call_start": call_start(t),
        "pbx_call_id": f"out_{token}",
        "caller_id": PBX_NUMBER,
        "destination": digits(phone),
        "internal": PBX_NUMBER,
        "duration": str(duration),
        "disposition": disposition,
        "status_code": "16",
        "is_recorded": "0",
        "call_id_with_rec": "",
    }


def start(phone: str, token: str, t: float = 0.0) -> dict[str, str]:
    return {
        "event": "NOTIFY_START",
        "call_start": call_start(t),
        "pbx_call_id": f"in_{token}",
        "caller_id": digits(phone),
        "called_did": PBX_NUMBER,
    }


def internal(phone: str, token: str, ext: str, t: float = 0.0) -> dict[str, str]:
    return {**start(phone, token, t), "event": "NOTIFY_INTERNAL", "internal": ext}


def answer(phone: str, token: str, ext: str, t: float = 0.0) -> dict[str, str]:
    return {
        "event": "NOTIFY_ANSWER",
        "caller_id": digits(phone),
        "destination": ext,
        "call_start": call_start(t),
        "pbx_call_id": f"in_{token}",
        "internal": ext,
    }


def end(
    phone: str, token: str, ext: str, disposition: str = "answered", duration: int = 60, t: float = 0.0
) -> dict[str, str]:
    return {
        "event": "NOTIFY_END",
        "call_start": call_start(t),
        "pbx_call_id": f"in_{token}",
        "caller_id": digits(phone),
        "called_did": PBX_NUMBER,
        "internal": ext,
        "duration": str(duration),
        "disposition": disposition,
        "last_internal": ext,
        "status_code": "16",
        "is_recorded": "0",
        "call_id_with_rec": "",
    }


def signed(fields: dict[str, str], secret: str = SECRET) -> dict[str, str]:
    sig = webhook_signature(fields, secret)
    return {"Signature": sig} if sig else {}
