"""Data-quality asset checks: one per :data:`cqrs_dagster.quality.catalog.CHECKS` entry.

Blocking checks guard what feeds the next table: a duplicated or malformed event in raw_events,
or a duplicated key / wrong total in the silver tables, fails the run and skips the downstream
assets. Reconciliation and gold comparisons are audits, reported without blocking.
"""

import dagster as dg

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.quality.catalog import CHECKS, QualityCheck
from cqrs_dagster.quality.outcome import CheckOutcome
from cqrs_dagster.quality.scope import RunScope, raw_scope_of_run

from .names import PROJECTION_JOB
from .resources import PlatformResource


def outcome_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    metadata: dict[str, dg.MetadataValue] = {}
    for key, value in outcome.figures.items():
        if isinstance(value, bool | str):
            metadata[key] = dg.MetadataValue.text(str(value))
        elif isinstance(value, int):
            metadata[key] = dg.MetadataValue.int(value)
        else:
            metadata[key] = dg.MetadataValue.float(float(value))
    metadata["summary"] = dg.MetadataValue.text(outcome.summary)
    if outcome.offending:
        metadata["first_offending_ids"] = dg.MetadataValue.json(outcome.offending)
    return dg.AssetCheckResult(
        passed=outcome.passed, metadata=metadata, description=outcome.summary
    )


def check_key(check: QualityCheck) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(dg.AssetKey(check.table), check.name)


def run_scope(tables: TableStore, job_name: str, run_id: str) -> RunScope | None:
    """Inside a projection run: the raw_events rows this run appended (an empty range when it
    appended none). Anywhere else (the scheduled audit job): None, the whole table."""
    if job_name != PROJECTION_JOB:
        return None
    scope = raw_scope_of_run(tables, run_id)
    if scope is None:
        checkpoint = txn(tables.open(schemas.RAW_EVENTS), seq_app_id(schemas.RAW_EVENTS))
        scope = RunScope(checkpoint, checkpoint)
    return scope


def build_check(check: QualityCheck) -> dg.AssetChecksDefinition:
    """The asset check of a catalog entry (scoped ones read only their run's raw rows)."""

    @dg.asset_check(
        asset=dg.AssetKey(check.table),
        name=check.name,
        blocking=check.blocking,
        description=check.description,
    )
    def _check(
        context: dg.AssetCheckExecutionContext, platform: PlatformResource
    ) -> dg.AssetCheckResult:
        tables = platform.tables()
        scope = run_scope(tables, context.run.job_name, context.run.run_id)
        # Keyed checks read the whole table here: a run's raw range need not cover what its
        # silver steps applied (a backlog); follow passes hand them each table's own range.
        return outcome_result(check.evaluate(tables, scope if check.scoped else None))

    return _check


QUALITY_CHECKS = [build_check(check) for check in CHECKS]
