"""Schedules (all UTC, RUNNING by default): freshness checks, quality audits, gold recompute,
maintenance, replay audit."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

from .follow import FRESHNESS_STAMP_MAX_AGE_SECONDS, checking_follow_run
from .jobs import (
    check_read_model_freshness,
    check_read_model_quality,
    recompute_gold,
    replay_audit_job,
)
from .maintenance import maintain_read_models


def utc_schedule(
    name: str,
    job: UnresolvedAssetJobDefinition | dg.JobDefinition,
    cron: str,
    description: str,
) -> dg.ScheduleDefinition:
    """A schedule in UTC, RUNNING by default, with a one-line description."""
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )


def _freshness_tick(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    follower = checking_follow_run(context.instance, time.time())
    if follower is not None:
        return dg.SkipReason(
            f"following run {follower.run_id} evaluates the lag checks itself (within the last "
            f"{FRESHNESS_STAMP_MAX_AGE_SECONDS:g} s)"
        )
    return dg.RunRequest()


read_model_freshness_schedule = dg.ScheduleDefinition(
    name="read_model_freshness_schedule",
    job=check_read_model_freshness,
    cron_schedule="* * * * *",
    execution_fn=_freshness_tick,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Every minute: freshness-lag checks, so a stuck sensor or dead relay is caught. Skipped "
        "while a following projection run evaluates them itself (once a minute, between passes)."
    ),
)

read_model_quality_schedule = utc_schedule(
    "read_model_quality_schedule",
    check_read_model_quality,
    "*/10 * * * *",
    "Every 10 minutes: whole-table audits (sequences, reconciliation, gold, dead letters).",
)

gold_recompute_schedule = utc_schedule(
    "gold_recompute_schedule",
    recompute_gold,
    "15 2 * * *",
    "Daily 02:15 UTC: recompute order_summary and daily_order_metrics from silver.",
)

table_maintenance_schedule = utc_schedule(
    "table_maintenance_schedule",
    maintain_read_models,
    "45 3 * * *",
    "Daily 03:45 UTC: compact, vacuum and checkpoint every Delta table.",
)

replay_audit_schedule = utc_schedule(
    "replay_audit_schedule",
    replay_audit_job,
    "30 4 * * *",
    "Daily 04:30 UTC: replay audit of orders and customers against raw_events.",
)
