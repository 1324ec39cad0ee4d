"""Synthetic read-model tables for benchmarks: an orders table of N rows with time-ordered ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
from deltalake import write_deltalake

from cqrs_dagster.domain.ids import uuid7
from cqrs_dagster.projections.schemas import ORDERS_SCHEMA
from cqrs_dagster.projections.tables import TableStore, writer_properties

END = datetime(2026, 11, 26, tzinfo=UTC)


def build_orders(
    tables: TableStore, rows: int, days: int = 100, end: datetime = END
) -> list[tuple[str, datetime]]:
    """Append ``rows`` orders created evenly over the ``days`` before ``end`` (UUIDv7 ids from
    their creation time, partitioned by created_day, one commit per day); returns (id, created).
    The table is created as the platform creates it (properties) and written with its writer
    properties (Parquet bloom filters), so lookups and MERGEs meet the files a user's would."""
    per_day = rows // days
    tables.ensure("orders")
    ids: list[tuple[str, datetime]] = []
    for d in range(days):
        day0 = end - timedelta(days=days - d)
        times = [day0 + timedelta(seconds=i * 86_400 / per_day) for i in range(per_day)]
        oids = [uuid7(int(t.timestamp() * 1000)) for t in times]
        ids.extend(zip(oids, times, strict=True))
        table = pa.table(
            {
                "order_id": oids,
                "customer_id": [f"c{i % 5000}" for i in range(per_day)],
                "status": ["Created"] * per_day,
                "total_amount": [Decimal("19.99")] * per_day,
                "item_count": [1] * per_day,
                "items": ['[{"sku":"a","quantity":1,"unitPrice":"19.99"}]'] * per_day,
                "created_date": times,
                "updated_date": times,
                "version": [1] * per_day,
                "last_event_id": oids,
                "created_day": [day0.date()] * per_day,
            },
            schema=ORDERS_SCHEMA,
        )
        write_deltalake(  # type: ignore[call-overload]  # writer_properties: see writer_properties
            tables.uri("orders"),
            table,
            mode="append",
            partition_by=["created_day"],
            writer_properties=writer_properties("orders"),
        )
    return ids
