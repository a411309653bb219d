"""An event whose folding fails is stored, marked and folded again later (dialer.outcomes.refold): in arrival
order, exactly once; one that keeps failing is given up and left to reconciliation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dialer.dialing.live import LiveState
from dialer.models import Attempt, Contact, WebhookEvent
from dialer.outcomes import events, refold
from dialer.outcomes.events import WebhookProcessor
from tests.webhooks_support import at, make_db, out_end, out_start, seed


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Engine]:
    engine = make_db(tmp_path)
    yield engine
    engine.dispose()


def _fail(monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """Folding an event that ends an attempt fails ``times`` times (a bug, a dropped connection)."""
    calls: list[int] = []
    real = events.complete_attempt

    def flaky(*args: Any, **kw: Any) -> bool:
        calls.append(1)
        if len(calls) <= times:
            raise RuntimeError("connection lost while folding")
        return real(*args, **kw)

    monkeypatch.setattr(events, "complete_attempt", flaky)
    return calls


def _unfolded(engine: Engine) -> list[tuple[str, int]]:
    with Session(engine) as s:
        return [(e.event, e.fold_tries) for e in s.exec(select(WebhookEvent).order_by(WebhookEvent.id))
                if e.fold_error is not None]


def test_a_failed_fold_is_folded_again_later_exactly_once(world: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    s = seed(world, n=1)
    p = WebhookProcessor(world, LiveState())
    phone, aid = s.phones[0], s.attempt_ids[0]
    _fail(monkeypatch, times=1)
    p.process(out_start(phone, "f1"), at(0.2), True)
    assert p.process(out_end(phone, "f1", "busy"), at(3), True).status == 200
    with Session(world) as sess:
        assert sess.get(Attempt, aid).state == "placed"  # type: ignore[union-attr]
    assert _unfolded(world) == [("NOTIFY_OUT_END", 1)]

    assert refold.refold_pending(p) == 1
    with Session(world) as sess:
        a = sess.get(Attempt, aid)
        assert a is not None and (a.state, a.disposition, a.live) == ("completed", "busy", False)
        c = sess.get(Contact, s.contact_ids[0])
        assert c is not None and (c.state, c.attempts) == ("retry", 1)
        # The receive time stays the clock: the call ended when the event came, not when it was folded again.
        assert a.finished_at is not None and a.finished_at.replace(tzinfo=None) == at(3).replace(tzinfo=None)
    assert _unfolded(world) == []
    assert refold.refold_pending(p) == 0  # once


def test_a_failing_event_holds_back_later_ones_and_is_given_up_in_the_end(
    world: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = seed(world, n=2)
    p = WebhookProcessor(world, LiveState())
    calls = _fail(monkeypatch, times=10_000)
    for i, token in enumerate(("g1", "g2")):
        p.process(out_start(s.phones[i], token), at(0.2), True)
        p.process(out_end(s.phones[i], token, "no answer"), at(5 + i), True)
    assert [t for _, t in _unfolded(world)] == [1, 1]
    before = len(calls)
    assert refold.refold_pending(p) == 0
    # In order: the second event was not tried while the first still fails.
    assert len(calls) == before + 1 and [t for _, t in _unfolded(world)] == [2, 1]
    for _ in range(2 * refold.MAX_TRIES):
        refold.refold_pending(p)
    tries = [t for _, t in _unfolded(world)]
    assert tries == [refold.MAX_TRIES, refold.MAX_TRIES]  # both given up: reconciliation decides their calls
    monkeypatch.undo()
    assert refold.refold_pending(p) == 0
    with Session(world) as sess:
        assert {a.state for a in sess.exec(select(Attempt))} == {"placed"}
