"""Benchmark: load a generated 1,000,000-row CSV into a fresh SQLite database.

Goal (issue 4): at most 30 s wall time and 1.5 GB peak memory. Each run loads in a fresh subprocess
(`dialer campaign load ... --json`) so its peak RSS is the child's own (getrusage RUSAGE_CHILDREN).

    .venv/bin/python benchmarks/bench_loader.py [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRST = ["Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Noah", "Mia", "Jack", "Ivy"]
LAST = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Wright"]


def generate(path: Path, rows: int, seed: int = 1) -> None:
    """A CRM-like export: UK mobiles and London numbers in mixed formats, some US/DE, names, two extra
    columns, ~1% invalid and ~1% duplicates."""
    rng = random.Random(seed)
    fmts = [
        lambda n: f"+44 {n[:4]} {n[4:7]} {n[7:]}",
        lambda n: f"0{n[:4]} {n[4:]}",
        lambda n: f"44{n}",
        lambda n: f"+44{n}",
        lambda n: f"0044 {n}",
        lambda n: f"0{n[:4]}-{n[4:7]}-{n[7:]}",
    ]
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("phone,name,email,account\n")
        for i in range(rows):
            r = rng.random()
            if r < 0.80:
                n = f"7{rng.choice('45789')}{rng.randrange(10**8):08d}"
                phone = fmts[i % len(fmts)](n)
            elif r < 0.93:
                n = f"20{rng.choice('378')}{rng.randrange(10**7):07d}"
                phone = fmts[i % len(fmts)](n)
            elif r < 0.96:
                phone = f"+1 212 {rng.randrange(200, 1000)} {rng.randrange(10**4):04d}"
            elif r < 0.98:
                phone = f"+49 30 {rng.randrange(10**8):08d}"
            elif r < 0.99:
                phone = f"{rng.randrange(10**5)}"  # invalid
            else:
                phone = f"+44 7911 123{rng.randrange(1000):03d}"  # many repeats: duplicates
            name = f"{FIRST[i % 10]} {LAST[(i // 10) % 10]}"
            f.write(f"{phone},{name},user{i}@example.com,ACC-{i}\n")


def run_once(csv_path: Path, workdir: Path, run: int) -> dict[str, float]:
    db = workdir / f"bench{run}.db"
    env = {**os.environ, "DIALER_DATABASE_URL": f"sqlite:///{db}"}
    cmd = [sys.executable, "-m", "dialer", "campaign", "load", str(csv_path), "--campaign", f"bench{run}",
           "--from", "100", "--region", "GB", "--rejects", str(workdir / f"rejects{run}.csv"), "--json"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kib = after.ru_maxrss
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"load failed ({proc.returncode}): {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    assert out["loaded"] + out["rejected"] == out["rows_read"], out
    # RUSAGE_CHILDREN reports the largest child so far; runs use equal inputs, so this is this run's peak.
    return {"wall_s": wall, "cpu_s": cpu, "load1": os.getloadavg()[0], "peak_mib": peak_kib / 1024, "loaded": out["loaded"],
            "rejected": out["rejected"], "rows": out["rows_read"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv_path = work / "contacts.csv"
        t0 = time.perf_counter()
        generate(csv_path, args.rows)
        gen_s = time.perf_counter() - t0
        size_mb = csv_path.stat().st_size / 1e6
        results = [run_once(csv_path, work, i) for i in range(args.runs)]
    walls = [r["wall_s"] for r in results]
    peaks = [r["peak_mib"] for r in results]
    print(
        f"Generated {args.rows:,} rows ({size_mb:.1f} MB) in {gen_s:.1f} s; {args.runs} runs, fresh SQLite each.\n"
    )
    print("| metric | median | min | max | goal |")
    print("|---|---|---|---|---|")
    print(f"| wall time (s) | {statistics.median(walls):.1f} | {min(walls):.1f} | {max(walls):.1f} | <= 30 |")
    cpus = [r["cpu_s"] for r in results]
    print(f"| CPU time, user+sys (s) | {statistics.median(cpus):.1f} | {min(cpus):.1f} | {max(cpus):.1f} | |")
    print(
        f"| peak RSS (MiB) | {statistics.median(peaks):.0f} | {min(peaks):.0f} | {max(peaks):.0f} | <= 1536 |"
    )
    r = results[0]
    loads = ", ".join(f"{x['load1']:.1f}" for x in results)
    print(
        f"\n1-minute load average after each run: {loads} (on {os.cpu_count()} cores; other work slows wall time)"
    )
    print(f"rows read {r['rows']:,} = loaded {r['loaded']:,} + rejected {r['rejected']:,}")
    ok = statistics.median(walls) <= 30 and max(peaks) <= 1536
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
