"""The production instance file (deploy/dagster.yaml) on a real PostgreSQL server: the event sensor
evaluated against it, a projection run executed on it, and the run and event records read back
from PostgreSQL. test_daemon_on_postgres.py runs the same through the daemon and the queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

import cqrs_dagster
from cqrs_dagster.defs.names import DELTA_WRITER_POOL, PROJECTION_JOB
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.defs.sensors import build_events_sensor
from cqrs_dagster.settings import Settings
from cqrs_dagster_tests.defs.seed import seed_commands

from .conftest import PostgresServer
from .instance import production_config, write_test_home


@pytest.fixture
def pg_instance(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    for name, value in postgres_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CQRS_PROJECTION_FOLLOW_SECONDS", "0")
    home = write_test_home(tmp_path / "dagster_home")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        instance.wipe()  # one server per module: each test starts from empty storage
        yield instance
    finally:
        instance.dispose()


def test_production_file_names_the_production_components() -> None:
    config = production_config()
    assert config["compute_logs"]["class"] == "AzureBlobComputeLogManager"
    assert config["compute_logs"]["module"] == "dagster_azure.blob.compute_log_manager"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    db = config["storage"]["postgres"]["postgres_db"]
    assert all("env" in db[k] for k in ("hostname", "port", "db_name", "username", "password"))


def test_instance_from_production_file_uses_postgres_queue_and_pool(
    pg_instance: dg.DagsterInstance,
) -> None:
    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(pg_instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(pg_instance.run_coordinator, QueuedRunCoordinator)
    assert pg_instance.get_concurrency_config().pool_config.default_pool_limit == 1
    # The pool a Delta writer claims gets limit 1 once a step asks for it.
    pg_instance.event_log_storage.initialize_concurrency_limit_to_default(DELTA_WRITER_POOL)
    info = pg_instance.event_log_storage.get_concurrency_info(DELTA_WRITER_POOL)
    assert info.slot_count == 1


def test_sensor_queue_and_projection_run_on_postgres(
    settings: Settings, pg_instance: dg.DagsterInstance
) -> None:
    seed_commands(settings, customers=2, orders_per_customer=2)
    platform = PlatformResource(data_dir=str(settings.data_dir), env="local")
    sensor = build_events_sensor(5)
    with dg.build_sensor_context(instance=pg_instance, resources={"platform": platform}) as ctx:
        request = sensor(ctx)
    assert isinstance(request, dg.RunRequest) and request.job_name == PROJECTION_JOB

    defs = dg.load_from_defs_folder(path_within_project=Path(cqrs_dagster.__file__).parent)
    job = defs.resolve_job_def(PROJECTION_JOB)

    # The projection run itself, recorded in PostgreSQL.
    result = job.execute_in_process(
        instance=pg_instance, resources={"platform": platform}, tags=request.tags
    )
    assert result.success
    stored = pg_instance.get_run_record_by_id(result.run_id)
    assert stored is not None and stored.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    events = pg_instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    materialized = {
        e.asset_materialization.asset_key.path[-1] for e in events if e.asset_materialization
    }
    assert {"raw_events", "orders", "customers"} <= materialized
    assert pg_instance.get_latest_materialization_event(dg.AssetKey("orders")) is not None

    # Next tick: caught up, and the run just recorded in PostgreSQL is recent: nothing to do.
    with dg.build_sensor_context(instance=pg_instance, resources={"platform": platform}) as ctx:
        again = sensor(ctx)
    assert isinstance(again, dg.SkipReason), again


def test_unmodified_compute_log_manager_loads_from_the_production_file(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file as shipped (only sslmode swapped) builds dagster-azure's AzureBlobComputeLogManager
    from the env vars; uploading to a real account is not verified (it cannot target Azurite)."""
    import yaml
    from dagster_azure.blob.compute_log_manager import AzureBlobComputeLogManager

    for name, value in postgres_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_ACCOUNT", "cqrslogs")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_CONTAINER", "dagster-logs")
    config = production_config()
    config["storage"]["postgres"]["postgres_db"]["params"] = {"sslmode": "disable"}
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        manager = instance.compute_log_manager
        assert isinstance(manager, AzureBlobComputeLogManager)
        assert manager._container == "dagster-logs"
        assert manager._storage_account == "cqrslogs"
    finally:
        instance.dispose()
