"""Small named values in the database: watermarks, the daemon's heartbeat, counters."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from dialer.models import KeyValue, utcnow


def put_value(s: Session, key: str, value: Any) -> None:
    row = s.get(KeyValue, key)
    if row is None:
        s.add(KeyValue(key=key, value=value))
    else:
        row.value = value
        row.updated_at = utcnow()
        s.add(row)


def get_value(s: Session, key: str, default: Any = None) -> Any:
    row = s.get(KeyValue, key)
    return default if row is None else row.value


def add_to_value(s: Session, key: str, delta: float) -> None:
    put_value(s, key, float(get_value(s, key, 0.0) or 0.0) + delta)
