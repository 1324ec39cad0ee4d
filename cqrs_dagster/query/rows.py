"""Arrow results -> JSON-ready rows: money as decimal strings, timestamps ISO-8601 UTC (``Z``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa

from cqrs_dagster.domain.events import utc_iso


def json_value(value: Any) -> Any:
    """One cell as a JSON value: Decimal -> "12.30", datetime -> "...Z", date -> "YYYY-MM-DD"."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return utc_iso(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    return value


def json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: json_value(value) for key, value in row.items()}


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Every row of ``table`` as a dict keyed by column name, with JSON-ready values."""
    return [json_row(row) for row in table.to_pylist()]
