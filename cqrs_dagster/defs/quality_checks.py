"""Data-quality asset checks on the read models (rules in :mod:`cqrs_dagster.quality.rules`).

Blocking checks guard what feeds the next table: a duplicated or malformed event in raw_events,
or a duplicated key / wrong total in the silver tables, fails the run and skips the downstream
assets. Reconciliation and gold comparisons are reported without blocking.
"""

from collections.abc import Callable

import dagster as dg

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.quality import rules
from cqrs_dagster.quality.outcome import CheckOutcome

from .resources import PlatformResource

Rule = Callable[[TableStore], CheckOutcome]


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


def _orders_reconcile(tables: TableStore) -> CheckOutcome:
    orders = tables.open(schemas.ORDERS)
    checkpoint = -1
    if orders is not None:
        value = orders.transaction_version(f"{schemas.ORDERS}/ingest_seq")
        checkpoint = -1 if value is None else int(value)
    return rules.orders_reconcile(tables, checkpoint)


QUALITY_CHECKS = [
    build_check(
        schemas.RAW_EVENTS,
        "raw_events_unique_event_ids",
        rules.unique_event_ids,
        "No eventId appears twice in raw_events (blocking).",
        blocking=True,
    ),
    build_check(
        schemas.RAW_EVENTS,
        "raw_events_envelope_schema",
        rules.envelope_schema,
        "Every event's envelope is well formed: ids, known type on its aggregate, JSON data (blocking).",
        blocking=True,
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
