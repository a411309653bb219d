"""Throughput and latency of the HTTP simulator with webhooks on.

Starts `dialer sim serve` and a webhook receiver as separate processes (as in a real run), then sends an open-loop
mix of signed API requests at a fixed rate and reports latency percentiles per run and the median over runs.

    .venv/bin/python benchmarks/bench_sim_server.py [--rate 200] [--duration 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dialer.asgi_thread import free_port  # noqa: E402
from dialer.zadarma.signing import params_string, sign  # noqa: E402

KEY = "benchkey000000000000"
SECRET = "benchsecret000000000"
SCENARIO = """
name = "bench"
seed = 9
[agents]
count = 50
[calls]
answer_probability = 0.3
talk_time = { dist = "exponential", mean = 120 }
[limits]
general_per_window = 1000000
statistics_per_window = 1000000
[statistics]
lag_s = 5
[webhooks]
profile = "full"
"""


def receiver_main(port: int) -> None:
    """A minimal webhook endpoint: echoes zd_echo, answers NOTIFY_START with default routing."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    count = {"n": 0}

    async def hook(request: Request) -> Response:
        if request.method == "GET":
            return PlainTextResponse(request.query_params.get("zd_echo", ""))
        try:
            form = await request.form()
        except ClientDisconnect:  # the simulator gave up waiting for a NOTIFY_START answer
            return PlainTextResponse("")
        count["n"] += 1
        if form.get("event") == "NOTIFY_START":
            return JSONResponse({})
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/hook", hook, methods=["GET", "POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _request(i: int) -> tuple[str, str, dict[str, Any]]:
    """The request mix: a quarter callbacks, the rest what a daemon and its operators ask for."""
    k = i % 20
    if k < 5:
        return (
            "GET",
            "/v1/request/callback/",
            {"format": "json", "from": "442037691880", "to": f"4420700{i % 100000:05d}", "predicted": 1},
        )
    if k < 12:
        return "GET", "/v1/info/balance/", {"format": "json"}
    if k < 14:
        return "GET", "/v1/info/timezone/", {"format": "json"}
    if k < 16:
        return "GET", "/v1/pbx/internal/100/status/", {"format": "json"}
    if k < 18:
        return "GET", "/v1/info/price/", {"format": "json", "number": "442037691881"}
    return "GET", "/v1/statistics/pbx/", {"format": "json", "version": 2, "limit": 100}


class _Conn:
    """One keep-alive HTTP/1.1 connection. A bare client keeps the load generator's own CPU cost low, so on a
    shared 2-core machine the figures are the server's, not httpx's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, verb: str, target: str, headers: dict[str, str]) -> int:
        head = f"{verb} {target} HTTP/1.1\r\nHost: sim\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        self.writer.write((head + "\r\n").encode())
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def load(url: str, rate: float, duration: float, connections: int = 64) -> dict[str, Any]:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    errors = 0
    n = int(rate * duration)
    host, port = url.removeprefix("http://").split(":")
    pool: asyncio.Queue[_Conn] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(_Conn(*await asyncio.open_connection(host, int(port))))

    async def one(i: int, at: float) -> None:
        nonlocal errors
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        verb, path, params = _request(i)
        query = params_string(params)
        headers = {"Authorization": f"{KEY}:{sign(path, params, SECRET)}"}
        conn = await pool.get()
        t0 = time.perf_counter()
        try:
            code = await asyncio.wait_for(conn.request(verb, f"{path}?{query}", headers), 10)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            errors += 1
            conn.writer.close()
            pool.put_nowait(_Conn(*await asyncio.open_connection(host, int(port))))
            return
        latencies.append(time.perf_counter() - t0)
        codes[code] = codes.get(code, 0) + 1
        pool.put_nowait(conn)

    start = time.perf_counter() + 0.2
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, start + i / rate) for i in range(n)))
    wall = time.perf_counter() - t0 - 0.2
    while not pool.empty():
        pool.get_nowait().writer.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "requests": n,
        "achieved_rps": len(latencies) / wall,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
        "errors": errors,
        "codes": codes,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for _ in range(30):
        line = proc.stdout.readline()
        if "ZADARMA_API_URL=" in line:
            return line.split("=", 1)[1].strip()
    raise RuntimeError("simulator did not start")


def run_once(rate: float, duration: float, time_scale: float) -> dict[str, Any]:
    rport = free_port()
    receiver = subprocess.Popen([sys.executable, __file__, "--receiver", str(rport)])
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(SCENARIO)
        scenario_path = f.name
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dialer",
            "sim",
            "serve",
            "--port",
            "0",
            "--scenario",
            scenario_path,
            "--time-scale",
            str(time_scale),
            "--key",
            KEY,
            "--secret",
            SECRET,
            "--webhook-url",
            f"http://127.0.0.1:{rport}/hook",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        url = _wait_url(sim)
        deadline = time.monotonic() + 20
        while not httpx.get(url + "/_sim/stats").json()["webhooks"]["verified"]:
            if time.monotonic() > deadline:
                raise RuntimeError("webhook receiver never verified")
            time.sleep(0.1)
        cpu0 = _cpu_seconds(sim.pid), _cpu_seconds(receiver.pid)
        result = asyncio.run(load(url, rate, duration))
        cpu1 = _cpu_seconds(sim.pid), _cpu_seconds(receiver.pid)
        # CPU share of one core while loaded: what the simulator costs whatever else the machine runs.
        result["sim_cpu_pct"] = 100 * (cpu1[0] - cpu0[0]) / duration
        result["receiver_cpu_pct"] = 100 * (cpu1[1] - cpu0[1]) / duration
        time.sleep(1.0)
        st = httpx.get(url + "/_sim/stats").json()
        result["webhooks_sent"] = st["webhooks"]["sent"]
        result["webhooks_per_s"] = st["webhooks"]["sent"] / duration
        result["webhook_failures"] = st["webhooks"]["failed"]
        result["notify_start_timeouts"] = st["webhooks"]["notify_start_timeouts"]
        result["calls"] = st["calls"]["total"]
        return result
    finally:
        for p in (sim, receiver):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        os.unlink(scenario_path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second (open loop)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--time-scale", type=float, default=60.0, help="simulator speed-up (calls end, webhooks fire)"
    )
    ap.add_argument("--json", action="store_true", help="print the per-run results as JSON too")
    ap.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receiver:
        receiver_main(args.receiver)
        return
    runs = [run_once(args.rate, args.duration, args.time_scale) for _ in range(args.runs)]
    print(
        f"\nSimulator under load: {args.rate:g} req/s for {args.duration:g} s, time scale {args.time_scale:g}x, "
        f"webhooks on (full profile), {args.runs} runs\n"
    )
    cols = [
        "achieved_rps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
        "errors",
        "calls",
        "webhooks_per_s",
        "webhook_failures",
        "notify_start_timeouts",
        "sim_cpu_pct",
        "receiver_cpu_pct",
    ]
    print("| run | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for i, r in enumerate(runs, 1):
        print(f"| {i} | " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    med = {c: statistics.median(r[c] for r in runs) for c in cols}
    print("| **median** | " + " | ".join(_fmt(med[c]) for c in cols) + " |")
    ok = med["achieved_rps"] >= 0.98 * args.rate and med["p99_ms"] < 50
    print(f"\ntarget: >= {args.rate:g} req/s with p99 < 50 ms: {'MET' if ok else 'NOT MET'}")
    if args.json:
        print(json.dumps(runs, indent=2))


def _fmt(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    main()
