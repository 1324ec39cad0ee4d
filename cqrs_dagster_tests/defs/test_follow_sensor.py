"""cqrs_events_sensor in follow mode: requests follow_read_models when CQRS_PROJECTION_FOLLOW_SECONDS
is on (the asset job otherwise), and never while a run of either projection job is in flight."""

from __future__ import annotations

import dagster as dg
import pytest

from cqrs_dagster.defs.names import FOLLOW_JOB, IN_FLIGHT, PROJECTION_JOB
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.defs.sensors import build_events_sensor
from cqrs_dagster.settings import Settings

SENSOR = build_events_sensor(5)
# A QUEUED run cannot be added without a remote job origin; the other in-flight states can.
ADDABLE_IN_FLIGHT = [s for s in IN_FLIGHT if s is not dg.DagsterRunStatus.QUEUED]


def tick(instance: dg.DagsterInstance, platform: PlatformResource) -> object:
    with dg.build_sensor_context(instance=instance, resources={"platform": platform}) as ctx:
        return SENSOR(ctx)


@pytest.mark.parametrize(("follow", "job"), [("0", PROJECTION_JOB), ("600", FOLLOW_JOB)])
def test_sensor_requests_the_job_of_the_mode(
    seeded: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
    follow: str,
    job: str,
) -> None:
    monkeypatch.setenv("CQRS_PROJECTION_FOLLOW_SECONDS", follow)
    result = tick(instance, platform)
    assert isinstance(result, dg.RunRequest)
    assert result.job_name == job


def test_heartbeat_in_follow_mode_requests_the_follow_job(
    instance: dg.DagsterInstance, platform: PlatformResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CQRS_PROJECTION_FOLLOW_SECONDS", "600")
    result = tick(instance, platform)
    assert isinstance(result, dg.RunRequest) and result.job_name == FOLLOW_JOB
    assert result.tags["cqrs/reason"] == "heartbeat"


@pytest.mark.parametrize("follow", ["0", "600"])
@pytest.mark.parametrize("running_job", [PROJECTION_JOB, FOLLOW_JOB])
@pytest.mark.parametrize("status", ADDABLE_IN_FLIGHT)
def test_no_run_while_either_projection_job_is_in_flight(
    seeded: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
    follow: str,
    running_job: str,
    status: dg.DagsterRunStatus,
) -> None:
    monkeypatch.setenv("CQRS_PROJECTION_FOLLOW_SECONDS", follow)
    instance.add_run(dg.DagsterRun(job_name=running_job, run_id="inflight-run", status=status))
    result = tick(instance, platform)
    assert isinstance(result, dg.SkipReason)
    assert "inflight-run" in str(result.skip_message)


def test_a_recent_follow_run_counts_for_the_heartbeat(
    instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    instance.add_run(
        dg.DagsterRun(job_name=FOLLOW_JOB, run_id="follow-run", status=dg.DagsterRunStatus.SUCCESS)
    )
    assert isinstance(tick(instance, platform), dg.SkipReason)


def test_failed_follow_run_at_same_positions_is_retried_with_a_new_key(
    seeded: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CQRS_PROJECTION_FOLLOW_SECONDS", "600")
    first = tick(instance, platform)
    assert isinstance(first, dg.RunRequest) and first.run_key
    assert first.run_key.startswith("follow;heads=")
    instance.add_run(
        dg.DagsterRun(
            job_name=FOLLOW_JOB,
            run_id="failed-follow",
            status=dg.DagsterRunStatus.FAILURE,
            tags={"dagster/run_key": first.run_key},
        )
    )
    retry = tick(instance, platform)
    assert isinstance(retry, dg.RunRequest)
    assert retry.run_key == f"{first.run_key};retry=failed-f"
