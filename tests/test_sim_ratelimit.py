"""Fixed-window rate limits as the simulator keeps them."""

from __future__ import annotations

from dialer.sim.ratelimit import RateLimiter


def test_fixed_windows_aligned_to_boundaries_and_separate_statistics_bucket() -> None:
    rl = RateLimiter(general=3, statistics=1, window_s=60)
    now = 1_800_000_030.0  # half-way through a minute
    results = [rl.check("k", "/v1/info/balance/", now + i) for i in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert {r.reset_at for r in results} == {1_800_000_060.0}
    assert rl.check("k", "/v1/statistics/pbx/", now).allowed
    assert not rl.check("k", "/v1/statistics/", now).allowed  # shared by every statistics method
    assert rl.check("other", "/v1/info/balance/", now).allowed  # per key
    # The next window starts on the boundary, not 60 s after the first request.
    assert rl.check("k", "/v1/info/balance/", 1_800_000_060.0).remaining == 2
    assert rl.reset_header(1_800_000_060.0) == "1800000060"


def test_sped_up_windows_report_fractional_resets() -> None:
    rl = RateLimiter(general=100, statistics=3, window_s=60 / 50)
    d = rl.check("k", "/v1/info/balance/", 1_800_000_000.5)
    assert d.reset_at == 1_800_000_001.2
    assert rl.reset_header(d.reset_at) == "1800000001.200"
