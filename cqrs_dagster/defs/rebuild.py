"""Rebuilds without downtime and the daily replay audit.

``rebuild_read_model`` replays raw_events into a shadow table, compares it with the live one and
swaps the rows into the live table with one Delta commit (see
:mod:`cqrs_dagster.projections.rebuild`); it runs in the Delta
writer pool, so it never overlaps a projection run. ``<table>_replay_audit`` checks replay the
silver tables into scratch tables and compare them with live at the live checkpoint; the
check-only job ``replay_audit`` runs them daily.
"""

import dagster as dg

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.rebuild import REBUILDABLE, describe, rebuild, replay_audit

from .names import DELTA_WRITER_POOL, WRITER_TAG
from .resources import PlatformResource

AUDITED = (schemas.ORDERS, schemas.CUSTOMERS)
AUDIT_SCRATCH = "_audit"  # under the Delta root; each audit deletes its own folder


class RebuildConfig(dg.Config):
    """``table``: the read model to rebuild; ``force``: switch even if it differs from live."""

    table: str
    force: bool = False
    batch_size: int | None = None


@dg.op(
    pool=DELTA_WRITER_POOL,
    description="Replay raw_events into a shadow table, compare with live, switch if equal.",
)
def rebuild_table(
    context: dg.OpExecutionContext, config: RebuildConfig, platform: PlatformResource
) -> None:
    if config.table not in REBUILDABLE:
        raise dg.Failure(f"{config.table!r} cannot be rebuilt; choose one of {REBUILDABLE}")
    settings = platform.settings()
    report = rebuild(
        platform.tables(),
        config.table,
        run_id=context.run_id,
        progress=lambda done, total: context.log.debug("replayed %s/%s events", done, total),
        batch_size=config.batch_size or settings.projection_batch_size,
        force=config.force,
    )
    facts = describe(report)
    context.log_event(
        dg.AssetObservation(
            asset_key=dg.AssetKey(config.table),
            metadata=facts,
        )
    )
    if not report.switched:
        raise dg.Failure(
            f"rebuilt {config.table} differs from live in {report.comparison.differing_keys} "
            f"key(s) (first: {', '.join(report.comparison.first_differences)}); not switched. "
            "Run again with force: true to replace it.",
            metadata={"first_differences": dg.MetadataValue.json(facts["first_differences"])},
        )
    context.log.info(
        "swapped the rebuilt %s into the live table (Delta version %s; roll back to %s)",
        config.table,
        report.version,
        report.previous_version,
    )


@dg.job(
    name="rebuild_read_model",
    executor_def=dg.in_process_executor,
    tags={WRITER_TAG: "rebuild"},
    description="Rebuild one read model from raw_events and switch readers to it without downtime.",
)
def rebuild_read_model() -> None:
    rebuild_table()


def build_audit_check(table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(table),
        name=f"{table}_replay_audit",
        description=f"Replaying raw_events gives exactly the live {table} table (all columns).",
    )
    def _audit(
        context: dg.AssetCheckExecutionContext, platform: PlatformResource
    ) -> dg.AssetCheckResult:
        tables = platform.tables()
        report = replay_audit(
            tables,
            table,
            run_id=context.op_execution_context.run_id,
            scratch_root=f"{tables.root.rstrip('/')}/{AUDIT_SCRATCH}",
            batch_size=platform.settings().projection_batch_size,
        )
        return dg.AssetCheckResult(
            passed=report.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None
            if report.passed
            else f"{report.differing_keys} key(s) differ from a replay of raw_events",
            metadata={
                "checkpoint": dg.MetadataValue.int(report.checkpoint),
                "rows": dg.MetadataValue.int(report.rows),
                "differing_keys": dg.MetadataValue.int(report.differing_keys),
                "first_differences": dg.MetadataValue.json(report.first_differences),
                "events_replayed": dg.MetadataValue.int(report.events_replayed),
                "seconds": dg.MetadataValue.float(report.seconds),
            },
        )

    return _audit


# Full replays of raw_events: run daily by the check-only ``replay_audit`` job (defs/jobs.py),
# never with every projection run.
REPLAY_AUDITS = [build_audit_check(table) for table in AUDITED]
