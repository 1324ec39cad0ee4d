"""The alert sensor end to end against a real Dagster instance and a local HTTP receiver.

A stale read model (the real ``orders_freshness_lag`` check over a real bus and Delta tables,
executed in Dagster runs) gives exactly one WARN, one ERROR and one recovery alert; freshness
states recorded as the freshness daemon records them give their own alerts; a receiver answering
500 is retried, the tick still succeeds and the queued alert is delivered once it recovers; the
Teams (dagster-msteams) and Slack (dagster-slack) sinks deliver their payload shapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest

from cqrs_dagster.alerts.model import Alert, Level
from cqrs_dagster.alerts.sinks import RetryingSink
from cqrs_dagster.defs.alerting.dagster_state import record_freshness_state
from cqrs_dagster.defs.alerting.factory import make_alert_sink
from cqrs_dagster.defs.alerting.sensor import SENSOR_NAME, build_alerts_sensor
from cqrs_dagster.defs.alerting.slack import SlackAlertSink
from cqrs_dagster.defs.alerting.teams import TeamsAlertSink
from cqrs_dagster.defs.lag_checks import build_freshness_lag_check
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import READ_MODELS
from cqrs_dagster.projections.status import projection_lag
from cqrs_dagster.settings import Settings
from cqrs_dagster_tests.alerts.receiver import Receiver, running_receiver
from cqrs_dagster_tests.defs.seed import run_commands

ORDERS = dg.AssetKey("orders")
LAG_SOURCE = "check:orders/orders_freshness_lag"
# Read-model alerts are grouped into one incident (cqrs_dagster/alerts/incidents.py).
INCIDENT = "incident:read_models"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as rec:
        yield rec


@pytest.fixture
def webhook(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    """Alerts go to the local receiver through the generic webhook sink, fast retries."""
    monkeypatch.setenv("CQRS_ALERT_SINK", "webhook")
    monkeypatch.setenv("CQRS_ALERT_WEBHOOK_URL", receiver.url + "/alerts")
    monkeypatch.setenv("CQRS_ALERT_RETRY_BACKOFF_SECONDS", "0.01")
    return receiver


class Ticker:
    """Evaluates the alert sensor tick after tick, carrying its cursor like the daemon does."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, platform: Any) -> None:
        self.defs, self.instance, self.platform = defs, instance, platform
        self.cursor: str | None = None
        self.sensor = defs.resolve_sensor_def(SENSOR_NAME)

    def tick(self) -> str:
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={"platform": self.platform},
            definitions=self.defs,
        ) as context:
            result = self.sensor(context)
            assert isinstance(result, dg.SkipReason)
            self.cursor = context.cursor
        return result.skip_message or ""


def customer(n: int) -> dict[str, Any]:
    return {"type": "RegisterCustomer", "customerId": f"c-{n}", "name": f"C {n}", "email": "c@x.io"}


def lag_defs(platform: PlatformResource, warn: float, error: float) -> dg.Definitions:
    check = build_freshness_lag_check("orders", warn, error)
    return dg.Definitions(
        assets=[dg.AssetSpec(ORDERS)],
        asset_checks=[check],
        jobs=[dg.define_asset_job("lag_check", selection=dg.AssetSelection.checks(check))],
        sensors=[build_alerts_sensor()],
        resources={"platform": platform},
    )


def levels(bodies: list[Any]) -> list[tuple[str, str | None, str]]:
    return [(b["level"], b["previousLevel"], b["source"]) for b in bodies]


def test_stale_read_model_gives_one_warn_one_error_one_recovery(
    settings: Settings, platform: PlatformResource, instance: dg.DagsterInstance, webhook: Receiver
) -> None:
    """orders falls behind the bus (events enqueued >= 50 ms apart, nothing projected), so its
    lag is at least 50 ms whichever way lag is measured (bus head vs applied, or the oldest
    unapplied event's age) and below an hour. The real check runs in Dagster runs with thresholds
    that make that lag a WARN (warn 1 ms, error 1 h), then an ERROR (error 10 ms, the thresholds an
    operator tightens); catching up makes the lag 0 and the check pass."""
    run_commands(settings, [customer(1)])
    time.sleep(0.05)
    run_commands(settings, [customer(2)])
    lenient = lag_defs(platform, warn=0.001, error=3600.0)
    strict = lag_defs(platform, warn=0.001, error=0.01)
    sensor = Ticker(lenient, instance, platform)

    assert "0 new alert(s)" in sensor.tick()  # no evaluation yet: nothing to say
    assert lenient.resolve_job_def("lag_check").execute_in_process(instance=instance).success
    sensor.tick()
    sensor.tick()  # unchanged: nothing more
    assert levels(webhook.delivered()) == [("WARN", None, INCIDENT)]

    run_commands(settings, [customer(3)])  # still behind, now judged by the strict thresholds
    assert strict.resolve_job_def("lag_check").execute_in_process(instance=instance).success
    sensor.tick()
    sensor.tick()

    with platform.bus() as bus:
        catch_up(StepContext(platform.tables(), "catch-up"), bus, max_events=1_000)
    assert strict.resolve_job_def("lag_check").execute_in_process(instance=instance).success
    sensor.tick()
    sensor.tick()

    bodies = webhook.delivered()
    assert levels(bodies) == [
        ("WARN", None, INCIDENT),
        ("ERROR", "WARN", INCIDENT),
        ("OK", "ERROR", INCIDENT),
    ]
    assert [b["recovery"] for b in bodies] == [False, False, True]
    assert bodies[1]["metadata"]["lag_seconds"] >= 0.05
    assert bodies[1]["metadata"]["events_behind"] == 3
    assert bodies[2]["metadata"]["lag_seconds"] == 0.0
    assert bodies[2]["title"] == "RECOVERED: read models healthy again (orders)"
    assert "RECOVERED: asset check orders_freshness_lag on orders" in bodies[2]["text"]
    assert bodies[0]["metadata"]["read_models"] == ["orders"] and "cause" in bodies[0]["metadata"]
    assert webhook.attempts() == 3


def test_lag_growing_with_the_clock_goes_warn_then_error_then_recovers(
    settings: Settings, platform: PlatformResource, instance: dg.DagsterInstance, webhook: Receiver
) -> None:
    """One set of thresholds (WARN > 1 s, ERROR > 8 s) and a projection that simply stops: the
    oldest unapplied event keeps ageing, so the same check first WARNs, later ERRORs, and passes
    once the projection catches up: exactly three alerts at the receiver."""
    run_commands(settings, [customer(1), customer(2)])
    defs = lag_defs(platform, warn=1.0, error=8.0)
    job = defs.resolve_job_def("lag_check")
    sensor = Ticker(defs, instance, platform)

    def lag() -> float:
        with platform.bus() as bus:
            return projection_lag(bus, platform.tables(), "orders").lag_seconds

    deadline = time.monotonic() + 30
    while lag() <= 1.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.execute_in_process(instance=instance).success  # lag between 1 s and 8 s
    sensor.tick()
    while lag() <= 8.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.execute_in_process(instance=instance).success  # now above 8 s
    sensor.tick()
    with platform.bus() as bus:
        catch_up(StepContext(platform.tables(), "catch-up"), bus, max_events=1_000)
    assert job.execute_in_process(instance=instance).success
    sensor.tick()
    sensor.tick()

    bodies = webhook.delivered()
    assert levels(bodies) == [
        ("WARN", None, INCIDENT),
        ("ERROR", "WARN", INCIDENT),
        ("OK", "ERROR", INCIDENT),
    ]
    assert 1.0 < bodies[0]["metadata"]["lag_seconds"] <= 8.0
    assert bodies[1]["metadata"]["lag_seconds"] > 8.0
    assert bodies[2]["metadata"]["lag_seconds"] == 0.0


def test_freshness_state_changes_are_alerted_once_each(
    platform: PlatformResource, instance: dg.DagsterInstance, webhook: Receiver
) -> None:
    defs = dg.Definitions(sensors=[build_alerts_sensor()], resources={"platform": platform})
    sensor = Ticker(defs, instance, platform)
    steps = [("PASS", "UNKNOWN"), ("WARN", "PASS"), ("FAIL", "WARN"), ("PASS", "FAIL")]
    steps += [("UNKNOWN", "PASS")]  # says nothing: not a recovery, not a failure
    for new, previous in steps:
        record_freshness_state(instance, ORDERS, new, previous)
        sensor.tick()
        sensor.tick()
    assert levels(webhook.delivered()) == [
        ("WARN", None, INCIDENT),
        ("ERROR", "WARN", INCIDENT),
        ("OK", "ERROR", INCIDENT),
    ]


def quality_defs(platform: PlatformResource, *names: str) -> dg.Definitions:
    """The alert sensor in a code location that defines quality checks on orders."""

    def stub(name: str) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset=ORDERS, name=name)
        def _check() -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=True)

        return _check

    return dg.Definitions(
        assets=[dg.AssetSpec(ORDERS)],
        asset_checks=[stub(n) for n in names],
        sensors=[build_alerts_sensor()],
        resources={"platform": platform},
    )


def report_check(instance: dg.DagsterInstance, name: str, passed: bool) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=ORDERS,
            check_name=name,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows": 3},
        )
    )


def test_outage_is_retried_tick_survives_and_alerts_arrive_in_order_later(
    platform: PlatformResource, instance: dg.DagsterInstance, webhook: Receiver
) -> None:
    defs = quality_defs(platform, "orders_not_null")
    sensor = Ticker(defs, instance, platform)
    webhook.status = 500
    report_check(instance, "orders_not_null", passed=False)
    summary = sensor.tick()
    assert webhook.attempts() == 3  # CQRS_ALERT_RETRY_ATTEMPTS default
    assert "1 queued for the next tick" in summary and "HTTP 500" in summary

    report_check(instance, "orders_not_null", passed=True)  # recovered while the sink was down
    sensor.tick()
    assert webhook.attempts() == 6
    assert webhook.delivered() == []

    webhook.status = 200
    assert "delivered 2 via webhook" in sensor.tick()
    assert "delivered" not in sensor.tick()  # queue empty, nothing new
    assert levels(webhook.delivered()) == [
        ("ERROR", None, INCIDENT),
        ("OK", "ERROR", INCIDENT),
    ]
    assert webhook.attempts() == 8


def test_sink_settings_missing_keeps_alerts_queued(
    platform: PlatformResource, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CQRS_ALERT_SINK", "slack")  # no token, no channel
    defs = quality_defs(platform, "orders_unique_ids")
    sensor = Ticker(defs, instance, platform)
    report_check(instance, "orders_unique_ids", passed=False)
    summary = sensor.tick()
    assert "CQRS_ALERT_SLACK_TOKEN, CQRS_ALERT_SLACK_CHANNEL" in summary
    assert sensor.cursor is not None and '"pending":[{' in sensor.cursor


ALERT = Alert(
    source=LAG_SOURCE,
    level=Level.ERROR,
    previous_level=Level.WARN,
    title="ERROR: asset check orders_freshness_lag on orders",
    text="Asset check orders_freshness_lag on orders failed with severity ERROR.",
    occurred_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    metadata={"lag_seconds": 75.5},
)


def test_teams_sink_posts_an_adaptive_card(receiver: Receiver) -> None:
    sink = make_alert_sink(
        Settings(alert_sink="teams", alert_webhook_url=receiver.url + "/teams")  # type: ignore[arg-type]
    )
    assert isinstance(sink, RetryingSink) and isinstance(sink.inner, TeamsAlertSink)
    sink.send(ALERT)
    [request] = receiver.requests
    assert request.path == "/teams"
    assert request.body["type"] == "message"
    [attachment] = request.body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    title, text, facts = card["body"]
    assert (title["text"], title["color"]) == (ALERT.title, "Attention")
    assert text["text"] == ALERT.text
    assert {"title": "Source", "value": LAG_SOURCE} in facts["facts"]
    assert {"title": "lag_seconds", "value": "75.5"} in facts["facts"]


def test_slack_sink_posts_chat_post_message(receiver: Receiver) -> None:
    sink = make_alert_sink(
        Settings(
            alert_sink="slack",
            alert_slack_token="xoxb-test-token",  # type: ignore[arg-type]
            alert_slack_channel="#cqrs-alerts",
            alert_slack_base_url=receiver.url + "/api/",
        )
    )
    assert isinstance(sink, RetryingSink) and isinstance(sink.inner, SlackAlertSink)
    sink.send(ALERT)
    [request] = receiver.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["authorization"] == "Bearer xoxb-test-token"
    assert request.body["channel"] == "#cqrs-alerts"
    assert request.body["text"] == ALERT.title
    header, section, fields = request.body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": ALERT.title, "emoji": True},
    }
    assert section["text"]["text"] == f":rotating_light: {ALERT.text}"
    assert {"type": "mrkdwn", "text": "*lag_seconds*\n75.5"} in fields["fields"]


def test_slack_not_ok_answer_is_retried_and_raises(receiver: Receiver) -> None:
    receiver.status = 500
    sink = make_alert_sink(
        Settings(
            alert_sink="slack",
            alert_slack_token="xoxb-t",  # type: ignore[arg-type]
            alert_slack_channel="#a",
            alert_slack_base_url=receiver.url,
            alert_retry_backoff_seconds=0,
        )
    )
    with pytest.raises(Exception, match=r"slack sink could not deliver .* after 3 attempts"):
        sink.send(ALERT)
    assert receiver.attempts() == 3


def test_the_code_location_runs_the_alert_sensor_over_every_read_model_check() -> None:
    from cqrs_dagster.definitions import defs
    from cqrs_dagster.defs.alerting.sensor import watched_check_keys

    repo = defs().get_repository_def()
    sensor = repo.get_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 15
    watched = set(watched_check_keys(repo))
    for table in READ_MODELS:
        assert dg.AssetCheckKey(dg.AssetKey(table), f"{table}_freshness_lag") in watched
    on_read_models = {
        k for k in repo.asset_checks_defs_by_key if k.asset_key.path[0] in READ_MODELS
    }
    assert on_read_models <= watched
