"""Gold read models built from silver, incrementally and exactly once.

``order_summary`` (the reference's vw_order_summary): recomputed for the orders touched since its
checkpoint and the orders of customers touched since it (a name change reaches every order).
``daily_order_metrics``: every order created that UTC day whatever its status; only OrderCreated
changes a day's figures, so a run adds the orders created since its checkpoint to their days'
rows (:mod:`.daily_delta`: their customers looked up in that day's orders) and replaces those
days; ``full`` recomputes every day from ``orders``. Both checkpoint the raw
``ingest_seq`` they cover in the same commit as their rows. A gold table with no row yet (a
first catch-up, a rebuild) is built from silver whole instead (:func:`_first_build`).
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from cqrs_dagster.domain.events import CUSTOMER_REGISTERED, CUSTOMER_UPDATED, ORDER_CREATED

from .commit import commit_checkpoints_only, overwrite, upsert
from .context import StepContext
from .daily_delta import NEW_ORDER_COLUMNS, add_orders, earlier_customers
from .delta_io import (
    enqueued_app_id,
    from_micros,
    isin,
    lookup,
    read_raw_range,
    release_memory,
    row_count,
    scan,
    seq_app_id,
    txn,
)
from .orders import EVENT_TYPES as ORDER_EVENTS
from .recent_raw import RecentRaw
from .report import StepReport
from .schemas import (
    CUSTOMERS,
    DAILY_ORDER_METRICS,
    DAILY_ORDER_METRICS_SCHEMA,
    ORDER_SUMMARY,
    ORDER_SUMMARY_SCHEMA,
    ORDER_SUMMARY_SOURCE_COLUMNS,
    ORDERS,
    RAW_EVENTS,
)
from .tables import TableStore

ORDER_COLUMNS = ORDER_SUMMARY_SOURCE_COLUMNS


def _covered(tables: TableStore, sources: tuple[str, ...]) -> tuple[int, int]:
    """The raw position (and newest enqueued µs) every source table has reached."""
    points = []
    for name in sources:
        table = tables.open(name)
        points.append((txn(table, seq_app_id(name)), txn(table, enqueued_app_id(name))))
    return min(points)


def _named_customers(batch: pa.Table) -> list[str]:
    """Customers whose name the batch may have changed: registrations (their orders may have
    been summarized before the name was known) and updates that carry a name."""
    events = batch.filter(isin("event_type", [CUSTOMER_REGISTERED, CUSTOMER_UPDATED]))
    named = [
        r["aggregate_id"]
        for r in events.select(["event_type", "aggregate_id", "data"]).to_pylist()
        if r["event_type"] == CUSTOMER_REGISTERED or '"name"' in (r["data"] or "")
    ]
    return sorted(set(named))


def _touched_keys(
    raw: DeltaTable, after: int, upto: int, recent: RecentRaw
) -> tuple[list[str], list[str], int]:
    """The orders and the (named) customers of raw_events ``after < ingest_seq <= upto``, and
    how many events that is. From memory when the pass just committed them; otherwise streamed
    from Delta batch by batch, so a first build after a long catch-up never holds the range's
    ``data`` column whole (it held ~200 MiB at 1M events)."""
    columns = ["event_type", "aggregate_id", "data"]
    held = recent.get(raw.table_uri, after, upto, columns)
    batches = (
        held.to_batches()
        if held is not None
        else raw.to_pyarrow_dataset(
            file_pruning_predicate=[("ingest_seq", ">", after), ("ingest_seq", "<=", upto)]
        ).to_batches(columns=[*columns, "ingest_seq"])
    )
    orders: set[str] = set()
    named: set[str] = set()
    count = 0
    order_types = pa.array(sorted(ORDER_EVENTS))
    for record_batch in batches:
        batch = pa.Table.from_batches([record_batch])
        seq = batch["ingest_seq"]
        batch = batch.filter(pc.and_(pc.greater(seq, after), pc.less_equal(seq, upto)))
        count += batch.num_rows
        orders.update(
            pc.unique(
                batch.filter(pc.is_in(batch["event_type"], order_types))["aggregate_id"]
            ).to_pylist()
        )
        named.update(_named_customers(batch))
    return sorted(orders), sorted(named), count


# Ids listed in a file-pruning IN predicate at most (a long IN list slows the log replay).
MAX_PRUNE_IDS = 1_000


def _orders_of(orders: DeltaTable, order_ids: list[str], customer_ids: list[str]) -> pa.Table:
    """order_summary's columns of the given orders and of every order of the given customers.

    New orders are read by their id range (time-ordered ids: recent files); a customer's orders
    are found by :func:`.delta_io.lookup` (the row groups whose customer_id bloom filter may
    hold the customer), then read by id, so a rename costs that customer's orders, not a pass
    over the column of every order."""
    ids = set(order_ids)
    if customer_ids:
        owned = lookup(orders, "customer_id", customer_ids, ["order_id"])
        ids.update(str(i) for i in owned["order_id"].to_pylist())
    if not ids:
        return ORDER_SUMMARY_SCHEMA.empty_table().select(ORDER_COLUMNS)
    return _by_id(orders, sorted(ids), ORDER_COLUMNS)


def _by_id(orders: DeltaTable, wanted: list[str], columns: list[str]) -> pa.Table:
    """The ``columns`` of the orders whose ids are ``wanted`` (sorted, not empty): the files
    their ids' min/max statistics may hold, read and filtered."""
    prune: list[tuple[str, str, Any]] = (
        [("order_id", "in", wanted)]
        if len(wanted) <= MAX_PRUNE_IDS
        else [("order_id", ">=", wanted[0]), ("order_id", "<=", wanted[-1])]
    )
    return scan(orders, prune, isin("order_id", wanted), columns=columns)


def build_order_summary(ctx: StepContext, *, full: bool = False) -> StepReport:
    """Bring order_summary up to the raw position both silver tables have reached (or, with
    ``full``, rewrite it from every silver row: after a redrive changed rows behind the
    checkpoints)."""
    started = time.perf_counter()
    tables = ctx.tables
    target = tables.ensure(ORDER_SUMMARY)
    after = txn(target, seq_app_id(ORDER_SUMMARY))
    upto, newest_us = _covered(tables, (ORDERS, CUSTOMERS))
    raw = tables.open(RAW_EVENTS)
    orders = tables.open(ORDERS)
    customers = tables.open(CUSTOMERS)
    if (upto <= after and not full) or raw is None or orders is None or customers is None:
        return _report(ORDER_SUMMARY, target, started)
    first = not full and _first_build(target)
    if full or first:
        # A stream: the write never holds every order, the join and the sorted copy at once
        # (a 1M-event catch-up's memory peak, issue 14 (f)).
        stream = ctx.engine.order_summary_whole(orders, customers)
        checkpoint = {seq_app_id(ORDER_SUMMARY): upto, enqueued_app_id(ORDER_SUMMARY): newest_us}
        ctx.hit("order_summary.before_merge")
        operation = "build_order_summary_first" if first else "build_order_summary_full"
        overwrite(target, stream, checkpoint, ctx.run_id, operation)
        ctx.hit("order_summary.after_merge")
        read = upto - after if first else 0
        written = row_count(target)  # the table is what the overwrite wrote
        return _report(ORDER_SUMMARY, target, started, events_read=read, written=written)
    order_ids, named, events_read = _touched_keys(raw, after, upto, ctx.recent)
    touched = _orders_of(orders, order_ids, named)
    cust_ids = pc.unique(touched["customer_id"]).to_pylist()
    names = scan(
        customers,
        [("customer_id", "in", cust_ids)] if cust_ids else None,
        isin("customer_id", cust_ids),
        columns=["customer_id", "name"],
    )
    rows = ctx.engine.order_summary(touched, names)
    del touched, names  # the write holds only its rows: a 1M-order catch-up's peak (issue 7 (f))
    checkpoint = {seq_app_id(ORDER_SUMMARY): upto, enqueued_app_id(ORDER_SUMMARY): newest_us}
    ctx.hit("order_summary.before_merge")
    upsert(target, ORDER_SUMMARY, "order_id", rows, checkpoint, ctx.run_id, "build_order_summary")
    ctx.hit("order_summary.after_merge")
    return _report(ORDER_SUMMARY, target, started, events_read=events_read, written=rows.num_rows)


def _first_build(target: DeltaTable) -> bool:
    """``target`` holds no row yet: its first build (a new platform's first catch-up, a rebuild)
    reads silver whole, as ``full`` does, instead of first finding what the raw range touched
    (every order: 1M raw events read back to learn that, then a scan by 300k+ ids). From empty
    the two give the same rows; the overwrite carries the same checkpoints, so a concurrent
    writer of the table conflicts on them as with the incremental commit."""
    return row_count(target) == 0


def _day_literals(days: list[date]) -> str:
    return ", ".join(f"'{d.isoformat()}'" for d in days)


def build_daily_order_metrics(ctx: StepContext, *, full: bool = False) -> StepReport:
    """Add the orders created since the checkpoint to their days (or, with ``full``, and on a
    first build, compute every day from ``orders``)."""
    started = time.perf_counter()
    tables = ctx.tables
    target = tables.ensure(DAILY_ORDER_METRICS)
    after = -1 if full else txn(target, seq_app_id(DAILY_ORDER_METRICS))
    upto, newest_us = _covered(tables, (ORDERS,))
    raw = tables.open(RAW_EVENTS)
    orders = tables.open(ORDERS)
    if (upto <= after and not full) or raw is None or orders is None:
        return _report(DAILY_ORDER_METRICS, target, started)
    checkpoint = {
        seq_app_id(DAILY_ORDER_METRICS): upto,
        enqueued_app_id(DAILY_ORDER_METRICS): newest_us,
    }
    operation = "build_daily_order_metrics"
    events_read = 0
    first = not full and _first_build(target)
    if full or first:
        rows = ctx.engine.daily_metrics(orders.to_pyarrow_table(columns=NEW_ORDER_COLUMNS))
        events_read = upto - after if first else 0
        ctx.hit("daily_order_metrics.before_commit")
        overwrite(target, rows, checkpoint, ctx.run_id, operation + ("_first" if first else ""))
    else:
        batch = read_raw_range(
            raw, after, upto, ["event_type", "aggregate_id"], ordered=False, recent=ctx.recent
        )
        events_read = batch.num_rows
        created = batch.filter(pc.field("event_type") == ORDER_CREATED)["aggregate_id"]
        wanted = sorted(str(i) for i in pc.unique(created).to_pylist())
        new = _by_id(orders, wanted, NEW_ORDER_COLUMNS) if wanted else None
        if new is not None and new.num_rows:
            # the days' current rows plus the pass's orders (see .daily_delta): the pass costs
            # its own orders, not a re-aggregation of the days they fall on
            days = sorted(set(new["created_day"].to_pylist()))
            current = scan(target, None, isin("order_date", days, pa.date32()))  # a row a day
            rows = add_orders(current, new, earlier_customers(orders, new))
            ctx.hit("daily_order_metrics.before_commit")
            predicate = f"order_date IN ({_day_literals(days)})"
            overwrite(target, rows, checkpoint, ctx.run_id, operation, predicate=predicate)
        else:
            rows = DAILY_ORDER_METRICS_SCHEMA.empty_table()
            ctx.hit("daily_order_metrics.before_commit")
            commit_checkpoints_only(target, DAILY_ORDER_METRICS, checkpoint, ctx.run_id, operation)
    ctx.hit("daily_order_metrics.after_commit")
    return _report(
        DAILY_ORDER_METRICS, target, started, events_read=events_read, written=rows.num_rows
    )


def _report(
    name: str, target: DeltaTable, started: float, *, events_read: int = 0, written: int = 0
) -> StepReport:
    release_memory()
    target.update_incremental()
    seq = txn(target, seq_app_id(name))
    newest_us = txn(target, enqueued_app_id(name))
    return StepReport(
        table=name,
        events_read=events_read,
        events_applied=events_read,
        duplicates_skipped=0,
        dead_lettered=0,
        rows_written=written,
        checkpoint={seq_app_id(name): seq, enqueued_app_id(name): newest_us},
        delta_version=target.version(),
        row_count=row_count(target),
        newest_applied_event_time=from_micros(newest_us),
        seconds=time.perf_counter() - started,
    )
