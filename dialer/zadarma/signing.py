"""Request and webhook signatures, exactly as Zadarma computes them.

Zadarma base64-encodes the *hex* HMAC-SHA1 digest (40 ASCII characters), not the raw 20 bytes:
every signature is therefore 56 characters ending in ``==``. Signing the raw digest is the most
common integration mistake, and the simulator rejects it just as Zadarma does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

ParamValue = str | int | float
Params = Mapping[str, ParamValue]


def params_string(params: Params) -> str:
    """The sorted, RFC 1738 (``+`` for space) query string that is both sent and signed."""
    return urlencode(sorted((k, _as_str(v)) for k, v in params.items()))


def _as_str(value: ParamValue) -> str:
    if isinstance(value, bool):
        # Zadarma wants explicit strings for flags; True/False would be sent as "True".
        return "1" if value else "0"
    return str(value)


def hex_hmac_b64(secret: str, message: str) -> str:
    digest_hex = hmac.new(secret.encode(), message.encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(digest_hex.encode()).decode()


def sign(method_path: str, params: Params, secret: str) -> str:
    """Signature for an API call. ``method_path`` is the full path, e.g. ``/v1/info/balance/``."""
    return sign_string(method_path, params_string(params), secret)


def sign_string(method_path: str, query: str, secret: str) -> str:
    """Signature for an already-encoded parameter string (what a server sees on the wire)."""
    md5 = hashlib.md5(query.encode()).hexdigest()
    return hex_hmac_b64(secret, method_path + query + md5)


def authorization_header(key: str, method_path: str, params: Params, secret: str) -> str:
    return f"{key}:{sign(method_path, params, secret)}"


# Which fields, concatenated in this order, each webhook event signs (zadarma-api.md §5).
WEBHOOK_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "NOTIFY_START": ("caller_id", "called_did", "call_start"),
    "NOTIFY_INTERNAL": ("caller_id", "called_did", "call_start"),
    "NOTIFY_ANSWER": ("caller_id", "destination", "call_start"),
    "NOTIFY_END": ("caller_id", "called_did", "call_start"),
    # Not in Zadarma's table but sent by the PBX: signed like NOTIFY_INTERNAL (the npm ``zadarma`` handler checks
    # it so), and checked here so a forged one cannot end an agent's call.
    "NOTIFY_INTERNAL_END": ("caller_id", "called_did", "call_start"),
    "NOTIFY_IVR": ("caller_id", "called_did", "call_start"),
    "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
    "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
    "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec"),
}


def webhook_signed_string(fields: Mapping[str, str]) -> str | None:
    """The string an event signs, or None for an event whose signing rule is unknown."""
    names = WEBHOOK_SIGNED_FIELDS.get(fields.get("event", ""))
    if names is None:
        return None
    return "".join(fields.get(name, "") for name in names)


def webhook_signature(fields: Mapping[str, str], secret: str) -> str | None:
    signed = webhook_signed_string(fields)
    return None if signed is None else hex_hmac_b64(secret, signed)


def verify_webhook(fields: Mapping[str, str], signature: str | None, secret: str) -> bool:
    """True when ``signature`` (the ``Signature`` header) is right for this event's fields."""
    if not signature:
        return False
    expected = webhook_signature(fields, secret)
    return expected is not None and hmac.compare_digest(expected, signature.strip())


def canonical_query(query: str) -> str:
    """The parameters of a received query string, sorted by key and re-encoded (RFC 1738, ``+`` for space): the
    form Zadarma verifies. The official PHP and Python clients sign this form but send the parameters in the
    caller's order, so a server comparing the bytes as received would refuse them."""
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def verify_request(method_path: str, query: str, authorization: str | None, key: str, secret: str) -> bool:
    """Server side: does ``Authorization`` carry a valid signature by ``key`` of the parameters in ``query``?

    Checked against the canonical form of what was received (:func:`canonical_query`), also as PHP writes it
    (``~`` as ``%7E``, where Python leaves it bare); never against an unsorted order."""
    if not authorization or ":" not in authorization:
        return False
    got_key, _, got_sig = authorization.partition(":")
    if not hmac.compare_digest(got_key.strip(), key):
        return False
    got = got_sig.strip()
    canonical = canonical_query(query)
    candidates = dict.fromkeys((canonical, canonical.replace("~", "%7E")))
    return any(hmac.compare_digest(got, sign_string(method_path, q, secret)) for q in candidates)
