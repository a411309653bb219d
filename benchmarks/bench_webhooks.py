"""Webhook receiver throughput and latency: an open-loop load of signed NOTIFY_* events at a fixed rate.

The receiver runs as its own process (`dialer webhooks serve`, SQLite WAL database with a seeded campaign), as in
production; this script is the PBX: it sends realistic call sequences (OUT_START, START, INTERNAL, ANSWER, END,
OUT_END for answered calls; OUT_START, OUT_END for the rest), each event signed, at ``--rate`` events/s for
``--duration`` seconds. Latency is measured from each event's *scheduled* send time to its response, so a server
that falls behind is charged for the queue (no coordinated omission).

Run: .venv/bin/python benchmarks/bench_webhooks.py [--rate 500] [--duration 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dialer.asgi_thread import free_port  # noqa: E402
from dialer.db import open_database, session_scope  # noqa: E402
from dialer.models import Attempt, Campaign, Contact  # noqa: E402
from dialer.zadarma.signing import webhook_signature  # noqa: E402

SECRET = "s0s1s2s3s4s5s6s7s8s9"
PBX = "442037691880"
AGENTS = [str(100 + i) for i in range(100)]


def seed(url: str, calls: int) -> list[str]:
    engine = open_database(url)
    phones = [f"+4420{7000000 + i:07d}" for i in range(calls)]
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        camp = Campaign(
            name="bench", from_number=PBX, agents=len(AGENTS), agent_extensions=AGENTS, state="running"
        )
        s.add(camp)
        s.flush()
        assert camp.id is not None
        for phone in phones:
            contact = Contact(campaign_id=camp.id, phone=phone, name="Bench", state="dialing", attempts=1)
            s.add(contact)
            s.flush()
            assert contact.id is not None
            s.add(
                Attempt(campaign_id=camp.id, contact_id=contact.id, phone=phone, state="placed", sent_at=now)
            )
    engine.dispose()
    return phones


def call_events(phone: str, token: str, rng: random.Random) -> list[dict[str, str]]:
    d = phone.lstrip("+")
    cs = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    out = {"call_start": cs, "pbx_call_id": f"out_{token}", "destination": d, "internal": PBX}
    if rng.random() < 0.7:
        disp = rng.choice(["no answer", "busy", "failed"])
        return [
            {"event": "NOTIFY_OUT_START", **out},
            {
                "event": "NOTIFY_OUT_END",
                **out,
                "caller_id": PBX,
                "duration": "0",
                "disposition": disp,
                "status_code": "19",
                "is_recorded": "0",
                "call_id_with_rec": "",
            },
        ]
    ext = rng.choice(AGENTS)
    pbx = {"call_start": cs, "pbx_call_id": f"in_{token}", "caller_id": d, "called_did": PBX}
    return [
        {"event": "NOTIFY_OUT_START", **out},
        {"event": "NOTIFY_START", **pbx},
        {"event": "NOTIFY_INTERNAL", **pbx, "internal": ext},
        {
            "event": "NOTIFY_ANSWER",
            "caller_id": d,
            "destination": ext,
            "call_start": cs,
            "pbx_call_id": f"in_{token}",
            "internal": ext,
        },
        {
            "event": "NOTIFY_END",
            **pbx,
            "internal": ext,
            "duration": "42",
            "disposition": "answered",
            "last_internal": ext,
            "status_code": "16",
            "is_recorded": "0",
            "call_id_with_rec": "",
        },
        {
            "event": "NOTIFY_OUT_END",
            **out,
            "caller_id": PBX,
            "duration": "45",
            "disposition": "answered",
            "status_code": "16",
            "is_recorded": "0",
            "call_id_with_rec": "",
        },
    ]


def event_stream(phones: list[str], concurrent: int, seed: int) -> Iterator[dict[str, str]]:
    """Round-robin over ``concurrent`` calls in progress, so one call's events are spaced ~concurrent slots apart."""
    rng = random.Random(seed)
    pending = iter(phones)
    active: list[list[dict[str, str]]] = []
    n = 0
    while True:
        while len(active) < concurrent:
            phone = next(pending, None)
            if phone is None:
                break
            n += 1
            active.append(call_events(phone, f"bench{seed}x{n}", rng))
        if not active:
            return
        for calls in list(active):
            yield calls.pop(0)
            if not calls:
                active.remove(calls)


def encode(port: int, fields: dict[str, str], headers: dict[str, str]) -> bytes:
    body = urlencode(fields).encode()
    head = (
        f"POST /zadarma HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    )
    return head.encode() + body


async def load(
    port: int, requests: list[bytes], rate: float, connections: int = 32
) -> tuple[list[float], int, float]:
    """Open-loop load over keep-alive HTTP/1.1 connections (a raw client: an HTTP library would be the
    bottleneck on 2 cores). Each request is released at its due time to the first free connection."""
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[tuple[bytes, float] | None] = asyncio.Queue()

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (item := await queue.get()) is not None:
                payload, due = item
                writer.write(payload)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - due)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.2)
    start = time.perf_counter()
    for i, payload in enumerate(requests):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((payload, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    return latencies, errors, elapsed


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc): the server's cost per event, whatever else runs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_once(rate: float, duration: float, run: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        url = f"sqlite:///{db}"
        total = int(rate * duration)
        phones = seed(url, total // 2 + 100)
        port = free_port()
        (Path(tmp) / "empty.toml").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZADARMA_", "DIALER_"))}
        env.update(
            {
                "ZADARMA_SECRET": SECRET,
                "DIALER_DATABASE_URL": url,
                "DIALER_CONFIG": str(Path(tmp) / "empty.toml"),
            }
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "dialer", "webhooks", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            hook = f"http://127.0.0.1:{port}/zadarma"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(hook, params={"zd_echo": "x"}, timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("webhook server did not start") from None
                    time.sleep(0.1)
            stream = event_stream(phones, concurrent=60, seed=run)
            events = []
            for fields in stream:
                events.append(encode(port, fields, {"Signature": webhook_signature(fields, SECRET) or ""}))
                if len(events) >= total + 200:
                    break
            warm, measured = events[:200], events[200:]
            asyncio.run(load(port, warm, rate / 5))
            cpu0 = process_cpu_s(server.pid)
            latencies, errors, elapsed = asyncio.run(load(port, measured, rate))
            server_cpu = process_cpu_s(server.pid) - cpu0
        finally:
            server.terminate()
            server.wait(15)
    return {
        "events": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50": pct(latencies, 0.50) * 1000,
        "p90": pct(latencies, 0.90) * 1000,
        "p99": pct(latencies, 0.99) * 1000,
        "max": max(latencies) * 1000,
        "errors": errors,
        "cpu_ms": server_cpu / max(1, len(latencies)) * 1000,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="events per second (default 500)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of measured load per run (default 10)"
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = [run_once(args.rate, args.duration, i + 1) for i in range(args.runs)]
    print(
        f"Webhook receiver, {args.rate:g} NOTIFY events/s for {args.duration:g} s per run "
        f"({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, SQLite WAL)\n"
    )
    print(
        "| run | events | achieved/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU ms/event | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(
            f"| {i} | {r['events']:.0f} | {r['rate']:.0f} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | "
            f"{r['max']:.1f} | {r['errors']:.0f} | {r['cpu_ms']:.2f} | {r['load']:.1f} |"
        )
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(
        f"| median | {med['events']:.0f} | {med['rate']:.0f} | {med['p50']:.1f} | {med['p90']:.1f} | "
        f"{med['p99']:.1f} | {med['max']:.1f} | {med['errors']:.0f} | {med['cpu_ms']:.2f} | {med['load']:.1f} |"
    )
    verdict = "PASS" if med["p99"] < 50 and med["errors"] == 0 and med["rate"] >= 0.95 * args.rate else "FAIL"
    print(f"\ngoal: {args.rate:g} events/s with p99 < 50 ms -> {verdict}")
    print(
        f"server capacity from its CPU cost: ~{1000 / med['cpu_ms']:.0f} events/s per free core "
        "(latency needs the server not to be starved of CPU: compare the load average with the core count)"
    )


if __name__ == "__main__":
    main()
