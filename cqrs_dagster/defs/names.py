"""Names and tags the jobs, sensors and checks share: the asset group, the Delta writer pool and
tag, the projection jobs' names, and the run statuses that count as in flight."""

import dagster as dg

GROUP = "read_models"
# Every Delta writer (asset, follow op, maintenance, rebuild, redrive) claims this pool, limit 1
# (dagster.yaml), so two runs never write a table at once.
DELTA_WRITER_POOL = "cqrs_delta_writer"
# What a writer run writes: projection | maintenance | rebuild | recompute | redrive.
WRITER_TAG = "cqrs/delta-writer"

PROJECTION_JOB = "project_read_models"
# Follow mode's job (defs/follow.py): the sensor starts it instead when
# CQRS_PROJECTION_FOLLOW_SECONDS > 0. Both write the read models: never two runs of either at once.
FOLLOW_JOB = "follow_read_models"
PROJECTION_JOBS = (PROJECTION_JOB, FOLLOW_JOB)
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
