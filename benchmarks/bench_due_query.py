"""Benchmark: "next 50 due contacts of a campaign" with 1,000,000 contacts loaded.

Goal (issue 4): under 5 ms. The campaign's contacts are mixed like a campaign in mid-flight (70% pending, 20%
retry with next attempts spread over +-24 h, 10% finished, 1% high priority), a second campaign shares the table
and 20,000 numbers are on the do-not-call list. The attempt table holds 300,000 finished attempts and 1,000 live
calls of the second campaign, half of them to high-priority numbers of the first, which the query must skip (one
person, one live call). 20,000 of the campaign's contacts wait for a scheduled callback (issue 14), half of them due,
a tenth of those "only me" for agents not ready. Measures ``campaigns.next_due_contacts`` (ORM objects included) on a
warm connection, median of many runs, and the claim's first query, ``agents.callbacks.due_callbacks``.

    .venv/bin/python benchmarks/bench_due_query.py [--contacts 1000000] [--runs 500]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dialer import db
from dialer.agents.callbacks import due_callbacks
from dialer.ingest import campaigns
from dialer.models import utcnow

CALLBACKS = 20_000


def populate(engine: db.Engine, n: int, seed: int = 3) -> tuple[int, set[str]]:
    rng = random.Random(seed)
    with db.session_scope(engine) as s:
        cid = campaigns.create_campaign(s, "big", "100").id or 0
        other = campaigns.create_campaign(s, "other", "100").id or 0
    now = utcnow()
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    stamp = now.replace(tzinfo=None).strftime(fmt)
    sql = ("INSERT INTO contact (campaign_id, phone, name, fields, timezones, state, priority, next_attempt_at, "
           "attempts, source_line, created_at, updated_at) VALUES (?, ?, ?, '{}', '[\"Europe/London\"]', ?, ?, ?, ?, "
           "?, ?, ?)")  # fmt: skip
    rows = []
    for i in range(n):
        r = rng.random()
        if r < 0.7:
            state, nxt, att = "pending", None, 0
        elif r < 0.9:
            state, att = "retry", rng.randint(1, 2)
            nxt = (now + timedelta(seconds=rng.randint(-86400, 86400))).replace(tzinfo=None).strftime(fmt)
        else:
            state, nxt, att = rng.choice(["done", "exhausted", "invalid"]), None, 3
        prio = 5 if rng.random() < 0.01 else 0
        rows.append((cid, f"+4479{i:08d}", f"Contact {i}", state, prio, nxt, att, i + 2, stamp, stamp))
    rows += [
        (other, f"+4479{i:08d}", None, "pending", 0, None, 0, i + 2, stamp, stamp) for i in range(n // 10)
    ]
    dnc = [(f"+4479{rng.randrange(n):08d}", stamp) for _ in range(20_000)]
    with engine.begin() as conn:
        for k in range(0, len(rows), 100_000):
            conn.exec_driver_sql(sql, rows[k : k + 100_000])
        conn.exec_driver_sql(
            "INSERT OR IGNORE INTO dnc_entry (phone, campaign_id, created_at) VALUES (?, NULL, ?)", dnc
        )
        busy = _attempts(conn, rng, cid, other, [r[1] for r in rows[:n] if r[4] > 0], n, stamp)
        _callbacks(conn, rng, cid, now, min(CALLBACKS, n // 50))
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    return cid, busy


def _attempts(conn: Any, rng: random.Random, cid: int, other: int, urgent: list[str], n: int, stamp: str) -> set[str]:
    """Call history, and live calls of the other campaign to numbers the big one would pick first."""
    sql = ("INSERT INTO attempt (campaign_id, contact_id, phone, state, created_at, live, updated_at) "
           "SELECT campaign_id, id, phone, ?, ?, ?, ? FROM contact WHERE campaign_id = ? AND phone = ?")  # fmt: skip
    done = [("completed", stamp, 0, stamp, cid, f"+4479{rng.randrange(n):08d}") for _ in range(300_000)]
    shared = [p for p in urgent if int(p[5:]) < n // 10]
    busy = rng.sample(shared, min(500, len(shared)))
    busy += [f"+4479{i:08d}" for i in rng.sample(range(n // 10), 1000 - len(busy))]
    live = [(rng.choice(["placing", "placed", "uncertain"]), stamp, 1, stamp, other, p) for p in set(busy)]
    conn.exec_driver_sql(sql, done)
    conn.exec_driver_sql(sql, live)
    return set(busy)


def _callbacks(conn: Any, rng: random.Random, cid: int, now: datetime, count: int) -> None:
    """Pending contacts turned into contacts waiting for a callback: half due (within the last hour), half later."""
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    ids = [r[0] for r in conn.exec_driver_sql(
        "SELECT id FROM contact WHERE campaign_id = ? AND state = 'pending' LIMIT ?", (cid, count)).fetchall()]
    conn.exec_driver_sql("UPDATE contact SET state = 'callback' WHERE id IN (SELECT id FROM contact WHERE "
                         "campaign_id = ? AND state = 'pending' LIMIT ?)", (cid, count))
    stamp = now.replace(tzinfo=None).strftime(fmt)
    rows = []
    for i, contact_id in enumerate(ids):
        due = now + timedelta(seconds=rng.randint(-3600, 0) if i % 2 else rng.randint(60, 86400))
        t = due.replace(tzinfo=None).strftime(fmt)
        rows.append((cid, contact_id, t, t, None, "scheduled", stamp, stamp))
    conn.exec_driver_sql("INSERT INTO callback (campaign_id, contact_id, due_at, next_try_at, agent_id, state, "
                         "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--limit", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.open_database(f"sqlite:///{Path(tmp) / 'due.db'}")
        t0 = time.perf_counter()
        cid, busy = populate(engine, args.contacts)
        fill_s = time.perf_counter() - t0
        now = datetime.now(UTC)
        timings: list[float] = []
        with db.session_scope(engine) as s:
            first = campaigns.next_due_contacts(s, cid, now, args.limit)
            for _ in range(args.runs):
                t = time.perf_counter()
                got = campaigns.next_due_contacts(s, cid, now, args.limit)
                timings.append((time.perf_counter() - t) * 1000)
                s.expunge_all()
            callback_timings: list[float] = []
            for _ in range(args.runs):
                t = time.perf_counter()
                calls = due_callbacks(s, cid, now, args.limit, ())
                callback_timings.append((time.perf_counter() - t) * 1000)
                s.expunge_all()
        engine.dispose()
    assert len(calls) == args.limit
    assert len(first) == args.limit and len(got) == args.limit
    assert all(c.state in ("pending", "retry") for c in got)
    assert not {c.phone for c in first} & busy, "picked a number that is in a live call"
    assert all(a.priority >= b.priority for a, b in itertools.pairwise(got))
    timings.sort()
    med, p95 = statistics.median(timings), timings[int(0.95 * len(timings)) - 1]
    print(f"{args.contacts:,} contacts in the campaign (+{args.contacts // 10:,} in another), 20,000 DNC entries; "
          f"filled in {fill_s:.1f} s. {args.runs} runs of next_due_contacts(limit={args.limit}).\n")  # fmt: skip
    print("| metric | ms | goal |")
    print("|---|---|---|")
    print(f"| median | {med:.2f} | < 5 |")
    print(f"| p95 | {p95:.2f} | |")
    print(f"| min | {timings[0]:.2f} | |")
    cb_med = statistics.median(callback_timings)
    print(f"| due_callbacks median | {cb_med:.2f} | < 5 |")
    print("\nPASS" if med < 5 and cb_med < 5 else "\nFAIL")
    print(json.dumps({"median_ms": round(med, 3), "p95_ms": round(p95, 3), "callbacks_median_ms": round(cb_med, 3)}))


if __name__ == "__main__":
    main()
