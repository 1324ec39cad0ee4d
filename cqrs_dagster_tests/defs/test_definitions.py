"""The Dagster project loads: asset graph, job executor, sensor defaults, checks, and `dg check defs`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

import cqrs_dagster
from cqrs_dagster.defs.names import PROJECTION_JOB
from cqrs_dagster.defs.sensors import SENSOR_NAME
from cqrs_dagster.projections import schemas

ROOT = Path(cqrs_dagster.__file__).resolve().parents[1]


def load() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(cqrs_dagster.__file__).parent)


def test_asset_graph_follows_the_data() -> None:
    graph = load().resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(schemas.READ_MODELS) <= keys

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("raw_events") == set()
    assert parents("orders") == {"raw_events"}
    assert parents("customers") == {"raw_events"}
    assert parents("order_summary") == {"orders", "customers"}
    assert parents("daily_order_metrics") == {"orders"}
    for name in schemas.READ_MODELS:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "read_models"
        assert node.description, f"{name} needs a business description"
        policy = node.freshness_policy
        assert type(policy).__name__ == "TimeWindowFreshnessPolicy", name
        assert policy is not None
        assert policy.fail_window.to_timedelta().total_seconds() == 7200  # type: ignore[attr-defined]
        assert policy.warn_window.to_timedelta().total_seconds() == 3600  # type: ignore[attr-defined]


def test_projection_job_is_in_process_and_sensor_runs_by_default() -> None:
    defs = load()
    job = defs.resolve_job_def(PROJECTION_JOB)
    assert job.executor_def.name == "in_process"
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    # One second under the configured 5 s, so the daemon's 5 s loop does not skip every other tick.
    assert sensor.minimum_interval_seconds == 4


def test_sensor_ticks_on_every_daemon_loop() -> None:
    """The daemon skips a sensor whose last tick is younger than its minimum interval; the tick
    timestamp trails the loop start, so the interval must sit below the loop period."""
    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME

    sensor = load().resolve_sensor_def(SENSOR_NAME)
    assert sensor.minimum_interval_seconds is not None
    assert sensor.minimum_interval_seconds < MIN_INTERVAL_LOOP_TIME


def test_every_read_model_has_a_freshness_lag_check() -> None:
    graph = load().resolve_asset_graph()
    names = {k.name for k in graph.asset_check_keys}
    assert {f"{m}_freshness_lag" for m in schemas.READ_MODELS} <= names


def test_dg_check_defs_passes(tmp_path: Path) -> None:
    dg_bin = Path(sys.executable).parent / "dg"
    env = {**os.environ, "CQRS_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(dg_bin), "check", "defs"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warn" not in done.stderr.lower() or "code_location_name" not in done.stderr


def test_schedules_resolve_to_their_jobs_in_utc_and_run_by_default() -> None:
    defs = load()
    expected = {
        "gold_recompute_schedule": ("recompute_gold", "15 2 * * *"),
        "read_model_quality_schedule": ("check_read_model_quality", "*/10 * * * *"),
        "table_maintenance_schedule": ("maintain_read_models", "45 3 * * *"),
        "replay_audit_schedule": ("replay_audit", None),
    }
    for name, (job_name, cron) in expected.items():
        schedule = defs.resolve_schedule_def(name)
        assert schedule.job_name == job_name
        assert defs.resolve_job_def(job_name) is not None
        if cron is not None:
            assert schedule.cron_schedule == cron
        assert schedule.execution_timezone == "UTC"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        assert schedule.description and "\n" not in schedule.description


def test_the_lag_checks_run_every_minute_in_a_sensor_tick_not_a_run() -> None:
    defs = load()
    sensor = defs.resolve_sensor_def("read_model_freshness_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 60
    assert not sensor.targets  # it requests no run: its ticks carry the evaluations
    schedules = {s.name for s in defs.schedules or []}
    assert "read_model_freshness_schedule" not in schedules


def test_freshness_check_job_selects_only_checks() -> None:
    job = load().resolve_job_def("check_read_model_freshness")
    in_job = {k.name for k in job.asset_layer.asset_graph.asset_check_keys}
    assert in_job == {f"{m}_freshness_lag" for m in schemas.READ_MODELS} | {"outbox_relay_lag"}
    assert not [n for n in job.graph.node_dict if n in {"raw_events", "orders"}]


def test_projection_runs_keep_blocking_checks_and_leave_audits_to_the_schedule() -> None:
    defs = load()
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def(PROJECTION_JOB)
    in_run = {k.name for k in job.asset_layer.asset_graph.asset_check_keys}
    assert {
        "raw_events_unique_event_ids",
        "raw_events_envelope_schema",
        "orders_unique_keys",
        "orders_amounts",
        "customers_unique_keys",
    } <= in_run
    # Lag checks run every minute in their own job, not on the latency path of every run.
    lag = {f"{m}_freshness_lag" for m in schemas.READ_MODELS} | {"outbox_relay_lag"}
    assert not in_run & lag
    audits = {"raw_events_version_sequences", "orders_reconcile_raw_events", "orders_replay_audit"}
    assert not in_run & audits
    assert audits <= {k.name for k in graph.asset_check_keys}
