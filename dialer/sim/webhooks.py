"""The simulated PBX's notifications: URL verification with ``zd_echo``, signed form posts, per-call ordering.

Sending never blocks the model loop: every post is its own task, chained per call so one call's events arrive in
order while different calls' events overlap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from dialer.sim.model import SimCall
from dialer.sim.records import STATUS_CODES, AccountClock, CallRecord, digits
from dialer.zadarma.signing import webhook_signature

log = logging.getLogger("dialer.sim.webhooks")

OUT_EVENTS = frozenset({"NOTIFY_OUT_START", "NOTIFY_OUT_END"})
PBX_EVENTS = frozenset(
    {"NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_ANSWER", "NOTIFY_END", "NOTIFY_INTERNAL_END", "NOTIFY_IVR"}
)
# NOTIFY_RECORD is about the call, whichever legs are notified: sent whenever recording is on.
PROFILE_EVENTS = {
    "full": OUT_EVENTS | PBX_EVENTS | {"NOTIFY_RECORD"},
    "out-only": OUT_EVENTS | {"NOTIFY_RECORD"},
    "pbx-only": PBX_EVENTS | {"NOTIFY_RECORD"},
    "none": frozenset(),
}
VERIFY_RETRY_S = 1.0


def webhook_disposition(disposition: str | None) -> str:
    # Webhooks say "failed" where statistics say "call failed".
    if disposition == "call failed":
        return "failed"
    return disposition or "failed"


class WebhookSender:
    def __init__(
        self, secret: str, profile: str, *, drop_rate: float = 0.0, seed: int = 0, encoding: str = "urlencoded"
    ) -> None:
        self.secret = secret
        self.multipart = encoding == "multipart"
        self.events = PROFILE_EVENTS[profile]
        self.profile = profile
        self.drop_rate = drop_rate
        self._rng = random.Random(seed ^ 0xB00C)
        self.url: str | None = None
        self.verified = False
        self.client: httpx.AsyncClient | None = None
        self._chains: dict[str, asyncio.Task[Any]] = {}  # the last queued event of each call
        self._tasks: set[asyncio.Task[Any]] = set()  # every event in flight, to cancel them all on close
        self._closing = False
        self._verifier: asyncio.Task[None] | None = None
        self.counters = {
            "sent": 0,
            "failed": 0,
            "dropped": 0,
            "notify_start_timeouts": 0,
            "verify_attempts": 0,
            "verify_failures": 0,
        }
        self.last_verify_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(3.0, connect=2.0),
            # A small pool: httpx scans it on every request, and one receiver needs few connections.
            limits=httpx.Limits(max_connections=24, max_keepalive_connections=24),
        )

    async def close(self) -> None:
        self._closing = True
        if self._verifier is not None:
            self._verifier.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def set_url(self, url: str | None) -> None:
        """Point notifications at ``url``; nothing is sent until it echoes a ``zd_echo`` token back."""
        self.url = url or None
        self.verified = False
        if self._verifier is not None:
            self._verifier.cancel()
            self._verifier = None
        if self.url and self.events:
            self._verifier = asyncio.create_task(self._verify_loop(self.url))

    async def _verify_loop(self, url: str) -> None:
        # A receiver started after the simulator is verified as soon as it answers correctly.
        while self.url == url and not self.verified:
            if await self.verify(url):
                return
            await asyncio.sleep(VERIFY_RETRY_S)

    async def verify(self, url: str) -> bool:
        assert self.client is not None
        token = secrets.token_hex(8)
        self.counters["verify_attempts"] += 1
        try:
            resp = await self.client.get(url, params={"zd_echo": token})
            ok = resp.status_code == 200 and resp.text == token
            self.last_verify_error = None if ok else f"HTTP {resp.status_code}, body {resp.text[:60]!r}"
        except httpx.HTTPError as exc:
            ok = False
            self.last_verify_error = f"{type(exc).__name__}: {exc}"
        if ok and self.url == url:
            self.verified = True
        elif not ok:
            self.counters["verify_failures"] += 1
        return ok

    # -- state -------------------------------------------------------------------------------------------
    @property
    def pbx_active(self) -> bool:
        return self.verified and "NOTIFY_START" in self.events

    @property
    def out_active(self) -> bool:
        return self.verified and "NOTIFY_OUT_START" in self.events

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "verified": self.verified,
            "profile": self.profile,
            "encoding": "multipart" if self.multipart else "urlencoded",
            "in_flight_calls": len(self._chains),
            "last_verify_error": self.last_verify_error,
            **self.counters,
        }

    # -- sending -----------------------------------------------------------------------------------------
    def send(self, call_id: str, fields: dict[str, str]) -> None:
        """Queue an event behind the call's earlier events."""
        if not self.verified or self._closing or fields["event"] not in self.events:
            return
        self._chain(call_id, lambda: self.post(fields), wait_prev=True)

    def send_and_answer(
        self,
        call_id: str,
        fields: dict[str, str],
        timeout: float,
        then: Callable[[dict[str, Any] | None], None],
    ) -> None:
        """Post NOTIFY_START at once and hand its JSON answer (None when none came in ``timeout``) to ``then``."""

        async def run() -> None:
            answer: dict[str, Any] | None = None
            try:
                resp = await asyncio.wait_for(self.post(fields), timeout)
                answer = _json_answer(resp)
            except TimeoutError:
                self.counters["notify_start_timeouts"] += 1
            then(answer)

        self._chain(call_id, run, wait_prev=False)

    def _chain(self, call_id: str, factory: Callable[[], Awaitable[Any]], *, wait_prev: bool) -> None:
        prev = self._chains.get(call_id) if wait_prev else None

        async def run() -> None:
            if prev is not None and not prev.done():
                await asyncio.wait([prev])
            await factory()

        task = asyncio.create_task(run())
        self._chains[call_id] = task
        self._tasks.add(task)

        def forget(t: asyncio.Task[Any], cid: str = call_id) -> None:
            self._tasks.discard(t)
            if self._chains.get(cid) is t:
                del self._chains[cid]
            if not t.cancelled() and t.exception() is not None and not self._closing:
                log.warning("webhook task failed: %s", t.exception())

        task.add_done_callback(forget)

    async def post(self, fields: dict[str, str]) -> httpx.Response | None:
        if self.client is None or self.url is None or self._closing:
            return None
        if self.drop_rate and self._rng.random() < self.drop_rate:
            self.counters["dropped"] += 1
            return None
        headers = {"Signature": webhook_signature(fields, self.secret) or ""}
        try:
            if self.multipart:
                body, headers["Content-Type"] = multipart_body(fields)
                resp = await self.client.post(self.url, content=body, headers=headers)
            else:
                resp = await self.client.post(self.url, data=fields, headers=headers)
        except (httpx.HTTPError, RuntimeError) as exc:
            # RuntimeError: the client was closed under us while the server stops.
            self.counters["failed"] += 1
            log.debug("webhook %s failed: %s", fields.get("event"), exc)
            return None
        if resp.status_code >= 400:
            self.counters["failed"] += 1
        else:
            self.counters["sent"] += 1
        return resp


def multipart_body(fields: dict[str, str]) -> tuple[bytes, str]:
    """``multipart/form-data`` with text parts only, as the PBX sends it (httpx makes multipart only with files)."""
    boundary = secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _json_answer(resp: httpx.Response | None) -> dict[str, Any] | None:
    if resp is None or resp.status_code >= 400 or not resp.content:
        return None
    try:
        data = json.loads(resp.content)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- event fields ----------------------------------------------------------------------------------------
def out_start(call: SimCall, rec: CallRecord, clock: AccountClock) -> dict[str, str]:
    return {
        "event": "NOTIFY_OUT_START",
        "call_start": clock.format(call.placed_at),
        "pbx_call_id": rec.out_id,
        "destination": digits(rec.to),
        "internal": rec.sip or digits(rec.from_),
        "caller_id": digits(rec.from_),
    }


def out_end(call: SimCall, rec: CallRecord, clock: AccountClock) -> dict[str, str]:
    disposition = call.disposition or "call failed"
    return {
        "event": "NOTIFY_OUT_END",
        "call_start": clock.format(call.placed_at),
        "pbx_call_id": rec.out_id,
        "caller_id": digits(rec.from_),
        "destination": digits(rec.to),
        "internal": rec.sip or digits(rec.from_),
        "duration": str(rec.billseconds),
        "disposition": webhook_disposition(disposition),
        "status_code": str(STATUS_CODES.get(disposition, 16)),
        "is_recorded": "0",
        "call_id_with_rec": "",
    }


def pbx_start(call: SimCall, rec: CallRecord, clock: AccountClock, pbx_number: str) -> dict[str, str]:
    return {
        "event": "NOTIFY_START",
        "call_start": clock.format(call.answered_at or call.placed_at),
        "pbx_call_id": rec.in_id,
        "caller_id": digits(rec.to),
        "called_did": digits(pbx_number),
    }


def pbx_internal(call: SimCall, rec: CallRecord, clock: AccountClock, pbx_number: str) -> dict[str, str]:
    return {
        **pbx_start(call, rec, clock, pbx_number),
        "event": "NOTIFY_INTERNAL",
        "internal": call.agent or "",
    }


def pbx_answer(call: SimCall, rec: CallRecord, clock: AccountClock) -> dict[str, str]:
    return {
        "event": "NOTIFY_ANSWER",
        "caller_id": digits(rec.to),
        "destination": call.agent or "",
        "call_start": clock.format(call.answered_at or call.placed_at),
        "pbx_call_id": rec.in_id,
        "internal": call.agent or "",
    }


def pbx_end(
    call: SimCall, rec: CallRecord, clock: AccountClock, pbx_number: str, scale: float = 1.0, *, recorded: bool = False
) -> dict[str, str]:
    disposition = call.pbx_disposition or "no answer"
    answered = call.answered_at or call.placed_at
    duration = round(((call.ended_at or answered) - answered) * scale)
    return {
        "event": "NOTIFY_END",
        "call_start": clock.format(answered),
        "pbx_call_id": rec.in_id,
        "caller_id": digits(rec.to),
        "called_did": digits(pbx_number),
        "internal": call.agent or "",
        "duration": str(duration),
        "disposition": webhook_disposition(disposition),
        "last_internal": call.agent or "",
        "status_code": str(STATUS_CODES.get(disposition, 16)),
        "is_recorded": "1" if recorded else "0",
        "call_id_with_rec": recording_id(call) if recorded else "",
    }


def pbx_internal_end(call: SimCall, rec: CallRecord, clock: AccountClock, pbx_number: str) -> dict[str, str]:
    """The agent's leg is over (sent before the call's NOTIFY_END)."""
    return {
        **pbx_start(call, rec, clock, pbx_number),
        "event": "NOTIFY_INTERNAL_END",
        "internal": call.agent or "",
        "disposition": webhook_disposition(call.pbx_disposition or "no answer"),
    }


def pbx_ivr(call: SimCall, rec: CallRecord, clock: AccountClock, pbx_number: str) -> dict[str, str]:
    """The file an ``ivr_play`` answer asked for has been played to the caller (the abandon message)."""
    return {**pbx_start(call, rec, clock, pbx_number), "event": "NOTIFY_IVR", "ivr_play": call.ivr or ""}


def recording_id(call: SimCall) -> str:
    """``call_id_with_rec``: the recorded PBX leg's ``call_id`` in the statistics (records.pbx_rows)."""
    return f"{int(call.answered_at or call.placed_at)}.{call.seq}2"


def record(call: SimCall, rec: CallRecord) -> dict[str, str]:
    return {"event": "NOTIFY_RECORD", "call_id_with_rec": recording_id(call), "pbx_call_id": rec.in_id}
