"""Jobs: the projection job the event sensor starts. In-process executor for low latency."""

import dagster as dg

from .assets import GROUP

PROJECTION_JOB = "project_read_models"
WRITER_TAG = "cqrs/delta-writer"

project_read_models = dg.define_asset_job(
    PROJECTION_JOB,
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,
    tags={WRITER_TAG: "projection"},
    description="Apply new bus events to every read model: raw_events -> silver -> gold.",
)
