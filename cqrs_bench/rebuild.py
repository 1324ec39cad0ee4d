"""Rebuild benchmark: ``rebuild(orders)`` over raw events (orders created 8 s apart, each then
Paid, Shipped and Delivered: 4 events per order), written straight into raw_events in 100k-row
commits. The live orders table is projected first by the live step (timed too); then the rebuild
replays every event into a shadow, compares the rows and switches (blue/green).
Sizes: 200k events (quick), 1M (``BENCH_FULL=1``).
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from cqrs_dagster.domain.ids import uuid7
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.rebuild import rebuild
from cqrs_dagster.projections.schemas import ORDERS, RAW_EVENTS_SCHEMA
from cqrs_dagster.projections.silver import project_orders
from cqrs_dagster.projections.tables import TableStore

from . import Measurement, Report, profiled, sized

CHUNK = 100_000
BATCH = 100_000
T0 = datetime(2026, 10, 1, tzinfo=UTC)
STEPS = (
    ("Paid", timedelta(hours=1)),
    ("Shipped", timedelta(days=1)),
    ("Delivered", timedelta(days=2)),
)


def _events(orders: int) -> list[tuple[datetime, str, str, int, bytes]]:
    """(timestamp, event type, order id, version, data) in time order."""
    out: list[tuple[datetime, str, str, int, bytes]] = []
    previous = "Created"
    for i in range(orders):
        ts = T0 + timedelta(seconds=8 * i)
        oid = uuid7(int(ts.timestamp() * 1000))
        created = {
            "orderId": oid,
            "customerId": f"c{i % 20_000}",
            "items": [{"sku": f"s{i % 50}", "quantity": 1 + i % 3, "unitPrice": "5.00"}],
            "totalAmount": f"{5 * (1 + i % 3)}.00",
            "itemCount": 1 + i % 3,
            "status": "Created",
        }
        out.append((ts, "OrderCreated", oid, 1, orjson.dumps(created)))
        previous = "Created"
        for version, (status, after) in enumerate(STEPS, start=2):
            data = {"orderId": oid, "previousStatus": previous, "status": status}
            out.append((ts + after, "OrderUpdated", oid, version, orjson.dumps(data)))
            previous = status
    out.sort(key=lambda e: e[0])
    return out


def _write_raw(tables: TableStore, orders: int) -> None:
    events = _events(orders)
    for lo in range(0, len(events), CHUNK):
        part = events[lo : lo + CHUNK]
        n = len(part)
        ts = [e[0] for e in part]
        seqs = list(range(lo, lo + n))
        table = pa.table(
            {
                "event_id": [f"e{s}" for s in seqs],
                "event_type": [e[1] for e in part],
                "aggregate_id": [e[2] for e in part],
                "aggregate_type": ["Order"] * n,
                "version": [e[3] for e in part],
                "event_timestamp": ts,
                "correlation_id": ["c"] * n,
                "causation_id": ["c"] * n,
                "data": [e[4].decode() for e in part],
                "metadata": ["{}"] * n,
                "schema_version": [1] * n,
                "partition": [0] * n,
                "sequence_number": seqs,
                "offset": [str(s) for s in seqs],  # opaque strings, as Event Hubs gives them
                "enqueued_time": ts,
                "ingested_at": ts,
                "ingest_seq": seqs,
                "event_date": [t.date() for t in ts],
            },
            schema=RAW_EVENTS_SCHEMA,
        )
        write_deltalake(
            tables.uri("raw_events"),
            table,
            mode="append",
            partition_by=["event_date"],
            commit_properties=CommitProperties(
                app_transactions=[Transaction("raw_events/ingest_seq", lo + n - 1)]
            ),
        )


def run(repetitions: int) -> Report:
    events = sized(200_000, 1_000_000)
    orders = events // 4
    live = Measurement(f"live silver step, orders from {events:,} raw events", "events/s")
    rebuilt = Measurement(f"blue/green rebuild of orders from {events:,} raw events", "events/s")
    seconds = Measurement(f"blue/green rebuild of {events:,} events", "s")
    report = Report(
        "rebuild: orders from raw_events (live step, then blue/green rebuild)",
        notes=[
            f"{orders:,} orders created 8 s apart, each then Paid, Shipped, Delivered"
            f" ({events:,} events) in raw_events; batches of {BATCH:,}; rebuild = replay into a"
            " shadow + compare every row with the live table + switch",
        ],
    )
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-rebuild-") as tmp:
        for rep in range(repetitions):
            tables = TableStore(root=str(Path(tmp) / f"r{rep}" / "delta"))
            _write_raw(tables, orders)
            t1 = time.perf_counter()
            while txn(tables.open(ORDERS), seq_app_id(ORDERS)) < events - 1:
                project_orders(StepContext(tables, "live"), max_events=BATCH)
            live.values.append(events / (time.perf_counter() - t1))
            result = rebuild(tables, ORDERS, run_id="bench", batch_size=BATCH)
            if not (result.switched and result.equal):
                raise RuntimeError(f"rebuild did not switch to an equal table: {result}")
            rebuilt.values.append(events / result.seconds)
            seconds.values.append(result.seconds)
        with profiled("rebuild"):  # once more, untimed, for the profile
            rebuild(tables, ORDERS, run_id="bench-profiled", batch_size=BATCH)
        report.profiles.append("bench/results/profiles/rebuild.txt")
    report.measurements += [live, rebuilt, seconds]
    return report
