"""Table maintenance: compaction, vacuum and log checkpoints of every Delta table."""

import dagster as dg

from cqrs_dagster.projections.maintenance import maintain_all

from .names import DELTA_WRITER_POOL, WRITER_TAG
from .resources import PlatformResource


@dg.op(
    pool=DELTA_WRITER_POOL,
    description=(
        "Compact, vacuum and checkpoint every Delta table (contents unchanged). Vacuum keeps "
        "the versions before a rebuild's swap (its rollback) for the vacuum retention."
    ),
)
def maintain_delta_tables(context: dg.OpExecutionContext, platform: PlatformResource) -> None:
    settings = platform.settings()
    tables = platform.tables()
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
