"""The read-model assets with CQRS_PROJECTION_ENGINE=spark on a real Sail server: the Spark
session is dagster-pyspark's LazyPySparkResource (``spark.remote``), the tables equal the DuckDB
engine's, every materialization records ``engine=spark``, and a server that is down (or killed in
the middle of the run) fails the run with a message naming the server and the setting, committing
nothing partial; the next run applies every event exactly once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.projections import context as context_module
from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus
from cqrs_dagster_tests.defs.test_assets import materialization_meta, materialize, table
from cqrs_dagster_tests.faults.harness import normalized
from cqrs_dagster_tests.fixtures.procs import free_port
from cqrs_dagster_tests.fixtures.sail import SailServer, running_sail
from cqrs_dagster_tests.projections.scenario import new_tables


def tables_of(platform: PlatformResource) -> dict[str, pd.DataFrame]:
    key = {
        schemas.RAW_EVENTS: "event_id",
        schemas.ORDERS: "order_id",
        schemas.CUSTOMERS: "customer_id",
        schemas.ORDER_SUMMARY: "order_id",
        schemas.DAILY_ORDER_METRICS: "order_date",
    }
    drop = ["ingested_at"]  # the clock of the run
    out = {}
    for name, k in key.items():
        frame = table(platform, name).drop(columns=drop, errors="ignore")
        out[name] = frame.sort_values(k).reset_index(drop=True)
    return out


def test_spark_engine_builds_the_same_read_models_as_duckdb(
    seeded: Settings,
    instance: dg.DagsterInstance,
    sail_server: SailServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    duck = PlatformResource(data_dir=str(seeded.data_dir), env="local")
    assert materialize(instance, duck).success
    expected = tables_of(duck)

    monkeypatch.setenv("CQRS_PROJECTION_ENGINE", "spark")
    monkeypatch.setenv("CQRS_SPARK_REMOTE", sail_server.remote)
    spark = PlatformResource(
        data_dir=str(seeded.data_dir), env="local", delta_root=str(tmp_path / "spark-delta")
    )
    result = materialize(instance, spark)
    assert result.success
    for asset in schemas.READ_MODELS:
        assert materialization_meta(result, asset)["engine"] == "spark"
    got = tables_of(spark)
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(got[name], frame, obj=name)


def test_a_spark_server_that_is_down_fails_the_run_naming_it(
    seeded: Settings, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = f"sc://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CQRS_PROJECTION_ENGINE", "spark")
    monkeypatch.setenv("CQRS_SPARK_REMOTE", remote)
    platform = PlatformResource(data_dir=str(seeded.data_dir), env="local")
    defs = dg.load_from_defs_folder(
        path_within_project=Path(__import__("cqrs_dagster").__file__).parent
    )
    job = defs.resolve_job_def("project_read_models")
    result = job.execute_in_process(
        instance=instance, resources={"platform": platform}, raise_on_error=False
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    message = str(failures[0].step_failure_data.error)
    assert remote in message and "CQRS_SPARK_REMOTE" in message
    assert not Path(platform.tables().uri(schemas.RAW_EVENTS)).exists()


def test_a_spark_server_killed_mid_run_fails_the_run_and_the_next_run_applies_every_event_once(
    seeded: Settings, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Sail server's process group SIGKILLed inside the orders asset (after its MERGE, before
    its next Spark call): the run fails quickly with a message naming the server and the
    setting; a run on a new server then gives DuckDB's tables (every event exactly once)."""
    monkeypatch.setenv("CQRS_PROJECTION_ENGINE", "spark")
    platform = PlatformResource(data_dir=str(seeded.data_dir), env="local")
    killed: list[float] = []
    at_kill: dict[str, list[dict[str, object]]] = {}
    with running_sail(tmp_path / "sail-1") as (server, proc), pytest.MonkeyPatch.context() as mp:
        mp.setenv("CQRS_SPARK_REMOTE", server.remote)

        def kill_the_server(fault: object, point: str) -> None:
            if point == "orders.after_merge" and not killed:
                killed.append(time.monotonic())
                at_kill.update(normalized(platform.tables()))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

        mp.setattr(context_module, "hit", kill_the_server)
        failed = materialize_job(instance, platform)
        took = time.monotonic() - killed[0] if killed else 0.0
    assert killed and not failed.success
    messages = [str(e.step_failure_data.error) for e in failed.all_events if e.is_step_failure]
    assert messages and all(server.remote in m and "CQRS_SPARK_REMOTE" in m for m in messages)
    assert took < 30, f"the run ended {took:.0f} s after the kill"
    assert normalized(platform.tables()) == at_kill  # nothing committed once the server died
    assert platform.tables().open(schemas.ORDER_SUMMARY) is None

    with running_sail(tmp_path / "sail-2") as (restarted, _):
        monkeypatch.setenv("CQRS_SPARK_REMOTE", restarted.remote)
        rerun = materialize_job(instance, platform)
    assert rerun.success
    monkeypatch.delenv("CQRS_PROJECTION_ENGINE")
    clean = new_tables(tmp_path / "duckdb")
    bus = make_event_bus(seeded)
    try:
        catch_up(StepContext(clean, "clean"), bus, max_events=100_000)
    finally:
        bus.close()
    assert normalized(platform.tables()) == normalized(clean)


def materialize_job(
    instance: dg.DagsterInstance, platform: PlatformResource
) -> dg.ExecuteInJobResult:
    defs = dg.load_from_defs_folder(
        path_within_project=Path(__import__("cqrs_dagster").__file__).parent
    )
    return defs.resolve_job_def("project_read_models").execute_in_process(
        instance=instance, resources={"platform": platform}, raise_on_error=False
    )
