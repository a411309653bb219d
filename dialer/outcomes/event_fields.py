"""What identifies a webhook event and whose call it is: the resend key, the customer's number, the call leg.

Pure functions over the event's fields (``dialer.outcomes.events`` folds the events).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from dialer.zadarma.signing import WEBHOOK_SIGNED_FIELDS

# Fields that identify one event: a resend carries the same values even if it adds unknown extras.
DEDUP_FIELDS = (
    "pbx_call_id",
    "call_start",
    "caller_id",
    "called_did",
    "destination",
    "internal",
    "last_internal",
    "disposition",
    "duration",
    "status_code",
    "call_id_with_rec",
    "is_recorded",
)


def dedup_key(fields: Mapping[str, str]) -> str:
    """``EVENT:<hash>`` of the identifying fields (all fields for an event we do not know)."""
    event = fields.get("event", "")
    if event in WEBHOOK_SIGNED_FIELDS:
        items = [(k, fields.get(k, "")) for k in DEDUP_FIELDS]
    else:
        items = sorted(fields.items())
    digest = hashlib.sha1("\x1f".join(f"{k}={v}" for k, v in items).encode()).hexdigest()
    return f"{event}:{digest[:32]}"


def customer_phone(value: str | None) -> str | None:
    """E.164 (``+`` and digits) from a webhook number: ``442037691881``, ``+44...`` or ``Name (4420...)``."""
    if not value:
        return None
    inner = re.search(r"\(([^)]*)\)\s*$", value)
    digits = re.sub(r"\D", "", inner.group(1) if inner else value)
    return "+" + digits if len(digits) >= 5 else None


def other_leg(known: str | None, pbx: str | None) -> bool:
    """Whether an event's call id names a different leg of the same direction than the one the attempt already
    has: then the event is another call's (a late event of an earlier call to the number), not this attempt's."""
    if not known or not pbx or known == pbx:
        return False
    return known.split("_", 1)[0] == pbx.split("_", 1)[0]
