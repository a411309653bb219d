"""Settings changes take effect: re-planning waiting contacts (legal locks kept, live calls untouched), and
`dialer campaign reschedule | remove | delete` and the source file of loaded contacts, through the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from dialer.db import open_database, session_scope
from dialer.ingest import campaigns
from dialer.ingest.replan import replan
from dialer.models import Attempt, Campaign, Contact, EventLog
from dialer.outcomes.states import AttemptState, CampaignState, ContactState
from dialer.outcomes.transitions import retry_lock_until
from tests.conftest import Cli

WED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday; Europe/London is on GMT
MON_9 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


def test_retry_lock_runs_from_the_last_call_and_the_legal_lock_from_the_last_abandon() -> None:
    c = Campaign(name="c", from_number="100", retry_no_answer_s=3600, retry_busy_s=600, retry_abandoned_s=72 * 3600)
    no_answer = retry_lock_until(c, last_end=WED, last_disposition="no answer", last_abandoned=False,
                                 last_abandon_end=None)  # fmt: skip
    assert no_answer == WED + H
    busy = retry_lock_until(c, last_end=WED, last_disposition="busy", last_abandoned=False, last_abandon_end=None)
    assert busy == WED + timedelta(minutes=10)
    # An abandon two calls ago still locks the number for 72 h, whatever came after it.
    locked = retry_lock_until(c, last_end=WED, last_disposition="no answer", last_abandoned=False,
                              last_abandon_end=WED - 2 * H)  # fmt: skip
    assert locked == WED + 70 * H
    # `reschedule --now` drops the retry delay, never the legal lock.
    assert retry_lock_until(c, last_end=WED, last_disposition="busy", last_abandoned=False, last_abandon_end=None,
                            legal_only=True) is None  # fmt: skip
    assert retry_lock_until(c, last_end=WED, last_disposition="rejected", last_abandoned=False,
                            last_abandon_end=None) == WED + timedelta(seconds=c.retry_failed_s)  # fmt: skip


def _world(db: Engine) -> dict[str, int]:
    """A mon-fri 09:00-20:00 London campaign on Wednesday noon: contacts after an abandon, a no-answer, a
    refusal, one moved to Monday by the claim, and one in a call."""
    ids: dict[str, int] = {}
    with session_scope(db) as s:
        c = campaigns.create_campaign(s, "spring", "100", timezone="Europe/London", retry_no_answer_s="1h",
                                      retry_abandoned_s="72h", retry_failed_s="15m", max_attempts=3)  # fmt: skip
        cid = c.id or 0

        def contact(key: str, state: str, attempts: int, nxt: datetime | None, last: str | None) -> Contact:
            ct = Contact(campaign_id=cid, phone=f"+44207946{len(ids):04d}", timezones=["Europe/London"],
                         state=state, attempts=attempts, next_attempt_at=nxt, last_disposition=last)  # fmt: skip
            s.add(ct)
            s.flush()
            ids[key] = ct.id or 0
            return ct

        def call(ct: Contact, state: str, end: datetime, disposition: str | None, abandoned: bool = False) -> None:
            s.add(Attempt(campaign_id=cid, contact_id=ct.id or 0, phone=ct.phone, state=state, created_at=end,
                          finished_at=end, disposition=disposition, answered=abandoned, abandoned=abandoned,
                          live=False))  # fmt: skip

        call(contact("abandoned", ContactState.RETRY, 1, WED - H + 72 * H, "abandoned"), AttemptState.COMPLETED,
             WED - H, "answered", abandoned=True)  # fmt: skip
        call(contact("no_answer", ContactState.RETRY, 1, WED + 0.5 * H, "no answer"), AttemptState.COMPLETED,
             WED - 0.5 * H, "no answer")  # fmt: skip
        call(contact("rejected", ContactState.RETRY, 1, WED + 10 * 60 * timedelta(seconds=1), "rejected"),
             AttemptState.FAILED, WED - timedelta(minutes=5), None)  # fmt: skip
        contact("monday", ContactState.PENDING, 0, MON_9, None)
        live = contact("in_call", ContactState.DIALING, 1, None, None)
        s.add(Attempt(campaign_id=cid, contact_id=live.id or 0, phone=live.phone, state=AttemptState.PLACED,
                      created_at=WED))  # fmt: skip
        ids["campaign"] = cid
    return ids


def _next(db: Engine) -> dict[int, datetime | None]:
    with session_scope(db, write=False) as s:
        return {c.id or 0: c.next_attempt_at for c in s.exec(select(Contact)).all()}


def test_new_weekdays_replan_at_once_and_keep_the_abandon_lock(db: Engine) -> None:
    ids = _world(db)
    with session_scope(db) as s:
        _, result = campaigns.change_settings(s, "spring", {"weekdays": "mon-sun"}, now=WED)
    nxt = _next(db)
    # The abandon lock ends Saturday 11:00: callable now that Saturday is a calling day, and not a second earlier.
    assert nxt[ids["abandoned"]] == WED - H + 72 * H
    assert nxt[ids["no_answer"]] == WED + 0.5 * H  # its retry delay still holds
    assert nxt[ids["rejected"]] == WED + timedelta(minutes=10)
    assert nxt[ids["monday"]] == WED  # the window is open now: due at once
    assert nxt[ids["in_call"]] is None  # a contact in a call is never moved
    assert result is not None and (result.contacts, result.due_now, result.next_at) == (4, 1, WED + timedelta(minutes=10))


def test_a_window_change_never_moves_a_contact_before_its_legal_lock(db: Engine) -> None:
    ids = _world(db)
    with session_scope(db) as s:
        campaigns.change_settings(s, "spring", {"window": "08:00-21:00"}, now=WED)
    # Saturday 11:00 is not a calling day (mon-fri): the first legal moment is Monday at the new 08:00.
    assert _next(db)[ids["abandoned"]] == MON_9 - H


def test_longer_retry_delays_move_contacts_later_and_a_lower_cap_exhausts(db: Engine) -> None:
    ids = _world(db)
    with session_scope(db) as s:
        campaigns.change_settings(s, "spring", {"retry_no_answer": "3h"}, now=WED)
    assert _next(db)[ids["no_answer"]] == WED + 2.5 * H
    with session_scope(db) as s:
        _, result = campaigns.change_settings(s, "spring", {"max_attempts": "1"}, now=WED)
        states = {c.id: c.state for c in s.exec(select(Contact)).all()}
    assert result is not None and result.exhausted == 3
    assert states[ids["no_answer"]] == ContactState.EXHAUSTED and states[ids["monday"]] == ContactState.PENDING
    assert states[ids["in_call"]] == ContactState.DIALING


def test_settings_that_do_not_plan_do_not_replan(db: Engine) -> None:
    _world(db)
    with session_scope(db) as s:
        _, result = campaigns.change_settings(s, "spring", {"pacing": "ratio:2", "weekdays": "mon-fri"}, now=WED)
    assert result is None  # the weekdays did not change


def test_reschedule_now_drops_retry_delays_but_not_the_legal_lock(db: Engine) -> None:
    ids = _world(db)
    with session_scope(db) as s:
        c = campaigns.get_campaign(s, "spring")
        result = replan(s, c, WED, states=(ContactState.RETRY,), legal_only=True)
    nxt = _next(db)
    assert nxt[ids["no_answer"]] == WED and nxt[ids["rejected"]] == WED
    assert nxt[ids["abandoned"]] == MON_9  # lock ends Saturday 11:00; mon-fri: Monday's opening
    assert nxt[ids["monday"]] == MON_9  # not in --state retry
    assert (result.contacts, result.moved) == (3, 3)


# -- the command line ------------------------------------------------------------------------------------------

NUMBERS = [f"+44207946{i:04d}" for i in range(6)]


def _load(cli: Cli, name: str, numbers: list[str], start: int = 0) -> None:
    path = cli.cwd / name
    path.write_text("phone,name\n" + "".join(f"{n},P{start + i}\n" for i, n in enumerate(numbers)), encoding="utf-8")
    out = json.loads(cli.ok("campaign", "load", str(path), "--campaign", "spring", "--from", "100", "--region", "GB",
                            "--json"))  # fmt: skip
    assert out["loaded"] == len(numbers)


def _contacts(cli: Cli) -> list[dict[str, object]]:
    return json.loads(cli.ok("campaign", "contacts", "spring", "--limit", "0", "--json"))


def test_load_records_the_source_file_and_remove_by_number_or_file(cli: Cli) -> None:
    _load(cli, "first.csv", NUMBERS[:4])
    _load(cli, "second.csv", NUMBERS[4:])
    assert {c["phone"]: c["source_file"] for c in _contacts(cli)} == {
        **dict.fromkeys(NUMBERS[:4], "first.csv"), **dict.fromkeys(NUMBERS[4:], "second.csv")
    }
    # A contact that has been called is kept unless --purge; one in a call never goes.
    db = open_database(cli.database_url)
    try:
        with session_scope(db) as s:
            called, ringing = (s.exec(select(Contact).where(Contact.phone == p)).one() for p in NUMBERS[:2])
            for ct, state in ((called, AttemptState.COMPLETED), (ringing, AttemptState.PLACED)):
                s.add(Attempt(campaign_id=ct.campaign_id, contact_id=ct.id or 0, phone=ct.phone, state=state))
            ringing.state = ContactState.DIALING
    finally:
        db.dispose()
    out = json.loads(cli.ok("campaign", "remove", "spring", "--phone", "020 7946 0002", "--phone",
                            f"{NUMBERS[0]},{NUMBERS[1]},+442079469999", "--json"))  # fmt: skip
    # Numbers are read as the list's were (the campaign's region GB): 020 7946 0002 is NUMBERS[2].
    assert (out["matched"], out["removed"], out["not_found"]) == (3, 1, ["+442079469999"])
    assert out["in_call"] == [NUMBERS[1]] and out["kept_with_calls"] == [NUMBERS[0]]
    text = cli.ok("campaign", "remove", "spring", "--source", str(cli.cwd / "first.csv"))
    assert "Kept 1 with call attempts on record" in text and "Kept 1 in a call now" in text
    assert {c["phone"] for c in _contacts(cli)} == {*NUMBERS[:2], *NUMBERS[4:]}
    out = json.loads(cli.ok("campaign", "remove", "spring", "--source", "first.csv", "--purge", "--json"))
    assert (out["removed"], out["attempts_removed"], out["in_call"]) == (1, 1, [NUMBERS[1]])
    out = json.loads(cli.ok("campaign", "remove", "spring", "--source", "second.csv", "--json"))
    assert out["removed"] == 2
    assert [c["phone"] for c in _contacts(cli)] == [NUMBERS[1]]
    assert cli("campaign", "remove", "spring").returncode == 2


def test_reschedule_from_the_command_line(cli: Cli) -> None:
    _load(cli, "list.csv", NUMBERS[:3])
    far = datetime.now(UTC) + timedelta(days=3)
    db = open_database(cli.database_url)
    try:
        with session_scope(db) as s:
            for ct in s.exec(select(Contact)).all():
                ct.state, ct.attempts, ct.next_attempt_at = ContactState.RETRY, 1, far
                s.add(Attempt(campaign_id=ct.campaign_id, contact_id=ct.id or 0, phone=ct.phone,
                              state=AttemptState.COMPLETED, disposition="no answer", live=False,
                              finished_at=datetime.now(UTC)))  # fmt: skip
    finally:
        db.dispose()
    set_out = json.loads(cli.ok("campaign", "set", "spring", "weekdays=mon-sun", "window=00:00-24:00", "--json"))
    # From three days away to the end of the 1 h no-answer delay.
    assert (set_out["replanned"]["moved"], set_out["replanned"]["due_now"]) == (3, 0)
    again = cli.ok("campaign", "set", "spring", "max_attempts=4")  # a planning setting: re-planned, nothing moves
    assert "Re-planned 3 contacts waiting to be dialled: 0 moved; 0 due now, the others from " in again
    out = json.loads(cli.ok("campaign", "reschedule", "spring", "--state", "retry", "--now", "--json"))
    assert (out["contacts"], out["due_now"], out["moved"]) == (3, 3, 3)
    assert all(datetime.fromisoformat(str(c["next_attempt_at"])) <= datetime.now(UTC) for c in _contacts(cli))
    out = json.loads(cli.ok("campaign", "reschedule", "spring", "--json"))
    assert out["due_now"] == 0 and out["moved"] == 3  # the 1 h no-answer delay applies again
    assert "Re-planned 3 contacts" in cli.ok("campaign", "reschedule", "spring", "--state", "retry", "--now")
    assert cli("campaign", "reschedule", "spring", "--state", "done").returncode == 2


def test_delete_keeps_the_call_records_unless_purged(cli: Cli) -> None:
    _load(cli, "list.csv", NUMBERS[:3])
    cli.ok("campaign", "start", "spring")
    refused = cli("campaign", "delete", "spring")
    assert refused.returncode != 0 and "it is running" in refused.stderr
    cli.ok("campaign", "pause", "spring")
    db = open_database(cli.database_url)
    try:
        with session_scope(db) as s:
            first = s.exec(select(Contact).order_by(col(Contact.id))).first()
            assert first is not None
            live = Attempt(campaign_id=first.campaign_id, contact_id=first.id or 0, phone=first.phone,
                           state=AttemptState.UNCERTAIN)  # fmt: skip
            s.add(live)
        busy = cli("campaign", "delete", "spring")
        assert busy.returncode != 0 and "1 call(s) in progress" in busy.stderr
        with session_scope(db) as s:
            a = s.exec(select(Attempt)).one()
            a.state, a.live = AttemptState.COMPLETED, False
            s.add(EventLog(campaign_id=a.campaign_id, kind="note", message="x"))
        text = cli.ok("campaign", "delete", "spring")
        assert "2 contacts never dialled removed" in text and "spring~deleted-1" in text
        assert "1 contacts with 1 call attempts, and 1 event log entries" in text
        assert json.loads(cli.ok("campaign", "list", "--json")) == []
        with session_scope(db, write=False) as s:
            kept = s.exec(select(Campaign)).one()
            assert (kept.name, kept.state) == ("spring~deleted-1", CampaignState.DELETED)
            assert len(s.exec(select(Attempt)).all()) == 1 and len(s.exec(select(Contact)).all()) == 1
        cli.ok("campaign", "create", "spring", "--from", "100")  # the name is free again
        assert cli("campaign", "delete", "spring~deleted-1").returncode != 0  # already deleted: --purge only
        out = json.loads(cli.ok("campaign", "delete", "spring~deleted-1", "--purge", "--json"))
        assert (out["contacts_removed"], out["attempts_removed"], out["events_removed"]) == (1, 1, 2)
        with session_scope(db, write=False) as s:
            assert [c.name for c in s.exec(select(Campaign)).all()] == ["spring"]
            assert s.exec(select(Attempt)).all() == [] and s.exec(select(EventLog)).all() == []
    finally:
        db.dispose()


@pytest.mark.parametrize("purge", [False, True])
def test_delete_a_draft_campaign(cli: Cli, purge: bool) -> None:
    _load(cli, "list.csv", NUMBERS[:2])
    text = cli.ok("campaign", "delete", "spring", *(["--purge"] if purge else []))
    assert ("everything it held: 2 contacts" if purge else "2 contacts never dialled removed") in text
    assert json.loads(cli.ok("campaign", "list", "--json")) == []


def test_status_json_has_the_reason_and_the_due_split(cli: Cli, tmp_path: Path) -> None:
    _load(cli, "list.csv", NUMBERS[:2])
    cli.ok("campaign", "start", "spring")
    st = json.loads(cli.ok("status", "--json"))["campaigns"][0]
    assert st["why"]["reason"] == "no_daemon" and st["why"]["text"].startswith("the daemon is not running")
    assert (st["due_now"], st["due_later"]) == (2, 0)
    assert "the daemon is not running" in cli.ok("status")
