"""PostgreSQL under the daemon's feet (issue 19): every backend connection is terminated mid-campaign, twice.

The daemon keeps its lock (taken again), runs each interrupted unit of work again on a fresh connection, and the
campaign finishes with every invariant; a lost connection is one log line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests import pg
from tests.conftest import wait_for
from tests.e2e import stack
from tests.invariants import check_invariants, real_calls

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _terminate_all(url: str) -> int:
    admin = pg.admin_engine()
    assert admin is not None, "this test needs the PostgreSQL server at 127.0.0.1:5432"
    try:
        with admin.connect() as conn:
            return len(conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db "
                "AND pid <> pg_backend_pid()"), {"db": sa.engine.make_url(url).database}).all())
    finally:
        admin.dispose()


def test_terminating_every_backend_mid_campaign_loses_nothing(tmp_path: Path) -> None:
    with stack(tmp_path, engine="postgres") as st:
        st.make_campaign("pgkill", 150, agents=5, pacing="ratio:3")
        proc = st.start_daemon("--until-finished")
        wait_for(lambda: proc.poll() is not None or st.sim_stats()["webhooks"]["verified"], timeout=120,
                 what="the simulator to verify the webhook URL")
        st.cli("campaign", "start", "pgkill")
        killed = []
        for target in (30, 80):
            wait_for(lambda n=target: proc.poll() is not None or int(st.sim_stats()["callbacks"]) >= n,
                     timeout=300, what=f"{target} callbacks", every=0.05)
            assert proc.poll() is None, st.daemon_log()[-3000:]
            killed.append(_terminate_all(st.db_url))
        assert all(n >= 2 for n in killed), killed  # the daemon's pool and its lock's own session, at least
        assert proc.wait(600) == 0, st.daemon_log()[-3000:]
        truth = st.wait_truth_settled()
        pairs = check_invariants(truth, st.attempts(), st.contacts(), st.campaign("pgkill"),
                                 rate_limited=int(st.sim_stats()["rate_limited_total"]))
        assert len(pairs) == len(real_calls(truth))
        log = st.daemon_log()
        errors = [ln for ln in log.splitlines() if "Traceback" in ln or "level=error" in ln]
        assert not errors, errors[:3]  # not a traceback, not an event left unstored
        assert "connection" in log  # the loss was noticed and said in one line
