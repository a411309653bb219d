"""Benchmark: how long `dialer` takes to answer, as a person at a shell sees it.

Goal (issue 13): `dialer --version` and `dialer --help` under 0.5 s. Each command runs as its own process (the
installed `dialer` script, so interpreter start-up and imports are included), 10 times; the figure is the median
wall time (and the median CPU time of the process, user + system, which other load on the machine hardly
changes). `dialer campaign show spring` reads a small SQLite database that this script makes first in a temporary
directory (campaigns/example.csv loaded with `dialer campaign load`), so it also times opening a database.

    .venv/bin/python benchmarks/bench_cli_start.py [--runs 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 0.5
COMMANDS: list[tuple[str, list[str], float | None]] = [
    ("dialer --version", ["--version"], GOAL_S),
    ("dialer --help", ["--help"], GOAL_S),
    ("dialer campaign show spring", ["campaign", "show", "spring"], None),
]


def dialer_executable() -> str:
    beside = Path(sys.executable).parent / "dialer"
    found = str(beside) if beside.exists() else shutil.which("dialer")
    if found is None:
        sys.exit("no `dialer` script found: install the project (pip install -e .)")
    return found


def clean_env(workdir: Path) -> dict[str, str]:
    """This machine's environment without the operator's dialer and Zadarma settings, on a fresh database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALER_", "ZADARMA_"))}
    env["DIALER_DATABASE_URL"] = f"sqlite:///{workdir / 'bench.db'}"
    env["COLUMNS"] = "100"  # the same help layout whatever terminal runs this
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(argv: list[str], env: dict[str, str], cwd: Path, runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each run."""
    walls, cpus = [], []
    for _ in range(runs):
        cpu = _children_cpu()
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        cpus.append(_children_cpu() - cpu)
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return walls, cpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="Runs of each command (default 10).")
    ap.add_argument("--json", type=Path, metavar="OUT", help="Also write the figures to this JSON file.")
    args = ap.parse_args()

    dialer = dialer_executable()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        workdir = Path(tmp)  # also the working directory: no ./dialer.toml is read
        env = clean_env(workdir)
        load = [dialer, "campaign", "load", str(ROOT / "campaigns" / "example.csv"), "--campaign", "spring",
                "--from", "442037691880", "--region", "GB", "--rejects", str(workdir / "rejects.csv")]  # fmt: skip
        subprocess.run(load, env=env, cwd=workdir, capture_output=True, check=True)
        for label, argv, goal in COMMANDS:
            walls, cpus = time_command([dialer, *argv], env, workdir, args.runs)
            results.append(
                {
                    "command": label,
                    "runs": args.runs,
                    "median_s": round(statistics.median(walls), 3),
                    "min_s": round(min(walls), 3),
                    "max_s": round(max(walls), 3),
                    "median_cpu_s": round(statistics.median(cpus), 3),
                    "goal_s": goal,
                }
            )

    print(f"{args.runs} runs each, load average {os.getloadavg()[0]:.2f}")
    print("| command | median wall s | min s | max s | median CPU s | goal |")
    print("|---|---|---|---|---|---|")
    for r in results:
        goal = f"< {r['goal_s']}" if r["goal_s"] else ""
        print(f"| `{r['command']}` | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | "
              f"{r['median_cpu_s']:.3f} | {goal} |")  # fmt: skip
    met = all(r["median_s"] < r["goal_s"] for r in results if r["goal_s"])
    print("\nPASS" if met else "\nFAIL")
    if args.json is not None:
        args.json.write_text(json.dumps({"results": results, "goal_met": met}, indent=2) + "\n")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
