"""Read models as software-defined assets (group ``read_models``), each a Delta table.

One asset per stage of :mod:`cqrs_dagster.projections.pipeline`, with the stage's deps and
description: the asset runs the stage's step batch after batch (``Stage.drain``); the step reads
what is new since the table's own checkpoint and commits rows and checkpoint together, so a
retried or repeated run never skips or doubles anything. All writers share one concurrency pool
of size 1 so two runs never write the same Delta table at once.
"""

from datetime import timedelta
from typing import Any

import dagster as dg

from cqrs_dagster.eventbus.port import EventBus
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import STAGES, Stage
from cqrs_dagster.projections.report import StepReport
from cqrs_dagster.projections.status import projection_lag
from cqrs_dagster.projections.tables import TableStore

from .names import DELTA_WRITER_POOL, GROUP
from .resources import PlatformResource

# Every read model is materialized at least every CQRS_FRESHNESS_HEARTBEAT_MINUTES (default 30) by
# the event sensor, even with no new events; missing two heartbeats warns, four fails. Event-level
# staleness is the job of the <read_model>_freshness_lag checks.
FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=120), warn_window=timedelta(minutes=60)
)


class GoldConfig(dg.Config):
    """``full``: recompute every row instead of only the keys / days touched since the
    checkpoint (daily_order_metrics; the recompute_gold job sets it)."""

    full: bool = False


def report_metadata(reports: list[StepReport], bus: EventBus, tables: TableStore) -> dict[str, Any]:
    """Numeric metadata (plotted over materializations in the UI) for one or more batches."""
    last = reports[-1]
    lag = projection_lag(bus, tables, last.table)
    meta: dict[str, Any] = {
        "events_read": dg.MetadataValue.int(sum(r.events_read for r in reports)),
        "events_applied": dg.MetadataValue.int(sum(r.events_applied for r in reports)),
        "duplicates_skipped": dg.MetadataValue.int(sum(r.duplicates_skipped for r in reports)),
        "dead_lettered": dg.MetadataValue.int(sum(r.dead_lettered for r in reports)),
        "rows_written": dg.MetadataValue.int(sum(r.rows_written for r in reports)),
        "batches": dg.MetadataValue.int(len(reports)),
        "row_count": dg.MetadataValue.int(last.row_count),
        "lag_seconds": dg.MetadataValue.float(float(lag.lag_seconds)),
        "events_behind": dg.MetadataValue.int(lag.events_behind),
        "seconds": dg.MetadataValue.float(sum(r.seconds for r in reports)),
        "checkpoint": dg.MetadataValue.json(dict(last.checkpoint)),
        "table_uri": dg.MetadataValue.path(tables.uri(last.table)),
    }
    if last.delta_version is not None:
        meta["delta_version"] = dg.MetadataValue.int(last.delta_version)
    if last.newest_applied_event_time is not None:
        meta["newest_applied_event_time"] = dg.MetadataValue.timestamp(
            last.newest_applied_event_time
        )
    return meta


def _materialize(
    context: dg.AssetExecutionContext, platform: PlatformResource, stage: Stage, full: bool
) -> dg.MaterializeResult[None]:
    settings = platform.settings()
    ctx = StepContext(platform.tables(), context.run_id, engine=platform.engine())
    with platform.bus() as bus:
        reports = stage.drain(ctx, bus, batch=settings.projection_batch_size, full=full)
        meta = report_metadata(reports, bus, ctx.tables)
    meta["engine"] = dg.MetadataValue.text(ctx.engine.name)
    context.log.info(
        "%s: applied %s events in %s batch(es)",
        stage.table,
        meta["events_applied"].value,
        len(reports),
    )
    return dg.MaterializeResult(metadata=meta)


def read_model_asset(stage: Stage) -> dg.AssetsDefinition:
    """The asset of one pipeline stage: group, writer pool, freshness policy, the stage's deps.
    Gold assets take :class:`GoldConfig`."""
    decorate = dg.asset(
        name=stage.table,
        deps=list(stage.deps),
        tags={"layer": stage.layer},
        group_name=GROUP,
        pool=DELTA_WRITER_POOL,
        kinds={"delta"},
        freshness_policy=FRESHNESS,
        description=stage.description,
    )
    if stage.batched:

        def batched(
            context: dg.AssetExecutionContext, platform: PlatformResource
        ) -> dg.MaterializeResult[None]:
            return _materialize(context, platform, stage, False)

        return decorate(batched)

    def gold(
        context: dg.AssetExecutionContext, platform: PlatformResource, config: GoldConfig
    ) -> dg.MaterializeResult[None]:
        return _materialize(context, platform, stage, config.full)

    return decorate(gold)


READ_MODEL_ASSETS = [read_model_asset(stage) for stage in STAGES]
