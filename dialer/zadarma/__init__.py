"""A complete client for the Zadarma API v1. Knows nothing of the database: usable on its own."""

from __future__ import annotations

from dialer.zadarma.budget import GENERAL, STATISTICS, BudgetExhausted, RateBudget, group_of
from dialer.zadarma.client import PRODUCTION_URL, SANDBOX_URL, RetryPolicy, Timeouts, ZadarmaClient
from dialer.zadarma.errors import (
    AmbiguousError,
    AuthError,
    NotSentError,
    RateLimitedError,
    Refusal,
    RejectedError,
    ZadarmaError,
    classify_refusal,
)
from dialer.zadarma.signing import (
    authorization_header,
    sign,
    verify_request,
    verify_webhook,
    webhook_signature,
)

__all__ = [
    "GENERAL",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "STATISTICS",
    "AmbiguousError",
    "AuthError",
    "BudgetExhausted",
    "NotSentError",
    "RateBudget",
    "RateLimitedError",
    "Refusal",
    "RejectedError",
    "RetryPolicy",
    "Timeouts",
    "ZadarmaClient",
    "ZadarmaError",
    "authorization_header",
    "classify_refusal",
    "group_of",
    "sign",
    "verify_request",
    "verify_webhook",
    "webhook_signature",
]
