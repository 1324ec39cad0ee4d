"""cqrs_events_sensor against a seeded local bus, per-batch mode: requests runs only when behind
and idle."""

from __future__ import annotations

import dagster as dg
import pytest

from cqrs_dagster.defs.names import PROJECTION_JOB
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.defs.sensors import build_events_sensor
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus

SENSOR = build_events_sensor(5)


@pytest.fixture(autouse=True)
def per_batch_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests cover the per-batch mode (follow mode, the default: test_follow_sensor.py)."""
    monkeypatch.setenv("CQRS_PROJECTION_FOLLOW_SECONDS", "0")


def tick(instance: dg.DagsterInstance, platform: PlatformResource) -> object:
    with dg.build_sensor_context(instance=instance, resources={"platform": platform}) as ctx:
        return SENSOR(ctx)


def recent_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> None:
    instance.add_run(dg.DagsterRun(job_name=PROJECTION_JOB, run_id="recent-run", status=status))


def test_empty_bus_with_a_recent_run_skips(
    instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    recent_run(instance, dg.DagsterRunStatus.SUCCESS)
    result = tick(instance, platform)
    assert isinstance(result, dg.SkipReason)


def test_heartbeat_run_when_no_projection_ran_within_the_period(
    instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    result = tick(instance, platform)
    assert isinstance(result, dg.RunRequest)
    assert result.run_key is not None and result.run_key.startswith("heartbeat=")
    assert result.tags["cqrs/reason"] == "heartbeat"
    no_heartbeat = build_events_sensor(5, heartbeat_minutes=0)
    with dg.build_sensor_context(instance=instance, resources={"platform": platform}) as ctx:
        assert isinstance(no_heartbeat(ctx), dg.SkipReason)


def test_new_events_request_a_run_keyed_by_bus_heads(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    result = tick(instance, platform)
    assert isinstance(result, dg.RunRequest)
    bus = make_event_bus(seeded)
    heads = ",".join(str(p.last_sequence_number) for p in bus.partitions_info())
    bus.close()
    assert result.run_key is not None and result.run_key.startswith(f"heads={heads};")
    # Same positions, same key: Dagster dedupes a repeated tick.
    again = tick(instance, platform)
    assert isinstance(again, dg.RunRequest) and again.run_key == result.run_key


def test_caught_up_read_models_skip(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    bus = make_event_bus(seeded)
    catch_up(StepContext(platform.tables(), "test"), bus, max_events=10_000)
    bus.close()
    recent_run(instance, dg.DagsterRunStatus.SUCCESS)
    result = tick(instance, platform)
    assert isinstance(result, dg.SkipReason)
    assert "at the bus heads" in str(result.skip_message)


def test_no_second_run_while_one_is_in_flight(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    instance.add_run(
        dg.DagsterRun(
            job_name=PROJECTION_JOB, run_id="inflight-run", status=dg.DagsterRunStatus.STARTED
        )
    )
    result = tick(instance, platform)
    assert isinstance(result, dg.SkipReason)
    assert "inflight-run" in str(result.skip_message)


def test_failed_run_at_same_positions_is_retried_with_a_new_key(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    first = tick(instance, platform)
    assert isinstance(first, dg.RunRequest) and first.run_key
    instance.add_run(
        dg.DagsterRun(
            job_name=PROJECTION_JOB,
            run_id="failed-run-0001",
            status=dg.DagsterRunStatus.FAILURE,
            tags={"dagster/run_key": first.run_key},
        )
    )
    retry = tick(instance, platform)
    assert isinstance(retry, dg.RunRequest)
    assert retry.run_key == f"{first.run_key};retry=failed-r"
