"""Data-quality asset checks on the read models (rules in :mod:`cqrs_dagster.quality.rules`).

Blocking checks guard what feeds the next table: a duplicated or malformed event in raw_events,
or a duplicated key / wrong total in the silver tables, fails the run and skips the downstream
assets. Reconciliation and gold comparisons are reported without blocking.
"""

from collections.abc import Callable

import dagster as dg

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.quality import rules
from cqrs_dagster.quality.outcome import CheckOutcome
from cqrs_dagster.quality.scope import RunScope, raw_scope_of_run

from .jobs import PROJECTION_JOB
from .resources import PlatformResource

Rule = Callable[[TableStore], CheckOutcome]
ScopedRule = Callable[[TableStore, RunScope | None], CheckOutcome]


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


def build_check(
    table: str, name: str, rule: Rule, description: str, *, blocking: bool
) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=dg.AssetKey(table), name=name, blocking=blocking, description=description)
    def _check(platform: PlatformResource) -> dg.AssetCheckResult:
        return outcome_result(rule(platform.tables()))

    return _check


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


def build_scoped_check(
    table: str, name: str, rule: ScopedRule, description: str
) -> dg.AssetChecksDefinition:
    """A blocking raw_events check that reads only the rows its projection run appended."""

    @dg.asset_check(asset=dg.AssetKey(table), name=name, blocking=True, description=description)
    def _check(
        context: dg.AssetCheckExecutionContext, platform: PlatformResource
    ) -> dg.AssetCheckResult:
        tables = platform.tables()
        scope = run_scope(tables, context.run.job_name, context.run.run_id)
        return outcome_result(rule(tables, scope))

    return _check


def _orders_reconcile(tables: TableStore) -> CheckOutcome:
    checkpoint = txn(tables.open(schemas.ORDERS), seq_app_id(schemas.ORDERS))
    return rules.orders_reconcile(tables, checkpoint)


QUALITY_CHECKS = [
    build_scoped_check(
        schemas.RAW_EVENTS,
        "raw_events_unique_event_ids",
        rules.unique_event_ids,
        "No eventId appears twice in raw_events (blocking; a projection run checks the rows it "
        "appended against their event dates, the scheduled audit the whole table).",
    ),
    build_scoped_check(
        schemas.RAW_EVENTS,
        "raw_events_envelope_schema",
        rules.envelope_schema,
        "Every event's envelope is well formed: ids, known type on its aggregate, JSON data "
        "(blocking; a projection run checks the rows it appended, the scheduled audit all).",
    ),
    build_check(
        schemas.RAW_EVENTS,
        "raw_events_version_sequences",
        rules.version_sequences,
        "Per aggregate, versions run 1..n with no gap or repeat (a dead-lettered event shows here).",
        blocking=False,
    ),
    build_check(
        schemas.ORDERS,
        "orders_unique_keys",
        lambda t: rules.unique_keys(t, schemas.ORDERS, "order_id"),
        "order_id is unique (blocking).",
        blocking=True,
    ),
    build_check(
        schemas.ORDERS,
        "orders_amounts",
        rules.order_amounts,
        "total_amount >= 0 and equals the exact sum of its items' quantity x unitPrice (blocking).",
        blocking=True,
    ),
    build_check(
        schemas.ORDERS,
        "orders_reconcile_raw_events",
        _orders_reconcile,
        "Rows in orders = distinct OrderCreated aggregates in raw_events up to orders' checkpoint.",
        blocking=False,
    ),
    build_check(
        schemas.CUSTOMERS,
        "customers_unique_keys",
        lambda t: rules.unique_keys(t, schemas.CUSTOMERS, "customer_id"),
        "customer_id is unique (blocking).",
        blocking=True,
    ),
    build_check(
        schemas.ORDER_SUMMARY,
        "order_summary_unique_keys",
        lambda t: rules.unique_keys(t, schemas.ORDER_SUMMARY, "order_id"),
        "order_id is unique in order_summary.",
        blocking=False,
    ),
    build_check(
        schemas.DAILY_ORDER_METRICS,
        "daily_order_metrics_match_orders",
        rules.daily_metrics_match,
        "daily_order_metrics equals a recomputation from orders.",
        blocking=False,
    ),
]
