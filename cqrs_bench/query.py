"""Query side (g, g2): the query API at N orders over real HTTP, one keep-alive client.

Data (built once per size): ``datasets.build_orders`` (UUIDv7 ids from the creation time, 365
days, ``orders`` partitioned by created_day); ``order_summary`` (what GET /orders/{id} reads)
written as a full rebuild writes it (``build_order_summary(full=True)``: every order joined to its
customer's name, sorted by order_id); ``daily_order_metrics`` from the same rows with the
projection's own ``engines.duckdb.gold.daily_metrics``. Served by ``cqrs api`` (uvicorn, the app
``cqrs up`` serves, rate limit off, no relay). Per repetition: GET /api/v1/orders/{id} for random
existing ids (p50, p99), and GET /api/v1/metrics/daily for the year (365 rows; median of several
calls).

Two storages in one report:

- **g** (local): the tables in a local folder; 200k orders quick, 5M full.
- **g2** (Azurite): the bench starts Azurite's blob service (npm ``azurite-blob``, in memory) on
  127.0.0.1 and a free port, writes ``order_summary`` and ``daily_order_metrics`` (what the two
  calls read; the same rows and file layout as the local build) through the project's
  TableStore at ``az://<container>/delta`` with the Azurite storage options, starts ``cqrs api``
  with ``CQRS_DELTA_ROOT`` on it, and stops Azurite by process group. 200k orders quick, 1M full.
  Key lookups there copy the files they need locally once (``query/remote.py``): the first
  lookup's latency (that copy) is reported apart, before the warm-up.

``BENCH_QUERY_STORAGE=local`` or ``=azurite`` runs only that part (default: both).

A pyinstrument profile of the lookups in-process (the server's ReadModels path) goes to
``results/profiles/query-lookup.txt`` (g2: ``query-lookup-g2.txt``).
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from cqrs_dagster.projections.engines.duckdb.gold import daily_metrics, summary_rows
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.query.views import ReadModels
from cqrs_dagster.wiring import make_read_models, make_table_store
from cqrs_dagster_tests.fixtures.azurite import AzuriteServer, azurite_options
from cqrs_dagster_tests.fixtures.procs import (
    NODE_BIN,
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
STORAGES = ("local", "azurite")
SERVED = ("order_summary", "daily_order_metrics")  # what the two calls read (copied to Azurite)
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
    # Through ensure: the table's shipped layout (order_summary in ~4 MiB files, tables.py)
    write_deltalake(tables.ensure("order_summary"), summary, mode="overwrite")
    metrics = daily_metrics(
        orders.select(["order_id", "customer_id", "total_amount", "created_day"])
    )
    write_deltalake(tables.uri("daily_order_metrics"), metrics, mode="overwrite")
    return [oid for oid, _ in ids]


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


@contextmanager
def serve(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``cqrs api`` on ``data_dir`` (no relay, rate limit off, open mode; ``env`` on top, e.g. a
    remote ``CQRS_DELTA_ROOT``); yields its base URL."""
    port = free_port()
    env = {
        "CQRS_ENV": "local",
        "CQRS_API_KEYS": "",
        "CQRS_RATE_LIMIT_PER_SECOND": "0",
        **(env or {}),
    }
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


@contextmanager
def azurite(workdir: Path) -> Iterator[AzuriteServer]:
    """Azurite's blob service (in memory) on 127.0.0.1 and a free port, stopped by process group."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [str(NODE_BIN / "azurite-blob"), *azurite_options(port)]
    proc = start_group(args, workdir / "azurite.log")
    try:
        wait_for_port(port, timeout=60, proc=proc)
        yield AzuriteServer(port=port)
    finally:
        stop_group(proc)


def azurite_env(server: AzuriteServer, container: str) -> dict[str, str]:
    """The ``cqrs api`` settings putting the read models at ``az://<container>/delta``."""
    return {
        "CQRS_DELTA_ROOT": f"az://{container}/delta",
        "CQRS_STORAGE_USE_EMULATOR": "true",
        "CQRS_STORAGE_ENDPOINT": server.blob_endpoint,
    }


def copy_tables(local: TableStore, remote: TableStore, names: tuple[str, ...] = SERVED) -> None:
    """Write each local table's rows to ``remote`` in one commit (the file layout of one write
    into the table as ``TableStore.ensure`` creates it)."""
    for name in names:
        rows = DeltaTable(local.uri(name)).to_pyarrow_table()
        write_deltalake(remote.ensure(name), rows, mode="overwrite")


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


def storages() -> tuple[str, ...]:
    """The parts ``BENCH_QUERY_STORAGE`` asks for (default: both)."""
    chosen = os.environ.get("BENCH_QUERY_STORAGE", "").strip().lower()
    if chosen in ("", "both", "all"):
        return STORAGES
    if chosen not in STORAGES:
        raise ValueError(f"BENCH_QUERY_STORAGE={chosen!r}: one of {', '.join(STORAGES)} or both")
    return (chosen,)


@dataclass
class Part:
    """One storage's figures in the report."""

    key: str  # "g" or "g2"
    label: str  # "local" or "Azurite"
    rows: int

    def __post_init__(self) -> None:
        tag = "" if self.key == "g" else f" ({self.label})"
        self.p50 = Measurement(f"GET order by id, p50{tag}", "ms", key=self.key)
        self.p99 = Measurement(
            f"GET order by id, p99{tag}", "ms", target=Target("<=", 50), key=self.key
        )
        self.metrics = Measurement(
            f"GET daily metrics for a year ({DAYS} rows), median{tag}",
            "ms",
            target=Target("<=", 500),
            key=self.key,
        )
        self.curve = Series(
            "lookup-latency" if self.key == "g" else f"lookup-latency-{self.key}",
            f"GET /api/v1/orders/{{id}} latency, {self.rows:,} orders, {self.label} "
            "(sorted requests)",
            "percentile of requests",
            "ms",
            hlines={"target p99 50 ms": 50.0},
        )

    def measure(
        self, http: httpx.Client, ids: list[str], rng: random.Random, repetitions: int
    ) -> None:
        lookups(http, rng.sample(ids, WARMUP))  # opens the server's ReadModels
        for r in range(repetitions):
            ms = lookups(http, rng.sample(ids, LOOKUPS))
            self.p50.values.append(percentile(ms, 50))
            self.p99.values.append(percentile(ms, 99))
            self.curve.lines[f"repetition {r + 1}"] = [(q, percentile(ms, q)) for q in CURVE]
            self.metrics.values.append(
                statistics.median(year_of_metrics(http) for _ in range(METRICS_CALLS))
            )


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run(repetitions: int) -> Report:
    sizes = {"local": sized(200_000, 5_000_000), "azurite": sized(200_000, 1_000_000)}
    chosen = storages()
    parts = {
        name: Part(*(("g", "local") if name == "local" else ("g2", "Azurite")), sizes[name])
        for name in chosen
    }
    title = ", ".join(f"{p.key} {p.label} {p.rows:,} orders" for p in parts.values())
    report = Report(f"query API ({title}) over {DAYS} days, real HTTP, one client")
    for part in parts.values():
        report.measurements += [part.p50, part.p99, part.metrics]
        report.series.append(part.curve)
    builds: dict[int, tuple[TableStore, list[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-query-") as tmp:
        rng = random.Random(7)

        def built(rows: int) -> tuple[TableStore, list[str]]:
            if rows not in builds:
                tables = TableStore(str((Path(tmp) / f"data-{rows}" / "delta").resolve()))
                build_s = Measurement(f"build the tables, {rows:,} orders (not a target)", "s")
                start = time.perf_counter()
                builds[rows] = (tables, build(tables, rows))
                build_s.values.append(time.perf_counter() - start)
                report.measurements.append(build_s)
                summary = DeltaTable(tables.uri("order_summary"))
                report.notes.append(
                    f"tables at {rows:,} orders: orders "
                    f"{folder_mib(Path(tables.uri('orders'))):,.0f} MiB ({DAYS} created_day "
                    f"partitions), order_summary "
                    f"{folder_mib(Path(tables.uri('order_summary'))):,.0f} MiB in "
                    f"{len(summary.file_uris())} files (one full rebuild, sorted by order_id), "
                    f"daily_order_metrics {DAYS} rows"
                )
            return builds[rows]

        if "local" in parts:
            part = parts["local"]
            tables, ids = built(part.rows)
            data_dir = Path(tables.root).parent
            with serve(data_dir) as url, httpx.Client(base_url=url, timeout=30) as http:
                part.measure(http, ids, rng, repetitions)
            with ReadModels(tables) as models, profiled("query-lookup"):
                for oid in rng.sample(ids, 200):
                    models.refresh(["order_summary"])
                    models.rows_where("order_summary", "order_id", oid)  # GET /orders/{id}
            report.profiles.append(_relative(RESULTS_DIR / "profiles" / "query-lookup.txt"))
        if "azurite" in parts:
            part = parts["azurite"]
            tables, ids = built(part.rows)
            first = Measurement("g2: first GET order by id (copies its file; not a target)", "ms")
            copy_s = Measurement("g2: write the served tables to Azurite (not a target)", "s")
            report.measurements += [first, copy_s]
            with azurite(Path(tmp) / "azurite") as server:
                container = server.fresh_container()
                settings = server.settings(container)
                start = time.perf_counter()
                copy_tables(tables, make_table_store(settings))
                copy_s.values.append(time.perf_counter() - start)
                data_dir = Path(tmp) / "g2" / "data"
                data_dir.mkdir(parents=True)
                env = azurite_env(server, container)
                with serve(data_dir, env) as url, httpx.Client(base_url=url, timeout=60) as http:
                    first.values.append(lookups(http, rng.sample(ids, 1))[0])
                    part.measure(http, ids, rng, repetitions)
                with make_read_models(settings) as models, profiled("query-lookup-g2"):
                    for oid in rng.sample(ids, 200):
                        models.refresh(["order_summary"])
                        models.rows_where("order_summary", "order_id", oid)
            report.profiles.append(_relative(RESULTS_DIR / "profiles" / "query-lookup-g2.txt"))
            report.notes.append(
                f"g2: Azurite blob service (npm azurite-blob, in memory) on 127.0.0.1; "
                f"{', '.join(SERVED)} written to az://<container>/delta through TableStore "
                "(one commit each); cqrs api with CQRS_DELTA_ROOT there"
            )
        report.notes += [
            f"{LOOKUPS:,} GETs of random existing ids per repetition after {WARMUP} warm-up, "
            f"sequential on one keep-alive httpx client; metrics: median of {METRICS_CALLS} calls",
            "server: cqrs api (uvicorn, the app cqrs up serves), no relay, rate limit off",
        ]
    return report
