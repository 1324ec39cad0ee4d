"""Every data-quality check on the read models, defined once: the Dagster asset checks, the
projection job's selection, the quality-audit job and follow mode all take them from here.

``blocking`` checks guard what feeds the next table: a failure stops the projection before the
next layer. ``scoped`` checks read only the raw_events rows a projection run appended; ``keyed``
checks can be limited to the silver keys a raw range wrote (a follow pass passes its range, so it
costs in proportion to its events). The quality-audit job re-runs both over the whole table.
``audit`` checks scan whole tables and run in the scheduled quality job only, never on the
latency path of a projection run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.tables import TableStore

from . import rules
from .outcome import CheckOutcome
from .scope import RunScope

Rule = Callable[[TableStore, RunScope | None], CheckOutcome]


@dataclass(frozen=True)
class QualityCheck:
    """One rule on one table, and where it runs."""

    table: str
    name: str
    description: str
    rule: Rule = field(repr=False, compare=False)
    blocking: bool = False
    scoped: bool = False
    keyed: bool = False
    audit: bool = False

    def evaluate(self, tables: TableStore, scope: RunScope | None = None) -> CheckOutcome:
        """Run the rule over a raw range's rows or keys (``scope``, for scoped or keyed checks)
        or the whole table (None)."""
        return self.rule(tables, scope if self.scoped or self.keyed else None)


def _table_rule(rule: Callable[[TableStore], CheckOutcome]) -> Rule:
    return lambda tables, scope: rule(tables)


def _orders_reconcile(tables: TableStore) -> CheckOutcome:
    checkpoint = txn(tables.open(schemas.ORDERS), seq_app_id(schemas.ORDERS))
    return rules.orders_reconcile(tables, checkpoint)


RAW_UNIQUE_EVENT_IDS = QualityCheck(
    schemas.RAW_EVENTS,
    "raw_events_unique_event_ids",
    "No eventId appears twice in raw_events (blocking; a projection run checks the rows it "
    "appended against their event dates, the scheduled audit the whole table).",
    rules.unique_event_ids,
    blocking=True,
    scoped=True,
)
RAW_ENVELOPE_SCHEMA = QualityCheck(
    schemas.RAW_EVENTS,
    "raw_events_envelope_schema",
    "Every event's envelope is well formed: ids, known type on its aggregate, JSON data "
    "(blocking; a projection run checks the rows it appended, the scheduled audit all).",
    rules.envelope_schema,
    blocking=True,
    scoped=True,
)
RAW_VERSION_SEQUENCES = QualityCheck(
    schemas.RAW_EVENTS,
    "raw_events_version_sequences",
    "Per aggregate, versions run 1..n with no gap or repeat (a dead-lettered event shows here).",
    _table_rule(rules.version_sequences),
    audit=True,
)
ORDERS_UNIQUE_KEYS = QualityCheck(
    schemas.ORDERS,
    "orders_unique_keys",
    "order_id is unique (blocking; a follow pass checks the keys it wrote).",
    lambda t, s: rules.unique_keys(t, schemas.ORDERS, "order_id", s),
    blocking=True,
    keyed=True,
)
ORDERS_AMOUNTS = QualityCheck(
    schemas.ORDERS,
    "orders_amounts",
    "total_amount >= 0 and equals the exact sum of its items' quantity x unitPrice (blocking; a "
    "follow pass checks the orders it wrote).",
    rules.order_amounts,
    blocking=True,
    keyed=True,
)
ORDERS_RECONCILE = QualityCheck(
    schemas.ORDERS,
    "orders_reconcile_raw_events",
    "Rows in orders = distinct OrderCreated aggregates in raw_events up to orders' checkpoint.",
    _table_rule(_orders_reconcile),
    audit=True,
)
CUSTOMERS_UNIQUE_KEYS = QualityCheck(
    schemas.CUSTOMERS,
    "customers_unique_keys",
    "customer_id is unique (blocking; a follow pass checks the keys it wrote).",
    lambda t, s: rules.unique_keys(t, schemas.CUSTOMERS, "customer_id", s),
    blocking=True,
    keyed=True,
)
ORDER_SUMMARY_UNIQUE_KEYS = QualityCheck(
    schemas.ORDER_SUMMARY,
    "order_summary_unique_keys",
    "order_id is unique in order_summary.",
    _table_rule(lambda t: rules.unique_keys(t, schemas.ORDER_SUMMARY, "order_id")),
    audit=True,
)
DAILY_METRICS_MATCH = QualityCheck(
    schemas.DAILY_ORDER_METRICS,
    "daily_order_metrics_match_orders",
    "daily_order_metrics equals a recomputation from orders.",
    _table_rule(rules.daily_metrics_match),
    audit=True,
)

CHECKS: tuple[QualityCheck, ...] = (
    RAW_UNIQUE_EVENT_IDS,
    RAW_ENVELOPE_SCHEMA,
    RAW_VERSION_SEQUENCES,
    ORDERS_UNIQUE_KEYS,
    ORDERS_AMOUNTS,
    ORDERS_RECONCILE,
    CUSTOMERS_UNIQUE_KEYS,
    ORDER_SUMMARY_UNIQUE_KEYS,
    DAILY_METRICS_MATCH,
)


def blocking_on(table: str) -> tuple[QualityCheck, ...]:
    """The blocking checks of ``table``, in catalog order."""
    return tuple(c for c in CHECKS if c.table == table and c.blocking)
