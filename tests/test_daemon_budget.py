"""The daemon shares a key's rate limit with another program and still uses what is left to it."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from dialer.zadarma.signing import authorization_header
from tests.conftest import wait_for
from tests.e2e import KEY, SECRET, scenario_text, stack

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LIMIT = 30  # general requests per (scaled) minute
OTHER = 10  # what the other program takes per minute
SCALE = 10.0
WINDOW = 60 / SCALE


def test_budget_shared_with_another_client(tmp_path: Path) -> None:
    with stack(tmp_path, time_scale=SCALE, webhooks=False,
               scenario=scenario_text(agents=60, general=LIMIT, webhooks="none")) as st:
        st.make_campaign("budget", 1500, agents=60, pacing="ratio:3")
        st.cli("campaign", "start", "budget")
        stop = threading.Event()
        other_sent: list[float] = []
        other_429 = 0

        def other_client() -> None:
            nonlocal other_429
            path = "/v1/info/balance/"
            with httpx.Client(base_url=st.api, timeout=5) as http:
                while not stop.wait(WINDOW / OTHER):
                    auth = authorization_header(KEY, path, {"format": "json"}, SECRET)
                    r = http.get(path, params={"format": "json"}, headers={"Authorization": auth})
                    if r.status_code == 429:
                        other_429 += 1  # refused: it took nothing from the budget
                    else:
                        other_sent.append(time.time())

        thread = threading.Thread(target=other_client)
        thread.start()
        proc = st.start_daemon("--balance-every", "30")
        start = time.time()
        try:
            # What is measured is ten windows of the simulator's clock, whatever the machine does meanwhile.
            wait_for(lambda: proc.poll() is not None or float(st.sim_stats()["now"]) >= start + WINDOW * 10,
                     timeout=WINDOW * 10 + 120, what="ten rate-limit windows", every=0.2)
            assert proc.poll() is None, st.daemon_log()[-3000:]
        finally:
            stopped = time.time()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            stop.set()
            thread.join()
        stats = st.sim_stats()
        truth = st.truth()

    daemon_429 = int(stats["rate_limited_total"]) - other_429
    assert daemon_429 == 0, f"the daemon was rate limited {daemon_429} times"
    # Steady state: whole windows after the first two, before the stop.
    first = math.floor(start / WINDOW) * WINDOW + 2 * WINDOW
    windows = [w for w in (first + i * WINDOW for i in range(10)) if w + WINDOW <= stopped]
    assert len(windows) >= 5
    callbacks = Counter(math.floor(c["received_at"] / WINDOW) * WINDOW for c in truth)
    others = Counter(math.floor(t / WINDOW) * WINDOW for t in other_sent)
    used = [callbacks[w] / (LIMIT - others[w]) for w in windows]
    assert min(used) >= 0.85 and sum(used) / len(used) >= 0.9, f"share of what was left used per window: {used}"
