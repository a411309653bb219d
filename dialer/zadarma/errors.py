"""What can go wrong talking to Zadarma, classified by whether the request may have had an effect.

The class decides whether a retry is safe: re-sending a callback whose first request may have reached
Zadarma can ring a customer twice, so only :class:`NotSentError` is ever retried for actions. A refusal
(:class:`RejectedError`) is further classified by whom it is about (:func:`classify_refusal`): only a refusal
about the one number may count against a contact.
"""

from __future__ import annotations

from enum import StrEnum


class ZadarmaError(Exception):
    """Base of every client error. ``method`` is the API path, ``status_code`` the HTTP status if any."""

    def __init__(self, message: str, *, method: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.status_code = status_code

    def __str__(self) -> str:
        where = f" ({self.method}" + (f", HTTP {self.status_code}" if self.status_code else "") + ")"
        return f"{self.message}{where if self.method else ''}"


class NotSentError(ZadarmaError):
    """The request certainly did nothing (connection refused, DNS failure, rate limited): safe to re-send."""


class RateLimitedError(NotSentError):
    """HTTP 429. ``retry_at`` is the unix time when the window resets, if known."""

    def __init__(self, message: str, *, method: str = "", retry_at: float | None = None) -> None:
        super().__init__(message, method=method, status_code=429)
        self.retry_at = retry_at


class AmbiguousError(ZadarmaError):
    """The request may or may not have taken effect (timeout after sending, 5xx, unreadable body).

    For a callback this means the customer may be ringing now: reconcile before dialling again.
    """


class RejectedError(ZadarmaError):
    """Zadarma answered and refused (``status: error`` or HTTP 4xx): nothing happened."""


class AuthError(RejectedError):
    """HTTP 401 ``Not authorized``: wrong key or secret, or a signing mismatch."""


class Refusal(StrEnum):
    """Whom a refused request is about: the one number it named, or everything the account would send.

    Only ``NUMBER`` counts against a contact. The others would refuse any number, so spending a contact's
    attempt on them burns the whole list in one tick: the attempt is given back and (except ``TRANSIENT``)
    the campaign pauses until someone fixes the cause.
    """

    NUMBER = "number"  # this number is bad (invalid, unallocated): the contact becomes invalid
    AUTH = "auth"  # key or secret refused (401): every campaign of the account pauses
    MONEY = "money"  # balance empty: every campaign of the account pauses until the balance rises
    ACCOUNT = "account"  # anything else that would fail for any number (blocked, limits, bad settings)
    TRANSIENT = "transient"  # "try again later": nothing pauses, the contact waits its failed-call delay


# Matched against the lower-cased message, in this order: the first class with a marker wins. Zadarma documents
# only "Not authorized" (401) and, for the callback, "Check phone number"; the others are the wordings of its
# statistics dispositions ("no money", "unallocated number", "no limit", "line limit") and of the simulator
# ("Not enough money"), with the usual synonyms. Anything unrecognised is ACCOUNT: pausing on an unknown
# message costs a resume, guessing it is about the number costs a contact.
_MARKERS: tuple[tuple[Refusal, tuple[str, ...]], ...] = (
    (Refusal.AUTH, ("not authorized", "not authorised", "unauthorized", "unauthorised", "authorization",
                    "signature", "api key", "wrong key", "invalid key")),
    (Refusal.MONEY, ("money", "balance", "insufficient", "funds", "payment required")),
    (Refusal.TRANSIENT, ("try again", "temporar", "rate limit", "too many requests")),
    (Refusal.ACCOUNT, ("blocked", "locked", "suspended", "disabled", "banned", "forbidden", "limit",
                       "caller id", "callerid", "from number", "sip id", "wrong sip", "wrong parameters")),
    (Refusal.NUMBER, ("check phone number", "check the number", "unallocated", "wrong number", "invalid number",
                      "incorrect number", "number is incorrect", "number is invalid", "not a valid number")),
)


def classify_refusal(error: RejectedError) -> Refusal:
    """Whom a refused callback is about. Pure: reads the error's class, HTTP status and message only.

    401 is always the key (:class:`AuthError`); 402 is money and 403 the account, whatever the wording.
    """
    if isinstance(error, AuthError) or error.status_code == 401:
        return Refusal.AUTH
    if error.status_code == 402:
        return Refusal.MONEY
    if error.status_code == 403:
        return Refusal.ACCOUNT
    text = error.message.lower()
    for refusal, markers in _MARKERS:
        if any(marker in text for marker in markers):
            return refusal
    return Refusal.ACCOUNT
