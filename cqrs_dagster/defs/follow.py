"""Follow mode (opt-in, ``CQRS_PROJECTION_FOLLOW_SECONDS`` > 0): one run keeps the read models
following the bus, pass after pass, instead of one run per batch.

Why: a per-batch run pays the sensor tick (the daemon's 5 s loop) and a run-process launch (~2 s)
before its first step, so command -> visible cannot get near 5 s. A following run pays them once:
each pass applies what arrived since the previous one through the same projection steps the
assets call (raw_events -> orders, customers -> order_summary, daily_order_metrics; checkpoints
committed with the rows, so a crash mid-pass and a re-run neither skip nor duplicate anything).
The run stops after ``CQRS_PROJECTION_FOLLOW_IDLE_SECONDS`` with nothing new, or at the cap, and
the sensor starts the next one when events arrive. At the cap there is no gap: the run stamps when
it will reach it (``FOLLOW_UNTIL_TAG``), and the sensor launches the next following run shortly
before; that run starts up meanwhile, waits in :func:`await_handover` (no pool held) until this
one has ended, then takes the writer pool (a handover; without it, the sensor's tick and the next
run's start-up left events unapplied for 3-8 s at every cap).

What it keeps from the asset job: the Delta writer pool (maintenance, rebuild and recompute wait
for it), the writer tag, one materialization per table written per pass (asset keys and metadata
of the assets, so the UI's history and the freshness policies see them), and the blocking checks:
the same rules under the same check names, evaluated per pass before a table feeds the next (and
logged once the pass has committed, after its materializations); a failing one ends the run with
a failure before the next table is written. It also evaluates the lag checks, once a minute
between passes, in place of the every-minute freshness job's run (see FRESHNESS_EVERY_SECONDS),
and compacts the small files its passes add every few passes (:func:`compact`), so a pass does
not grow slower with the passes before it.

A maintenance, rebuild, recompute or redrive run (another writer tag) that is in flight makes the
run end after its current pass, so it waits for one pass, not for the cap; the sensor starts the
next following run, which queues for the pool behind it.

Trade-offs: the pool stays claimed for the whole run (a writer run waits up to one pass once it
is in flight), the UI shows one long run with many materializations, the run uses CPU for as long
as events arrive, and the whole-table blocking rules (unique keys, amounts) run once per pass that
changed the table instead of once per run.
"""

import time
from collections.abc import Mapping
from time import sleep

import dagster as dg

from cqrs_dagster.eventbus.port import EventBus
from cqrs_dagster.projections import maintenance, schemas
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.recent_raw import RecentRaw
from cqrs_dagster.projections.tables import PinnedTables, TableStore
from cqrs_dagster.quality.catalog import blocking_on
from cqrs_dagster.quality.outcome import CheckOutcome
from cqrs_dagster.quality.scope import RunScope

from .lag_checks import evaluation, lag_results
from .names import DELTA_WRITER_POOL, FOLLOW_JOB, IN_FLIGHT, WRITER_TAG
from .quality_checks import outcome_result
from .read_models import report_metadata
from .resources import PlatformResource

# Idle passes poll the bus this often: half of it is the mean added latency of an event arriving
# while the run is idle.
POLL_SECONDS = 0.25
# A following run evaluates the lag checks itself this often, between passes, and stamps the time
# on the run (FRESHNESS_TAG): the every-minute freshness sensor then skips its evaluation
# (:func:`checking_follow_run`), so the checks are not recorded twice a minute. (Before the
# sensor, a schedule launched a run for them: ~4 CPU-s on 2 cores at the turn of every minute,
# which slowed the pass it met by ~0.3-0.6 s.)
FRESHNESS_EVERY_SECONDS = 60.0
FRESHNESS_TAG = "cqrs/freshness_checked_at"
# The sensor trusts a stamp this old at most: a following run stuck in a pass stops stamping,
# and the sensor's own evaluation then reports the lag it causes.
FRESHNESS_STAMP_MAX_AGE_SECONDS = 1.5 * FRESHNESS_EVERY_SECONDS
# When the run reaches its cap (epoch seconds), stamped on the run as it starts: the events
# sensor launches the next following run shortly before, so that it is up and waiting for the
# writer pool when this one ends (a handover: see sensors.handover_due).
FOLLOW_UNTIL_TAG = "cqrs/follow_until"
# On a handover run: the run it takes over from. Its first op waits for that run to end, polling
# the run's status this often, before the projection op claims the writer pool: a step waiting
# for a pool slot in Dagster's run worker polls without sleeping (a core busy for as long as it
# waits, measured), this op sleeps. After HANDOVER_WAIT_MAX_SECONDS it stops waiting (a run
# stuck in flight) and the pool decides, as for any run.
HANDOVER_TAG = "cqrs/handover_from"
HANDOVER_POLL_SECONDS = 0.2
HANDOVER_WAIT_MAX_SECONDS = 120.0


class FollowConfig(dg.Config):
    """Overrides of the follow settings for one run (None: the ``CQRS_PROJECTION_FOLLOW_*``)."""

    max_seconds: float | None = None
    idle_seconds: float | None = None


def _log_check(
    context: dg.OpExecutionContext, table: str, name: str, outcome: CheckOutcome
) -> None:
    """Log one blocking evaluation under the asset check's name."""
    result = outcome_result(outcome)
    key = dg.AssetCheckKey(dg.AssetKey(table), name)
    _log_result(context, key, result, description=outcome.summary, blocking=True)


def _log_result(
    context: dg.OpExecutionContext,
    key: dg.AssetCheckKey,
    result: dg.AssetCheckResult,
    *,
    description: str | None = None,
    blocking: bool = False,
) -> None:
    """Log an evaluation of the check ``key`` computed in this run."""
    context.log_event(
        evaluation(key, result, description=description, blocking=blocking)  # type: ignore[arg-type]
    )  # log_event handles it (dagster 1.13); its annotation omits it


class BlockingChecks:
    """The blocking checks of the catalog, evaluated by a pass between layers under the asset
    checks' names: raw rules read only the rows the pass appended (from the pass's memory when
    it holds them), silver rules only the keys its events wrote, so a pass costs in proportion
    to its events (the scheduled quality job re-runs them over whole tables). The rules after a
    layer read one snapshot of each table (:class:`PinnedTables`: one log read per table, not
    one per rule).

    A failing rule stops the pass at once (before the next layer reads the table). Passing
    evaluations are logged by :meth:`flush` once the pass has committed, after its
    materializations: Dagster's event log costs ~10 ms per event, which would otherwise sit
    between the layers, on the way of every event to the query API.
    """

    def __init__(
        self, context: dg.OpExecutionContext, tables: TableStore, recent: RecentRaw | None = None
    ) -> None:
        self.context, self.tables, self.recent = context, tables, recent
        self.pending: list[tuple[str, str, CheckOutcome]] = []

    def raw_appended(self, after_seq: int, upto_seq: int) -> None:
        pinned = PinnedTables.of(self.tables)
        scope = RunScope(after_seq=after_seq, upto_seq=upto_seq, recent=self.recent)
        for check in blocking_on(schemas.RAW_EVENTS):
            self._gate(check.table, check.name, check.evaluate(pinned, scope))

    def tables_written(self, ranges: Mapping[str, tuple[int, int]]) -> None:
        pinned = PinnedTables.of(self.tables)
        for table, (after, upto) in ranges.items():
            scope = RunScope(after_seq=after, upto_seq=upto, recent=self.recent)
            for check in blocking_on(table):
                self._gate(table, check.name, check.evaluate(pinned, scope))

    def _gate(self, table: str, name: str, outcome: CheckOutcome) -> None:
        self.pending.append((table, name, outcome))
        if not outcome.passed:
            self.flush()
            raise dg.Failure(
                description=f"blocking check {name} on {table} failed: {outcome.summary}",
                metadata={"check": name, "table": table},
            )

    def flush(self) -> None:
        """Log the evaluations not logged yet, in the order they ran."""
        pending, self.pending = self.pending, []
        for table, name, outcome in pending:
            _log_check(self.context, table, name, outcome)


def check_freshness(
    context: dg.OpExecutionContext, platform: PlatformResource, bus: EventBus, tables: TableStore
) -> bool:
    """Evaluate every lag check in this run (the freshness job's rules, under its check names)
    and stamp the time on the run. False, with a warning, when they could not be evaluated: the
    run goes on, and the freshness sensor, seeing no fresh stamp, evaluates them itself."""
    try:
        results = lag_results(platform.settings(), bus, tables)
    except Exception as exc:  # a lag check must not stop the projection
        context.log.warning("lag checks not evaluated in this run: %s", exc)
        return False
    for key, result in results:
        _log_result(context, key, result)
    context.instance.add_run_tags(context.run_id, {FRESHNESS_TAG: f"{time.time():.3f}"})
    return True


def compact(context: dg.OpExecutionContext, tables: TableStore) -> None:
    """Compact the small files the passes added (:func:`.maintenance.compact_small_files`), with
    a line per table in the run's log. A failure is logged and the run goes on: a compaction
    commits whole or not at all, and the daily maintenance compacts what is left."""
    try:
        done = maintenance.compact_small_files(tables)
    except Exception as exc:  # compaction must not stop the projection
        context.log.warning("small files not compacted in this run: %s", exc)
        return
    for c in done:
        context.log.info(
            "compacted %s: %s small files into %s (%s live files before) in %.2f s, version %s",
            c.table,
            c.files_removed,
            c.files_added,
            c.files_before,
            c.seconds,
            c.version,
        )


def checking_follow_run(instance: dg.DagsterInstance, now: float) -> dg.DagsterRun | None:
    """An in-flight following run that evaluated the lag checks within
    FRESHNESS_STAMP_MAX_AGE_SECONDS of ``now`` (epoch seconds), if any."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=FOLLOW_JOB, statuses=IN_FLIGHT))
    for run in runs:
        try:
            stamped = float(run.tags.get(FRESHNESS_TAG, ""))
        except ValueError:
            continue
        if 0 <= now - stamped <= FRESHNESS_STAMP_MAX_AGE_SECONDS:
            return run
    return None


def waiting_writer(instance: dg.DagsterInstance, own_run_id: str) -> dg.DagsterRun | None:
    """Another Delta writer run (maintenance, rebuild, recompute, redrive) that is in flight, so
    waiting for the writer pool this run holds: the run then yields it after its current pass."""
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        writer = run.tags.get(WRITER_TAG)
        if writer is not None and writer != "projection" and run.run_id != own_run_id:
            return run
    return None


@dg.op(
    out=dg.Out(dg.Nothing),
    description=(
        "On a handover run (tag cqrs/handover_from): wait, without the writer pool, for the "
        "following run it takes over from to end. Otherwise: nothing."
    ),
)
def await_handover(context: dg.OpExecutionContext) -> None:
    previous = context.run.tags.get(HANDOVER_TAG)
    if not previous:
        return
    started = time.monotonic()
    while True:
        run = context.instance.get_run_by_id(previous)
        waited = time.monotonic() - started
        if run is None or run.status not in IN_FLIGHT:
            context.log.info("run %s has ended: taking over after %.1f s", previous, waited)
            return
        if waited >= HANDOVER_WAIT_MAX_SECONDS:
            context.log.warning(
                "run %s is still in flight after %.0f s: waiting for the writer pool instead",
                previous,
                waited,
            )
            return
        sleep(HANDOVER_POLL_SECONDS)


@dg.op(
    pool=DELTA_WRITER_POOL,
    ins={"after": dg.In(dg.Nothing)},
    tags={"layer": "all"},
    description="Apply new bus events pass after pass until idle or the follow cap.",
)
def follow_projection(
    context: dg.OpExecutionContext, platform: PlatformResource, config: FollowConfig
) -> None:
    settings = platform.settings()
    cap = settings.projection_follow_seconds if config.max_seconds is None else config.max_seconds
    idle_for = (
        settings.projection_follow_idle_seconds
        if config.idle_seconds is None
        else config.idle_seconds
    )
    ctx = StepContext(platform.tables(), context.run_id, engine=platform.engine())
    tables = ctx.tables
    checks = BlockingChecks(context, tables, ctx.recent)
    batch = settings.projection_batch_size
    context.instance.add_run_tags(context.run_id, {FOLLOW_UNTIL_TAG: f"{time.time() + cap:.3f}"})
    start = time.monotonic()
    last_news = start
    last_freshness = -FRESHNESS_EVERY_SECONDS
    passes = events = applied = 0
    with platform.bus() as bus:
        while True:
            pass_started = time.monotonic()
            pass_started_at = time.time()
            try:
                result = catch_up(ctx, bus, max_events=batch, first=passes == 0, checks=checks)
            except BaseException:
                checks.flush()  # what was evaluated before the failure shows in the UI
                raise
            pass_seconds = time.monotonic() - pass_started
            passes += 1
            events += result.events_read
            for reports in result.written.values():
                context.log_event(
                    dg.AssetMaterialization(
                        asset_key=reports[-1].table,
                        metadata={
                            **report_metadata(reports, bus, tables),
                            "follow_pass": dg.MetadataValue.int(passes),
                            # when the pass began and how long it took, every table included:
                            # a late or long pass shows here as a step in the lag
                            "pass_started_at": dg.MetadataValue.timestamp(pass_started_at),
                            "pass_seconds": dg.MetadataValue.float(round(pass_seconds, 3)),
                            "engine": dg.MetadataValue.text(ctx.engine.name),
                        },
                    )
                )
            checks.flush()
            if result.events_read:
                applied += 1
                if applied % maintenance.FOLLOW_COMPACT_EVERY_PASSES == 0:
                    compact(context, tables)
            if time.monotonic() - last_freshness >= FRESHNESS_EVERY_SECONDS:
                check_freshness(context, platform, bus, tables)
                last_freshness = time.monotonic()
            now = time.monotonic()
            if result.events_read:
                last_news = now
            if now - start >= cap or now - last_news >= idle_for:
                break
            waiting = waiting_writer(context.instance, context.run_id)
            if waiting is not None:
                context.log.info(
                    "yielding the Delta writer pool to run %s (%s)",
                    waiting.run_id,
                    waiting.tags.get(WRITER_TAG),
                )
                break
            if not result.events_read:
                sleep(POLL_SECONDS)
            else:
                pace = settings.projection_follow_min_pass_seconds
                sleep(max(0.0, pass_started + pace - time.monotonic()))
    context.log.info(
        "followed the bus for %.1f s: %s passes, %s events",
        time.monotonic() - start,
        passes,
        events,
    )


@dg.job(
    name=FOLLOW_JOB,
    executor_def=dg.in_process_executor,
    tags={WRITER_TAG: "projection"},
    description=(
        "Follow mode: one run applies new bus events to every read model, pass after pass, "
        "until idle (CQRS_PROJECTION_FOLLOW_IDLE_SECONDS) or the cap "
        "(CQRS_PROJECTION_FOLLOW_SECONDS)."
    ),
)
def follow_read_models() -> None:
    follow_projection(await_handover())
