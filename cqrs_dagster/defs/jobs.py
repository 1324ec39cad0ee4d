"""Every asset job, with selections built from the check objects (never from check names):

- ``project_read_models``: the projection job the event sensor starts (in-process executor for
  low latency): every read model and its blocking checks;
- ``check_read_model_freshness``: the lag checks in a run, on demand (every minute they are
  evaluated without a run by ``read_model_freshness_sensor``);
- ``check_read_model_quality``: whole-table audits, every 10 minutes;
- ``recompute_gold``: the gold tables from silver, daily;
- ``replay_audit``: replays of raw_events against the silver tables, daily.
"""

import dagster as dg

from cqrs_dagster.projections import schemas
from cqrs_dagster.quality.catalog import CHECKS

from .dead_letters import dead_letter_events_unresolved
from .lag_checks import LAG_CHECK_KEYS
from .names import GROUP, PROJECTION_JOB, WRITER_TAG
from .quality_checks import check_key
from .rebuild import REPLAY_AUDITS

# Non-blocking audits that scan whole tables: run every 10 minutes by the check-only quality job,
# so a projection run's cost does not grow with the tables and its latency stays low. Blocking
# checks (unique eventIds, envelope schema, unique keys, exact totals) stay in every projection run.
QUALITY_AUDITS = [
    *(check_key(c) for c in CHECKS if c.audit),
    dead_letter_events_unresolved.check_key,
]
# In a projection run or follow pass these read only the rows (or keys) it wrote; the audit job
# re-runs them over the whole table (rows of a run that failed before its checks still get checked).
WHOLE_TABLE_RERUNS = [check_key(c) for c in CHECKS if c.scoped or c.keyed]

# Lag checks are not in projection runs: six steps of Dagster overhead each (~0.1-0.3 s apiece on
# 2 cores, about a quarter of a run) on the end-to-end latency path, and right after a projection
# run they would only report the lag the run's own asset metadata (lag_seconds, events_behind)
# already records.
project_read_models = dg.define_asset_job(
    PROJECTION_JOB,
    selection=dg.AssetSelection.groups(GROUP)
    - dg.AssetSelection.checks(*REPLAY_AUDITS)
    - dg.AssetSelection.checks(*QUALITY_AUDITS)
    - dg.AssetSelection.checks(*LAG_CHECK_KEYS),
    executor_def=dg.in_process_executor,
    tags={WRITER_TAG: "projection"},
    description="Apply new bus events to every read model: raw_events -> silver -> gold.",
)

check_read_model_freshness = dg.define_asset_job(
    "check_read_model_freshness",
    selection=dg.AssetSelection.checks(*LAG_CHECK_KEYS),
    executor_def=dg.in_process_executor,
    description="Freshness-lag checks of every read model and the outbox relay lag, materializing nothing.",
)

check_read_model_quality = dg.define_asset_job(
    "check_read_model_quality",
    selection=dg.AssetSelection.checks(*QUALITY_AUDITS, *WHOLE_TABLE_RERUNS),
    executor_def=dg.in_process_executor,
    description=(
        "Whole-table audits: version sequences, reconciliation, gold vs recompute, dead letters, "
        "and the in-run raw_events checks over the whole table."
    ),
)

recompute_gold = dg.define_asset_job(
    "recompute_gold",
    selection=dg.AssetSelection.assets(schemas.ORDER_SUMMARY, schemas.DAILY_ORDER_METRICS),
    executor_def=dg.in_process_executor,
    tags={WRITER_TAG: "recompute"},
    config={"ops": {schemas.DAILY_ORDER_METRICS: {"config": {"full": True}}}},
    description="Recompute the gold tables from the silver tables (daily_order_metrics in full).",
)

replay_audit_job = dg.define_asset_job(
    "replay_audit",
    selection=dg.AssetSelection.checks(*REPLAY_AUDITS),
    executor_def=dg.in_process_executor,
    description="Replay raw_events into scratch tables and compare with the live silver tables.",
)
