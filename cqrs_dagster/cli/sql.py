"""``cqrs sql "SELECT ..."``: run one read-only query over the read-model views and print it.

The views are the local ones (``sql/local``): raw_events, orders, customers, order_summary and
daily_order_metrics. Anything but a single SELECT is refused with exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "sql",
        help="run a read-only SQL query over the read models",
        description=(
            "Run one SELECT over the views raw_events, orders, customers, order_summary and "
            "daily_order_metrics (DuckDB SQL). Writes and other statements are refused."
        ),
    )
    parser.add_argument("query", help='one SELECT statement, e.g. "SELECT * FROM order_summary"')
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder (CQRS_DATA_DIR)")
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format (default table)",
    )
    parser.set_defaults(func=run)


def _cell(value: Any) -> str:
    from cqrs_dagster.query.rows import json_value

    if value is None:
        return "NULL"
    shown = json_value(value)
    return shown if isinstance(shown, str) else str(shown)


def render_table(table: pa.Table) -> str:
    """Aligned text columns with a header rule and a row count."""
    names = table.column_names
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    lines = [
        " | ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)),
        "-+-".join("-" * w for w in widths),
    ]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def render_csv(table: pa.Table) -> str:
    """RFC 4180 CSV with a header; NULL is an empty field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(["" if v is None else _cell(v) for v in row.values()])
    return out.getvalue()


def render_json(table: pa.Table) -> str:
    """A JSON array of objects keyed by column name."""
    from cqrs_dagster.query.rows import json_rows

    return orjson.dumps(json_rows(table), option=orjson.OPT_INDENT_2).decode() + "\n"


RENDERERS = {"table": render_table, "csv": render_csv, "json": render_json}


def run(args: argparse.Namespace) -> int:
    from cqrs_dagster.query.views import NotReadOnly, QueryError, check_read_only
    from cqrs_dagster.settings import load_settings
    from cqrs_dagster.wiring import make_read_models

    try:
        check_read_only(args.query)
    except NotReadOnly as exc:
        print(f"cqrs sql: refused: {exc}", file=sys.stderr)
        return 2
    except QueryError as exc:
        print(f"cqrs sql: {exc}", file=sys.stderr)
        return 2
    settings = load_settings(data_dir=args.data_dir)
    try:
        with make_read_models(settings) as views:
            result = views.query(args.query)
    except QueryError as exc:
        print(f"cqrs sql: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(RENDERERS[args.format](result))
    return 0
