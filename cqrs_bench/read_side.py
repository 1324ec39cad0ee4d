"""Read-side benchmark (issue 7 (d), (f)): one incremental batch of 10k events (half status
updates of recent orders, half new orders) applied to ``orders`` by the live silver step
(``silver.project_orders``: read the raw batch, read the current rows, fold, MERGE with the
checkpoint) at three table sizes, partitioned by created_day with UUIDv7 ids
(``datasets.build_orders``). Each size's batches run in a spawned child process: its peak RSS is
the projection's own. Plot: seconds per batch vs table rows (log x).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from cqrs_dagster.domain.ids import uuid7
from cqrs_dagster.projections.schemas import RAW_EVENTS_SCHEMA
from cqrs_dagster.projections.tables import TableStore

from . import Measurement, Ratio, Report, Series, Target, full_mode, profiled
from .catch_up import in_child, make_engine
from .datasets import END, build_orders

DAYS = 100
BATCH = 10_000
CUSTOMERS = 5_000  # datasets.build_orders spreads orders over c0 .. c4999
AFTER = END + timedelta(hours=1)  # raw events come after the built orders
SOLO_ORDERS = 3  # orders of the customer whose rename is timed besides a c<n> customer


def sizes() -> list[int]:
    return [100_000, 1_000_000, 5_000_000] if full_mode() else [100_000, 300_000, 1_000_000]


def raw_row(
    seq: int, ts: datetime, kind: str, aggregate: str, aggregate_id: str, version: int,
    data: dict[str, object],
) -> dict[str, Any]:  # fmt: skip
    """One raw_events row at ``ingest_seq`` ``seq`` (partition 0, offset = seq)."""
    return {
        "event_id": uuid7(int(ts.timestamp() * 1000)),
        "event_type": kind,
        "aggregate_id": aggregate_id,
        "aggregate_type": aggregate,
        "version": version,
        "event_timestamp": ts,
        "correlation_id": "c",
        "causation_id": "c",
        "data": orjson.dumps(data).decode(),
        "metadata": "{}",
        "schema_version": 1,
        "partition": 0,
        "sequence_number": seq,
        "offset": str(seq),  # opaque string, as Event Hubs gives it
        "enqueued_time": ts,
        "ingested_at": ts,
        "ingest_seq": seq,
        "event_date": ts.date(),
    }


def append_raw(tables: TableStore, rows: list[dict[str, Any]]) -> None:
    """One raw_events commit of ``rows`` (consecutive ingest_seq) with the ingest checkpoint."""
    write_deltalake(
        tables.uri("raw_events"),
        pa.Table.from_pylist(rows, schema=RAW_EVENTS_SCHEMA),
        mode="append",
        partition_by=["event_date"],
        commit_properties=CommitProperties(
            app_transactions=[Transaction("raw_events/ingest_seq", rows[-1]["ingest_seq"])]
        ),
    )


def write_raw(tables: TableStore, recent: list[str], batches: int) -> None:
    """``batches`` raw_events commits of BATCH events: even positions update one of ``recent``
    (the newest orders), odd positions create a new order (UUIDv7 from its time)."""
    for b in range(batches):
        rows = []
        for j in range(BATCH):
            seq = b * BATCH + j
            ts = AFTER + timedelta(milliseconds=seq)
            if seq % 2 == 0:
                oid, kind, version = recent[seq // 2], "OrderUpdated", 2
                data: dict[str, object] = {"orderId": oid, "previousStatus": "Created",
                                           "status": "Paid"}  # fmt: skip
            else:
                oid, kind, version = uuid7(int(ts.timestamp() * 1000)), "OrderCreated", 1
                data = _order_created(oid, f"c{seq % CUSTOMERS}")
            rows.append(raw_row(seq, ts, kind, "Order", oid, version, data))
        append_raw(tables, rows)


def _order_created(order_id: str, customer_id: str) -> dict[str, object]:
    return {
        "orderId": order_id,
        "customerId": customer_id,
        "items": [{"sku": "a", "quantity": 2, "unitPrice": "5.00"}],
        "totalAmount": "10.00",
        "itemCount": 2,
        "status": "Created",
    }


def merge_batches(
    root: str, batches: int, profile: str = "", engine: str = "duckdb", remote: str = ""
) -> dict[str, Any]:
    """``batches`` successive 10k-event steps of ``project_orders`` computed by ``engine``:
    seconds of each (CPU time of this process: a Spark server's is not in it); with
    ``profile``, one more (untimed) step under pyinstrument."""
    from cqrs_dagster.projections.context import StepContext
    from cqrs_dagster.projections.silver import project_orders

    tables = TableStore(root=root)
    computer = make_engine(engine, remote)
    seconds: list[float] = []
    cpu: list[float] = []
    try:
        for b in range(batches + (1 if profile else 0)):
            ctx = StepContext(tables, f"bench-{b}", engine=computer)
            if b == batches:
                with profiled(profile):
                    report = project_orders(ctx, max_events=BATCH)
            else:
                before = time.process_time()
                report = project_orders(ctx, max_events=BATCH)
                seconds.append(report.seconds)
                cpu.append(time.process_time() - before)
            if report.events_applied != BATCH:
                raise RuntimeError(f"batch {b} applied {report.events_applied} events: {report}")
    finally:
        computer.close()
    return {"seconds": seconds, "cpu": cpu}


def renames(root: str, repetitions: int, first_seq: int) -> dict[str, Any]:
    """Customer renames against order_summary over the built orders (issue 14): registers the
    CUSTOMERS customers and a "solo" customer with SOLO_ORDERS orders, builds order_summary
    whole, then ``repetitions`` times renames c42 (one of the many) and the solo customer, one
    raw commit each, and times the gold step (``build_order_summary``) that rewrites that
    customer's summary rows; returns seconds and rows written per customer."""
    from cqrs_dagster.projections.context import StepContext
    from cqrs_dagster.projections.gold import build_order_summary
    from cqrs_dagster.projections.silver import project_customers, project_orders

    tables = TableStore(root=root)
    seq = first_seq
    rows = []
    for c in [*(f"c{n}" for n in range(CUSTOMERS)), "solo"]:
        ts = AFTER + timedelta(milliseconds=seq)
        data: dict[str, object] = {"customerId": c, "name": f"Customer {c}", "email": f"{c}@x"}
        rows.append(raw_row(seq, ts, "CustomerRegistered", "Customer", c, 1, data))
        seq += 1
    for _ in range(SOLO_ORDERS):
        ts = AFTER + timedelta(milliseconds=seq)
        oid = uuid7(int(ts.timestamp() * 1000))
        rows.append(raw_row(seq, ts, "OrderCreated", "Order", oid, 1, _order_created(oid, "solo")))
        seq += 1
    append_raw(tables, rows)

    def silver(ctx: StepContext) -> None:
        for step in (project_orders, project_customers):
            while step(ctx, max_events=100_000).events_read:
                pass

    ctx = StepContext(tables, "bench-rename-setup")
    silver(ctx)
    build_order_summary(ctx, full=True)
    out: dict[str, Any] = {}
    for rep in range(repetitions):
        for customer in ("c42", "solo"):
            ts = AFTER + timedelta(milliseconds=seq)
            data = {"customerId": customer, "name": f"Renamed {customer} {rep}"}
            append_raw(tables, [raw_row(seq, ts, "CustomerUpdated", "Customer", customer,
                                        rep + 2, data)])  # fmt: skip
            seq += 1
            ctx = StepContext(tables, f"bench-rename-{customer}-{rep}")
            silver(ctx)
            report = build_order_summary(ctx)
            out.setdefault(f"{customer} seconds", []).append(report.seconds)
            out.setdefault(f"{customer} rows", []).append(report.rows_written)
    return out


def run(repetitions: int) -> Report:
    import tempfile

    points = sizes()
    largest = points[-1]
    report = Report(
        "read side: one 10k-event batch merged into orders (silver step)",
        notes=[
            f"orders of {', '.join(f'{n:,}' for n in points)} rows over {DAYS} days, partitioned"
            " by created_day, UUIDv7 ids; each batch: 5k status updates of the newest orders +"
            " 5k new orders; timed: silver.project_orders (raw read, current rows, fold, MERGE"
            " with checkpoint) in a spawned child per size; one value per successive batch",
        ],
    )
    series = Series(
        "merge_time",
        "10k-event batch into orders: seconds vs table size",
        "orders rows",
        "seconds per batch",
        log_x=True,
        style="line",
        hlines={"target at the largest size (0.3 s)": 0.3},
    )
    line: list[tuple[float, float]] = []
    by_size: dict[int, Measurement] = {}
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-read-") as tmp:
        for n in points:
            root = str(Path(tmp) / f"n{n}")
            tables = TableStore(root=root)
            ids = build_orders(tables, n, DAYS)
            profile = "read_side" if n == largest else ""
            batches = repetitions + (1 if profile else 0)
            recent = [oid for oid, _ in ids[-(BATCH // 2) * batches :]]
            write_raw(tables, recent, batches)
            del ids
            out = in_child(merge_batches, root, repetitions, profile)
            renamed = in_child(renames, root, repetitions, batches * BATCH)
            target = Target("<=", 0.3) if n == largest else None
            m = Measurement(f"10k batch into {n:,} orders", "s", out["seconds"], target, key="d")
            by_size[n] = m
            report.measurements.append(m)
            report.measurements.append(
                Measurement(
                    f"CPU time (all threads), 10k batch into {n:,} orders", "s", out["cpu"], key="d"
                )
            )
            report.measurements.append(
                Measurement(
                    f"peak RSS, 10k batch into {n:,} orders",
                    "MiB",
                    [out["peak_rss_mib"]],
                    Target("<=", 1024),
                    key="f",
                )
            )
            line.append((n, m.median))
            for customer, label in (("c42", "a customer"), ("solo", "a customer")):
                written = int(renamed[f"{customer} rows"][0])
                report.measurements.append(
                    Measurement(
                        f"rename {label} with {written:,} orders, order_summary of {n:,} rows",
                        "s",
                        renamed[f"{customer} seconds"],
                        key="rename",
                    )
                )
            report.measurements.append(
                Measurement(
                    f"peak RSS, renames at {n:,} orders (incl. a whole order_summary build)",
                    "MiB",
                    [renamed["peak_rss_mib"]],
                    key="rename",
                )
            )
    series.lines["project_orders (median)"] = line
    report.series.append(series)
    report.ratios.append(
        Ratio(by_size[largest].name, by_size[points[0]].name, Target("<=", 2), key="d")
    )
    report.profiles.append("bench/results/profiles/read_side.txt")
    return report
