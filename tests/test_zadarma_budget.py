"""The rate-limit budget on its own, with a controlled clock."""

from __future__ import annotations

import pytest

from dialer.zadarma.budget import GENERAL, STATISTICS, BudgetExhausted, RateBudget


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def test_statistics_never_more_than_three_in_any_sliding_window() -> None:
    clock = Clock(1_000_050.0)  # 10 s before a fixed-window boundary
    budget = RateBudget(clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(9):
        budget.acquire(STATISTICS)
        sent.append(clock.t)
        budget.release(STATISTICS, counted=True)
    for i in range(len(sent) - 3):
        assert sent[i + 3] - sent[i] >= 60, f"4 statistics requests within {sent[i + 3] - sent[i]:.1f}s"


def test_headers_win_over_local_count() -> None:
    clock = Clock()
    budget = RateBudget(clock=clock, sleep=clock.sleep)
    budget.acquire(GENERAL)
    budget.update(GENERAL, {"x-ratelimit-limit": "100", "x-ratelimit-remaining": "2",
                            "x-ratelimit-reset": str(int(clock.t) + 30)})
    budget.release(GENERAL, counted=True)
    assert budget.available(GENERAL) == 2
    budget.acquire(GENERAL)
    budget.acquire(GENERAL)
    with pytest.raises(BudgetExhausted) as info:
        budget.acquire(GENERAL, wait=False)
    assert 29 <= info.value.reset_in <= 31
    before = clock.t
    budget.acquire(GENERAL)  # waits for the reset
    assert clock.t >= before + 30


def test_reserve_is_kept_back() -> None:
    clock = Clock()
    budget = RateBudget({GENERAL: 5, STATISTICS: 3}, clock=clock, sleep=clock.sleep)
    assert budget.available(GENERAL, reserve=2) == 3
    for _ in range(3):
        budget.acquire(GENERAL, reserve=2, wait=False)
    with pytest.raises(BudgetExhausted):
        budget.acquire(GENERAL, reserve=2, wait=False)
    budget.acquire(GENERAL, wait=False)  # the reserve is there for whoever asks without one


def test_learns_shorter_windows_from_headers() -> None:
    clock = Clock(1_000_000.0)
    budget = RateBudget(clock=clock, sleep=clock.sleep)
    budget.update(GENERAL, {"x-ratelimit-reset": "1000006", "x-ratelimit-remaining": "10"})
    clock.t = 1_000_006.5
    budget.update(GENERAL, {"x-ratelimit-reset": "1000012", "x-ratelimit-remaining": "10"})
    assert budget.snapshot()[GENERAL]["window_s"] == 6


def test_a_request_with_a_reserve_leaves_the_last_slots_untouched() -> None:
    from dialer.zadarma import ZadarmaClient

    # Nothing listens on port 9: had the client sent anything, it would fail with a connection error instead.
    budget = RateBudget({GENERAL: 1}, window_s=3600.0)
    client = ZadarmaClient("k" * 20, "s" * 20, "http://127.0.0.1:9", budget=budget)
    with pytest.raises(BudgetExhausted):
        client.balance(wait_for_budget=False, reserve=1)
    with pytest.raises(BudgetExhausted):
        client.callback("100", "+442079460000", wait_for_budget=False, reserve=1)
    assert budget.available(GENERAL) == 1
