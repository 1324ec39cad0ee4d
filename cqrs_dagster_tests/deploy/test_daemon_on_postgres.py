"""End to end on the production instance file: ``dagster-daemon run`` (sensor daemon, queued-run
coordinator daemon, run launcher) over a real PostgreSQL server. Events on the local bus make the
event sensor request a projection run; the run is queued by the QueuedRunCoordinator, dequeued and
launched by the daemon into its own process, succeeds, and its records are read back from
PostgreSQL together with the sensor's ticks. Compute logs go to a local dir (see instance.py)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from cqrs_dagster.defs.alerting.runs import SENSOR_NAME as RUN_ALERTS_SENSOR
from cqrs_dagster.defs.alerting.sensor import SENSOR_NAME as ALERTS_SENSOR
from cqrs_dagster.defs.names import PROJECTION_JOB
from cqrs_dagster.defs.sensors import SENSOR_NAME
from cqrs_dagster.projections import schemas
from cqrs_dagster.settings import Settings
from cqrs_dagster_tests.defs.seed import seed_commands
from cqrs_dagster_tests.fixtures.procs import ROOT, start_group, stop_group

from .conftest import PostgresServer
from .instance import write_test_home

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    for name, value in postgres_server.env().items():
        monkeypatch.setenv(name, value)
    home = write_test_home(tmp_path / "dagster_home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.wipe()
    yield home


def _successful_projection_run(instance: dg.DagsterInstance) -> dg.RunRecord | None:
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=PROJECTION_JOB, statuses=[dg.DagsterRunStatus.SUCCESS])
    )
    return records[0] if records else None


def test_daemon_runs_sensor_queue_and_projection_on_postgres(
    settings: Settings, home: Path, tmp_path: Path
) -> None:
    seed_commands(settings, customers=2, orders_per_customer=1)
    env = {
        "DAGSTER_HOME": str(home),
        "CQRS_ENV": "local",
        "CQRS_DATA_DIR": str(settings.data_dir.resolve()),
        "CQRS_PROJECTION_FOLLOW_SECONDS": "0",  # per-batch runs: the run ends by itself
        "CQRS_SENSOR_INTERVAL_SECONDS": "2",
    }
    daemon = start_group(
        [
            str(Path(sys.executable).parent / "dagster-daemon"),
            "run",
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        tmp_path / "daemon.log",
        env=env,
    )
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 240
            record = None
            while time.monotonic() < deadline and record is None:
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                record = _successful_projection_run(instance)
                if record is None:
                    time.sleep(1)
            log = (tmp_path / "daemon.log").read_text()
            assert record is not None, f"no successful projection run; daemon log:\n{log[-4000:]}"
            run = record.dagster_run
            # Requested by the event sensor, queued by the QueuedRunCoordinator.
            assert run.tags.get("dagster/sensor_name") == SENSOR_NAME
            kinds = [
                e.dagster_event.event_type
                for e in instance.all_logs(run.run_id)
                if e.dagster_event is not None
            ]
            assert dg.DagsterEventType.RUN_ENQUEUED in kinds
            assert dg.DagsterEventType.RUN_SUCCESS in kinds
            assert dg.DagsterEventType.ASSET_MATERIALIZATION in kinds
            latest = instance.get_latest_materialization_event(dg.AssetKey(schemas.ORDERS))
            assert latest is not None and latest.run_id == run.run_id
            # The sensor's ticks are stored in PostgreSQL too.
            states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            sensor_state = next(s for s in states if s.name == SENSOR_NAME)
            ticks = instance.get_ticks(
                sensor_state.instigator_origin_id, sensor_state.selector_id, limit=50
            )
            assert any(t.status == TickStatus.SUCCESS and run.run_id in t.run_ids for t in ticks)
            # The alert sensors tick on the same instance (their state and ticks in PostgreSQL).
            for name in (ALERTS_SENSOR, RUN_ALERTS_SENSOR):
                deadline = time.monotonic() + 90
                finished: list[Any] = []
                while time.monotonic() < deadline and not finished:
                    finished = [
                        t
                        for s in instance.all_instigator_state(
                            instigator_type=InstigatorType.SENSOR
                        )
                        if s.name == name
                        for t in instance.get_ticks(s.instigator_origin_id, s.selector_id)
                        if t.status in (TickStatus.SUCCESS, TickStatus.SKIPPED)
                    ]
                    if not finished:
                        time.sleep(1)
                assert finished, f"{name} never ticked; daemon log:\n{log[-3000:]}"
    finally:
        stop_group(daemon)


def test_daemon_alerts_a_failing_pipeline_from_postgres(
    settings: Settings, home: Path, tmp_path: Path
) -> None:
    """A broken Delta root (a file where the folder should be) makes the pipeline fail under the
    daemon; the alert sensors, reading PostgreSQL, deliver the failure to the JSONL sink."""
    seed_commands(settings, customers=1, orders_per_customer=1)
    (settings.data_dir / "delta").write_text("not a folder")
    env = {
        "DAGSTER_HOME": str(home),
        "CQRS_ENV": "local",
        "CQRS_DATA_DIR": str(settings.data_dir.resolve()),
        "CQRS_PROJECTION_FOLLOW_SECONDS": "0",
        "CQRS_SENSOR_INTERVAL_SECONDS": "2",
        "CQRS_ALERT_SINK": "log",
    }
    daemon = start_group(
        [
            str(Path(sys.executable).parent / "dagster-daemon"),
            "run",
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        tmp_path / "daemon.log",
        env=env,
    )
    alerts = settings.data_dir / "alerts.jsonl"
    try:
        deadline = time.monotonic() + 120
        errors: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not errors:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            if alerts.exists():
                lines = [json.loads(x) for x in alerts.read_text().splitlines() if x.strip()]
                errors = [
                    a
                    for a in lines
                    if a["level"] == "ERROR" and a["source"].startswith(("run:", "sensor:"))
                ]
            if not errors:
                time.sleep(1)
        log = (tmp_path / "daemon.log").read_text()
        assert errors, f"no failure alert; daemon log:\n{log[-4000:]}"
    finally:
        stop_group(daemon)
