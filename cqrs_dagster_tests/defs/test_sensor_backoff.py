"""cqrs_events_sensor backs off after consecutive failed projection runs (issue 13 §5)."""

from __future__ import annotations

import dagster as dg
import pytest

from cqrs_dagster.defs.names import PROJECTION_JOB
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.defs.sensors import (
    BACKOFF_CAP_SECONDS,
    FAILURES_BEFORE_BACKOFF,
    backoff_seconds,
    build_events_sensor,
    failure_streak,
)
from cqrs_dagster.settings import Settings


@pytest.fixture(autouse=True)
def per_batch_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQRS_PROJECTION_FOLLOW_SECONDS", "0")


def add_runs(instance: dg.DagsterInstance, *statuses: dg.DagsterRunStatus) -> None:
    """Runs oldest first."""
    for i, status in enumerate(statuses):
        instance.add_run(
            dg.DagsterRun(job_name=PROJECTION_JOB, run_id=f"run-{i:02d}", status=status)
        )


def tick(instance: dg.DagsterInstance, platform: PlatformResource, **kw: float) -> object:
    sensor = build_events_sensor(5, **kw)  # type: ignore[arg-type]
    with dg.build_sensor_context(instance=instance, resources={"platform": platform}) as ctx:
        return sensor(ctx)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert backoff_seconds(FAILURES_BEFORE_BACKOFF - 1) == 0
    assert backoff_seconds(FAILURES_BEFORE_BACKOFF) == 60
    assert backoff_seconds(FAILURES_BEFORE_BACKOFF + 1) == 120
    assert backoff_seconds(FAILURES_BEFORE_BACKOFF + 40) == BACKOFF_CAP_SECONDS


def test_a_success_ends_the_streak(instance: dg.DagsterInstance) -> None:
    F, S = dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS
    add_runs(instance, F, F, F, S, F, F)
    streak = failure_streak(instance)
    assert streak.failures == 2 and streak.backoff_seconds == 0
    assert streak.last_run_id == "run-05"


def test_failures_below_the_threshold_still_request_a_run(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    add_runs(instance, *[dg.DagsterRunStatus.FAILURE] * (FAILURES_BEFORE_BACKOFF - 1))
    assert isinstance(tick(instance, platform), dg.RunRequest)


def test_consecutive_failures_skip_with_a_backoff_reason(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    add_runs(instance, *[dg.DagsterRunStatus.FAILURE] * FAILURES_BEFORE_BACKOFF)
    result = tick(instance, platform)
    assert isinstance(result, dg.SkipReason)
    message = str(result.skip_message)
    assert message.startswith(f"backoff: {FAILURES_BEFORE_BACKOFF} projection runs failed in a row")
    assert "run-02" in message and "next attempt in" in message
    # Once the backoff has elapsed (here: a zero base), the sensor requests a retry run.
    retry = tick(instance, platform, backoff_base_seconds=0.0)
    assert isinstance(retry, dg.RunRequest)


def test_backoff_is_visible_in_the_sensor_tick_history(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    """A real failing run of the job recorded by Dagster counts like any other."""
    add_runs(instance, *[dg.DagsterRunStatus.FAILURE] * (FAILURES_BEFORE_BACKOFF - 1))

    @dg.op
    def boom() -> None:
        raise RuntimeError("projection broke")

    @dg.job(name=PROJECTION_JOB)
    def failing() -> None:
        boom()

    assert not failing.execute_in_process(instance=instance, raise_on_error=False).success
    streak = failure_streak(instance)
    assert streak.failures == FAILURES_BEFORE_BACKOFF and streak.in_backoff(
        streak.last_failed_at or 0
    )
    assert isinstance(tick(instance, platform), dg.SkipReason)
