"""/metrics from a database with known rows: the call counters are the report's figures, per campaign by id and
name, and campaign series exist only for campaigns in the database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialer.db import session_scope
from dialer.dialing.live import LiveState
from dialer.metrics import Metrics
from dialer.models import Campaign
from dialer.reporting.reports import build_report
from tests.test_reports_build import CAMPAIGN, NOW, Sample, build_sample

SAMPLE = re.compile(r'^(\w+)\{campaign="(\d+)",campaign_name="((?:[^"\\]|\\.)*)"\} (\S+)$', re.M)


def samples(text: str) -> dict[tuple[str, str], float]:
    """(metric, campaign name) -> value, for every campaign-labelled sample."""
    return {(name, cname): float(value) for name, _, cname, value in SAMPLE.findall(text)}


@pytest.fixture
def sample(tmp_path: Path) -> Iterator[Sample]:
    s = build_sample(tmp_path)
    yield s
    s.engine.dispose()


def test_call_counters_are_the_reports_figures(sample: Sample) -> None:
    text = Metrics(db=sample.engine).render()
    got = samples(text)
    report = build_report(sample.engine, CAMPAIGN, now=NOW)
    assert (report.calls_placed, report.answered, report.connected, report.abandoned) == (7, 5, 3, 2)
    for metric, value in (
        ("dialer_calls_placed_total", report.calls_placed),
        ("dialer_calls_answered_total", report.answered),
        ("dialer_calls_connected_total", report.connected),
        ("dialer_calls_abandoned_total", report.abandoned),
    ):
        assert got[(metric, CAMPAIGN)] == value, metric
        assert got[(metric, "other")] == 0, metric  # a campaign without calls shows zeros
    assert f'dialer_calls_placed_total{{campaign="{sample.campaign_id}",campaign_name="{CAMPAIGN}"}} 7\n' in text
    assert "# TYPE dialer_calls_placed_total counter" in text


def test_names_are_escaped_and_only_existing_campaigns_have_series(sample: Sample) -> None:
    with session_scope(sample.engine) as s:
        s.add(Campaign(name='say "hi"\\now', from_number="102"))
    live = LiveState()
    live.configure_campaign(sample.campaign_id, agents=2)
    live.configure_campaign(999, agents=1)  # no such campaign in the database
    text = Metrics(db=sample.engine).render(live)
    assert ("dialer_calls_placed_total", 'say \\"hi\\"\\\\now') in samples(text)
    assert f'dialer_live_agents_logged_in{{campaign="{sample.campaign_id}",campaign_name="{CAMPAIGN}"}}' in text
    assert 'campaign="999"' not in text


def test_without_a_database_only_the_process_counters() -> None:
    metrics = Metrics()
    metrics.webhook_event("NOTIFY_START")
    text = metrics.render()
    assert 'dialer_webhook_events_total{event="NOTIFY_START"} 1' in text
    assert "dialer_webhook_duplicates_total 0" in text
    assert "dialer_calls_placed_total{" not in text


def test_the_silence_warning_waits_for_the_silence_period(sample: Sample, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time
    from datetime import timedelta

    from dialer.demo import demo_settings
    from dialer.dialing.daemon import Daemon, DaemonConfig

    daemon = Daemon(demo_settings("http://127.0.0.1:9", Path("unused.db"), 0),
                    DaemonConfig(live_silence_s=120.0), db=sample.engine)  # fmt: skip
    try:
        daemon.live = LiveState()  # no webhook event yet: the live state counts as silent
        with session_scope(sample.engine, write=False) as s:
            campaign = s.get(Campaign, sample.campaign_id)
        assert campaign is not None
        caplog.set_level(logging.INFO, logger="dialer.daemon")
        assert daemon._live_observation(campaign, time.time()) is None  # pacing uses statistics meanwhile
        assert "no webhook events lately" not in caplog.text  # just started: nothing to warn about yet
        daemon.started_at -= timedelta(seconds=121)
        assert daemon._live_observation(campaign, time.time()) is None
        assert caplog.text.count("no webhook events lately") == 1
    finally:
        daemon.client.close()
