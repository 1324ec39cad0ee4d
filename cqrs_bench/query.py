"""Query side (g): the query API at N orders over real HTTP, one keep-alive client.

Data (built once per run): ``datasets.build_orders`` (UUIDv7 ids from the creation time, 365 days,
``orders`` partitioned by created_day); ``order_summary`` (what GET /orders/{id} reads) written as
a full rebuild writes it (``build_order_summary(full=True)``: every order joined to its customer's
name, sorted by order_id); ``daily_order_metrics`` from the same rows with the projection's own
``engines.duckdb.gold.daily_metrics``. Served by ``cqrs api`` (uvicorn, the app ``cqrs up``
serves, rate limit off, no relay). Per repetition: GET /api/v1/orders/{id} for random existing ids
(p50, p99), and GET /api/v1/metrics/daily for the year (365 rows; median of several calls).

A pyinstrument profile of the lookups in-process (the server's ReadModels path) goes to
``results/profiles/query-lookup.txt``.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from cqrs_dagster.projections.engines.duckdb.gold import daily_metrics, summary_rows
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.query.views import ReadModels
from cqrs_dagster_tests.fixtures.procs import (
    ROOT,
    free_port,
    start_group,
    stop_group,
    wait_for_port,
    wait_until,
)

from . import RESULTS_DIR, Measurement, Report, Series, Target, profiled, sized
from .datasets import END, build_orders

DAYS = 365
LOOKUPS = sized(600, 2_000)  # per repetition (quick: the whole run within a minute)
METRICS_CALLS = 20
WARMUP = 50
CURVE = [*range(0, 99), *(99 + n / 10 for n in range(11))]  # percentiles plotted


def build(tables: TableStore, rows: int) -> list[str]:
    """orders, order_summary and daily_order_metrics for ``rows`` orders; returns the order ids."""
    ids = build_orders(tables, rows, days=DAYS)
    orders = DeltaTable(tables.uri("orders")).to_pyarrow_table()
    customer_ids = pc.unique(orders["customer_id"])
    names = pc.binary_join_element_wise(pa.scalar("Customer "), customer_ids, "")
    customers = pa.table({"customer_id": customer_ids, "name": names})
    summary = summary_rows(orders, customers)  # the gold step's own join, sorted by order_id
    write_deltalake(tables.uri("order_summary"), summary, mode="overwrite")
    metrics = daily_metrics(
        orders.select(["order_id", "customer_id", "total_amount", "created_day"])
    )
    write_deltalake(tables.uri("daily_order_metrics"), metrics, mode="overwrite")
    return [oid for oid, _ in ids]


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


@contextmanager
def serve(data_dir: Path) -> Iterator[str]:
    """``cqrs api`` on ``data_dir`` (no relay, rate limit off, open mode); yields its base URL."""
    port = free_port()
    env = {"CQRS_ENV": "local", "CQRS_API_KEYS": "", "CQRS_RATE_LIMIT_PER_SECOND": "0"}
    args = [str(ROOT / ".venv/bin/cqrs"), "api", "--data-dir", str(data_dir), "--no-relay"]
    args += ["--port", str(port), "--log-level", "warning"]
    proc = start_group(args, data_dir.parent / "api.log", env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, timeout=60, proc=proc)
        with httpx.Client(base_url=base_url) as http:
            wait_until(lambda: http.get("/api/v1/healthz").status_code == 200, timeout=30)
        yield base_url
    finally:
        stop_group(proc)


def lookups(http: httpx.Client, ids: list[str]) -> list[float]:
    """Latency (ms) of GET /api/v1/orders/{id} for each id, sequentially; sorted."""
    out = []
    for oid in ids:
        start = time.perf_counter()
        response = http.get(f"/api/v1/orders/{oid}")
        out.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200 or response.json()["order_id"] != oid:
            raise RuntimeError(f"GET order {oid}: {response.status_code} {response.text[:200]}")
    return sorted(out)


def year_of_metrics(http: httpx.Client) -> float:
    """Latency (ms) of GET /api/v1/metrics/daily for the 365 days of the data set."""
    first, last = (END - timedelta(days=DAYS)).date(), (END - timedelta(days=1)).date()
    start = time.perf_counter()
    response = http.get("/api/v1/metrics/daily", params={"from": str(first), "to": str(last)})
    elapsed = (time.perf_counter() - start) * 1000
    items = response.json()["items"] if response.status_code == 200 else []
    if len(items) != DAYS:
        raise RuntimeError(f"metrics for a year: {response.status_code}, {len(items)} rows")
    return elapsed


def percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, round(q / 100 * (len(sorted_ms) - 1)))]


def run(repetitions: int) -> Report:
    rows = sized(200_000, 5_000_000)
    report = Report(f"query API (g): {rows:,} orders over {DAYS} days, real HTTP, one client")
    p50 = Measurement("GET order by id, p50", "ms", key="g")
    p99 = Measurement("GET order by id, p99", "ms", target=Target("<=", 50), key="g")
    metrics = Measurement(
        f"GET daily metrics for a year ({DAYS} rows), median", "ms", target=Target("<=", 500)
    )
    metrics.key = "g"
    build_s = Measurement("build the tables (not a target)", "s")
    report.measurements += [p50, p99, metrics, build_s]
    curve = Series(
        "lookup-latency",
        f"GET /api/v1/orders/{{id}} latency, {rows:,} orders (sorted requests)",
        "percentile of requests",
        "ms",
        hlines={"target p99 50 ms": 50.0},
    )
    report.series.append(curve)
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-query-") as tmp:
        data_dir = Path(tmp) / "data"
        tables = TableStore(str((data_dir / "delta").resolve()))
        start = time.perf_counter()
        ids = build(tables, rows)
        build_s.values.append(time.perf_counter() - start)
        rng = random.Random(7)
        with serve(data_dir) as url, httpx.Client(base_url=url, timeout=30) as http:
            lookups(http, rng.sample(ids, WARMUP))  # opens the server's ReadModels
            for r in range(repetitions):
                ms = lookups(http, rng.sample(ids, LOOKUPS))
                p50.values.append(percentile(ms, 50))
                p99.values.append(percentile(ms, 99))
                curve.lines[f"repetition {r + 1}"] = [(q, percentile(ms, q)) for q in CURVE]
                metrics.values.append(
                    statistics.median(year_of_metrics(http) for _ in range(METRICS_CALLS))
                )
        with ReadModels(tables) as models, profiled("query-lookup"):
            for oid in rng.sample(ids, 200):
                models.refresh(["order_summary"])
                models.rows_where("order_summary", "order_id", oid)  # what GET /orders/{id} runs
        summary = DeltaTable(tables.uri("order_summary"))
        report.notes += [
            f"tables: orders {folder_mib(Path(tables.uri('orders'))):,.0f} MiB "
            f"({DAYS} created_day partitions), order_summary "
            f"{folder_mib(Path(tables.uri('order_summary'))):,.0f} MiB in "
            f"{len(summary.file_uris())} files (one full rebuild, sorted by order_id), "
            f"daily_order_metrics {DAYS} rows",
            f"{LOOKUPS:,} GETs of random existing ids per repetition after {WARMUP} warm-up, "
            f"sequential on one keep-alive httpx client; metrics: median of {METRICS_CALLS} calls",
            "server: cqrs api (uvicorn, the app cqrs up serves), no relay, rate limit off",
        ]
    profile = RESULTS_DIR / "profiles" / "query-lookup.txt"
    report.profiles.append(
        str(profile.relative_to(ROOT)) if profile.is_relative_to(ROOT) else str(profile)
    )
    return report
