"""The webhook events after the call's main legs: a recording ready (NOTIFY_RECORD) and what it is stored on.

NOTIFY_INTERNAL_END (an agent's leg is over) and NOTIFY_IVR (the abandon message was played) are folded in
``dialer.outcomes.events``: the first frees an extension that rang and never answered, the second only links.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlmodel import Session

from dialer.models import Attempt, WebhookEvent
from dialer.outcomes.event_fields import customer_phone

_ATTEMPT: sa.Table = Attempt.__table__  # type: ignore[attr-defined]
_EVENT: sa.Table = WebhookEvent.__table__  # type: ignore[attr-defined]
_SET_RECORDING = (
    sa.update(_ATTEMPT).where(_ATTEMPT.c.id == sa.bindparam("aid")).values(recording=sa.bindparam("rec"))
)
# The customer of a PBX call, from an earlier event of it that names them (the in-leg's NOTIFY_START and kin).
_CALLER = (
    sa.select(_EVENT.c.payload)
    .where(_EVENT.c.pbx_call_id == sa.bindparam("pbx"), _EVENT.c.event != "NOTIFY_RECORD")
    .order_by(_EVENT.c.id)
    .limit(1)
)
_LATEST_FOR_PHONE = (
    sa.select(_ATTEMPT.c.id).where(_ATTEMPT.c.phone == sa.bindparam("phone")).order_by(_ATTEMPT.c.id.desc()).limit(1)
)


def save_recording(session: Session, attempt_id: int | None, fields: Mapping[str, str]) -> int | None:
    """Store NOTIFY_RECORD's ``call_id_with_rec`` on the attempt; returns the attempt's id (None: not ours).

    The recording is ready after the call, often after the live state forgot the call (``attempt_id`` None):
    the customer is then read off an earlier event of the same PBX call."""
    rec = (fields.get("call_id_with_rec") or "").strip()
    pbx = fields.get("pbx_call_id") or None
    if not rec:
        return attempt_id
    conn = session.connection()
    if attempt_id is None and pbx:
        payload = conn.execute(_CALLER, {"pbx": pbx}).scalar()
        phone = customer_phone((payload or {}).get("caller_id") or (payload or {}).get("destination"))
        if phone:
            attempt_id = conn.execute(_LATEST_FOR_PHONE, {"phone": phone}).scalar()
    if attempt_id is not None:
        conn.execute(_SET_RECORDING, {"aid": attempt_id, "rec": rec[:200]})
    return attempt_id
