"""The ONE module that reads Dagster state through APIs Dagster does not mark public.

OSS Dagster 1.13 has no public API for "the latest evaluation of an asset check" nor for "the
current freshness state of an asset" (what the freshness daemon records for a FreshnessPolicy).
Both are read here from the instance's event log storage and returned as plain views, so the
rest of the alerting code uses only public Dagster API. ``cqrs_dagster_tests/defs/
test_alerting_dagster_state.py`` fails loudly when any of these internals moves or changes shape.

Internals used (Dagster 1.13.27):
- ``DagsterInstance.event_log_storage.get_latest_asset_check_execution_by_key(keys)``
- ``DagsterInstance.event_log_storage.get_asset_check_execution_history(key, limit, status=...)``
- ``dagster._core.storage.asset_check_execution_record.AssetCheckExecutionRecordStatus``
- ``DagsterInstance.get_freshness_state_records(keys)`` -> ``FreshnessStateRecord``
- ``dagster._core.definitions.freshness.FreshnessState`` / ``FreshnessStateChange``
- ``DagsterInstance.all_instigator_state`` / ``get_ticks`` and
  ``dagster._core.scheduler.instigation`` (``InstigatorType``, ``TickStatus``): sensor ticks
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

CheckOutcome = Literal["passed", "failed", "execution_failed"]
FRESHNESS_STATE_NAMES = frozenset(s.value for s in FreshnessState)


@dataclass(frozen=True)
class CheckEvaluationView:
    """The latest finished evaluation of one asset check."""

    key: dg.AssetCheckKey
    outcome: CheckOutcome
    severity: dg.AssetCheckSeverity
    description: str | None
    metadata: dict[str, Any]  # plain JSON values
    evaluated_at: datetime
    run_id: str


@dataclass(frozen=True)
class FreshnessView:
    """The freshness state the freshness daemon last recorded for an asset."""

    asset_key: dg.AssetKey
    state: str  # PASS | WARN | FAIL | UNKNOWN | NOT_APPLICABLE
    updated_at: datetime


def plain_metadata(metadata: Mapping[str, dg.MetadataValue[Any]]) -> dict[str, Any]:
    """Metadata values as JSON values (anything else becomes its string form)."""
    out: dict[str, Any] = {}
    for name, mv in metadata.items():
        value = mv.value
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = str(value)
        out[name] = value
    return out


def _view(record: AssetCheckExecutionRecord) -> CheckEvaluationView | None:
    evaluation = record.evaluation
    if record.event is None or not isinstance(evaluation, dg.AssetCheckEvaluation):
        return None
    return CheckEvaluationView(
        key=record.key,
        outcome="passed" if evaluation.passed else "failed",
        severity=evaluation.severity,
        description=evaluation.description,
        metadata=plain_metadata(evaluation.metadata),
        evaluated_at=datetime.fromtimestamp(record.event.timestamp, UTC),
        run_id=record.run_id,
    )


def _latest_completed(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey
) -> CheckEvaluationView | None:
    history = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
    )
    return _view(history[0]) if history else None


def _resolve_planned(
    instance: dg.DagsterInstance, record: AssetCheckExecutionRecord
) -> CheckEvaluationView | None:
    """A planned check whose run failed did not execute (Dagster's EXECUTION_FAILED); one whose
    run is still going or was skipped says nothing new: use the latest finished evaluation."""
    run = instance.get_run_record_by_id(record.run_id)
    if run is not None and run.dagster_run.status == dg.DagsterRunStatus.FAILURE:
        ended = run.end_time or record.create_timestamp
        return CheckEvaluationView(
            key=record.key,
            outcome="execution_failed",
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"the check did not complete: run {record.run_id} failed",
            metadata={"run_id": record.run_id},
            evaluated_at=datetime.fromtimestamp(ended, UTC),
            run_id=record.run_id,
        )
    return _latest_completed(instance, record.key)


def latest_check_evaluations(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey]
) -> dict[dg.AssetCheckKey, CheckEvaluationView]:
    """The latest finished evaluation of each check that has one (unpartitioned checks)."""
    if not keys:
        return {}
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(keys))
    out: dict[dg.AssetCheckKey, CheckEvaluationView] = {}
    for key, record in latest.items():
        if record.status == AssetCheckExecutionRecordStatus.PLANNED:
            view = _resolve_planned(instance, record)
        else:
            view = _view(record)
        if view is not None:
            out[key] = view
    return out


def freshness_states(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey]
) -> dict[dg.AssetKey, FreshnessView]:
    """The last freshness state recorded for each asset that has one."""
    records = instance.get_freshness_state_records(list(keys))
    return {
        key: FreshnessView(
            asset_key=key,
            state=FreshnessState(record.freshness_state).value,
            updated_at=record.updated_at.astimezone(UTC),
        )
        for key, record in records.items()
    }


def record_freshness_state(
    instance: dg.DagsterInstance, key: dg.AssetKey, new_state: str, previous_state: str
) -> None:
    """Record a freshness state change exactly as the freshness daemon does (through the public
    ``report_runless_asset_event``). Lets tests and operators simulate the daemon."""
    instance.report_runless_asset_event(
        FreshnessStateChange(
            key=key,
            new_state=FreshnessState(new_state),
            previous_state=FreshnessState(previous_state),
            state_change_timestamp=datetime.now(UTC).timestamp(),
        )
    )


@dataclass(frozen=True)
class SensorTickView:
    """The newest finished tick of a sensor, and whether the sensor is running."""

    name: str
    status: str  # SUCCESS | SKIPPED | FAILURE
    at: datetime
    running: bool
    error: str | None
    skip_reason: str | None


def latest_sensor_ticks(
    instance: dg.DagsterInstance, names: Sequence[str] | None = None
) -> dict[str, SensorTickView]:
    """Each sensor's newest finished tick (of the code location whose tick is newest)."""
    out: dict[str, SensorTickView] = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if names is not None and state.name not in names:
            continue
        ticks = instance.get_ticks(
            state.instigator_origin_id,
            state.selector_id,
            limit=1,
            statuses=[TickStatus.SUCCESS, TickStatus.SKIPPED, TickStatus.FAILURE],
        )
        if not ticks:
            continue
        tick = ticks[0]
        view = SensorTickView(
            name=state.name,
            status=tick.status.value,
            at=datetime.fromtimestamp(tick.timestamp, UTC),
            running=state.is_running,
            error=tick.error.message.strip() if tick.error is not None else None,
            skip_reason=tick.skip_reason,
        )
        known = out.get(state.name)
        if known is None or view.at > known.at:
            out[state.name] = view
    return out
