"""How long one pacing tick takes with 1,000,000 contacts in the campaign.

A tick = observe (database counts and live attempts) + the policy + claim (the due-contacts query, the
calling-window check, writing the attempts) + placing the callbacks over HTTP to an in-process simulator.
Between ticks the benchmark ends the attempts it placed (outside the timing) so every tick has work.

    .venv/bin/python benchmarks/bench_tick.py [--contacts 1000000] [--ticks 200] [--database postgres]

``--database postgres`` runs it in a throwaway database on the PostgreSQL server at 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlmodel import col, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dialer.asgi_thread import free_port
from dialer.db import open_database, session_scope
from dialer.dialing.engine import Engine
from dialer.models import Attempt, Campaign, Contact, utcnow
from dialer.outcomes.transitions import CallOutcome, complete_attempt
from dialer.sim.credentials import DEMO_KEY, DEMO_SECRET
from dialer.zadarma import ZadarmaClient
from tests.pg import bench_database


def build(url: str, n: int) -> int:
    engine = open_database(url)
    with session_scope(engine) as s:
        c = Campaign(name="bench", from_number="442037691880", agents=10, pacing="ratio:1.5",
                     window_start="00:00", window_end="23:59", weekdays=list(range(7)), timezone="UTC",
                     state="running")
        s.add(c)
        s.flush()
        cid = c.id
    assert cid is not None
    now = utcnow()
    t0 = time.perf_counter()
    with engine.begin() as conn:
        chunk = 50_000
        for base in range(0, n, chunk):
            rows = [
                {"campaign_id": cid, "phone": f"+4420{7000000 + i:08d}", "name": f"C {i}", "fields": {},
                 "timezones": ["Europe/London"], "state": "pending", "priority": 0, "attempts": 0,
                 "source_line": i + 2, "created_at": now, "updated_at": now}
                for i in range(base, min(n, base + chunk))
            ]
            conn.execute(sa.insert(Contact), rows)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:  # as `dialer campaign load` does after a big load
            conn.exec_driver_sql("ANALYZE contact")
            conn.commit()
    print(f"inserted {n:,} contacts in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return cid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=1_000_000)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3, help="tick series over the same database; medians reported")
    ap.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_database(args.database, Path(tmp)) as url:
        cid = build(url, args.contacts)
        db = open_database(url)
        world = Path(tmp) / "world.toml"
        world.write_text("seed = 1\n[agents]\ncount = 10\n[limits]\ngeneral_per_window = 1000000\n")
        port = free_port()
        sim = subprocess.Popen([sys.executable, "-m", "dialer", "sim", "serve", "--port", str(port),
                                "--scenario", str(world), "--time-scale", "50"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    httpx.get(url + "/_sim/stats", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            client = ZadarmaClient(DEMO_KEY, DEMO_SECRET, url)
            engine = Engine(db, client)
            busy: list[float] = []
            idle: list[float] = []
            series: list[float] = []
            for i in range(args.ticks * args.runs):
                if i and i % args.ticks == 0:
                    series.append(statistics.median(busy[-args.ticks:] or [0.0]))
                t0 = time.perf_counter()
                result = engine.tick(cid)
                dt = (time.perf_counter() - t0) * 1000
                (busy if result.placed else idle).append(dt)
                # End two calls, as a busy steady state does every second (not timed).
                with session_scope(db) as s:
                    live = s.exec(select(Attempt).where(col(Attempt.state) == "placed").limit(2)).all()
                    for a in live:
                        complete_attempt(s, a, CallOutcome("busy", False, False, False),
                                         now=utcnow() + timedelta(seconds=1))
            client.close()
        finally:
            sim.terminate()
            sim.wait(10)
            db.dispose()
    series.append(statistics.median(busy[-args.ticks:] or [0.0]))
    print(f"median tick (placing calls) per run: {', '.join(f'{x:.1f} ms' for x in series)}; "
          f"median of runs {statistics.median(series):.1f} ms ({args.database})")
    for label, xs in (("ticks that placed calls", busy), ("ticks that placed none", idle), ("all ticks", busy + idle)):
        if xs:
            xs.sort()
            print(f"| {label} | {len(xs)} | {statistics.median(xs):.1f} ms | {xs[int(0.95 * (len(xs) - 1))]:.1f} ms |")


if __name__ == "__main__":
    main()
