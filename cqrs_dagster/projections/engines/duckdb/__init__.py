"""The default projection engine: DuckDB (JSON decode, silver folds) and Arrow compute (gold), in
this process. No server, no set-up; one process-wide in-memory DuckDB database."""

from __future__ import annotations

import pyarrow as pa
from deltalake import DeltaTable

from ...engine import Bodies, Flags, FoldOutput, ProjectionEngine
from ...local_files import local_files
from ...schemas import CUSTOMERS, ORDERS
from .decode import decode_bodies
from .folds import fast_fold_customers, fast_fold_orders
from .gold import daily_metrics, summary_rows, summary_stream


class DuckDBEngine(ProjectionEngine):
    """DuckDB + Arrow in the projection's own process."""

    name = "duckdb"
    concurrent = True  # every call runs on a cursor of its own

    def decode(self, bodies: Bodies, canonical: Flags | None = None) -> pa.Table:
        return decode_bodies(bodies, canonical)

    def fold(self, table: str, events: pa.Table, current: pa.Table) -> FoldOutput:
        if table == ORDERS:
            return fast_fold_orders(events, current)
        if table == CUSTOMERS:
            return fast_fold_customers(events, current)
        raise ValueError(f"no fold for {table!r}")

    def order_summary(self, orders: pa.Table, customers: pa.Table) -> pa.Table:
        return summary_rows(orders, customers)

    def order_summary_whole(
        self, orders: DeltaTable, customers: DeltaTable
    ) -> pa.RecordBatchReader:
        order_files, customer_files = local_files(orders), local_files(customers)
        if not order_files or not customer_files:  # remote tables (or nothing to join): Arrow
            return super().order_summary_whole(orders, customers)
        return summary_stream(order_files, customer_files)

    def daily_metrics(self, orders: pa.Table) -> pa.Table:
        return daily_metrics(orders)
