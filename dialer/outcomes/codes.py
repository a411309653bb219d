"""A campaign's pause codes and dispositions: the defaults, a campaign's own lists, and reading them.

Invariant: a campaign without rows of its own uses the defaults, so a campaign created before agents existed (or
never customised) always has a full list; setting a list replaces the whole list at once. Codes are lower-case
words (``no_decision_maker``); each disposition has a distinct hotkey 1-9 and one ``DispositionMeaning``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dialer.models import DispositionCode, PauseCode
from dialer.outcomes.states import DispositionMeaning

_CODE = re.compile(r"[a-z][a-z0-9_]{0,31}")


class CodesError(ValueError):
    """A pause-code or disposition list is not valid; the message says what is wrong."""


@dataclass(frozen=True)
class DispositionDef:
    code: str
    label: str
    hotkey: int
    meaning: DispositionMeaning


@dataclass(frozen=True)
class PauseDef:
    code: str
    label: str


DEFAULT_DISPOSITIONS: tuple[DispositionDef, ...] = (
    DispositionDef("sale", "Sale", 1, DispositionMeaning.SUCCESS),
    DispositionDef("not_interested", "Not interested", 2, DispositionMeaning.FAILURE),
    DispositionDef("callback", "Call back", 3, DispositionMeaning.CALLBACK),
    DispositionDef("wrong_number", "Wrong number", 4, DispositionMeaning.FAILURE),
    DispositionDef("dnc", "Do not call", 5, DispositionMeaning.DNC),
    DispositionDef("no_decision_maker", "No decision-maker", 6, DispositionMeaning.RETRY),
)
DEFAULT_PAUSE_CODES: tuple[PauseDef, ...] = (
    PauseDef("break", "Break"),
    PauseDef("lunch", "Lunch"),
    PauseDef("training", "Training"),
    PauseDef("meeting", "Meeting"),
)


def dispositions_of(session: Session, campaign_id: int) -> tuple[DispositionDef, ...]:
    rows = session.exec(
        select(DispositionCode).where(col(DispositionCode.campaign_id) == campaign_id)
        .order_by(col(DispositionCode.hotkey))
    ).all()  # fmt: skip
    if not rows:
        return DEFAULT_DISPOSITIONS
    return tuple(DispositionDef(r.code, r.label, r.hotkey, DispositionMeaning(r.meaning)) for r in rows)


def pause_codes_of(session: Session, campaign_id: int) -> tuple[PauseDef, ...]:
    rows = session.exec(
        select(PauseCode).where(col(PauseCode.campaign_id) == campaign_id).order_by(col(PauseCode.id))
    ).all()
    if not rows:
        return DEFAULT_PAUSE_CODES
    return tuple(PauseDef(r.code, r.label) for r in rows)


def find_disposition(defs: Iterable[DispositionDef], text: str) -> DispositionDef | None:
    """The disposition named by its code (any case, spaces or dashes for underscores) or its hotkey."""
    key = text.strip().lower().replace(" ", "_").replace("-", "_")
    for d in defs:
        if key == d.code or key == str(d.hotkey):
            return d
    return None


def describe(defs: Iterable[DispositionDef]) -> str:
    """``sale (1), not_interested (2), ...`` for error messages."""
    return ", ".join(f"{d.code} ({d.hotkey})" for d in defs)


def check_dispositions(defs: Sequence[DispositionDef]) -> None:
    if not defs:
        raise CodesError("a campaign needs at least one disposition")
    if len(defs) > 9:
        raise CodesError(f"{len(defs)} dispositions: at most 9 (one per hotkey 1-9)")
    for d in defs:
        _check_code(d.code, "disposition")
        if not 1 <= d.hotkey <= 9:
            raise CodesError(f"disposition {d.code!r}: hotkey {d.hotkey} is not 1-9")
    _unique([d.code for d in defs], "disposition code")
    _unique([str(d.hotkey) for d in defs], "hotkey")


def check_pause_codes(defs: Sequence[PauseDef]) -> None:
    if not defs:
        raise CodesError("a campaign needs at least one pause code")
    for d in defs:
        _check_code(d.code, "pause code")
    _unique([d.code for d in defs], "pause code")


def parse_dispositions(spec: str) -> tuple[DispositionDef, ...]:
    """``sale:1:success, call_back:3:callback:Call back later, ...`` (code:hotkey:meaning[:label])."""
    meanings = ", ".join(m.value for m in DispositionMeaning)
    out = []
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        parts = [p.strip() for p in item.split(":", 3)]
        if len(parts) < 3:
            raise CodesError(f"disposition {item!r}: use code:hotkey:meaning[:label] (meanings: {meanings})")
        code, hotkey, meaning = parts[0].lower(), parts[1], parts[2].lower()
        if not hotkey.isdigit():
            raise CodesError(f"disposition {code!r}: hotkey {hotkey!r} is not a digit 1-9")
        try:
            kind = DispositionMeaning(meaning)
        except ValueError:
            raise CodesError(f"disposition {code!r}: meaning {meaning!r} is not one of {meanings}") from None
        label = parts[3] if len(parts) > 3 and parts[3] else code.replace("_", " ").capitalize()
        out.append(DispositionDef(code, label, int(hotkey), kind))
    check_dispositions(out)
    return tuple(out)


def parse_pause_codes(spec: str) -> tuple[PauseDef, ...]:
    """``break, lunch, coaching:One-to-one coaching`` (code[:label])."""
    out = []
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        code, _, label = (p.strip() for p in item.partition(":"))
        out.append(PauseDef(code.lower(), label or code.replace("_", " ").capitalize()))
    check_pause_codes(out)
    return tuple(out)


def set_dispositions(session: Session, campaign_id: int, defs: Sequence[DispositionDef]) -> None:
    """Replace the campaign's dispositions (attempts keep the codes they were given)."""
    check_dispositions(defs)
    session.execute(sa.delete(DispositionCode).where(col(DispositionCode.campaign_id) == campaign_id))
    session.flush()
    for d in defs:
        session.add(DispositionCode(campaign_id=campaign_id, code=d.code, label=d.label, hotkey=d.hotkey,
                                    meaning=d.meaning.value))  # fmt: skip
    session.flush()


def set_pause_codes(session: Session, campaign_id: int, defs: Sequence[PauseDef]) -> None:
    """Replace the campaign's pause codes (an agent paused with a code that goes keeps it until the pause ends)."""
    check_pause_codes(defs)
    session.execute(sa.delete(PauseCode).where(col(PauseCode.campaign_id) == campaign_id))
    session.flush()
    for d in defs:
        session.add(PauseCode(campaign_id=campaign_id, code=d.code, label=d.label))
    session.flush()


def _check_code(code: str, what: str) -> None:
    if not _CODE.fullmatch(code):
        raise CodesError(f"{what} {code!r}: use a lower-case word of letters, digits and _ (up to 32)")


def _unique(items: list[str], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise CodesError(f"{what} {item!r} is given twice")
        seen.add(item)
