"""Pacing benchmark: every scenario in benchmarks/scenarios x its policies x 10 seeds, printed as the
BENCHMARKS.md table (occupancy and abandon rate with 95% intervals, days over 3%, occupancy / U*).

Run: .venv/bin/python benchmarks/bench_pacing.py [--seeds 10] [--jobs 2] [--json out.json] [--plot out.png]
Each scenario's ``[bench]`` table lists the policies compared there (baselines with a knob are tuned to the cap)
and the simulated 8-hour days per seed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dialer.commands.bench import DEFAULT_POLICIES, results_table, write_plot
from dialer.sim.des import BenchScenario, run_matrix

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--days", type=int, default=None)
    ap.add_argument("--scenario", action="append", default=None, help="only these scenario files")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    paths = args.scenario or [str(p) for p in sorted((HERE / "scenarios").glob("*.toml"))]

    def policies_for(bench: BenchScenario) -> list[str]:
        return bench.policies or DEFAULT_POLICIES

    started = time.perf_counter()
    cells = run_matrix(paths, policies_for, args.seeds, days=args.days, jobs=args.jobs)
    wall = time.perf_counter() - started
    summaries = [c.summary() for c in cells]
    print(results_table(summaries))
    days = sorted({s["days"] // max(s["seeds"], 1) for s in summaries})
    print(
        f"\n{len(cells)} cells, {args.seeds} seeds x {'/'.join(map(str, days))} simulated 8-hour days each, "
        f"{wall:.0f} s wall on {args.jobs} worker(s)"
    )
    if args.json:
        args.json.write_text(json.dumps({"wall_seconds": wall, "cells": summaries}, indent=1))
    if args.plot:
        write_plot(summaries, args.plot)


if __name__ == "__main__":
    main()
