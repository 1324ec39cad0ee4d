"""Snapshot of the Dagster graph: an accidental change to it fails with a readable diff.

The test loads the one ``Definitions`` (as ``cqrs_dagster.definitions`` does, with every ``CQRS_*``
variable unset so the defaults apply) and describes it as plain JSON: every asset (deps, group,
tags, kinds, pools, freshness policy, automation condition, check names), every asset check
(blocking flag, description, extra deps), every sensor, schedule and job (its selection resolved to
asset keys and check keys, executor, tags, run config; ops for op jobs). That text is compared with
the committed ``graph_snapshot.json``. Severity is not part of a check's definition (each result
sets it), so it is not in the snapshot.

If the change is intended, regenerate the file and review its diff:
``CQRS_UPDATE_SNAPSHOT=1 pytest cqrs_dagster_tests/defs/test_graph_snapshot.py``.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import cqrs_dagster

SNAPSHOT = Path(__file__).with_name("graph_snapshot.json")
UPDATE_ENV = "CQRS_UPDATE_SNAPSHOT"
REGENERATE = f"{UPDATE_ENV}=1 pytest cqrs_dagster_tests/defs/test_graph_snapshot.py"
HINT = f"if the change is intended, regenerate with {REGENERATE}"
IMPLICIT_JOB_PREFIX = "__"  # Dagster's hidden global asset job (``__ASSET_JOB``): every asset


def load() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(cqrs_dagster.__file__).parent)


def key_str(key: dg.AssetKey) -> str:
    return key.to_user_string()


def check_str(key: dg.AssetCheckKey) -> str:
    return f"{key_str(key.asset_key)}:{key.name}"


def seconds(delta: Any) -> float:
    """A (serializable) timedelta as seconds."""
    value = delta.to_timedelta() if hasattr(delta, "to_timedelta") else delta
    return float(value.total_seconds())


def describe_freshness(policy: Any) -> dict[str, Any] | None:
    if policy is None:
        return None
    kind = type(policy).__name__
    if kind == "TimeWindowFreshnessPolicy":
        return {
            "type": kind,
            "fail_window_seconds": seconds(policy.fail_window),
            "warn_window_seconds": None
            if policy.warn_window is None
            else seconds(policy.warn_window),
        }
    if kind == "CronFreshnessPolicy":
        return {
            "type": kind,
            "deadline_cron": policy.deadline_cron,
            "lower_bound_delta_seconds": seconds(policy.lower_bound_delta),
            "timezone": policy.timezone,
        }
    return {"type": kind, "repr": repr(policy)}


def describe_condition(condition: dg.AutomationCondition[Any] | None) -> str | None:
    if condition is None:
        return None
    return condition.get_label() or type(condition).__name__


def describe_assets(graph: Any) -> dict[str, Any]:
    assets: dict[str, Any] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assets[key_str(key)] = {
            "deps": sorted(key_str(k) for k in node.parent_keys),
            "group": node.group_name,
            "tags": dict(node.tags),
            "kinds": sorted(node.kinds),
            "pools": sorted(node.pools),
            "owners": sorted(node.owners),
            "freshness_policy": describe_freshness(node.freshness_policy),
            "automation_condition": describe_condition(node.automation_condition),
            "partitioned": node.is_partitioned,
            "execution_type": node.execution_type.value,
            "checks": sorted(k.name for k in node.check_keys),
        }
    return assets


def describe_checks(graph: Any) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        checks[check_str(key)] = {
            "asset": key_str(spec.asset_key),
            "name": spec.name,
            "blocking": spec.blocking,
            "description": spec.description,
            "additional_deps": sorted(key_str(d.asset_key) for d in spec.additional_deps),
            "automation_condition": describe_condition(spec.automation_condition),
        }
    return checks


def describe_jobs(defs: dg.Definitions) -> dict[str, Any]:
    jobs: dict[str, Any] = {}
    for job in defs.resolve_all_job_defs():
        if job.name.startswith(IMPLICIT_JOB_PREFIX):
            continue
        # What a run of the job executes: its asset layer's selected assets and the checks in the
        # job's own asset graph (a check-only job holds its target assets but executes none).
        layer = job.asset_layer
        assets = sorted(key_str(k) for k in layer.selected_asset_keys)
        checks = sorted(check_str(k) for k in layer.asset_graph.asset_check_keys)
        entry: dict[str, Any] = {
            "assets": assets,
            "checks": checks,
            "executor": job.executor_def.name,
            "tags": dict(job.tags),
            "run_config": job.run_config,
        }
        if dict(job.run_tags) != dict(job.tags):
            entry["run_tags"] = dict(job.run_tags)
        if not assets and not checks:
            entry["ops"] = sorted(job.graph.node_dict)
        jobs[job.name] = entry
    return jobs


def describe_sensors(defs: dg.Definitions) -> dict[str, Any]:
    sensors: dict[str, Any] = {}
    for name in sorted(s.name for s in defs.sensors or []):
        sensor = defs.resolve_sensor_def(name)
        sensors[name] = {
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
            "default_status": sensor.default_status.value,
            "sensor_type": sensor.sensor_type.value,
            "jobs": sorted(j.name for j in sensor.jobs) if sensor.has_jobs else [],
            "asset_selection": None
            if sensor.asset_selection is None
            else sensor.asset_selection.to_selection_str(),
            "tags": dict(sensor.tags),
        }
    return sensors


def describe_schedules(defs: dg.Definitions) -> dict[str, Any]:
    schedules: dict[str, Any] = {}
    for name in sorted(s.name for s in defs.schedules or []):
        schedule = defs.resolve_schedule_def(name)
        schedules[name] = {
            "cron": schedule.cron_schedule,
            "timezone": schedule.execution_timezone,
            "default_status": schedule.default_status.value,
            "job": schedule.job_name,
            "tags": dict(schedule.tags),
        }
    return schedules


def describe(defs: dg.Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    return {
        "assets": describe_assets(graph),
        "asset_checks": describe_checks(graph),
        "jobs": describe_jobs(defs),
        "sensors": describe_sensors(defs),
        "schedules": describe_schedules(defs),
        "resources": sorted(defs.resources or {}),
    }


def render(description: dict[str, Any]) -> str:
    return json.dumps(description, indent=2, sort_keys=True) + "\n"


@pytest.fixture
def default_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Definitions read CQRS_* settings when they load (sensor interval, lag thresholds): unset
    them all (but the update switch) so the snapshot is the same on every machine."""
    for name in list(os.environ):
        if name.startswith("CQRS_") and name != UPDATE_ENV:
            monkeypatch.delenv(name)


def test_graph_matches_the_snapshot(default_env: None) -> None:
    update = os.environ.get(UPDATE_ENV) == "1"
    actual = render(describe(load()))
    if update:
        SNAPSHOT.write_text(actual, encoding="utf-8")
        return
    if not SNAPSHOT.exists():
        pytest.fail(f"{SNAPSHOT.name} is missing: create it with {REGENERATE}", pytrace=False)
    expected = SNAPSHOT.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{SNAPSHOT.name} (committed)",
                tofile="current Definitions",
            )
        )
        pytest.fail(f"the Dagster graph changed:\n{diff}\n{HINT}", pytrace=False)


def test_snapshot_is_deterministic(default_env: None) -> None:
    """Two loads describe the graph identically (no ids, paths or set order in the text)."""
    assert render(describe(load())) == render(describe(load()))
