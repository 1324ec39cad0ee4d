"""Read models as software-defined assets (group ``read_models``), each a Delta table.

Every asset is a thin wrapper around a projection step in :mod:`cqrs_dagster.projections`: the
step reads what is new since the table's own checkpoint and commits rows and checkpoint together,
so a retried or repeated run never skips or doubles anything. All writers share one concurrency
pool of size 1 so two runs never write the same Delta table at once.
"""

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from cqrs_dagster.eventbus.port import EventBus
from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.gold import build_daily_order_metrics, build_order_summary
from cqrs_dagster.projections.raw_ingest import ingest_raw_events
from cqrs_dagster.projections.report import StepReport
from cqrs_dagster.projections.silver import project_customers, project_orders
from cqrs_dagster.projections.status import projection_lag
from cqrs_dagster.projections.tables import TableStore

from .resources import PlatformResource

GROUP = "read_models"
DELTA_WRITER_POOL = "cqrs_delta_writer"
# Events one run applies per read model at most (in batches of CQRS_PROJECTION_BATCH_SIZE): the
# run's blocking checks read what it appended, so a bounded run keeps its peak RSS bounded (a
# 1M-event run peaked at ~1.5 GiB, a 250k one at ~0.86 GiB; issue 7 (f): <= 1 GiB). The sensor
# requests another run while a read model is behind.
MAX_EVENTS_PER_RUN = 250_000
MAX_BATCHES_PER_RUN = 20
# Every read model is materialized at least every CQRS_FRESHNESS_HEARTBEAT_MINUTES (default 30) by
# the event sensor, even with no new events; missing two heartbeats warns, four fails. Event-level
# staleness is the job of the <read_model>_freshness_lag checks.
FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=120), warn_window=timedelta(minutes=60)
)  # bounded work per run; the sensor requests another run for the rest


class GoldConfig(dg.Config):
    """``full``: recompute every day instead of only the days touched since the checkpoint."""

    full: bool = False


def read_model(
    name: str, layer: str, deps: Sequence[dg.AssetsDefinition] = ()
) -> Callable[[Callable[..., dg.MaterializeResult[None]]], dg.AssetsDefinition]:
    """The asset decorator every read model shares: group, writer pool, freshness policy."""
    return dg.asset(
        name=name,
        deps=list(deps),
        tags={"layer": layer},
        group_name=GROUP,
        pool=DELTA_WRITER_POOL,
        kinds={"delta"},
        freshness_policy=FRESHNESS,
    )


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


def max_batches(batch_size: int) -> int:
    """Batches one run applies per read model: MAX_EVENTS_PER_RUN worth (at least one, at most
    MAX_BATCHES_PER_RUN)."""
    return max(1, min(MAX_BATCHES_PER_RUN, MAX_EVENTS_PER_RUN // max(1, batch_size)))


def drain(step: Callable[[], StepReport], batches: int) -> list[StepReport]:
    """Run a step batch after batch until it has nothing left (or ``batches`` were run)."""
    reports = [step()]
    while reports[-1].events_read > 0 and len(reports) < batches:
        reports.append(step())
    return reports


def _materialize(
    context: dg.AssetExecutionContext,
    platform: PlatformResource,
    step: Callable[[EventBus, TableStore, int], StepReport],
    *,
    batched: bool = True,
) -> dg.MaterializeResult[None]:
    settings = platform.settings()
    tables = platform.tables()
    with platform.bus() as bus:
        if batched:
            batch = settings.projection_batch_size
            reports = drain(lambda: step(bus, tables, batch), max_batches(batch))
        else:
            reports = [step(bus, tables, settings.projection_batch_size)]
        meta = report_metadata(reports, bus, tables)
    context.log.info(
        "%s: applied %s events in %s batch(es)",
        reports[-1].table,
        meta["events_applied"].value,
        len(reports),
    )
    return dg.MaterializeResult(metadata=meta)


@read_model(schemas.RAW_EVENTS, "bronze")
def raw_events(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> dg.MaterializeResult[None]:
    """Bronze: every domain event from the bus exactly once, with its envelope and bus position.

    Append-only, deduplicated by eventId; each partition's checkpoint is committed in the same
    Delta commit as the rows. Poison events go to dead_letter_events and never block the rest.
    """
    run_id = context.run_id
    return _materialize(
        context,
        platform,
        lambda bus, tables, n: ingest_raw_events(bus, tables, max_events=n, run_id=run_id),
    )


@read_model(schemas.ORDERS, "silver", deps=[raw_events])
def orders(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> dg.MaterializeResult[None]:
    """Silver: one row per order (status, total amount, item count, dates), current state.

    Version-guarded MERGE: a duplicate or older event never overwrites newer state.
    """
    run_id = context.run_id
    return _materialize(
        context,
        platform,
        lambda bus, tables, n: project_orders(tables, max_events=n, run_id=run_id),
    )


@read_model(schemas.CUSTOMERS, "silver", deps=[raw_events])
def customers(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> dg.MaterializeResult[None]:
    """Silver: one row per customer (name, email, dates), current state, version-guarded."""
    run_id = context.run_id
    return _materialize(
        context,
        platform,
        lambda bus, tables, n: project_customers(tables, max_events=n, run_id=run_id),
    )


@read_model(schemas.ORDER_SUMMARY, "gold", deps=[orders, customers])
def order_summary(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> dg.MaterializeResult[None]:
    """Gold: the reference's vw_order_summary, one row per order with its customer's name."""
    run_id = context.run_id
    return _materialize(
        context,
        platform,
        lambda bus, tables, n: build_order_summary(tables, run_id=run_id),
        batched=False,
    )


@read_model(schemas.DAILY_ORDER_METRICS, "gold", deps=[orders])
def daily_order_metrics(
    context: dg.AssetExecutionContext, platform: PlatformResource, config: GoldConfig
) -> dg.MaterializeResult[None]:
    """Gold: the reference's vw_daily_order_metrics: orders, revenue, average order value and
    unique customers per UTC day of creation, over every order whatever its status."""
    run_id = context.run_id
    return _materialize(
        context,
        platform,
        lambda bus, tables, n: build_daily_order_metrics(tables, run_id=run_id, full=config.full),
        batched=False,
    )
