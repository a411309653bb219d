"""The discrete-event simulator's policy sees the team as the daemon's presence reports it: agents leaving for a
break or logging out are counted until they have finished their call (a pause asked for in a call waits for its
end), and come back the moment they are back; never the schedule's count read as an oracle."""

from __future__ import annotations

from dialer.pacing import Observation, Policy, RatioPolicy
from dialer.sim.des import BenchScenario, run_days
from dialer.sim.scenario import Scenario

WORLD = {
    "name": "breaks",
    "seed": 3,
    "shift": {"start": "09:00", "hours": 1},
    "agents": {
        "count": 10,
        "wrapup": 5,
        # One agent logs out at 09:30 for good; two breaks of ten minutes.
        "schedule": [{"start": "09:00", "end": "24:00", "count": 9}, {"start": "09:00", "end": "09:30", "count": 1}],
        "breaks": [{"start": "09:10", "end": "09:20", "count": 2, "code": "break"},
                   {"start": "09:40", "end": "09:50", "count": 1, "code": "lunch"}],
    },
    "calls": {"answer_probability": 0.5, "talk_time": 60, "ring_time": 5},
}


def _seen(policy: Policy | str) -> list[tuple[float, int]]:
    bench = BenchScenario("breaks", Scenario.from_dict(WORLD), days=1)
    seen: list[tuple[float, int]] = []

    def rec(o: Observation, n: int) -> None:
        seen.append((o.time_of_day, o.agents_logged_in))

    run_days(bench, policy, seed=1, days=1, recorder=rec)
    return seen


def _at(seen: list[tuple[float, int]], clock: str) -> list[int]:
    h, m = (int(x) for x in clock.split(":"))
    lo = h * 3600 + m * 60
    return [n for t, n in seen if lo <= t < lo + 60]


def test_the_policy_paces_for_the_team_presence_reports() -> None:
    # Enough calls that every agent is in a call when their break starts: ratio:3 bare, not inside the abandon
    # governor (which would hold it to progressive at the start of a campaign).
    seen = _seen(RatioPolicy(3))
    assert set(_at(seen, "09:05")) == {10}
    # The break starts at 09:10 for agents in calls: they finish the call (60 s talk, 5 s wrap-up) first, so the
    # team shrinks during that minute, not at its first second as the schedule says.
    first = next(n for t, n in seen if t >= 9 * 3600 + 600)
    assert first == 10
    assert set(_at(seen, "09:12")) == {8}
    assert set(_at(seen, "09:21")) == {10}  # back at 09:20: at once
    assert set(_at(seen, "09:35")) == {9}  # one logged out at 09:30
    assert set(_at(seen, "09:45")) == {8}  # lunch
    assert set(_at(seen, "09:55")) == {9}


def test_an_idle_team_leaves_at_the_first_second() -> None:
    seen = _seen("ratio:0.1")  # hardly any calls: agents are idle when the break starts
    after = [n for t, n in seen if 9 * 3600 + 600 <= t < 9 * 3600 + 602]
    assert after and after[0] == 8
