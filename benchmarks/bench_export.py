"""Export a generated 100,000-contact campaign (~150,000 attempts): build_report, XLSX, CSV, SQLite.

Goal (issue 8): the XLSX export in under 20 s. Prints a markdown table of the median of ``--runs`` runs.

    .venv/bin/python benchmarks/bench_export.py [--contacts 100000] [--attempts 150000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dialer.db import open_database
from dialer.reporting.csv_export import export_csv
from dialer.reporting.figures import agent_seconds_key
from dialer.reporting.reports import build_report, table
from dialer.reporting.sqlite_export import export_sqlite
from dialer.reporting.xlsx_export import export_xlsx

CAMPAIGN = "bench"
START = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
CITIES = ["London", "Leeds", "Bristol", "Glasgow", "Cardiff", "Belfast", "York", "Bath"]


def generate(url: str, contacts: int, attempts: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    engine = open_database(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        cid = conn.execute(
            table("campaign")
            .insert()
            .values(
                name=CAMPAIGN,
                from_number="100",
                agents=20,
                agent_extensions=[],
                weekdays=[0, 1, 2, 3, 4],
                holidays=[],
                timezone="Europe/London",
                state="finished",
                created_at=now,
                updated_at=now,
                pacing="predictive",
                abandon_target=0.03,
                abandon_window="30d",
                max_attempts=3,
                retry_busy_s=1800,
                retry_no_answer_s=3600,
                retry_failed_s=900,
                retry_abandoned_s=259200,
                window_start="09:00",
                window_end="20:00",
                abandon_action="hangup",
            )
        ).inserted_primary_key[0]

        # Every contact gets one attempt; the first (attempts - contacts) get a second one.
        second = max(0, min(contacts, attempts - contacts))
        owner = np.concatenate([np.arange(contacts), np.arange(second)])
        n = len(owner)
        outcome = rng.random(n)
        answered = outcome < 0.3
        abandoned = answered & (rng.random(n) < 0.03)
        connected = answered & ~abandoned
        talk = np.where(connected, rng.exponential(180, n).round(), np.nan)
        offsets = rng.uniform(0, 7 * 86400, n)
        disposition = np.where(answered, "answered", np.where(outcome < 0.45, "busy", "no answer"))
        reached = np.zeros(contacts, dtype=bool)
        np.logical_or.at(reached, owner, connected)
        tries = np.bincount(owner, minlength=contacts)

        conn.execute(
            table("contact").insert(),
            [
                {
                    "campaign_id": cid,
                    "phone": f"+4420{7000000 + i:07d}",
                    "name": f"Customer {i}",
                    "fields": {
                        "account": f"A{i:06d}",
                        "city": CITIES[i % len(CITIES)],
                        "segment": "retail",
                        "balance": f"{(i * 37) % 10000 / 100:.2f}",
                    },
                    "timezones": ["Europe/London"],
                    "state": "done" if reached[i] else ("exhausted" if tries[i] >= 2 else "retry"),
                    "priority": 0,
                    "attempts": int(tries[i]),
                    "last_disposition": "answered" if reached[i] else "no answer",
                    "source_line": i + 2,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(contacts)
            ],
        )
        first_id = conn.execute(sa.select(sa.func.min(table("contact").c.id))).scalar_one()
        rows = []
        for k in range(n):
            at = START + timedelta(seconds=float(offsets[k]))
            rows.append(
                {
                    "campaign_id": cid,
                    "contact_id": first_id + int(owner[k]),
                    "phone": f"+4420{7000000 + int(owner[k]):07d}",
                    "state": "completed",
                    "created_at": at,
                    "sent_at": at,
                    "placed_at": at,
                    "finished_at": at + timedelta(seconds=30),
                    "disposition": str(disposition[k]),
                    "answered": bool(answered[k]),
                    "connected": bool(connected[k]),
                    "abandoned": bool(abandoned[k]),
                    "agent": str(100 + k % 20) if connected[k] else None,
                    "ring_seconds": 8.0,
                    "talk_seconds": None if np.isnan(talk[k]) else float(talk[k]),
                    "cost": 0.04 if answered[k] else 0.0,
                    "pbx_call_id": f"out_{k:08d}",
                    "live": False,
                    "updated_at": now,
                }
            )
        conn.execute(table("attempt").insert(), rows)
        conn.execute(
            table("key_value")
            .insert()
            .values(key=agent_seconds_key(cid), value=20 * 7 * 8 * 3600.0, updated_at=now)
        )
    engine.dispose()


def timed(fn: Callable[[], object], runs: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds of this process) of each run."""
    out = []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        out.append((time.perf_counter() - w0, time.process_time() - c0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--attempts", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only-xlsx", action="store_true", help="Skip the CSV and SQLite timings.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        t0 = time.perf_counter()
        generate(url, args.contacts, args.attempts)
        gen_s = time.perf_counter() - t0
        engine = open_database(url)
        report = build_report(engine, CAMPAIGN)
        out = Path(tmp) / "out"
        results: list[tuple[str, list[tuple[float, float]], str]] = [
            ("build_report", timed(lambda: build_report(engine, CAMPAIGN), args.runs), ""),
            ("export_xlsx", timed(lambda: export_xlsx(engine, report, out / "r.xlsx"), args.runs), "< 20 s"),
        ]
        xlsx_mb = (out / "r.xlsx").stat().st_size / 1e6
        if not args.only_xlsx:
            results.append(
                ("export_csv", timed(lambda: export_csv(engine, report, out / "csv"), args.runs), "")
            )
            results.append(
                (
                    "export_sqlite",
                    timed(lambda: export_sqlite(engine, report, out / "r.sqlite"), args.runs),
                    "",
                )
            )
        engine.dispose()

    print(
        f"Export benchmark: {report.contacts_total:,} contacts, {report.attempts_total:,} attempts "
        f"({report.answered:,} answered, {len(report.hourly)} hourly rows); generated in {gen_s:.1f} s; "
        f"XLSX {xlsx_mb:.1f} MB; {platform.machine()}, Python {platform.python_version()}"
    )
    print()
    print("| step | median wall s | runs wall (s) | median CPU s | goal | result |")
    print("|---|---|---|---|---|---|")
    for name, runs, goal in results:
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        verdict = ("pass" if wall < 20 else "FAIL") if goal else ""
        walls = ", ".join(f"{r[0]:.2f}" for r in runs)
        print(f"| {name} | {wall:.2f} | {walls} | {cpu:.2f} | {goal} | {verdict} |")
    print()
    print(
        f"Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
