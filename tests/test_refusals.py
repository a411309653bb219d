"""Whom a refused callback is about (only the number counts against a contact), and when campaigns paused for an
empty balance may run again. Pure functions, no database."""

from __future__ import annotations

import pytest

from dialer.outcomes.refusals import balance_decision, pause_reason
from dialer.outcomes.states import LOW_BALANCE
from dialer.zadarma.errors import AuthError, Refusal, RejectedError, classify_refusal

CALLBACK = "/v1/request/callback/"


@pytest.mark.parametrize(
    ("message", "status", "expected"),
    [
        # Zadarma's documented answers.
        ("Not authorized", 200, Refusal.AUTH),
        ("Check phone number", 200, Refusal.NUMBER),
        # Its statistics dispositions, should a refusal say the same.
        ("unallocated number", 200, Refusal.NUMBER),
        ("no money", 200, Refusal.MONEY),
        ("no money, no limit", 200, Refusal.MONEY),
        ("no limit", 200, Refusal.ACCOUNT),
        ("no day limit", 200, Refusal.ACCOUNT),
        ("line limit", 200, Refusal.ACCOUNT),
        # The simulator's.
        ("Not enough money", 200, Refusal.MONEY),
        ("Temporary error, please try again later", 200, Refusal.TRANSIENT),
        ("Wrong parameters: from and to are required", 200, Refusal.ACCOUNT),
        ("Wrong SIP id", 200, Refusal.ACCOUNT),
        # Wordings other services use for the same causes.
        ("Insufficient balance", 200, Refusal.MONEY),
        ("Insufficient funds on your account", 200, Refusal.MONEY),
        ("Wrong number", 200, Refusal.NUMBER),
        ("Invalid number format", 200, Refusal.NUMBER),
        ("Account is blocked", 200, Refusal.ACCOUNT),
        ("Your number is blocked", 200, Refusal.ACCOUNT),
        ("Account suspended", 200, Refusal.ACCOUNT),
        ("You exceeded the rate limit", 200, Refusal.TRANSIENT),
        # HTTP status decides whatever the wording.
        ("Payment Required", 402, Refusal.MONEY),
        ("whatever", 402, Refusal.MONEY),
        ("Forbidden", 403, Refusal.ACCOUNT),
        ("Check phone number", 403, Refusal.ACCOUNT),
        ("whatever", 401, Refusal.AUTH),
        # Anything unrecognised would refuse any number too, as far as we know: never the contact's fault.
        ("Something nobody has seen before", 200, Refusal.ACCOUNT),
        ("", 200, Refusal.ACCOUNT),
        ("HTTP 400: Bad Request", 400, Refusal.ACCOUNT),
    ],
)
def test_refusals_are_classified_by_whom_they_are_about(message: str, status: int, expected: Refusal) -> None:
    assert classify_refusal(RejectedError(message, method=CALLBACK, status_code=status)) == expected


def test_an_auth_error_is_the_key_whatever_it_says() -> None:
    assert classify_refusal(AuthError("Check phone number", method=CALLBACK, status_code=401)) == Refusal.AUTH


def test_pause_reasons_say_what_to_do() -> None:
    auth = pause_reason(Refusal.AUTH, "Not authorized", "spring")
    assert "ZADARMA_KEY / ZADARMA_SECRET" in auth and "`dialer campaign resume spring`" in auth
    money = pause_reason(Refusal.MONEY, "Not enough money", "spring")
    # The daemon's balance check resumes campaigns whose reason starts so.
    assert money.startswith(LOW_BALANCE) and "top up" in money and "Not enough money" in money
    other = pause_reason(Refusal.ACCOUNT, "Wrong SIP id", "spring")
    assert "Wrong SIP id" in other and "`dialer campaign resume spring`" in other


def test_balance_floor_pauses_and_resumes_as_before_when_zadarma_never_refused() -> None:
    assert balance_decision(3.0, 5.0, None).action == "pause"
    assert balance_decision(6.0, 5.0, None) == ("resume", None)
    assert balance_decision(0.0, 0.0, None) == ("resume", None)  # no floor: nothing to hold back


def test_after_a_refusal_for_money_only_a_rising_balance_resumes() -> None:
    refused = {"at": "2026-11-29T10:00:00+00:00", "balance": None}
    # The first check after the refusal learns the balance Zadarma refused at; it does not resume on it.
    first = balance_decision(0.4, 0.0, refused)
    assert first.action == "wait" and first.mark["balance"] == 0.4
    # The same balance, or less (calls still ending are charged): still waiting, at the lowest seen.
    assert balance_decision(0.4, 0.0, first.mark).action == "wait"
    lower = balance_decision(0.1, 0.0, first.mark)
    assert lower.action == "wait" and lower.mark["balance"] == 0.1
    # Money is back: resume and forget the refusal.
    assert balance_decision(0.2, 0.0, lower.mark) == ("resume", None)
    # An overdrawn account must get above zero, and above the floor.
    overdrawn = {"at": "x", "balance": -2.0}
    assert balance_decision(-1.0, 0.0, overdrawn).action == "wait"
    assert balance_decision(0.5, 1.0, overdrawn).action == "pause"
    assert balance_decision(1.5, 1.0, overdrawn) == ("resume", None)
