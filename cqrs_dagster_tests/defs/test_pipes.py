"""The read models through Dagster Pipes (issue 12, item 6): ``dg.materialize`` of the
``pipes_read_models`` multi-asset launches ``python -m cqrs_dagster.pipes`` with dagster's
``PipesSubprocessClient``; the external process projects with the Spark engine on the session's
Sail server and reports one materialization per read model, with ``engine=spark``. Its tables
equal an in-process DuckDB pass over the same bus. A Spark server that is down fails the run,
and the failure names the server and the setting."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from cqrs_dagster.defs.pipes import pipes_read_models
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import RAW_EVENTS, READ_MODELS
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus, make_table_store
from cqrs_dagster_tests.faults.harness import normalized
from cqrs_dagster_tests.fixtures.procs import ROOT, free_port
from cqrs_dagster_tests.fixtures.sail import SailServer
from cqrs_dagster_tests.projections.scenario import new_tables


def pipes_env(settings: Settings, remote: str) -> dict[str, str]:
    return {
        "CQRS_ENV": "local",
        "CQRS_DATA_DIR": str(settings.data_dir),
        "CQRS_BUS_PARTITIONS": str(settings.bus_partitions),
        "CQRS_PROJECTION_ENGINE": "spark",
        "CQRS_SPARK_REMOTE": remote,
    }


def run_pipes(
    instance: dg.DagsterInstance, settings: Settings, remote: str
) -> dg.ExecuteInProcessResult:
    client = dg.PipesSubprocessClient(env=pipes_env(settings, remote), cwd=str(ROOT))
    return dg.materialize(
        [pipes_read_models()],
        instance=instance,
        resources={"pipes_subprocess_client": client},
        raise_on_error=False,
    )


def test_pipes_process_projects_every_read_model_on_spark(
    seeded: Settings, instance: dg.DagsterInstance, sail_server: SailServer, tmp_path: Path
) -> None:
    result = run_pipes(instance, seeded, sail_server.remote)
    assert result.success
    meta = {}
    for materialization in result.asset_materializations_for_node("pipes_read_models"):
        meta[materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in materialization.metadata.items()
        }
    assert sorted(meta) == sorted(READ_MODELS)
    assert {m["engine"] for m in meta.values()} == {"spark"}
    assert os.environ.get("CQRS_PROJECTION_ENGINE") != "spark"  # only the Pipes process was

    clean = new_tables(tmp_path / "duckdb")
    bus = make_event_bus(seeded)
    try:
        result_duck = catch_up(StepContext(clean, "clean"), bus, max_events=100_000)
    finally:
        bus.close()
    applied = sum(r.events_applied for r in result_duck.reports if r.table == RAW_EVENTS)
    assert meta[RAW_EVENTS]["events_applied"] == applied > 0
    assert normalized(make_table_store(seeded)) == normalized(clean)


def test_pipes_process_with_its_spark_server_down_fails_the_run_naming_it(
    seeded: Settings, instance: dg.DagsterInstance, capfd: pytest.CaptureFixture[str]
) -> None:
    remote = f"sc://127.0.0.1:{free_port()}"
    result = run_pipes(instance, seeded, remote)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    assert error is not None
    text = str(error) + capfd.readouterr().err
    assert remote in text and "CQRS_SPARK_REMOTE" in text, text[-3000:]
    assert not result.get_asset_materialization_events()
