"""The Dagster layer of rebuilds: the ``rebuild_read_model`` job switches a read model to an
equal rebuild and fails (nothing switched) on a corrupted table unless forced; the replay audit
checks pass on healthy tables and fail on a crafted difference and are left out of the
projection job; the schedule is daily, UTC and
running by default."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from deltalake import DeltaTable

import cqrs_dagster
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.projections import schemas
from cqrs_dagster.settings import Settings


def all_defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(cqrs_dagster.__file__).parent)


def project(defs: dg.Definitions, instance: dg.DagsterInstance, platform: PlatformResource) -> None:
    job = defs.resolve_job_def("project_read_models")
    result = job.execute_in_process(instance=instance, resources={"platform": platform})
    assert result.success
    checks = {e.check_name for e in result.get_asset_check_evaluations()}
    assert checks and not {n for n in checks if n.endswith("_replay_audit")}  # daily, not per run


def run_rebuild(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    table: str,
    force: bool = False,
) -> dg.ExecuteInJobResult:
    job = defs.resolve_job_def("rebuild_read_model")
    return job.execute_in_process(
        instance=instance,
        resources={"platform": platform},
        run_config={"ops": {"rebuild_table": {"config": {"table": table, "force": force}}}},
        raise_on_error=False,
    )


def audits(
    defs: dg.Definitions, instance: dg.DagsterInstance, platform: PlatformResource
) -> dict[str, dg.AssetCheckEvaluation]:
    job = defs.resolve_job_def("replay_audit")
    result = job.execute_in_process(
        instance=instance, resources={"platform": platform}, raise_on_error=False
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def corrupt(platform: PlatformResource) -> None:
    table = platform.tables().open(schemas.ORDERS)
    assert table is not None
    first = sorted(table.to_pyarrow_table()["order_id"].to_pylist())[0]
    table.update(predicate=f"order_id = '{first}'", updates={"status": "'Bogus'"})


def test_rebuild_job_switches_to_an_equal_rebuild(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    defs = all_defs()
    project(defs, instance, platform)
    tables = platform.tables()
    before = tables.open(schemas.ORDERS).to_pyarrow_table().sort_by("order_id")
    result = run_rebuild(defs, instance, platform, schemas.ORDERS)
    assert result.success
    live = DeltaTable(tables.uri(schemas.ORDERS))  # the path readers know
    assert live.to_pyarrow_table().sort_by("order_id") == before
    observed = result.asset_observations_for_node("rebuild_table")
    assert observed[-1].metadata["version"].value == live.version()
    assert live.history(1)[0]["cqrs.operation"] == "rebuild_swap"
    assert observed[-1].metadata["differing_keys"].value == 0
    project(defs, instance, platform)  # the projection goes on against the new table


def test_rebuild_job_refuses_a_corrupted_table_unless_forced(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    defs = all_defs()
    project(defs, instance, platform)
    corrupt(platform)
    refused = run_rebuild(defs, instance, platform, schemas.ORDERS)
    assert not refused.success
    failure = refused.failure_data_for_node("rebuild_table")
    assert failure is not None and "differs from live in 1 key(s)" in str(failure.error)
    history = DeltaTable(platform.tables().uri(schemas.ORDERS)).history()
    assert all(e.get("cqrs.operation") != "rebuild_swap" for e in history)
    forced = run_rebuild(defs, instance, platform, schemas.ORDERS, force=True)
    assert forced.success
    statuses = platform.tables().open(schemas.ORDERS).to_pyarrow_table()["status"].to_pylist()
    assert "Bogus" not in statuses


def test_replay_audit_checks_pass_then_catch_a_crafted_difference(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    defs = all_defs()
    project(defs, instance, platform)
    healthy = audits(defs, instance, platform)
    assert set(healthy) == {"orders_replay_audit", "customers_replay_audit"}
    assert all(e.passed for e in healthy.values())
    corrupt(platform)
    found = audits(defs, instance, platform)
    assert not found["orders_replay_audit"].passed
    assert found["orders_replay_audit"].metadata["differing_keys"].value == 1
    assert found["customers_replay_audit"].passed
    scratch = Path(platform.tables().root) / "_audit"
    assert not scratch.exists() or list(scratch.iterdir()) == []


def test_replay_audit_schedule_is_daily_utc_and_running() -> None:
    schedule = all_defs().resolve_schedule_def("replay_audit_schedule")
    assert schedule.job_name == "replay_audit"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "30 4 * * *"
