"""Jobs that keep the platform healthy: table maintenance and the check-only freshness job."""

import dagster as dg

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.maintenance import maintain_all
from cqrs_dagster.projections.retired import drop_retired

from .assets import DELTA_WRITER_POOL
from .checks import OUTBOX_RELAY_LAG, freshness_check_key
from .jobs import QUALITY_AUDITS, WHOLE_TABLE_RERUNS, WRITER_TAG
from .resources import PlatformResource


@dg.op(
    pool=DELTA_WRITER_POOL,
    description=(
        "Compact, vacuum and checkpoint every Delta table (contents unchanged); drop physical "
        "tables retired by a rebuild longer ago than the vacuum retention."
    ),
)
def maintain_delta_tables(context: dg.OpExecutionContext, platform: PlatformResource) -> None:
    settings = platform.settings()
    tables = platform.tables()
    # Physical tables a blue/green rebuild retired stay for rollback as long as vacuum keeps old
    # file versions; after that they are deleted.
    dropped = drop_retired(tables, older_than_hours=settings.vacuum_retention_hours)
    if dropped:
        context.log.info("dropped retired physical tables: %s", ", ".join(dropped))
    for report in maintain_all(tables, settings.vacuum_retention_hours):
        context.log_event(
            dg.AssetObservation(
                asset_key=dg.AssetKey(report.table),
                metadata={
                    "files_before": dg.MetadataValue.int(report.files_before),
                    "files_after": dg.MetadataValue.int(report.files_after),
                    "files_compacted": dg.MetadataValue.int(report.files_compacted),
                    "files_vacuumed": dg.MetadataValue.int(report.files_vacuumed),
                    "row_count": dg.MetadataValue.int(report.rows),
                    "delta_version": dg.MetadataValue.int(report.version),
                    "seconds": dg.MetadataValue.float(report.seconds),
                },
            )
        )


@dg.job(
    name="maintain_read_models",
    executor_def=dg.in_process_executor,
    tags={WRITER_TAG: "maintenance"},
    description="Compaction + vacuum + log checkpoint of every Delta table, never racing a projection.",
)
def maintain_read_models() -> None:
    maintain_delta_tables()


check_read_model_freshness = dg.define_asset_job(
    "check_read_model_freshness",
    selection=dg.AssetSelection.checks(
        *[freshness_check_key(t) for t in schemas.READ_MODELS], OUTBOX_RELAY_LAG
    ),
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
