"""Schedules (all UTC, RUNNING by default): freshness checks, gold recompute, maintenance."""

import dagster as dg

from .maintenance import (
    check_read_model_freshness,
    check_read_model_quality,
    maintain_read_models,
    recompute_gold,
)

RUNNING = dg.DefaultScheduleStatus.RUNNING

read_model_freshness_schedule = dg.ScheduleDefinition(
    name="read_model_freshness_schedule",
    job=check_read_model_freshness,
    cron_schedule="* * * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
    description="Every minute: freshness-lag checks, so a stuck sensor or dead relay is caught.",
)

read_model_quality_schedule = dg.ScheduleDefinition(
    name="read_model_quality_schedule",
    job=check_read_model_quality,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
    description="Every 10 minutes: whole-table audits (sequences, reconciliation, gold, dead letters).",
)

gold_recompute_schedule = dg.ScheduleDefinition(
    name="gold_recompute_schedule",
    job=recompute_gold,
    cron_schedule="15 2 * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
    description="Daily 02:15 UTC: recompute order_summary and daily_order_metrics from silver.",
)

table_maintenance_schedule = dg.ScheduleDefinition(
    name="table_maintenance_schedule",
    job=maintain_read_models,
    cron_schedule="45 3 * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
    description="Daily 03:45 UTC: compact, vacuum and checkpoint every Delta table.",
)
