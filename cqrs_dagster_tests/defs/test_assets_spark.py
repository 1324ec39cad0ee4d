"""The read-model assets with CQRS_PROJECTION_ENGINE=spark on a real Sail server: the Spark
session is dagster-pyspark's LazyPySparkResource (``spark.remote``), the tables equal the DuckDB
engine's, every materialization records ``engine=spark``, and a server that is down fails the run
with a message naming the server and the setting, committing nothing."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.projections import schemas
from cqrs_dagster.settings import Settings
from cqrs_dagster_tests.defs.test_assets import materialization_meta, materialize, table
from cqrs_dagster_tests.fixtures.procs import free_port
from cqrs_dagster_tests.fixtures.sail import SailServer


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
