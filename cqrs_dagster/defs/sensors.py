"""``cqrs_events_sensor``: starts a projection run when new events reach the bus.

Each tick compares every bus partition's head (last enqueued sequence number) with the read
models' committed checkpoints, without reading any event body. It requests a run only when some
read model is behind and no projection run (of either projection job) is in flight, so two runs
never write the same Delta tables at once (the shared Delta writer pool is the second guard).

With ``CQRS_PROJECTION_FOLLOW_SECONDS`` > 0 (read at each tick) it requests ``follow_read_models``
(defs/follow.py: one run that keeps following the bus) instead of the per-batch asset job. The one
exception to "none while a run is in flight" is the handover (:func:`handover_due`): when the only
run in flight is a following run within :func:`handover_lead_seconds` of its cap, the sensor
requests the next following run, which starts up meanwhile and waits (its first op,
``await_handover``) until the first one has ended before its projection op takes the Delta writer
pool (limit 1), so no two runs ever write at once and there is no gap of a tick plus a run's
start-up in the read models' freshness at each cap.

A projection run that keeps failing is retried with backoff, not once per tick: after
``FAILURES_BEFORE_BACKOFF`` consecutive failed projection runs the sensor waits
``BACKOFF_BASE_SECONDS * 2**(failures - FAILURES_BEFORE_BACKOFF)`` (capped at
``BACKOFF_CAP_SECONDS``) after the last failure before requesting again, and says so in its
SkipReason (the sensor's tick history in the UI). The alert sensor alerts the same state.
"""

import time
from dataclasses import dataclass

import dagster as dg

from cqrs_dagster.projections.status import events_behind
from cqrs_dagster.settings import load_settings

from .follow import FOLLOW_UNTIL_TAG, HANDOVER_TAG, follow_read_models
from .jobs import project_read_models
from .names import FOLLOW_JOB, IN_FLIGHT, PROJECTION_JOB, PROJECTION_JOBS
from .resources import PlatformResource

SENSOR_NAME = "cqrs_events_sensor"
# The sensor daemon evaluates sensors once per loop (a 5 s floor) and skips a sensor whose last tick
# is younger than its minimum interval. The tick timestamp is taken a little after the loop starts,
# so with an interval equal to the loop period, elapsed is often 4.9x s and every other loop is
# skipped: ticks 10 s apart (measured). Asking for one second less keeps the requested spacing.
TICK_JITTER_SECONDS = 1
FAILURES_BEFORE_BACKOFF = 3
BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 30 * 60
_STREAK_LOOKBACK = 50
# The next following run is requested this long before the current one's cap at the least: a
# tick may come up to one interval late and a run process takes ~2-5 s to start.
HANDOVER_LEAD_SECONDS = 15


@dataclass(frozen=True)
class FailureStreak:
    """Consecutive failed projection runs, newest first, and the backoff they impose."""

    failures: int
    last_run_id: str | None
    last_failed_at: float | None  # epoch seconds (end of the last failed run)
    backoff_seconds: float  # 0 below the threshold

    @property
    def retry_at(self) -> float | None:
        if not self.backoff_seconds or self.last_failed_at is None:
            return None
        return self.last_failed_at + self.backoff_seconds

    def in_backoff(self, now: float) -> bool:
        retry_at = self.retry_at
        return retry_at is not None and now < retry_at


def backoff_seconds(
    failures: int,
    threshold: int = FAILURES_BEFORE_BACKOFF,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_CAP_SECONDS,
) -> float:
    if failures < threshold:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - threshold, 30)))


def failure_streak(
    instance: dg.DagsterInstance,
    threshold: int = FAILURES_BEFORE_BACKOFF,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_CAP_SECONDS,
) -> FailureStreak:
    """The newest finished projection runs (either job) that failed in a row."""
    records = [
        r
        for job in PROJECTION_JOBS
        for r in instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=job,
                statuses=[
                    dg.DagsterRunStatus.SUCCESS,
                    dg.DagsterRunStatus.FAILURE,
                    dg.DagsterRunStatus.CANCELED,
                ],
            ),
            limit=_STREAK_LOOKBACK,
        )
    ]
    records.sort(key=lambda r: r.create_timestamp, reverse=True)
    failures = 0
    for r in records:
        if r.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        failures += 1
    if not failures:
        return FailureStreak(0, None, None, 0.0)
    last = records[0]
    ended = last.end_time or last.update_timestamp.timestamp()
    return FailureStreak(
        failures, last.dagster_run.run_id, ended, backoff_seconds(failures, threshold, base, cap)
    )


def _latest_run(instance: dg.DagsterInstance) -> dg.RunRecord | None:
    """The newest run of either projection job."""
    records = [
        r
        for job in PROJECTION_JOBS
        for r in instance.get_run_records(filters=dg.RunsFilter(job_name=job), limit=1)
    ]
    return max(records, key=lambda r: r.create_timestamp, default=None)


def _in_flight(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The projection runs (either job) in flight."""
    return [
        run
        for job in PROJECTION_JOBS
        for run in instance.get_runs(filters=dg.RunsFilter(job_name=job, statuses=IN_FLIGHT))
    ]


def handover_lead_seconds(interval_seconds: int) -> float:
    """How long before a following run's cap the sensor requests the next one: three ticks, at
    least ``HANDOVER_LEAD_SECONDS``."""
    return float(max(HANDOVER_LEAD_SECONDS, 3 * interval_seconds))


def handover_due(
    in_flight: list[dg.DagsterRun], now: float, lead_seconds: float
) -> dg.DagsterRun | None:
    """The following run to hand over from: the only projection run in flight, started, and
    due to reach its cap (its ``FOLLOW_UNTIL_TAG``) within ``lead_seconds`` of ``now`` (epoch
    seconds). None otherwise: a second run in flight (the handover's own successor), a per-batch
    run, a run not started yet or not stamped."""
    if len(in_flight) != 1:
        return None
    run = in_flight[0]
    if run.job_name != FOLLOW_JOB or run.status != dg.DagsterRunStatus.STARTED:
        return None
    try:
        until = float(run.tags.get(FOLLOW_UNTIL_TAG, ""))
    except ValueError:
        return None
    return run if until - now <= lead_seconds else None


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


def build_events_sensor(
    interval_seconds: int,
    heartbeat_minutes: int = 30,
    *,
    failures_before_backoff: int = FAILURES_BEFORE_BACKOFF,
    backoff_base_seconds: float = BACKOFF_BASE_SECONDS,
    backoff_cap_seconds: float = BACKOFF_CAP_SECONDS,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        jobs=[project_read_models, follow_read_models],
        minimum_interval_seconds=max(1, interval_seconds - TICK_JITTER_SECONDS),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Requests a projection run when a bus partition's head is past the read models' "
            "checkpoints and no projection run is in flight (in follow mode, also the next "
            "following run shortly before the current one's cap: a handover through the writer "
            "pool); otherwise a heartbeat run every "
            f"{heartbeat_minutes} min keeps the freshness policies meaningful. After "
            f"{failures_before_backoff} failed projection runs in a row it backs off "
            f"({backoff_base_seconds:g} s doubling, at most {backoff_cap_seconds:g} s)."
        ),
    )
    def cqrs_events_sensor(
        context: dg.SensorEvaluationContext, platform: PlatformResource
    ) -> dg.RunRequest | dg.SkipReason:
        in_flight = _in_flight(context.instance)
        follow = platform.settings().projection_follow_seconds > 0
        if in_flight:
            ending = (
                handover_due(in_flight, time.time(), handover_lead_seconds(interval_seconds))
                if follow
                else None
            )
            if ending is None:
                ids = ", ".join(r.run_id for r in in_flight)
                return dg.SkipReason(
                    f"projection run {ids} is in flight"
                    if len(in_flight) == 1
                    else f"projection runs {ids} are in flight"
                )
            return dg.RunRequest(
                run_key=f"handover;{ending.run_id}",
                job_name=FOLLOW_JOB,
                tags={"cqrs/reason": "handover", HANDOVER_TAG: ending.run_id},
            )
        streak = failure_streak(
            context.instance, failures_before_backoff, backoff_base_seconds, backoff_cap_seconds
        )
        now = time.time()
        if streak.in_backoff(now):
            assert streak.retry_at is not None
            return dg.SkipReason(
                f"backoff: {streak.failures} projection runs failed in a row (last: "
                f"{streak.last_run_id}); next attempt in {streak.retry_at - now:.0f} s "
                f"(backoff {streak.backoff_seconds:.0f} s, cap {backoff_cap_seconds:g} s)"
            )
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
