"""Dead letters in Dagster: a check that warns while poison events wait, and the redrive job.

``dead_letter_events_unresolved`` (on raw_events, WARN) fails while dead_letter_events holds
unresolved rows, with their count, first ids, stages and reasons as metadata. Once the cause is
fixed (the missing order or customer event arrived, a bug in a fold is fixed),
``redrive_dead_letters`` re-applies the silver dead letters through the current folds, marks
those that now apply as resolved, then rewrites both gold tables from silver: a redrive changes
silver rows BEHIND the checkpoints, which the incremental gold steps would never look at again.
The gold rebuild runs on every redrive run (also when nothing was resolved), so a run that
crashed between the two ops is repaired by the next one. Both ops claim the Delta writer pool.
"""

from typing import Any

import dagster as dg

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.dead_letters import read_dead_letters
from cqrs_dagster.projections.pipeline import layer
from cqrs_dagster.projections.redrive import redrive

from .names import DELTA_WRITER_POOL, WRITER_TAG
from .resources import PlatformResource

CHECK_NAME = "dead_letter_events_unresolved"
REDRIVE_JOB = "redrive_dead_letters"
SHOWN = 5  # dead letters listed in the check's metadata


@dg.asset_check(
    asset=dg.AssetKey(schemas.RAW_EVENTS),
    name=CHECK_NAME,
    description=(
        "Fails (WARN) while dead_letter_events holds unresolved poison events; fix the cause, "
        f"then run the {REDRIVE_JOB} job."
    ),
)
def dead_letter_events_unresolved(platform: PlatformResource) -> dg.AssetCheckResult:
    letters = read_dead_letters(platform.tables(), unresolved_only=True)
    first = letters.slice(0, SHOWN).to_pylist()
    by_stage: dict[str, int] = {}
    for stage in letters.column("stage").to_pylist():
        by_stage[stage] = by_stage.get(stage, 0) + 1
    return dg.AssetCheckResult(
        passed=letters.num_rows == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "unresolved_count": dg.MetadataValue.int(letters.num_rows),
            "by_stage": dg.MetadataValue.json(by_stage),
            "first_ids": dg.MetadataValue.json([r["dead_letter_id"] for r in first]),
            "first_reasons": dg.MetadataValue.json(
                [
                    {"id": r["dead_letter_id"], "event_id": r["event_id"], "reason": r["reason"]}
                    for r in first
                ]
            ),
        },
    )


@dg.op(
    pool=DELTA_WRITER_POOL,
    description="Re-apply unresolved silver dead letters; mark those that now apply resolved.",
)
def redrive_silver_dead_letters(
    context: dg.OpExecutionContext, platform: PlatformResource
) -> dict[str, int]:
    tables = platform.tables()
    resolved = redrive(tables, run_id=context.run_id)
    left = read_dead_letters(tables, unresolved_only=True).num_rows
    context.log.info("redrive resolved %s; %s dead letters still unresolved", resolved, left)
    context.log_event(
        dg.AssetObservation(
            asset_key=dg.AssetKey(schemas.RAW_EVENTS),
            metadata={
                "dead_letters_resolved": dg.MetadataValue.json(resolved),
                "dead_letters_unresolved": dg.MetadataValue.int(left),
            },
        )
    )
    return resolved


@dg.op(
    pool=DELTA_WRITER_POOL,
    description="Rewrite order_summary and daily_order_metrics from the silver tables.",
)
def rebuild_gold_after_redrive(
    context: dg.OpExecutionContext, platform: PlatformResource, resolved: dict[str, int]
) -> None:
    ctx = StepContext(platform.tables(), context.run_id)
    batch = platform.settings().projection_batch_size
    for gold in layer("gold"):
        report = gold.run(ctx, max_events=batch, full=True)
        metadata: dict[str, Any] = {
            "rows_written": dg.MetadataValue.int(report.rows_written),
            "row_count": dg.MetadataValue.int(report.row_count),
            "dead_letters_resolved": dg.MetadataValue.int(sum(resolved.values())),
        }
        context.log_event(
            dg.AssetMaterialization(asset_key=dg.AssetKey(report.table), metadata=metadata)
        )


@dg.job(
    name=REDRIVE_JOB,
    executor_def=dg.in_process_executor,
    tags={WRITER_TAG: "redrive"},
    description=(
        "Redrive silver dead letters whose cause is fixed, then rebuild the gold tables fully "
        "(a redrive moves no checkpoint)."
    ),
)
def redrive_dead_letters() -> None:
    rebuild_gold_after_redrive(redrive_silver_dead_letters())


@dg.definitions
def dead_letter_defs() -> dg.Definitions:
    return dg.Definitions(asset_checks=[dead_letter_events_unresolved], jobs=[redrive_dead_letters])
