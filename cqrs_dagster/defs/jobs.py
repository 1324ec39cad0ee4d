"""Jobs: the projection job the event sensor starts. In-process executor for low latency."""

import dagster as dg

from cqrs_dagster.projections import schemas

from .assets import GROUP
from .checks import OUTBOX_RELAY_LAG, freshness_check_key

PROJECTION_JOB = "project_read_models"
# Follow mode's job (defs/follow.py): the sensor starts it instead when
# CQRS_PROJECTION_FOLLOW_SECONDS > 0. Both write the read models: never two runs of either at once.
FOLLOW_JOB = "follow_read_models"
PROJECTION_JOBS = (PROJECTION_JOB, FOLLOW_JOB)
WRITER_TAG = "cqrs/delta-writer"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# Full replays of raw_events: run daily by the check-only ``replay_audit`` job (defs/rebuild.py),
# never with every projection run.
REPLAY_AUDITS = [
    dg.AssetCheckKey(dg.AssetKey(t), f"{t}_replay_audit") for t in ("orders", "customers")
]

# Non-blocking audits that scan whole tables: run every 10 minutes by the check-only
# ``check_read_model_quality`` job, so a projection run's cost does not grow with the tables and
# its latency stays low. Blocking checks (unique eventIds, envelope schema, unique keys, exact
# totals) stay in every projection run.
QUALITY_AUDITS = [
    dg.AssetCheckKey(dg.AssetKey(table), name)
    for table, name in (
        ("raw_events", "raw_events_version_sequences"),
        ("raw_events", "dead_letter_events_unresolved"),
        ("orders", "orders_reconcile_raw_events"),
        ("order_summary", "order_summary_unique_keys"),
        ("daily_order_metrics", "daily_order_metrics_match_orders"),
    )
]

# Lag checks (<read_model>_freshness_lag x5, outbox_relay_lag): run every minute by the check-only
# ``check_read_model_freshness`` job. Not in projection runs: six steps of Dagster overhead each
# (~0.1-0.3 s apiece on 2 cores, about a quarter of a run) on the end-to-end latency path, and right
# after a projection run they would only report the lag the run's own asset metadata
# (lag_seconds, events_behind) already records.
LAG_CHECKS = [*(freshness_check_key(t) for t in schemas.READ_MODELS), OUTBOX_RELAY_LAG]

# In a projection run these read only the rows the run appended; the audit job re-runs them over
# the whole table (rows of a run that failed before its checks still get checked).
WHOLE_TABLE_RERUNS = [
    dg.AssetCheckKey(dg.AssetKey("raw_events"), "raw_events_unique_event_ids"),
    dg.AssetCheckKey(dg.AssetKey("raw_events"), "raw_events_envelope_schema"),
]

project_read_models = dg.define_asset_job(
    PROJECTION_JOB,
    selection=dg.AssetSelection.groups(GROUP)
    - dg.AssetSelection.checks(*REPLAY_AUDITS)
    - dg.AssetSelection.checks(*QUALITY_AUDITS)
    - dg.AssetSelection.checks(*LAG_CHECKS),
    executor_def=dg.in_process_executor,
    tags={WRITER_TAG: "projection"},
    description="Apply new bus events to every read model: raw_events -> silver -> gold.",
)
