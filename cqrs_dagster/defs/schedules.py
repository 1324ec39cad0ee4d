"""Schedules (all UTC, RUNNING by default): quality audits, gold recompute, maintenance, replay
audit. (The freshness checks are evaluated by ``read_model_freshness_sensor``, without a run.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

from .jobs import (
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
