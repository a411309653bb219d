"""Forged-event flood against the webhook receiver: what a hostile sender costs the genuine PBX.

The receiver runs as its own process (`dialer webhooks serve`, SQLite WAL, a seeded campaign), as in production.
A flood of ``--forged`` unsigned or wrongly signed posts with mixed event names (a fifth of them padded to ~60 KB)
is sent as fast as ``--flood-connections`` connections allow (each waits for its answer, and the receiver holds
the answers to a source over its failure budget), from the same address as the genuine events; during
it, genuine signed call events go at ``--rate`` events/s (open loop, latency from the scheduled send time). After
the flood: how many forged rows were stored (must be 0), whether ``/healthz`` counted only genuine events, and the
latency percentiles of the genuine ones (goal: p99 < 50 ms).

Run: .venv/bin/python benchmarks/bench_webhook_flood.py [--forged 10000] [--rate 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_webhooks import SECRET, encode, event_stream, pct, seed  # noqa: E402

from dialer.asgi_thread import free_port  # noqa: E402
from dialer.zadarma.signing import webhook_signature  # noqa: E402


def forged_requests(port: int, count: int, phones: list[str], seed_: int) -> list[bytes]:
    rng = random.Random(seed_)
    names = ["NOTIFY_ANYTHING", "NOTIFY_OUT_START", "NOTIFY_END", "NOTIFY_START", "NOTIFY_RECORD"]
    out = []
    for i in range(count):
        name = rng.choice(names) if rng.random() < 0.6 else f"NOTIFY_X{rng.randrange(10**6)}"
        fields = {
            "event": name,
            "pbx_call_id": f"forged_{i}",
            "caller_id": rng.choice(phones).lstrip("+"),
            "called_did": "442037691880",
            "destination": rng.choice(phones).lstrip("+"),
            "call_start": "2026-01-01 00:00:00",
        }
        if rng.random() < 0.2:
            fields["pad"] = "x" * 60_000
        headers = {"Signature": "Zm9yZ2VkZm9yZ2VkZm9yZ2Vk"} if rng.random() < 0.5 else {}
        out.append(encode(port, fields, headers))
    return out


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> int:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    if b"connection: close" in head.lower():
        raise ConnectionResetError
    return status


async def flood(port: int, requests: list[bytes], connections: int) -> dict[int, int]:
    """Send every forged request as fast as possible (closed loop), reconnecting when the server hangs up."""
    todo = list(reversed(requests))
    statuses: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while todo:
            payload = todo.pop()
            try:
                status = await _exchange(reader, writer, payload)
            except (ConnectionError, asyncio.IncompleteReadError):
                status = -1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


async def genuine(port: int, requests: list[bytes], rate: float, stop: asyncio.Event) -> tuple[list[float], int]:
    """Open-loop signed events at ``rate``/s until ``stop`` (or they run out); latency from the scheduled time."""
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[tuple[bytes, float] | None] = asyncio.Queue()

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (item := await queue.get()) is not None:
            payload, due = item
            status = await _exchange(reader, writer, payload)
            latencies.append(time.perf_counter() - due)
            errors += status != 200
        writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    start = time.perf_counter()
    for i, payload in enumerate(requests):
        if stop.is_set():
            break
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((payload, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, errors


def _flood_process(port: int, forged: list[bytes], conns: int, out: Any) -> None:
    t0 = time.perf_counter()
    statuses = asyncio.run(flood(port, forged, conns))
    out.put((statuses, time.perf_counter() - t0))


async def scenario(
    port: int, forged: list[bytes], real: list[bytes], rate: float, conns: int, min_s: float = 4.0
) -> tuple:
    """The flood comes from its own process (as an attacker's would), so its sending does not delay ours."""
    stop = asyncio.Event()
    real_task = asyncio.create_task(genuine(port, real, rate, stop))
    await asyncio.sleep(0.5)  # genuine traffic first, then the flood arrives on top of it
    t0 = time.perf_counter()
    results: Any = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_flood_process, args=(port, forged, conns, results))
    proc.start()
    while proc.is_alive() or results.empty():
        await asyncio.sleep(0.05)
        if not proc.is_alive() and results.empty():
            raise RuntimeError("the flood process died")
    statuses, flood_s = results.get()
    proc.join()
    await asyncio.sleep(max(0.0, min_s - (time.perf_counter() - t0)))  # --forged 0: the baseline
    stop.set()
    latencies, errors = await real_task
    return statuses, flood_s, latencies, errors


def run_once(forged_n: int, rate: float, conns: int, run: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'flood.db'}"
        phones = seed(url, 2000)
        port = free_port()
        (Path(tmp) / "empty.toml").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZADARMA_", "DIALER_"))}
        env.update({"ZADARMA_SECRET": SECRET, "DIALER_DATABASE_URL": url, "DIALER_CONFIG": str(Path(tmp) / "empty.toml")})
        server = subprocess.Popen(
            [sys.executable, "-m", "dialer", "webhooks", "serve", "--port", str(port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(base + "/zadarma", params={"zd_echo": "x"}, timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("webhook server did not start") from None
                    time.sleep(0.1)
            real = []
            for fields in event_stream(phones, concurrent=40, seed=run):
                real.append(encode(port, fields, {"Signature": webhook_signature(fields, SECRET) or ""}))
            forged = forged_requests(port, forged_n, phones, run)
            statuses, flood_s, latencies, errors = asyncio.run(scenario(port, forged, real, rate, conns))
            health = httpx.get(base + "/healthz", timeout=10).json()
            metrics = httpx.get(base + "/metrics", timeout=10).text
        finally:
            server.terminate()
            server.wait(timeout=30)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            forged_rows = conn.execute(
                sa.text("SELECT count(*) FROM webhook_event WHERE pbx_call_id LIKE 'forged%' OR signature_ok = 0")
            ).scalar_one()
            rows = conn.execute(sa.text("SELECT count(*) FROM webhook_event")).scalar_one()
        engine.dispose()
        series = sum(1 for line in metrics.splitlines() if line.startswith("dialer_webhook_events_total{"))
        return {
            "forged_sent": float(sum(statuses.values())),
            "forged_403": float(statuses.get(403, 0)),
            "forged_429": float(statuses.get(429, 0)),
            "forged_other": float(sum(v for k, v in statuses.items() if k not in (403, 429))),
            "flood_s": flood_s,
            "forged_rows": float(forged_rows),
            "rows": float(rows),
            "genuine_sent": float(len(latencies)),
            "genuine_errors": float(errors),
            "healthz_events": float(health["events"]),
            "event_series": float(series),
            "p50_ms": pct(latencies, 0.50) * 1000,
            "p99_ms": pct(latencies, 0.99) * 1000,
            "max_ms": max(latencies) * 1000,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forged", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=50.0, help="genuine events per second during the flood")
    parser.add_argument("--flood-connections", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}")
    results = []
    for run in range(args.runs):
        r = run_once(args.forged, args.rate, args.flood_connections, run)
        results.append(r)
        print(f"run {run + 1}: " + ", ".join(f"{k}={v:.1f}" for k, v in r.items()), flush=True)
    ok = all(r["forged_rows"] == 0 and r["healthz_events"] == r["rows"] for r in results)
    print(
        f"median of {args.runs}: p99={statistics.median(r['p99_ms'] for r in results):.1f} ms, "
        f"p50={statistics.median(r['p50_ms'] for r in results):.1f} ms, "
        f"flood={statistics.median(r['flood_s'] for r in results):.1f} s for {args.forged} forged posts, "
        f"forged rows stored={max(r['forged_rows'] for r in results):.0f}, "
        f"liveness counted only genuine events: {ok}"
    )


if __name__ == "__main__":
    main()
