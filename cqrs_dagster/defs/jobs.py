"""Jobs: the projection job the event sensor starts. In-process executor for low latency."""

import dagster as dg

from .assets import GROUP

PROJECTION_JOB = "project_read_models"
WRITER_TAG = "cqrs/delta-writer"
# Full replays of raw_events: run daily by the check-only ``replay_audit`` job (defs/rebuild.py),
# never with every projection run.
REPLAY_AUDITS = [
    dg.AssetCheckKey(dg.AssetKey(t), f"{t}_replay_audit") for t in ("orders", "customers")
]

project_read_models = dg.define_asset_job(
    PROJECTION_JOB,
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.checks(*REPLAY_AUDITS),
    executor_def=dg.in_process_executor,
    tags={WRITER_TAG: "projection"},
    description="Apply new bus events to every read model: raw_events -> silver -> gold.",
)
