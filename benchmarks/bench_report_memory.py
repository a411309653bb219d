"""Peak memory of `dialer report NAME --xlsx --csv --sqlite` on a large campaign with many custom columns.

Generates a finished campaign of ``--contacts`` contacts, each with ``--fields`` custom fields and one completed
attempt, in a SQLite file (in chunks, so the generator stays small), then runs the real command as a subprocess
and reads its peak resident memory (``ru_maxrss`` of the child). Goal (issue 18): <= 1 GB at 1,000,000 contacts x
20 custom columns.

Run: .venv/bin/python benchmarks/bench_report_memory.py [--contacts 1000000] [--fields 20] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dialer.db import open_database  # noqa: E402
from dialer.reporting.reports import table  # noqa: E402

CAMPAIGN = "wide"
CHUNK = 20_000


def generate(url: str, contacts: int, fields: int) -> None:
    engine = open_database(url)
    now = datetime.now(UTC)
    start = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
    with engine.begin() as conn:
        cid = conn.execute(
            table("campaign").insert().values(
                name=CAMPAIGN, from_number="100", agents=20, agent_extensions=[], weekdays=[0, 1, 2, 3, 4],
                holidays=[], timezone="Europe/London", state="finished", created_at=now, updated_at=now,
                pacing="predictive", abandon_target=0.03, abandon_window="30d", max_attempts=3,
                retry_busy_s=1800, retry_no_answer_s=3600, retry_failed_s=900, retry_abandoned_s=259200,
                window_start="09:00", window_end="20:00", abandon_action="hangup",
            )
        ).inserted_primary_key[0]  # fmt: skip
    for lo in range(0, contacts, CHUNK):
        hi = min(contacts, lo + CHUNK)
        with engine.begin() as conn:
            first = conn.execute(
                table("contact").insert().returning(table("contact").c.id),
                [
                    {
                        "campaign_id": cid, "phone": f"+4420{i:08d}", "name": f"Customer {i}",
                        "fields": {f"field_{j:02d}": f"value {i} {j} some text" for j in range(fields)},
                        "timezones": ["Europe/London"], "state": "done" if i % 3 == 0 else "exhausted",
                        "priority": 0, "attempts": 1, "last_disposition": "answered" if i % 3 == 0 else "no answer",
                        "source_line": i + 2, "created_at": now, "updated_at": now,
                    }
                    for i in range(lo, hi)
                ],
            ).scalars().all()  # fmt: skip
            conn.execute(
                table("attempt").insert(),
                [
                    {
                        "campaign_id": cid, "contact_id": contact_id, "phone": f"+4420{i:08d}",
                        "state": "completed", "created_at": at, "sent_at": at, "placed_at": at,
                        "finished_at": at + timedelta(seconds=30),
                        "disposition": "answered" if i % 3 == 0 else "no answer", "answered": i % 3 == 0,
                        "connected": i % 3 == 0, "abandoned": False, "agent": "100" if i % 3 == 0 else None,
                        "ring_seconds": 8.0, "talk_seconds": 60.0 if i % 3 == 0 else None, "cost": 0.04,
                        "pbx_call_id": f"out_{i:08d}", "live": False, "updated_at": now,
                    }
                    for i, contact_id, at in (
                        (i, cid_, start + timedelta(seconds=i % (7 * 86400))) for i, cid_ in zip(range(lo, hi), first, strict=True)
                    )
                ],
            )  # fmt: skip
    engine.dispose()


def run_report(url: str, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one `dialer report --xlsx --csv --sqlite` subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZADARMA_", "DIALER_"))}
    env.update({"DIALER_DATABASE_URL": url, "DIALER_CONFIG": os.devnull})
    args = [sys.executable, "-m", "dialer", "report", CAMPAIGN, "--xlsx", str(out / "r.xlsx"),
            "--csv", str(out / "csv"), "--sqlite", str(out / "r.sqlite")]  # fmt: skip
    t0 = time.perf_counter()
    # A fresh wrapper process per run, so ru_maxrss of its children is this run's alone.
    code = (
        "import resource, subprocess, sys; "
        f"r = subprocess.run({args!r}, capture_output=True, text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.stderr.write(r.stderr[-2000:]); sys.exit(r.returncode)"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"dialer report failed ({res.returncode}): {res.stderr}")
    return int(res.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        url = f"sqlite:///{Path(tmp) / 'wide.db'}"
        t0 = time.perf_counter()
        generate(url, args.contacts, args.fields)
        gen_s = time.perf_counter() - t0
        db_mb = (Path(tmp) / "wide.db").stat().st_size / 1e6
        results = []
        for run in range(args.runs):
            out = Path(tmp) / f"out{run}"
            out.mkdir()
            results.append(run_report(url, out))
            print(f"run {run + 1}: peak RSS {results[-1][0]:.0f} MB, {results[-1][1]:.0f} s wall", flush=True)
    peak = statistics.median(r[0] for r in results)
    print(
        f"{args.contacts:,} contacts x {args.fields} custom columns (database {db_mb:.0f} MB, generated in "
        f"{gen_s:.0f} s): `dialer report --xlsx --csv --sqlite` peak RSS {peak:.0f} MB (median of {args.runs}), "
        f"{statistics.median(r[1] for r in results):.0f} s wall; goal <= 1024 MB: "
        f"{'met' if peak <= 1024 else 'NOT met'}; {platform.machine()} {os.cpu_count()} cpu, "
        f"Python {platform.python_version()}, self {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
