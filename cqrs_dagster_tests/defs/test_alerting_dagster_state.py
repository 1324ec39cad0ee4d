"""The one module reading Dagster internals (cqrs_dagster/defs/alerting/dagster_state.py): fails
loudly when Dagster moves or reshapes what it uses, and checks its readings against real runs,
runless check evaluations and a real freshness-daemon iteration.

If a test here fails after a Dagster upgrade, fix dagster_state.py (and only it)."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from cqrs_dagster.defs.alerting import dagster_state
from cqrs_dagster.defs.alerting.dagster_state import (
    freshness_states,
    latest_check_evaluations,
    record_freshness_state,
)

ORDERS = dg.AssetKey("orders")
HINT = "Dagster changed an internal API: update cqrs_dagster/defs/alerting/dagster_state.py"


def params(fn: object) -> list[str]:
    assert callable(fn), HINT
    return list(inspect.signature(fn).parameters)


def test_internal_apis_still_have_the_shape_dagster_state_uses() -> None:
    from dagster._core.definitions.freshness import (
        FreshnessState,
        FreshnessStateChange,
        FreshnessStateRecord,
    )
    from dagster._core.storage.asset_check_execution_record import (
        COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
        AssetCheckExecutionRecord,
        AssetCheckExecutionRecordStatus,
    )
    from dagster._core.storage.event_log.base import EventLogStorage

    assert {s.value for s in FreshnessState} == {
        "PASS",
        "WARN",
        "FAIL",
        "UNKNOWN",
        "NOT_APPLICABLE",
    }, HINT
    assert {s.value for s in AssetCheckExecutionRecordStatus} == {
        "PLANNED",
        "SUCCEEDED",
        "FAILED",
    }, HINT
    assert {s.value for s in COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES} == {
        "SUCCEEDED",
        "FAILED",
    }, HINT
    assert params(EventLogStorage.get_latest_asset_check_execution_by_key)[:2] == [
        "self",
        "check_keys",
    ], HINT
    assert params(EventLogStorage.get_asset_check_execution_history)[:5] == [
        "self",
        "check_key",
        "limit",
        "cursor",
        "status",
    ], HINT
    assert params(dg.DagsterInstance.get_freshness_state_records) == ["self", "keys"], HINT
    assert isinstance(inspect.getattr_static(dg.DagsterInstance, "event_log_storage"), property)
    for field in ("key", "run_id", "status", "event", "create_timestamp", "evaluation"):
        assert hasattr(AssetCheckExecutionRecord, field), f"{HINT} (record.{field})"
    assert list(FreshnessStateChange.__annotations__) == [
        "key",
        "new_state",
        "previous_state",
        "state_change_timestamp",
    ], HINT
    assert {"entity_key", "freshness_state", "updated_at"} <= set(
        FreshnessStateRecord.__annotations__
    ), HINT
    assert {s.value for s in FreshnessState} == dagster_state.FRESHNESS_STATE_NAMES


def test_sensor_tick_internals_still_have_the_shape_dagster_state_uses() -> None:
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorTick,
        InstigatorType,
        TickStatus,
    )

    assert {"SUCCESS", "SKIPPED", "FAILURE", "STARTED"} <= {s.value for s in TickStatus}, HINT
    assert InstigatorType.SENSOR.value == "SENSOR", HINT
    assert params(dg.DagsterInstance.all_instigator_state)[:4] == [
        "self",
        "repository_origin_id",
        "repository_selector_id",
        "instigator_type",
    ], HINT
    assert params(dg.DagsterInstance.get_ticks)[:6] == [
        "self",
        "origin_id",
        "selector_id",
        "before",
        "after",
        "limit",
    ], HINT
    assert "statuses" in params(dg.DagsterInstance.get_ticks), HINT
    for name in ("name", "instigator_origin_id", "selector_id", "is_running"):
        assert hasattr(InstigatorState, name), f"{HINT} (InstigatorState.{name})"
    for name in ("status", "timestamp", "error", "skip_reason", "run_ids"):
        assert hasattr(InstigatorTick, name), f"{HINT} (InstigatorTick.{name})"


def checks_defs(mode: dict[str, str]) -> dg.Definitions:
    @dg.asset_check(asset=ORDERS, name="orders_quality")
    def orders_quality() -> dg.AssetCheckResult:
        if mode["result"] == "raise":
            raise RuntimeError("the check itself broke")
        return dg.AssetCheckResult(
            passed=mode["result"] == "pass",
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"rows": 7, "sample": dg.MetadataValue.json({"a": [1]})},
            description="seven rows looked at",
        )

    return dg.Definitions(
        assets=[dg.AssetSpec(ORDERS)],
        asset_checks=[orders_quality],
        jobs=[dg.define_asset_job("q", selection=dg.AssetSelection.checks(orders_quality))],
    )


def test_latest_check_evaluation_follows_runs(instance: dg.DagsterInstance) -> None:
    key = dg.AssetCheckKey(ORDERS, "orders_quality")
    mode = {"result": "fail"}
    job = checks_defs(mode).resolve_job_def("q")
    assert latest_check_evaluations(instance, [key]) == {}

    run = job.execute_in_process(instance=instance)
    view = latest_check_evaluations(instance, [key])[key]
    assert (view.outcome, view.severity) == ("failed", dg.AssetCheckSeverity.WARN)
    assert view.metadata == {"rows": 7, "sample": {"a": [1]}}
    assert view.description == "seven rows looked at" and view.run_id == run.run_id

    mode["result"] = "raise"
    failed = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    view = latest_check_evaluations(instance, [key])[key]
    assert (view.outcome, view.severity, view.run_id) == (
        "execution_failed",
        dg.AssetCheckSeverity.ERROR,
        failed.run_id,
    )

    mode["result"] = "pass"
    job.execute_in_process(instance=instance)
    assert latest_check_evaluations(instance, [key])[key].outcome == "passed"


def test_runless_check_evaluation_is_read(instance: dg.DagsterInstance) -> None:
    key = dg.AssetCheckKey(ORDERS, "orders_freshness_lag")
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=ORDERS,
            check_name=key.name,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"lag_seconds": 75.5},
        )
    )
    view = latest_check_evaluations(instance, [key])[key]
    assert (view.outcome, view.severity, view.metadata) == (
        "failed",
        dg.AssetCheckSeverity.ERROR,
        {"lag_seconds": 75.5},
    )


def test_freshness_state_recorded_by_the_real_daemon_is_read(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """One real FreshnessDaemon iteration per step over a code location whose asset has a
    FreshnessPolicy: never materialized -> UNKNOWN, just materialized -> PASS."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import (
        InProcessTestWorkspaceLoadTarget,
        create_test_daemon_workspace_context,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._daemon.freshness import FreshnessDaemon

    location = tmp_path / "location.py"
    location.write_text(
        textwrap.dedent(
            """
            from datetime import timedelta
            import dagster as dg

            @dg.asset(freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=1)))
            def orders() -> None:
                return None

            defs = dg.Definitions(assets=[orders])
            """
        )
    )
    origin = LoadableTargetOrigin(
        python_file=str(location), attribute="defs", working_directory=str(tmp_path)
    )
    target = InProcessTestWorkspaceLoadTarget(InProcessCodeLocationOrigin(origin))
    with create_test_daemon_workspace_context(target, instance) as workspace:
        list(FreshnessDaemon().run_iteration(workspace))
        assert freshness_states(instance, [ORDERS])[ORDERS].state == "UNKNOWN"
        instance.report_runless_asset_event(dg.AssetMaterialization(ORDERS))
        list(FreshnessDaemon().run_iteration(workspace))
        assert freshness_states(instance, [ORDERS])[ORDERS].state == "PASS"


def test_recorded_freshness_states_read_back_newest_first(instance: dg.DagsterInstance) -> None:
    other = dg.AssetKey("customers")
    assert freshness_states(instance, [ORDERS, other]) == {}
    record_freshness_state(instance, ORDERS, "WARN", "PASS")
    record_freshness_state(instance, ORDERS, "FAIL", "WARN")
    states = freshness_states(instance, [ORDERS, other])
    assert list(states) == [ORDERS] and states[ORDERS].state == "FAIL"
    with pytest.raises(ValueError):
        record_freshness_state(instance, ORDERS, "STALE", "FAIL")
