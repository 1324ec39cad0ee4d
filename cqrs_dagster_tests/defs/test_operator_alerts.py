"""Alerts an operator can act on (issue 13 §5): one alert per incident naming the read models and
the likely cause, then one recovery; failed runs of every job; failing sensor ticks; the event
sensor's backoff. Delivered through the JSONL sink (CQRS_ALERT_SINK=log)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    TickData,
    TickStatus,
)
from dagster_shared.error import SerializableErrorInfo

from cqrs_dagster.alerts.incidents import INCIDENT_SOURCE, group_read_model_alerts
from cqrs_dagster.alerts.model import Level, Observation, transitions
from cqrs_dagster.defs.alerting.dagster_state import record_freshness_state
from cqrs_dagster.defs.alerting.runs import run_failure_alerts_sensor
from cqrs_dagster.defs.alerting.sensor import build_alerts_sensor, likely_cause
from cqrs_dagster.defs.names import PROJECTION_JOB, WRITER_TAG
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.defs.sensors import FAILURES_BEFORE_BACKOFF
from cqrs_dagster.defs.sensors import SENSOR_NAME as EVENTS_SENSOR
from cqrs_dagster.projections import schemas
from cqrs_dagster.settings import Settings

ALERTS = build_alerts_sensor()


@pytest.fixture
def log_sink(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Path:
    monkeypatch.setenv("CQRS_ALERT_SINK", "log")
    return settings.alert_log_path


def delivered(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class AlertTicks:
    def __init__(self, instance: dg.DagsterInstance, platform: PlatformResource) -> None:
        self.instance, self.platform, self.cursor = instance, platform, None

    def tick(self) -> str:
        with dg.build_sensor_context(
            instance=self.instance, resources={"platform": self.platform}, cursor=self.cursor
        ) as ctx:
            result = ALERTS(ctx)
            self.cursor = ctx.cursor
        assert isinstance(result, dg.SkipReason)
        return str(result.skip_message)


def test_grouping_is_pure_one_alert_then_one_recovery() -> None:
    now = datetime.now(UTC)

    def obs(model: str, level: Level) -> Observation:
        return Observation(f"freshness:{model}", level, f"freshness of {model}", "t", now)

    models = list(schemas.READ_MODELS)
    alerts, levels = transitions({}, [obs(m, Level.ERROR) for m in models])
    assert len(alerts) == len(models)
    grouped = group_read_model_alerts(alerts, {}, levels, "sensor: stopped")
    assert [a.source for a in grouped] == [INCIDENT_SOURCE]
    assert grouped[0].metadata["read_models"] == sorted(models)
    assert "Likely cause: sensor: stopped" in grouped[0].text
    # A partial recovery says nothing; the last one recovers the incident once.
    half, levels2 = transitions(levels, [obs(models[0], Level.OK)])
    assert group_read_model_alerts(half, levels, levels2, "x") == []
    rest, levels3 = transitions(levels2, [obs(m, Level.OK) for m in models[1:]])
    recovered = group_read_model_alerts(rest, levels2, levels3, "x")
    assert [(a.level, a.previous_level) for a in recovered] == [(Level.OK, Level.ERROR)]


def test_stalled_pipeline_gives_one_alert_naming_models_and_cause_then_one_recovery(
    instance: dg.DagsterInstance, platform: PlatformResource, log_sink: Path
) -> None:
    # The cause: projection runs keep failing.
    for i in range(2):
        instance.add_run(
            dg.DagsterRun(
                job_name=PROJECTION_JOB, run_id=f"f{i}", status=dg.DagsterRunStatus.FAILURE
            )
        )
    ticks = AlertTicks(instance, platform)
    ticks.tick()
    for model in schemas.READ_MODELS:
        record_freshness_state(instance, dg.AssetKey(model), "FAIL", "PASS")
    ticks.tick()
    ticks.tick()
    bodies = [b for b in delivered(log_sink) if b["source"] == INCIDENT_SOURCE]
    assert len(bodies) == 1, bodies
    assert bodies[0]["level"] == "ERROR"
    assert bodies[0]["metadata"]["read_models"] == sorted(schemas.READ_MODELS)
    assert bodies[0]["metadata"]["cause"].startswith("failing run: 2 projection run(s)")
    for model in schemas.READ_MODELS:
        record_freshness_state(instance, dg.AssetKey(model), "PASS", "FAIL")
    ticks.tick()
    bodies = [b for b in delivered(log_sink) if b["source"] == INCIDENT_SOURCE]
    assert [(b["level"], b["recovery"]) for b in bodies] == [("ERROR", False), ("OK", True)]


def sensor_state(instance: dg.DagsterInstance, name: str, running: bool = True) -> InstigatorState:
    origin = RemoteInstigatorOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("cqrs_dagster"), "__repository__"),
        name,
    )
    status = InstigatorStatus.RUNNING if running else InstigatorStatus.STOPPED
    state = InstigatorState(origin, InstigatorType.SENSOR, status)
    instance.add_instigator_state(state)
    return state


def add_tick(
    instance: dg.DagsterInstance, state: InstigatorState, status: TickStatus, **kw: Any
) -> None:
    instance.create_tick(
        TickData(
            instigator_origin_id=state.instigator_origin_id,
            instigator_name=state.name,
            instigator_type=InstigatorType.SENSOR,
            status=status,
            timestamp=datetime.now(UTC).timestamp(),
            selector_id=state.selector_id,
            **kw,
        )
    )


def test_failing_sensor_tick_is_alerted_and_recovers(
    instance: dg.DagsterInstance, platform: PlatformResource, log_sink: Path
) -> None:
    state = sensor_state(instance, EVENTS_SENSOR)
    error = SerializableErrorInfo("ConnectionError: bus unreachable\n", [], "ConnectionError")
    add_tick(instance, state, TickStatus.FAILURE, error=error)
    ticks = AlertTicks(instance, platform)
    ticks.tick()
    assert likely_cause(instance).startswith(f"sensor: {EVENTS_SENSOR} ticks fail")
    add_tick(
        instance, state, TickStatus.SKIPPED, skip_reason="read models are at the bus heads [1]"
    )
    ticks.tick()
    bodies = [b for b in delivered(log_sink) if b["source"] == f"sensor:{EVENTS_SENSOR}"]
    assert [(b["level"], b["recovery"]) for b in bodies] == [("ERROR", False), ("OK", True)]
    assert "bus unreachable" in bodies[0]["text"]
    assert likely_cause(instance).startswith("relay:")


def test_stopped_event_sensor_is_the_likely_cause(instance: dg.DagsterInstance) -> None:
    state = sensor_state(instance, EVENTS_SENSOR, running=False)
    add_tick(instance, state, TickStatus.SKIPPED, skip_reason="x")
    assert likely_cause(instance) == f"sensor: {EVENTS_SENSOR} is stopped"


def test_projection_backoff_is_alerted(
    instance: dg.DagsterInstance, platform: PlatformResource, log_sink: Path
) -> None:
    ticks = AlertTicks(instance, platform)
    for i in range(FAILURES_BEFORE_BACKOFF):
        instance.add_run(
            dg.DagsterRun(
                job_name=PROJECTION_JOB, run_id=f"f{i}", status=dg.DagsterRunStatus.FAILURE
            )
        )
    ticks.tick()
    instance.add_run(
        dg.DagsterRun(job_name=PROJECTION_JOB, run_id="ok", status=dg.DagsterRunStatus.SUCCESS)
    )
    ticks.tick()
    bodies = [b for b in delivered(log_sink) if b["source"] == "projection:backoff"]
    assert [(b["level"], b["recovery"]) for b in bodies] == [("ERROR", False), ("OK", True)]
    assert f"{FAILURES_BEFORE_BACKOFF} projection runs failed in a row" in bodies[0]["text"]


@pytest.mark.parametrize("kind", ["projection", "maintenance", "rebuild", "redrive", None])
def test_failed_run_of_any_job_is_alerted(
    kind: str | None, instance: dg.DagsterInstance, platform: PlatformResource, log_sink: Path
) -> None:
    @dg.op
    def boom() -> None:
        raise RuntimeError(f"{kind} broke")

    @dg.job(name=f"{kind or 'audit'}_job", tags={WRITER_TAG: kind} if kind else {})
    def failing() -> None:
        boom()

    result = failing.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    defs = dg.Definitions(jobs=[failing], sensors=[run_failure_alerts_sensor])
    with dg.build_run_status_sensor_context(
        sensor_name=run_failure_alerts_sensor.name,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"platform": platform},
        repository_def=defs.get_repository_def(),
    ) as status_ctx:
        run_failure_alerts_sensor(status_ctx.for_run_failure())
    bodies = delivered(log_sink)
    assert len(bodies) == 1
    assert bodies[0]["source"] == f"run:{kind or 'audit'}_job"
    assert bodies[0]["metadata"]["run_id"] == result.run_id
    assert result.run_id in bodies[0]["text"]
