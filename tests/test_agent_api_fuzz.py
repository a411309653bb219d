"""Bad input to every endpoint of the agents' API: always a 4xx with a JSON message, never a 500, and nothing
written. Hand-picked junk (not JSON, wrong types, missing and unknown fields, huge strings and numbers, deep nesting,
NUL characters, bodies over the limit) and a few hundred random bodies per endpoint built from the endpoints' own
field names mixed with junk; a random body that happens to be valid may succeed, and only then may the database
change.

The app runs on a real server on a free port of 127.0.0.1 (a bug would show as a 500, which fails the test); the
database is a real SQLite file whose every row is compared before and after each refused request.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from dialer.agents.openapi import ENDPOINTS
from tests.agent_api_support import CallCentre, seed, serve
from tests.webhooks_support import answer, end, start

TABLES = ("agent", "agent_event", "agent_token", "attempt", "contact", "callback", "dnc_entry", "event_log")
FIELDS = {"/login": ["login", "pin"], "/logout": [], "/state": ["state", "code"],
          "/disposition": ["attempt_id", "code", "note", "callback_at", "only_me"]}  # fmt: skip
PLAUSIBLE: list[Any] = ["alice", "1234", "ready", "paused", "pause", "logout", "lunch", "sale", "callback", "dnc",
                        "+2h", "14:30", "2026-12-01 14:30", 1, 2, 3, True, False, None, ""]  # fmt: skip
JUNK: list[Any] = [None, True, False, 0, -1, 1.5, 2**63, 10**40, -(10**40), "", " ", "x" * 5000, "\u00e9\u4e2d\U0001f600",
                   "a\u0000b", "'; DROP TABLE agent; --", [], [1, "a", None], {}, {"a": {"b": [1, {"c": None}]}},
                   "NaN", "1e309"]  # fmt: skip


def fingerprint(db: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    with db.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1"))] for t in TABLES}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[CallCentre, httpx.Client, dict[str, str]]]:
    """Alice logged in to the API and in wrap-up after a call."""
    centre = seed(tmp_path)
    with serve(centre.db) as (server, _api), httpx.Client(base_url=server.url, timeout=30) as client:
        alice = client.post("/api/login", json={"login": "alice", "pin": "1234"}).json()["token"]
        a = {"Authorization": f"Bearer {alice}"}
        assert client.post("/api/state", json={"state": "ready"}, headers=a).status_code == 200
        phone = centre.phones[0]
        client.post("/zadarma", data=start(phone, "f"))
        client.post("/zadarma", data=answer(phone, "f", "101"))
        client.post("/zadarma", data=end(phone, "f", "101"))
        yield centre, client, a
    centre.db.dispose()


def _check_refused(r: Any, what: str) -> None:
    assert 400 <= r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert set(body) == {"error", "detail"} and isinstance(body["error"], str) and body["error"], (what, body)


HAND_PICKED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not json", b"not json"),
    ("truncated", b'{"state": "ready"'),
    ("not utf-8", b"\xff\xfe\xfd"),
    ("lone surrogate", b'{"code": "\\ud800"}'),
    ("NaN", b'{"attempt_id": NaN, "code": "sale"}'),
    ("null", b"null"),
    ("array", b"[]"),
    ("number", b"123"),
    ("string", b'"ready"'),
    ("deep nesting", b"[" * 5000 + b"]" * 5000),
    ("over the limit", b'{"note": "' + b"x" * 70_000 + b'"}'),
    ("unclosed nesting over the limit", b"[" * 100_000),
]


def _typed_junk(path: str) -> list[dict[str, Any]]:
    """Each field with each junk value (the others plausible), each required field missing, an unknown field."""
    fields = FIELDS[path]
    valid = {"/login": {"login": "alice", "pin": "0000"}, "/logout": {}, "/state": {"state": "paused", "code": "nap"},
             "/disposition": {"attempt_id": 1, "code": "nope"}}[path]  # fmt: skip
    out = [{**valid, name: value} for name in fields for value in JUNK]
    out += [{k: v for k, v in valid.items() if k != name} for name in valid]
    out.append({**valid, "surprise": 1})
    out.append({**valid, "code": "x" * 65})
    return out


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_bad_bodies_are_refused_with_a_message_and_write_nothing(
    world: tuple[CallCentre, httpx.Client, dict[str, str]], path: str
) -> None:
    centre, client, alice = world
    before = fingerprint(centre.db)
    headers = {**alice, "Content-Type": "application/json"}
    for what, raw in HAND_PICKED:
        if path == "/logout" and what == "empty":
            continue  # logout takes an empty body
        r = client.post("/api" + path, content=raw, headers=headers)
        _check_refused(r, f"{path} {what}")
        assert fingerprint(centre.db) == before, f"{path} {what} wrote"
    for body in _typed_junk(path):
        if path == "/logout" and body == {}:
            continue
        r = client.post("/api" + path, content=json.dumps(body).encode(), headers=headers)
        _check_refused(r, f"{path} {body!r:.200}")
        assert fingerprint(centre.db) == before, f"{path} {body!r:.200} wrote"


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(PLAUSIBLE)
    if roll < 0.8 or depth > 2:
        return rng.choice(JUNK)
    if roll < 0.9:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "code", "state"]): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _random_body(rng: random.Random, path: str) -> bytes:
    keys = FIELDS[path] + ["attempt_id", "extra", "state"]
    if rng.random() < 0.1:
        return json.dumps(_random_value(rng)).encode()
    body = {rng.choice(keys): _random_value(rng) for _ in range(rng.randint(0, 5))}
    raw = json.dumps(body).encode()
    if rng.random() < 0.1:  # a cut or corrupted body
        cut = rng.randint(0, len(raw))
        raw = raw[:cut] + bytes([rng.randint(0, 255)]) * rng.randint(0, 2)
    return raw


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_random_bodies_never_fail_the_server_and_refused_ones_write_nothing(
    world: tuple[CallCentre, httpx.Client, dict[str, str]], path: str
) -> None:
    centre, client, alice = world
    rng = random.Random(f"agents-api-{path}")
    before = fingerprint(centre.db)
    refused = 0
    for n in range(120 if path == "/login" else 300):
        raw = _random_body(rng, path)
        # Now and then without a token, or with one that is not ours.
        roll = rng.random()
        headers = {} if roll < 0.05 else {"Authorization": "Bearer forged"} if roll < 0.1 else alice
        r = client.post("/api" + path, content=raw, headers=headers)
        assert r.status_code < 500, (n, raw[:300], r.text[:300])
        if r.status_code >= 400:
            refused += 1
            _check_refused(r, f"{path} {raw[:200]!r}")
            assert fingerprint(centre.db) == before, f"{path} {raw[:200]!r} was refused ({r.status_code}) but wrote"
        else:
            before = fingerprint(centre.db)
            if path == "/logout":  # that ended Alice's session: log in again for the next round
                token = client.post("/api/login", json={"login": "alice", "pin": "1234"}).json()["token"]
                alice = {"Authorization": f"Bearer {token}"}
                before = fingerprint(centre.db)
    assert refused > 50


def test_bad_queries_headers_and_methods_on_every_endpoint(world: tuple[CallCentre, httpx.Client, dict[str, str]]) -> None:
    centre, client, alice = world
    before = fingerprint(centre.db)
    bad = {"/api/call": ["attempt_id=abc", "attempt_id=-1", "attempt_id=0", "attempt_id=99999999999999999999999",
                         "attempt_id=\u00b2", "attempt_id=1.5", "attempt_id="],
           "/api/callbacks": ["limit=0", "limit=x", "limit=100000", "limit=\u0663", "limit=1e3"]}  # fmt: skip
    for path, queries in bad.items():
        for q in queries:
            r = client.get(f"{path}?{q}", headers=alice)
            assert r.status_code == 422, (path, q, r.status_code)
            _check_refused(r, f"{path}?{q}")
    assert client.get("/api/call?attempt_id=4611686018427387904", headers=alice).status_code == 404
    for header in [None, "Bearer x" + "x" * 10_000, "Bearer \u00e9t\u00e9", "Bearer Bearer", "Bearer a b c", "Basic x",
                   "Bearer"]:  # fmt: skip
        for e in ENDPOINTS:
            if not e.auth:
                continue
            headers = {"Authorization": header.encode()} if header is not None else {}
            r = client.request(e.method, "/api" + e.path, headers=headers,
                               content=b"{}" if e.method == "POST" else None)  # fmt: skip
            token = header or ""
            assert r.status_code in (401, 422), (e.path, token[:20], r.status_code)
            _check_refused(r, f"{e.path} with token {token[:20]!r}")
    for e in ENDPOINTS:
        other = "DELETE" if e.method == "GET" else "GET"
        r = client.request(other, "/api" + e.path, headers=alice)
        _check_refused(r, f"{other} {e.path}")
        assert r.status_code == 405
    r = client.get("/api/events", headers={"Last-Event-ID": "\u00b2".encode()}, params={"access_token": "nope"})
    assert r.status_code == 401
    assert fingerprint(centre.db) == before
