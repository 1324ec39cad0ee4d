"""Dagster-level repeats: the events sensor firing twice for the same bus positions, two
projection runs back to back for the same positions (the second applies nothing and commits
nothing), and a projection run that fails mid-way (one read model's step fails for real) and is
re-executed from failure by Dagster (``ReexecutionOptions.from_failure``), repeated per failing
step. The end state must pass the harness invariants."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.defs.sensors import build_events_sensor
from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_table_store

from .dagster_jobs import breakable_projection_job, run_config
from .harness import CommandModel, handle, local_settings, relay, summary, verify

PARTITIONS = 4  # what PlatformResource's settings give (CQRS_BUS_PARTITIONS default)
SENSOR = build_events_sensor(5, heartbeat_minutes=0)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def seeded(tmp_path: Path, seed: int, count: int = 30) -> Settings:
    settings = local_settings(tmp_path / "data", PARTITIONS)
    handle(settings, CommandModel(random.Random(seed)).batch(count))
    relay(settings)
    return settings


def versions(settings: Settings) -> dict[str, int | None]:
    tables = make_table_store(settings)
    out: dict[str, int | None] = {}
    for name in schemas.ALL_TABLES:
        table = tables.open(name)
        out[name] = None if table is None else table.version()
    return out


def applied(result: dg.ExecuteInJobResult, asset: str) -> int:
    events = result.asset_materializations_for_node(asset)
    value = events[-1].metadata["events_applied"].value
    assert isinstance(value, int)
    return value


def tick(instance: dg.DagsterInstance, platform: PlatformResource) -> object:
    with dg.build_sensor_context(instance=instance, resources={"platform": platform}) as context:
        return SENSOR(context)


@pytest.mark.parametrize("seed", [41, 42])
def test_sensor_twice_same_positions_then_back_to_back_runs(
    tmp_path: Path, instance: dg.DagsterInstance, seed: int
) -> None:
    settings = seeded(tmp_path, seed)
    platform = PlatformResource(data_dir=str(settings.data_dir), env="local")
    first, second = tick(instance, platform), tick(instance, platform)
    assert isinstance(first, dg.RunRequest) and isinstance(second, dg.RunRequest)
    assert first.run_key == second.run_key  # Dagster launches one run per (sensor, run_key)

    job = breakable_projection_job()
    config = run_config(settings.data_dir, tmp_path / "no-marker", "")
    one = job.execute_in_process(instance=instance, run_config=config, tags=first.tags)
    assert one.success and applied(one, schemas.RAW_EVENTS) > 0
    before = versions(settings)
    two = job.execute_in_process(instance=instance, run_config=config, tags=second.tags)
    assert two.success
    for asset in (schemas.RAW_EVENTS, schemas.ORDERS, schemas.CUSTOMERS):
        assert applied(two, asset) == 0
    assert versions(settings) == before  # the second run committed nothing at all
    assert isinstance(tick(instance, platform), dg.SkipReason)  # caught up
    verdict = verify(settings, tmp_path / "clean")
    verdict.assert_ok()
    summary(f"sensor_twice[{seed}]", faults=1, runs_survived=2, verdict=verdict)


@pytest.mark.parametrize(
    ("seed", "broken"),
    [
        (51, schemas.CUSTOMERS),
        (52, schemas.ORDER_SUMMARY),
        (53, schemas.DAILY_ORDER_METRICS),
        (54, schemas.ORDERS),
    ],
)
def test_failed_run_reexecuted_from_failure(
    tmp_path: Path, instance: dg.DagsterInstance, seed: int, broken: str
) -> None:
    settings = seeded(tmp_path, seed)
    marker = tmp_path / "blocker"
    marker.write_text("a file where a directory would have to be")
    job = dg.reconstructable(breakable_projection_job)
    config = run_config(settings.data_dir, marker, broken)

    failed = dg.execute_job(job, instance=instance, run_config=config)
    assert not failed.success
    failed_steps = {
        e.step_key for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE
    }
    assert failed_steps == {broken}
    tables = make_table_store(settings)
    raw_seq = txn(tables.open(schemas.RAW_EVENTS), seq_app_id(schemas.RAW_EVENTS))
    assert raw_seq > 0  # the steps before the failure committed
    assert tables.open(broken) is None

    marker.unlink()  # the fault is gone; Dagster re-executes the failed and skipped steps
    again = dg.execute_job(
        job,
        instance=instance,
        run_config=config,
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
    )
    assert again.success
    redone = {
        e.step_key for e in again.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS
    }
    assert broken in redone and schemas.RAW_EVENTS not in redone
    verdict = verify(settings, tmp_path / "clean")
    verdict.assert_ok()
    summary(f"dagster_reexecution[{broken}]", faults=1, runs_survived=1, verdict=verdict)
