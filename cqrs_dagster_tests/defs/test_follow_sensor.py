"""cqrs_events_sensor in follow mode: requests follow_read_models when CQRS_PROJECTION_FOLLOW_SECONDS
is on (the asset job otherwise), and never while a run of either projection job is in flight but
for the handover: the next following run, shortly before the only one in flight reaches its cap."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from cqrs_dagster.defs.follow import FOLLOW_UNTIL_TAG, HANDOVER_TAG
from cqrs_dagster.defs.names import FOLLOW_JOB, IN_FLIGHT, PROJECTION_JOB
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.defs.sensors import (
    build_events_sensor,
    handover_due,
    handover_lead_seconds,
)
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


def following(run_id: str, until: float | None, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    tags = {} if until is None else {FOLLOW_UNTIL_TAG: f"{until:.3f}"}
    return dg.DagsterRun(job_name=FOLLOW_JOB, run_id=run_id, status=status, tags=tags)


def test_the_next_following_run_is_requested_shortly_before_the_cap(
    seeded: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A handover: the successor starts up while the run ends, and takes the writer pool then."""
    monkeypatch.setenv("CQRS_PROJECTION_FOLLOW_SECONDS", "600")
    lead = handover_lead_seconds(5)
    assert lead == 15.0 and handover_lead_seconds(60) == 180.0
    instance.add_run(following("far", time.time() + lead + 30, dg.DagsterRunStatus.STARTED))
    far = tick(instance, platform)
    assert isinstance(far, dg.SkipReason) and "far" in str(far.skip_message)

    instance.delete_run("far")
    instance.add_run(following("ending", time.time() + lead - 5, dg.DagsterRunStatus.STARTED))
    handover = tick(instance, platform)
    assert isinstance(handover, dg.RunRequest)
    assert handover.job_name == FOLLOW_JOB
    assert handover.run_key == "handover;ending"
    assert handover.tags == {"cqrs/reason": "handover", HANDOVER_TAG: "ending"}

    # Once the successor is in flight too, nothing more until one of them ends.
    instance.add_run(following("successor", None, dg.DagsterRunStatus.STARTED))
    both = tick(instance, platform)
    assert isinstance(both, dg.SkipReason)
    assert "ending" in str(both.skip_message) and "successor" in str(both.skip_message)


@pytest.mark.parametrize(
    ("run", "follow"),
    [
        # per-batch mode now: the run ends at its cap and the sensor starts what the mode says
        (following("r", 0.0, dg.DagsterRunStatus.STARTED), "0"),
        # not started yet, or not stamped (an older run): no handover
        (following("r", 0.0, dg.DagsterRunStatus.STARTING), "600"),
        (following("r", None, dg.DagsterRunStatus.STARTED), "600"),
        # a per-batch run is short: no handover
        (
            dg.DagsterRun(job_name=PROJECTION_JOB, run_id="r", status=dg.DagsterRunStatus.STARTED),
            "600",
        ),
    ],
)
def test_no_handover_but_from_a_started_stamped_following_run_in_follow_mode(
    seeded: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
    run: dg.DagsterRun,
    follow: str,
) -> None:
    monkeypatch.setenv("CQRS_PROJECTION_FOLLOW_SECONDS", follow)
    instance.add_run(run)
    result = tick(instance, platform)
    assert isinstance(result, dg.SkipReason) and "r is in flight" in str(result.skip_message)
    if follow != "0":  # per-batch mode: the run would do, but the sensor does not hand over
        assert handover_due([run], time.time(), 15.0) is None
