"""One state machine: state names live in ``dialer.outcomes``; everything else names them through the enums."""

from __future__ import annotations

import ast
from pathlib import Path

from dialer.outcomes.states import (
    CAMPAIGN_ACTIONS,
    FINAL_CONTACT_STATES,
    TERMINAL_CAMPAIGN_STATES,
    AgentState,
    AttemptState,
    CallbackState,
    CampaignState,
    ContactState,
)

PACKAGE = Path(__file__).resolve().parents[1] / "dialer"
STATE_NAMES = {s.value for enum in (CampaignState, ContactState, AttemptState, AgentState, CallbackState) for s in enum}
# The live view of calls and PBX extensions has its own states (dialer.dialing.live_types: a call rings, an extension
# talks or wraps up, whatever its agent session says) and reports them under those names.
_LIVE_VIEW = "the live state's own call and extension states, or the keys of its snapshot (not agent sessions')"
# Words that are state names in our machine but mean something else here, each with the reason it stays.
NOT_OUR_STATES = {
    ("cli.py", "dnc"): "the name of the `dialer dnc` command group",
    ("ingest/phones.py", "invalid"): "phonenumbers' number-length verdict, not a contact state",
    ("dialing/status.py", "running"): "the daemon's own state (DaemonState), not a campaign's",
    ("dialing/status.py", "stopped"): "the daemon's own state (DaemonState), not a campaign's",
    ("models.py", "callback"): "the name of the table of scheduled callbacks",
    ("commands/agent.py", "ready"): "the name of the `dialer agent ready` command",
    ("ingest/campaigns.py", "wrapup"): "the name of the campaign setting (the wrap-up limit)",
    ("ingest/typed_settings.py", "wrapup"): "the name of the campaign setting (the wrap-up limit)",
    ("live_bench.py", "failed"): "the simulator's count of webhook posts that failed (its /_sim/stats key)",
    **{(path, name): _LIVE_VIEW for path in ("dialing/live_types.py", "dialing/live.py", "dialing/status.py",
                                             "commands/run.py", "demo.py")
       for name in ("ringing", "talking", "wrapup")},
}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _state_literals(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        # The outcomes package owns the names; the simulator models Zadarma, whose "failed" is a disposition.
        if rel.startswith(("outcomes/", "sim/")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docs:
                continue
            text = node.value
            names = {text} & STATE_NAMES or {s for s in STATE_NAMES if f"'{s}'" in text}
            for name in names:
                if (rel, name) not in NOT_OUR_STATES:
                    found.append(f"dialer/{rel}:{node.lineno}: {text!r}")
    return found


def test_no_state_string_literal_outside_the_outcomes_package() -> None:
    found = _state_literals()
    assert found == [], "use dialer.outcomes.states enums instead of:\n" + "\n".join(found)


def test_the_check_finds_a_bare_state_name(tmp_path: Path) -> None:
    fake = tmp_path / "dialer"
    (fake / "dialing").mkdir(parents=True)
    (fake / "dialing" / "x.py").write_text('"""Doc."""\nSTATE = "completed"\nSQL = "WHERE state = \'retry\'"\n')
    assert len(_state_literals(fake)) == 2


def test_states_are_plain_text_in_the_database() -> None:
    assert ContactState.PENDING == "pending" and f"{AttemptState.NOT_PLACED}" == "not_placed"
    assert CampaignState("running") is CampaignState.RUNNING


def test_campaign_actions_lead_to_states_they_can_leave() -> None:
    # Every state reachable by an action can be left by some action, except that stop can always be undone by start,
    # and a deleted campaign, which is terminal by design (it is kept only for its call records).
    reachable = {target for _, target in CAMPAIGN_ACTIONS.values()}
    assert reachable >= TERMINAL_CAMPAIGN_STATES
    for state in reachable - TERMINAL_CAMPAIGN_STATES:
        assert any(state in allowed for allowed, _ in CAMPAIGN_ACTIONS.values()), state
    assert ContactState.DIALING not in FINAL_CONTACT_STATES
