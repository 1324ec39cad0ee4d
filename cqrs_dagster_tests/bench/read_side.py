"""Read-side benchmark: per-batch silver MERGE time (project_orders) of a 10k-event batch against
an orders table of 1M rows partitioned by created_day with time-ordered ids. Half of each batch
updates recent orders, half creates new ones. 3 repetitions (successive batches), median printed.

Run: .venv/bin/python -c "from cqrs_dagster_tests.bench.read_side import main; main()"
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from cqrs_dagster.domain.ids import uuid7
from cqrs_dagster.projections.schemas import RAW_EVENTS_SCHEMA
from cqrs_dagster.projections.silver import project_orders
from cqrs_dagster.projections.tables import TableStore

from .datasets import END, build_orders

ROWS = 1_000_000
DAYS = 100
BATCH = 10_000
REPS = 3


def _raw(tables: TableStore, recent: list[tuple[str, datetime]]) -> None:
    rows = []
    now = END + timedelta(hours=1)
    for seq in range(BATCH * REPS):
        if seq % 2 == 0:
            oid, _created = recent[seq // 2]
            etype, version, ts = "OrderUpdated", 2, now
            data: dict[str, object] = {
                "orderId": oid,
                "previousStatus": "Created",
                "status": "Paid",
            }
        else:
            ts = now + timedelta(milliseconds=seq)
            oid, etype, version = uuid7(int(ts.timestamp() * 1000)), "OrderCreated", 1
            data = {
                "orderId": oid,
                "customerId": f"c{seq % 5000}",
                "items": [{"sku": "a", "quantity": 2, "unitPrice": "5.00"}],
                "totalAmount": "10.00",
                "itemCount": 2,
                "status": "Created",
            }
        rows.append(
            {
                "event_id": f"e{seq}",
                "event_type": etype,
                "aggregate_id": oid,
                "aggregate_type": "Order",
                "version": version,
                "event_timestamp": ts,
                "correlation_id": "c",
                "causation_id": "c",
                "data": orjson.dumps(data).decode(),
                "metadata": "{}",
                "schema_version": 1,
                "partition": 0,
                "sequence_number": seq,
                "offset": seq,
                "enqueued_time": ts,
                "ingested_at": ts,
                "ingest_seq": seq,
                "event_date": ts.date(),
            }
        )
    for lo in range(0, len(rows), BATCH):  # one append per batch, as ingest would write them
        write_deltalake(
            tables.uri("raw_events"),
            pa.Table.from_pylist(rows[lo : lo + BATCH], schema=RAW_EVENTS_SCHEMA),
            mode="append",
            partition_by=["event_date"],
            commit_properties=CommitProperties(
                app_transactions=[Transaction("raw_events/ingest_seq", lo + BATCH - 1)]
            ),
        )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-read-") as tmp:
        tables = TableStore(root=str(Path(tmp) / "delta"))
        t0 = time.perf_counter()
        ids = build_orders(tables, ROWS, DAYS)
        recent = ids[-(BATCH * REPS) :]  # updates go to the newest orders
        _raw(tables, recent)
        setup = time.perf_counter() - t0
        times = []
        for rep in range(REPS):
            report = project_orders(tables, max_events=BATCH, run_id=f"bench-{rep}")
            assert report.events_applied == BATCH, report
            times.append(report.seconds)
        result = {
            "bench": "read_side.project_orders_10k_batch_on_1M_rows",
            "rows": ROWS,
            "batch": BATCH,
            "seconds_per_batch": [round(t, 3) for t in times],
            "median_seconds": round(statistics.median(times), 3),
            "events_per_second": round(BATCH / statistics.median(times)),
            "setup_seconds": round(setup, 1),
            "first_day": str(date.fromordinal(END.date().toordinal() - DAYS)),
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
