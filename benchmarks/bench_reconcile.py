"""Matching statistics rows to attempts: 100,000 callbacks, their customer legs and the PBX legs of the answered.

    .venv/bin/python benchmarks/bench_reconcile.py [--attempts 100000] [--runs 3] [--database postgres]

Times storing the rows (deduplicated insert) and matching them (number + time, one-to-one, outcomes through the
contact state machine), without HTTP: the statistics budget, not the CPU, bounds fetching. Each run builds a fresh
database; the last line is the median of the runs. A second match must change nothing (checked row by row).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dialer.db import open_database, session_scope
from dialer.models import Attempt, Campaign, Contact, utcnow
from dialer.outcomes.reconcile import Reconciler
from tests.pg import bench_database

FMT = "%Y-%m-%d %H:%M:%S"


def _digest(db: sa.engine.Engine) -> str:
    h = hashlib.sha256()
    with db.connect() as conn:
        for table in ("attempt", "contact", "stat_row"):
            for row in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id"):
                h.update(repr(tuple(row)).encode())
    return h.hexdigest()


def run_once(n: int, database: str) -> tuple[int, float, float, float]:
    """(rows, store s, match s, re-run s) for ``n`` attempts in a fresh database."""
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp, bench_database(database, Path(tmp)) as url:
        db = open_database(url)
        with session_scope(db) as s:
            c = Campaign(name="bench", from_number="442037691880", state="running")
            s.add(c)
            s.flush()
            cid = c.id
        now = utcnow()
        start = now - timedelta(hours=20)
        contacts: list[dict[str, Any]] = []
        attempts: list[dict[str, Any]] = []
        out_rows: list[dict[str, Any]] = []
        in_rows: list[dict[str, Any]] = []
        for i in range(n):
            phone = f"+4420{7000000 + i:08d}"
            placed = start + timedelta(seconds=i * 0.7)
            contacts.append({"id": i + 1, "campaign_id": cid, "phone": phone, "state": "dialing", "attempts": 1,
                             "fields": {}, "timezones": [], "priority": 0, "created_at": now, "updated_at": now})
            attempts.append({"id": i + 1, "campaign_id": cid, "contact_id": i + 1, "phone": phone, "state": "placed",
                             "created_at": placed, "sent_at": placed, "placed_at": placed, "live": True,
                             "updated_at": now})
            answered = rng.random() < 0.3
            token = f"{i:012d}"
            out_rows.append({"call_id": f"{int(placed.timestamp())}.{i}1", "sip": "", "clid": "442037691880",
                             "callstart": placed.strftime(FMT), "destination": phone[1:],
                             "disposition": "answered" if answered else rng.choice(["busy", "no answer"]),
                             "seconds": 0, "is_recorded": "false", "pbx_call_id": "out_" + token})
            if answered:
                at = placed + timedelta(seconds=rng.uniform(4, 14))
                in_rows.append({"call_id": f"{int(at.timestamp())}.{i}2", "sip": "100", "clid": phone[1:],
                                "callstart": at.strftime(FMT), "destination": "100", "disposition": "answered",
                                "seconds": rng.randint(10, 400), "is_recorded": "false", "pbx_call_id": "in_" + token})
        with db.begin() as conn:
            conn.execute(sa.insert(Contact), contacts)
            conn.execute(sa.insert(Attempt), attempts)
        rec = Reconciler(db, None, account_offset=timedelta(0))
        rows = out_rows + in_rows
        t0 = time.perf_counter()
        new = rec.store_rows("pbx", rows)
        t1 = time.perf_counter()
        result = rec.match(datetime.now(UTC))
        t2 = time.perf_counter()
        before = _digest(db)
        t3 = time.perf_counter()
        again = rec.match(datetime.now(UTC))
        t4 = time.perf_counter()
        assert new == len(rows) and result.completed == n, (new, result.completed)
        assert again.completed == 0 and again.matched == 0 and _digest(db) == before, "the second match changed rows"
        db.dispose()
    return len(rows), t1 - t0, t2 - t1, t4 - t3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attempts", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite",
                    help="postgres: a throwaway database on the server at 127.0.0.1:5432")
    args = ap.parse_args()
    n = args.attempts
    print("| run | attempts | statistics rows | store | match | store + match | second match |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for k in range(args.runs):
        rows, store, match, rerun = run_once(n, args.database)
        results.append((store, match, store + match, rerun))
        print(f"| {k + 1} | {n:,} | {rows:,} | {store:.1f} s | {match:.1f} s | {store + match:.1f} s | {rerun:.1f} s |")
    med = [statistics.median(r[i] for r in results) for i in range(4)]
    print(f"| median | {n:,} | {rows:,} | {med[0]:.1f} s | {med[1]:.1f} s | {med[2]:.1f} s | {med[3]:.1f} s |")


if __name__ == "__main__":
    main()
