"""Lost webhooks: how long a campaign takes with a share of the PBX's events dropped, against no drops.

The simulator (`dialer sim serve --fault webhook-drop=P`) and the daemon (`dialer run --until-finished`) run as
real processes over a real SQLite file (the harness of tests/e2e.py). Each run: the same campaign and world; the
figures are the wall time from start to finished, the ratio to the no-drop run, whether the soak invariants hold
(tests/invariants.py: every contact final, nothing live, truth and database one-to-one, no number called twice at
once) and whether the report equals the simulator's truth (answered, connected, abandoned).

Run: .venv/bin/python benchmarks/bench_webhook_drops.py [--drops 0,0.2,0.4] [--contacts 120] [--agents 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e import stack  # noqa: E402
from tests.invariants import check_invariants, real_calls, truth_totals  # noqa: E402


def run(drop: float, contacts: int, agents: int, pacing: str, time_scale: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        faults = [f"webhook-drop={drop}"] if drop else []
        with stack(Path(tmp), time_scale=time_scale, webhooks=True, faults=faults) as st:
            st.make_campaign("drops", contacts, agents=agents, pacing=pacing,
                             extra=["--abandon-action", "ivr_play:1"])  # fmt: skip
            t0 = time.perf_counter()
            st.run_daemon(1800, start="drops")
            wall = time.perf_counter() - t0
            truth = st.wait_truth_settled()
            try:
                check_invariants(truth, st.attempts(), st.contacts(), st.campaign("drops"),
                                 rate_limited=int(st.sim_stats()["rate_limited_total"]))  # fmt: skip
                invariants = "hold"
            except AssertionError as exc:
                invariants = f"FAIL: {str(exc)[:200]}"
            expected = truth_totals(truth)
            report = st.report_json("drops")
            calls = report.get("calls", report)
            equal = all(calls[k] == expected[k] for k in ("answered", "connected", "abandoned"))
            log = st.daemon_log()
            stats = st.sim_stats()["webhooks"]
    return {
        "drop": drop,
        "wall_s": wall,
        "calls": len(real_calls(truth)),
        "invariants": invariants,
        "report_equals_truth": equal,
        "healed_lines": log.count("live calls closed from the database"),
        "webhooks": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drops", default="0,0.2,0.4")
    parser.add_argument("--contacts", type=int, default=120)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--pacing", default="progressive")
    parser.add_argument("--time-scale", type=float, default=30.0)
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}; "
          f"{args.contacts} contacts, {args.agents} agents, {args.pacing}, time scale {args.time_scale}")  # fmt: skip
    base: float | None = None
    for drop in (float(d) for d in args.drops.split(",")):
        r = run(drop, args.contacts, args.agents, args.pacing, args.time_scale)
        if drop == 0:
            base = float(r["wall_s"])  # type: ignore[arg-type]
        ratio = f"{float(r['wall_s']) / base:.2f}x" if base else "-"  # type: ignore[arg-type]
        print(f"drop {drop:.0%}: finished in {float(r['wall_s']):.1f} s wall ({ratio} the no-drop run), "  # type: ignore[arg-type]
              f"{r['calls']} calls, invariants {r['invariants']}, report == truth: {r['report_equals_truth']}, "
              f"heal log lines {r['healed_lines']}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
