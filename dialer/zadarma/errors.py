"""What can go wrong talking to Zadarma, classified by whether the request may have had an effect.

The class decides whether a retry is safe: re-sending a callback whose first request may have reached
Zadarma can ring a customer twice, so only :class:`NotSentError` is ever retried for actions.
"""

from __future__ import annotations


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


PERMANENT_REJECTION_MARKERS = ("check phone number", "unallocated", "wrong number", "invalid number")


def is_permanent_number_error(error: RejectedError) -> bool:
    """A rejection that will not change by retrying the same number (the number itself is bad)."""
    text = error.message.lower()
    return any(marker in text for marker in PERMANENT_REJECTION_MARKERS)
