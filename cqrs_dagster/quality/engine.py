"""A DuckDB connection over the read models' Delta tables (Arrow datasets, nothing copied)."""

from __future__ import annotations

import duckdb

from cqrs_dagster.projections.schemas import SCHEMAS
from cqrs_dagster.projections.tables import TableStore


def connect(tables: TableStore, names: tuple[str, ...]) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with each named table registered; a missing table reads as empty."""
    con = duckdb.connect(":memory:")
    for name in names:
        table = tables.open(name)
        source = SCHEMAS[name].empty_table() if table is None else table.to_pyarrow_dataset()
        con.register(name, source)
    return con
