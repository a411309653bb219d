"""Shared helpers for the agents' API tests: a seeded call centre (a running campaign with agents and placed calls),
the daemon's HTTP app (webhooks plus /api, wired as `dialer run` wires them) on a real server, and an SSE reader.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from dialer.agents import accounts
from dialer.agents.api import AgentApi
from dialer.agents.tokens import LoginLimiter
from dialer.asgi_thread import ServerThread
from dialer.db import open_database, session_scope
from dialer.dialing.live import LiveState
from dialer.models import Attempt, Campaign, Contact, utcnow
from dialer.outcomes.states import AttemptState, CampaignState, ContactState
from dialer.outcomes.webhook_app import create_webhook_app

PINS = {"alice": "1234", "bob": "5678"}
EXTENSIONS = {"alice": "101", "bob": "102"}
SCRIPT = "Hello {name}, this is about account {account} ({plan}). {unknown} stays."


@dataclass
class CallCentre:
    db: Engine
    campaign_id: int
    contact_ids: list[int]
    attempt_ids: list[int]
    phones: list[str]


def seed(tmp_path: Path, *, calls: int = 4, zone: str = "America/New_York") -> CallCentre:
    """A running campaign ``spring`` (wrap-up 30 s, a call script) with agents alice (101) and bob (102), and
    ``calls`` contacts each with one placed attempt; the contacts' zone is ``zone``."""
    db = open_database(f"sqlite:///{tmp_path / 'dialer.db'}")
    now = utcnow()
    with session_scope(db) as s:
        camp = Campaign(name="spring", from_number="442037691880", agents=2,
                        agent_extensions=list(EXTENSIONS.values()), state=CampaignState.RUNNING, wrapup_s=30,
                        timezone="Europe/London", script=SCRIPT)  # fmt: skip
        s.add(camp)
        s.flush()
        assert camp.id is not None
        contacts, attempts, phones = [], [], []
        for i in range(calls):
            phone = f"+1212555{i:04d}"
            contact = Contact(campaign_id=camp.id, phone=phone, name=f"Customer {i}", state=ContactState.DIALING,
                              attempts=1, timezones=[zone], fields={"account": f"A-{i:05d}", "plan": "gold"})
            s.add(contact)
            s.flush()
            attempt = Attempt(campaign_id=camp.id, contact_id=contact.id or 0, phone=phone,
                              state=AttemptState.PLACED, sent_at=now)  # fmt: skip
            s.add(attempt)
            s.flush()
            contacts.append(contact.id or 0)
            attempts.append(attempt.id or 0)
            phones.append(phone)
        for login, ext in EXTENSIONS.items():
            accounts.add_agent(s, login, name=login.title(), extension=ext, campaigns=["spring"], pin=PINS[login],
                               now=now)  # fmt: skip
        return CallCentre(db, camp.id, contacts, attempts, phones)


def make_app(db: Engine, **api_kw: Any) -> tuple[Any, AgentApi]:
    """The daemon's HTTP app: unsigned webhooks at /zadarma, the agents' API at /api."""
    api_kw.setdefault("limiter", LoginLimiter(per_login=1000, per_client=1000))
    api = AgentApi(db, **api_kw)
    app = create_webhook_app(db, secret="", live=LiveState(), verify=False, routes=[api.mount()])
    api.attach(app.state.processor)
    return app, api


@contextmanager
def serve(db: Engine, **api_kw: Any) -> Iterator[tuple[ServerThread, AgentApi]]:
    app, api = make_app(db, **api_kw)
    server = ServerThread(app).start()
    try:
        yield server, api
    finally:
        api.close()
        server.stop(timeout=5)


def login(client: httpx.Client, who: str) -> dict[str, str]:
    r = client.post("/api/login", json={"login": who, "pin": PINS[who]})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@dataclass
class Event:
    name: str
    id: str | None
    data: dict[str, Any]
    at: float  # time.perf_counter() when it arrived
    wall: float  # time.time() when it arrived


@dataclass
class SseReader:
    """Reads one agent's event stream on a thread; ``next(name)`` waits for the next event of that name."""

    url: str
    headers: dict[str, str]
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    seen: list[Event] = field(default_factory=list)
    status: int | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _connected: threading.Event = field(default_factory=threading.Event)

    def start(self) -> SseReader:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._connected.wait(10), "the event stream did not connect"
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client, \
                client.stream("GET", self.url, headers=self.headers) as r:  # fmt: skip
            self.status = r.status_code
            self._connected.set()
            name, ident, data = "message", None, []
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line == "":
                    if data:
                        self.events.put(Event(name, ident, json.loads("\n".join(data)), time.perf_counter(),
                                              time.time()))
                    name, data = "message", []
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line.startswith("id:"):
                    ident = line[3:].strip()

    def next(self, name: str, timeout: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name!r} event within {timeout}s; seen {[e.name for e in self.seen]}")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(event)
            if event.name == name:
                return event

    def stop(self) -> None:
        self._stop.set()


def webhook(client: httpx.Client, fields: dict[str, str]) -> httpx.Response:
    r = client.post("/zadarma", data=fields)
    assert r.status_code == 200, r.text
    return r


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
