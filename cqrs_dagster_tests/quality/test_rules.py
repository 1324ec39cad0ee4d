"""Each quality rule passes on healthy read models and fails, naming the offender, on a table
crafted to break it."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.quality import rules
from cqrs_dagster.quality.outcome import CheckOutcome
from cqrs_dagster.quality.scope import RunScope
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus, make_table_store
from cqrs_dagster_tests.defs.seed import seed_commands


@pytest.fixture
def healthy(tmp_path: Path) -> TableStore:
    settings = Settings(env="local", data_dir=tmp_path / "data")
    seed_commands(settings, customers=3, orders_per_customer=2)
    tables = make_table_store(settings)
    bus = make_event_bus(settings)
    try:
        catch_up(StepContext(tables, "seed"), bus, max_events=10_000)
    finally:
        bus.close()
    return tables


def orders_checkpoint(tables: TableStore) -> int:
    table = tables.open(schemas.ORDERS)
    assert table is not None
    return int(table.transaction_version("orders/ingest_seq") or -1)


RULES: dict[str, Callable[[TableStore], CheckOutcome]] = {
    "unique_event_ids": rules.unique_event_ids,
    "version_sequences": rules.version_sequences,
    "envelope_schema": rules.envelope_schema,
    "orders_unique": lambda t: rules.unique_keys(t, schemas.ORDERS, "order_id"),
    "customers_unique": lambda t: rules.unique_keys(t, schemas.CUSTOMERS, "customer_id"),
    "order_amounts": rules.order_amounts,
    "orders_reconcile": lambda t: rules.orders_reconcile(t, orders_checkpoint(t)),
    "daily_metrics_match": rules.daily_metrics_match,
}


def rows(tables: TableStore, name: str) -> list[dict[str, object]]:
    table = tables.open(name)
    assert table is not None
    result: list[dict[str, object]] = table.to_pyarrow_table().to_pylist()
    return result


def append(tables: TableStore, name: str, new_rows: list[dict[str, object]]) -> None:
    write_deltalake(
        tables.uri(name),
        pa.Table.from_pylist(new_rows, schema=schemas.SCHEMAS[name]),
        mode="append",
    )


def overwrite(tables: TableStore, name: str, new_rows: list[dict[str, object]]) -> None:
    write_deltalake(
        tables.uri(name),
        pa.Table.from_pylist(new_rows, schema=schemas.SCHEMAS[name]),
        mode="overwrite",
    )


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_passes_on_healthy_tables(healthy: TableStore, rule: str) -> None:
    outcome = RULES[rule](healthy)
    assert outcome.passed, outcome.summary
    assert outcome.offending == []


def test_duplicate_event_id_is_caught(healthy: TableStore) -> None:
    first = rows(healthy, schemas.RAW_EVENTS)[0]
    append(healthy, schemas.RAW_EVENTS, [{**first, "ingest_seq": 10_000}])
    outcome = rules.unique_event_ids(healthy)
    assert not outcome.passed
    assert outcome.offending == [first["event_id"]]


def test_version_gap_and_repeat_are_caught(healthy: TableStore) -> None:
    raw = rows(healthy, schemas.RAW_EVENTS)
    created = next(r for r in raw if r["event_type"] == "OrderCreated")
    gap = {**created, "event_id": "gap-event", "version": 5, "ingest_seq": 10_001}
    append(healthy, schemas.RAW_EVENTS, [gap])
    outcome = rules.version_sequences(healthy)
    assert not outcome.passed and outcome.offending == [created["aggregate_id"]]


def test_malformed_envelopes_are_caught(healthy: TableStore) -> None:
    template = rows(healthy, schemas.RAW_EVENTS)[0]
    bad = [
        {**template, "event_id": "bad-type", "event_type": "OrderExploded", "ingest_seq": 20_000},
        {**template, "event_id": "bad-data", "data": "[1, 2]", "ingest_seq": 20_001},
        {**template, "event_id": "bad-agg", "aggregate_type": "Spaceship", "ingest_seq": 20_002},
    ]
    append(healthy, schemas.RAW_EVENTS, bad)
    outcome = rules.envelope_schema(healthy)
    assert not outcome.passed
    assert sorted(outcome.offending) == ["bad-agg", "bad-data", "bad-type"]


def test_duplicate_order_key_is_caught(healthy: TableStore) -> None:
    order = rows(healthy, schemas.ORDERS)[0]
    append(healthy, schemas.ORDERS, [order])
    outcome = rules.unique_keys(healthy, schemas.ORDERS, "order_id")
    assert not outcome.passed and outcome.offending == [order["order_id"]]


def test_wrong_and_negative_totals_are_caught(healthy: TableStore) -> None:
    orders = rows(healthy, schemas.ORDERS)
    orders[0]["total_amount"] = Decimal("999.99")
    orders[1]["total_amount"] = Decimal("-1.00")
    orders[1]["items"] = json.dumps([])
    overwrite(healthy, schemas.ORDERS, orders)
    outcome = rules.order_amounts(healthy)
    assert not outcome.passed
    assert sorted(outcome.offending) == sorted([orders[0]["order_id"], orders[1]["order_id"]])


def test_missing_order_fails_reconciliation(healthy: TableStore) -> None:
    checkpoint = orders_checkpoint(healthy)
    orders = rows(healthy, schemas.ORDERS)
    overwrite(healthy, schemas.ORDERS, orders[1:])
    outcome = rules.orders_reconcile(healthy, checkpoint)
    assert not outcome.passed
    assert outcome.figures["missing"] == 1 and outcome.offending == [orders[0]["order_id"]]


def test_daily_metrics_drift_is_caught(healthy: TableStore) -> None:
    daily = rows(healthy, schemas.DAILY_ORDER_METRICS)
    daily[0]["total_revenue"] = Decimal(str(daily[0]["total_revenue"])) + Decimal("0.01")
    overwrite(healthy, schemas.DAILY_ORDER_METRICS, daily)
    outcome = rules.daily_metrics_match(healthy)
    assert not outcome.passed and outcome.figures["mismatched_days"] == 1


def raw_range_of(tables: TableStore, aggregate_id: str) -> RunScope:
    """The smallest raw ingest_seq range holding every event of ``aggregate_id``."""
    table = tables.open(schemas.RAW_EVENTS)
    assert table is not None
    seqs = [
        r["ingest_seq"]
        for r in table.to_pyarrow_table(columns=["aggregate_id", "ingest_seq"]).to_pylist()
        if r["aggregate_id"] == aggregate_id
    ]
    return RunScope(after_seq=min(seqs) - 1, upto_seq=max(seqs))


@pytest.mark.parametrize(
    ("table", "key", "rule"),
    [
        (schemas.ORDERS, "order_id", lambda t, s: rules.unique_keys(t, "orders", "order_id", s)),
        (schemas.ORDERS, "order_id", rules.order_amounts),
        (
            schemas.CUSTOMERS,
            "customer_id",
            lambda t, s: rules.unique_keys(t, "customers", "customer_id", s),
        ),
    ],
)
def test_keyed_rules_read_only_the_keys_a_raw_range_wrote(
    healthy: TableStore,
    table: str,
    key: str,
    rule: Callable[[TableStore, RunScope | None], CheckOutcome],
) -> None:
    """A follow pass hands its raw range: a broken row of another key is not its business (the
    whole-table run of the quality job catches it), a broken row of a key it wrote fails it."""
    existing = rows(healthy, table)
    broken, other = existing[0], existing[1]
    bad = dict(broken)
    if rule is rules.order_amounts:
        bad["total_amount"] = Decimal("-1.00")
        overwrite(healthy, table, [bad if r is broken else r for r in existing])
    else:
        append(healthy, table, [broken])  # a duplicated key
    assert not rule(healthy, None).passed
    assert not rule(healthy, raw_range_of(healthy, str(broken[key]))).passed
    elsewhere = rule(healthy, raw_range_of(healthy, str(other[key])))
    assert elsewhere.passed, elsewhere.summary
    assert rules.touched_rows(healthy, table, key, raw_range_of(healthy, str(other[key])))[
        key
    ].to_pylist() == [other[key]]
