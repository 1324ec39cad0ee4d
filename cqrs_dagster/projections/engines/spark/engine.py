"""``SparkEngine``: the port over a Spark Connect session (see :mod:`.sql` for the SQL)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from ...engine import (
    Bodies,
    EngineUnavailable,
    Flags,
    FoldOutput,
    ProjectionEngine,
    body_array,
    flag_array,
)
from ...schemas import (
    CUSTOMERS,
    CUSTOMERS_SCHEMA,
    DAILY_ORDER_METRICS_SCHEMA,
    ORDER_SUMMARY_SCHEMA,
    ORDERS,
    ORDERS_SCHEMA,
)
from ..duckdb.folds import EVENT_COLUMNS
from ..duckdb.folds import _items_text as items_text
from . import sql

DECODED_SCHEMA = pa.schema(
    [
        ("i", pa.int64()),
        ("fast", pa.bool_()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("aggregate_id", pa.string()),
        ("aggregate_type", pa.string()),
        ("version", pa.int64()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("correlation_id", pa.string()),
        ("causation_id", pa.string()),
        ("data", pa.string()),
        ("metadata", pa.string()),
        ("schema_version", pa.int32()),
        ("event_date", pa.date32()),
    ]
)
SETTING = "CQRS_SPARK_REMOTE"
# The lead byte of a 4-byte UTF-8 sequence (a code point beyond U+FFFF).
_BEYOND_BMP = re.compile(rb"[\xf0-\xf4]")


def connect(remote: str) -> Any:
    """A Spark Connect session to ``remote`` (``sc://host:port``) with UTC session time, or
    :class:`EngineUnavailable` naming the server and the setting."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - the spark extra is missing
        raise EngineUnavailable(
            "CQRS_PROJECTION_ENGINE=spark needs pyspark: pip install 'cqrs-dagster[spark]'"
        ) from exc
    try:
        probe(remote)
        session = SparkSession.builder.remote(remote).create()
        fail_fast(session, remote)
        ping(session, remote)
    except EngineUnavailable:
        raise
    except Exception as exc:
        raise unavailable(remote, exc) from exc
    return session


def active_session() -> Any | None:
    """The process's active Spark session (a Databricks job's ``spark``), or None (no pyspark,
    or no session yet: then :func:`connect` makes one to ``CQRS_SPARK_REMOTE``)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


def address(remote: str) -> tuple[str, int]:
    """The host and port of a ``sc://host:port/;params`` URL (Spark Connect's default port)."""
    parsed = urlsplit(remote.replace("sc://", "http://", 1))
    return parsed.hostname or "localhost", parsed.port or 15002


def probe(remote: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at ``remote``'s host and port (the Spark Connect client
    would retry a refused connection for minutes)."""
    with socket.create_connection(address(remote), timeout):
        pass


def fail_fast(session: Any, remote: str | None) -> None:
    """Stop the Connect client from retrying a server that is gone.

    pyspark's ``DefaultPolicy`` retries every ``UNAVAILABLE`` answer 15 times with a backoff of
    up to 60 s (at least 10 minutes in all), so a server that dies in the middle of a run froze
    the run for ~10 minutes before it failed. This policy keeps those retries (a busy or
    restarting server, a cluster that is starting) only while something still listens at the
    server's port: a refused connection ends the retries at once and the engine raises
    :class:`EngineUnavailable`. A session that is not a Spark Connect session (a Databricks job's
    own session), or has no known ``remote``, is left as it is."""
    if remote is None or not remote.startswith("sc://"):
        return
    try:
        client = session.client
        from pyspark.sql.connect.client.retries import DefaultPolicy
    except Exception:  # a classic session has no Connect client
        return
    host, port = address(remote)

    class WhileServerListens(DefaultPolicy):
        def can_retry(self, e: BaseException) -> bool:
            if not super().can_retry(e):
                return False
            try:
                with socket.create_connection((host, port), 2.0):
                    return True
            except OSError:
                return False

    client.set_retry_policies([WhileServerListens()])


def unavailable(remote: str, exc: BaseException) -> EngineUnavailable:
    text = str(exc).strip()
    details = re.search(r'details = "([^"]*)"', text)  # a gRPC error: its details line
    first = details.group(1) if details else text.splitlines()[0] if text else ""
    first = first[:300] or type(exc).__name__
    return EngineUnavailable(
        f"the Spark Connect server {remote} ({SETTING}) does not answer: {first}. Start one "
        "(`sail spark server --ip 127.0.0.1 --port N`, or `cqrs up --engine spark`), point "
        f"{SETTING} at a running server, or set CQRS_PROJECTION_ENGINE=duckdb"
    )


def ping(session: Any, remote: str) -> None:
    """Set UTC session time (days and timestamps are UTC) and check the server answers."""
    session.conf.set("spark.sql.session.timeZone", "UTC")
    session.sql("SELECT 1").toArrow()


class SparkEngine(ProjectionEngine):
    """Spark SQL over a Spark Connect session; Arrow in, Arrow out."""

    name = "spark"

    def __init__(self, session: Any, remote: str | None = None, *, owned: bool = False) -> None:
        self.session = session
        self.remote = remote or "the Spark session"
        self._owned = owned
        self._lock = threading.Lock()
        fail_fast(session, remote)
        try:
            session.conf.set("spark.sql.session.timeZone", "UTC")
        except Exception as exc:
            raise unavailable(self.remote, exc) from exc

    def _run(self, query: str, views: dict[str, pa.Table], schema: pa.Schema) -> pa.Table:
        """``query`` over ``views`` (Arrow tables as temp views), as an Arrow table of ``schema``.
        One query at a time per engine: the views are the session's."""
        with self._lock:
            return self._run_locked(query, views, schema)

    def _run_locked(self, query: str, views: dict[str, pa.Table], schema: pa.Schema) -> pa.Table:
        try:
            for name, table in views.items():
                self._frame(table).createOrReplaceTempView(name)
            out = self.session.sql(query).toArrow()
        except Exception as exc:
            if _is_connection_error(exc):
                raise unavailable(self.remote, exc) from exc
            raise
        finally:
            for name in views:
                with contextlib.suppress(Exception):  # a dead server drops its views itself
                    self.session.catalog.dropTempView(name)
        return out.select(schema.names).cast(schema)

    def _frame(self, table: pa.Table) -> Any:
        if table.num_rows:
            return self.session.createDataFrame(table)
        from pyspark.sql.pandas.types import from_arrow_schema

        return self.session.createDataFrame([], schema=from_arrow_schema(table.schema))

    def decode(self, bodies: Bodies, canonical: Flags | None = None) -> pa.Table:
        column = body_array(bodies)
        if not len(column):
            return DECODED_SCHEMA.empty_table()
        flags = flag_array(canonical, column).to_pylist()
        bodies = column.to_pylist()
        # Only canonical bodies (valid UTF-8 JSON, exactly orjson's bytes) reach Spark, and only
        # those whose data / metadata text Apache Spark's get_json_object gives back unchanged:
        # it re-serializes what it extracts (Jackson), writing a character beyond the BMP as an
        # escaped surrogate pair ("\uD83D\uDE00" for U+1F600) and a JSON float the Java way
        # ("1e-7" -> "1.0E-7", "12345678.9" -> "1.23456789E7"), where orjson, DuckDB and Sail
        # keep the text. Found by the Apache Spark conformance test (Sail alone hid both); such
        # bodies take the shared Python path (floats are told apart in the SQL: sql.DECODE).
        texts = [
            b.decode() if ok and not _BEYOND_BMP.search(b) else None
            for b, ok in zip(bodies, flags, strict=True)
        ]
        msgs = pa.table(
            {"i": pa.array(range(len(bodies)), pa.int64()), "body": pa.array(texts, pa.string())}
        )
        return self._run(sql.DECODE, {"msgs": msgs}, DECODED_SCHEMA)

    def fold(self, table: str, events: pa.Table, current: pa.Table) -> FoldOutput:
        if table == ORDERS:
            schema, key, query = ORDERS_SCHEMA, "order_id", sql.ORDERS
        elif table == CUSTOMERS:
            schema, key, query = CUSTOMERS_SCHEMA, "customer_id", sql.CUSTOMERS
        else:
            raise ValueError(f"no fold for {table!r}")
        if events.num_rows == 0:
            return FoldOutput(schema.empty_table(), 0, pa.array([], pa.string()))
        ev = events.select(EVENT_COLUMNS)
        if table == ORDERS:
            ev = ev.append_column("items_text", items_text(events))
        out_schema = schema.append(pa.field("applied", pa.int64()))
        out = self._run(query, {"ev": ev, "cur": current.cast(schema)}, out_schema)
        applied = int(pc.sum(out.column("applied")).as_py() or 0) if out.num_rows else 0
        rows = out.select(schema.names)
        keys = pc.unique(events.column("aggregate_id"))
        others = pc.filter(keys, pc.invert(pc.is_in(keys, rows.column(key))))
        return FoldOutput(rows, applied, others)

    def order_summary(self, orders: pa.Table, customers: pa.Table) -> pa.Table:
        if orders.num_rows == 0:
            return ORDER_SUMMARY_SCHEMA.empty_table()
        names = customers.select(["customer_id", "name"])
        return self._run(sql.ORDER_SUMMARY, {"o": orders, "c": names}, ORDER_SUMMARY_SCHEMA)

    def daily_metrics(self, orders: pa.Table) -> pa.Table:
        if orders.num_rows == 0:
            return DAILY_ORDER_METRICS_SCHEMA.empty_table()
        return self._run(sql.DAILY_METRICS, {"o": orders}, DAILY_ORDER_METRICS_SCHEMA)

    def close(self) -> None:
        if self._owned:
            with contextlib.suppress(Exception):  # the server may already be gone
                self.session.stop()


def _is_connection_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        s in text
        for s in ("unavailable", "connection refused", "failed to connect", "deadline", "channel")
    )
