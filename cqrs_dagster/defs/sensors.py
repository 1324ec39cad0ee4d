"""``cqrs_events_sensor``: starts a projection run when new events reach the bus.

Each tick compares every bus partition's head (last enqueued sequence number) with the read
models' committed checkpoints, without reading any event body. It requests a run only when some
read model is behind and no projection run (of either projection job) is in flight, so two runs
never write the same Delta tables at once (the shared Delta writer pool is the second guard).

With ``CQRS_PROJECTION_FOLLOW_SECONDS`` > 0 (read at each tick) it requests ``follow_read_models``
(defs/follow.py: one run that keeps following the bus) instead of the per-batch asset job.
"""

import time

import dagster as dg

from cqrs_dagster.projections.status import events_behind
from cqrs_dagster.settings import load_settings

from .follow import follow_read_models
from .jobs import project_read_models
from .names import FOLLOW_JOB, IN_FLIGHT, PROJECTION_JOB, PROJECTION_JOBS
from .resources import PlatformResource

SENSOR_NAME = "cqrs_events_sensor"
# The sensor daemon evaluates sensors once per loop (a 5 s floor) and skips a sensor whose last tick
# is younger than its minimum interval. The tick timestamp is taken a little after the loop starts,
# so with an interval equal to the loop period, elapsed is often 4.9x s and every other loop is
# skipped: ticks 10 s apart (measured). Asking for one second less keeps the requested spacing.
TICK_JITTER_SECONDS = 1


def _latest_run(instance: dg.DagsterInstance) -> dg.RunRecord | None:
    """The newest run of either projection job."""
    records = [
        r
        for job in PROJECTION_JOBS
        for r in instance.get_run_records(filters=dg.RunsFilter(job_name=job), limit=1)
    ]
    return max(records, key=lambda r: r.create_timestamp, default=None)


def _in_flight(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    for job in PROJECTION_JOBS:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=job, statuses=IN_FLIGHT), limit=1)
        if runs:
            return runs[0]
    return None


def _run_key(
    heads: list[int], behind: dict[str, int], instance: dg.DagsterInstance, prefix: str
) -> str:
    key = (
        prefix
        + "heads="
        + ",".join(map(str, heads))
        + ";behind="
        + ",".join(f"{t}:{n}" for t, n in sorted(behind.items()))
    )
    # A failed run keeps the same target positions: derive a fresh key so it is retried.
    record = _latest_run(instance)
    latest = record.dagster_run if record is not None else None
    if latest is not None and latest.status == dg.DagsterRunStatus.FAILURE:
        previous = latest.tags.get("dagster/run_key", "")
        if previous.split(";retry=")[0] == key:
            key += f";retry={latest.run_id[:8]}"
    return key


def _heartbeat_due(instance: dg.DagsterInstance, heartbeat_minutes: int) -> bool:
    """True when no projection run started within the heartbeat period (or none ever did)."""
    if heartbeat_minutes <= 0:
        return False
    record = _latest_run(instance)
    if record is None:
        return True
    age = time.time() - record.create_timestamp.timestamp()
    return age >= heartbeat_minutes * 60


def build_events_sensor(interval_seconds: int, heartbeat_minutes: int = 30) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        jobs=[project_read_models, follow_read_models],
        minimum_interval_seconds=max(1, interval_seconds - TICK_JITTER_SECONDS),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Requests a projection run when a bus partition's head is past the read models' "
            "checkpoints and no projection run is in flight; otherwise a heartbeat run every "
            f"{heartbeat_minutes} min keeps the freshness policies meaningful."
        ),
    )
    def cqrs_events_sensor(
        context: dg.SensorEvaluationContext, platform: PlatformResource
    ) -> dg.RunRequest | dg.SkipReason:
        in_flight = _in_flight(context.instance)
        if in_flight is not None:
            return dg.SkipReason(f"projection run {in_flight.run_id} is in flight")
        follow = platform.settings().projection_follow_seconds > 0
        job_name = FOLLOW_JOB if follow else PROJECTION_JOB
        tables = platform.tables()
        with platform.bus() as bus:
            infos = bus.partitions_info()  # one read of the heads per tick
            heads = [p.last_sequence_number for p in infos]
        behind = events_behind(tables, infos)
        if not any(behind.values()):
            if _heartbeat_due(context.instance, heartbeat_minutes):
                bucket = int(time.time() // (heartbeat_minutes * 60))
                return dg.RunRequest(
                    run_key=f"heartbeat={bucket}",
                    job_name=job_name,
                    tags={"cqrs/reason": "heartbeat"},
                )
            return dg.SkipReason(f"read models are at the bus heads {heads}")
        key = _run_key(heads, behind, context.instance, "follow;" if follow else "")
        context.update_cursor(key)
        return dg.RunRequest(
            run_key=key, job_name=job_name, tags={"cqrs/bus-heads": ",".join(map(str, heads))}
        )

    return cqrs_events_sensor


@dg.definitions
def sensors() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions(
        sensors=[
            build_events_sensor(
                settings.sensor_interval_seconds, settings.freshness_heartbeat_minutes
            )
        ]
    )
