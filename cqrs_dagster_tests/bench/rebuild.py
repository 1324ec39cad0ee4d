"""Rebuild benchmark: ``rebuild(orders)`` over 1M raw events (250k orders created over ~23 days,
each then Paid, Shipped and Delivered), written straight into raw_events in 100k-row commits.
The live orders table is projected first by the live step (timed too); then the rebuild replays
all 1M events into a shadow, compares 250k rows and switches. Prints one JSON line.

Run: .venv/bin/python -c "from cqrs_dagster_tests.bench.rebuild import main; main()"
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from cqrs_dagster.domain.ids import uuid7
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.rebuild import rebuild
from cqrs_dagster.projections.schemas import ORDERS, RAW_EVENTS_SCHEMA
from cqrs_dagster.projections.silver import project_orders
from cqrs_dagster.projections.tables import TableStore

ORDERS_N = 250_000
EVENTS = ORDERS_N * 4
CHUNK = 100_000
BATCH = 100_000
T0 = datetime(2026, 10, 1, tzinfo=UTC)
STEPS = (
    ("Paid", timedelta(hours=1)),
    ("Shipped", timedelta(days=1)),
    ("Delivered", timedelta(days=2)),
)


def _events() -> list[tuple[datetime, str, str, int, bytes]]:
    """(timestamp, event type, order id, version, data) in time order."""
    out: list[tuple[datetime, str, str, int, bytes]] = []
    previous = "Created"
    for i in range(ORDERS_N):
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


def _write_raw(tables: TableStore) -> None:
    events = _events()
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
                "offset": seqs,
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


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-rebuild-") as tmp:
        tables = TableStore(root=str(Path(tmp) / "delta"))
        t0 = time.perf_counter()
        _write_raw(tables)
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        while txn(tables.open(ORDERS), seq_app_id(ORDERS)) < EVENTS - 1:
            project_orders(tables, max_events=BATCH, run_id="live")
        live = time.perf_counter() - t1

        def progress(done: int, total: int) -> None:
            print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)

        report = rebuild(tables, ORDERS, run_id="bench", batch_size=BATCH, progress=progress)
        print(file=sys.stderr)
        assert report.switched and report.equal, report
        result = {
            "bench": "rebuild.orders_1M_events",
            "events": EVENTS,
            "rows": report.comparison.shadow_rows,
            "batch": BATCH,
            "rebuild_seconds": round(report.seconds, 1),
            "rebuild_events_per_second": round(EVENTS / report.seconds),
            "live_projection_seconds": round(live, 1),
            "live_events_per_second": round(EVENTS / live),
            "setup_seconds": round(setup, 1),
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
