"""Catch-up benchmark (issue 7 (c), (f)): a backlog of events on the real local bus -> raw_events ->
orders, customers -> order_summary, daily_order_metrics, with the very functions the Dagster
assets call (``projections.pipeline.catch_up``: ingest, silver, gold), timed in a child process
whose peak RSS is read with ``getrusage(RUSAGE_CHILDREN)``. One extra repetition runs the real
``project_read_models`` job with ``execute_in_process`` on the same backlog (Dagster's own run
overhead and the run's blocking checks included). The peer (eventsourcing ``Projection``) projects
orders in the same run.

The backlog: customers register (~4% of events) and sometimes change (~2%), orders are created
(~31%) and move Created -> Paid -> Shipped -> Delivered (the rest), time-ordered (UUIDv7 ids
from their creation time), published through ``LocalEventBus.send`` in 5k-event batches.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from cqrs_dagster.domain.ids import uuid7
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.eventbus.port import OutgoingEvent
from cqrs_dagster.projections.engine import ProjectionEngine
from cqrs_dagster.projections.pipeline import MAX_EVENTS_PER_RUN, RAW_BATCH

from . import Measurement, Ratio, Report, Target, profiled, sized

T0 = datetime(2026, 8, 1, tzinfo=UTC)
STATUSES = ("Paid", "Shipped", "Delivered")
SEND_BATCH = 5_000
PARTITIONS = 4
# Events per silver batch when far behind: larger batches mean fewer MERGEs, but at 200k the
# 1M catch-up peaked at ~1.1 GiB (issue 7 (f): <= 1 GiB), at 100k just under 1 GiB.
BATCH = 100_000


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _envelope(
    event_type: str, aggregate: str, aggregate_id: str, version: int, ts: datetime, data: Any
) -> OutgoingEvent:
    ms = int(ts.timestamp() * 1000)
    body = {
        "eventId": uuid7(ms),
        "eventType": event_type,
        "aggregateId": aggregate_id,
        "aggregateType": aggregate,
        "version": version,
        "timestamp": _iso(ts),
        "correlationId": uuid7(ms),
        "causationId": uuid7(ms),
        "data": data,
        "metadata": {"source": "bench"},
        "schemaVersion": 1,
    }
    return OutgoingEvent(aggregate_id, orjson.dumps(body))


def backlog(n: int) -> Iterator[OutgoingEvent]:
    """``n`` events in time order (one every 50 ms of event time): see the module docstring."""
    customers: list[tuple[str, int]] = []  # (id, version)
    open_orders: list[tuple[str, int]] = []  # (id, version) of orders not yet delivered
    ts = T0
    i = 0
    while i < n:
        ts += timedelta(milliseconds=50)
        pick = i % 100
        if pick < 4 or not customers:
            cid = uuid7(int(ts.timestamp() * 1000))
            customers.append((cid, 1))
            data = {"customerId": cid, "name": f"Customer {i}", "email": f"c{i}@example.com"}
            yield _envelope("CustomerRegistered", "Customer", cid, 1, ts, data)
        elif pick < 6:
            k = (i * 7919) % len(customers)
            cid, version = customers[k]
            customers[k] = (cid, version + 1)
            data = {"customerId": cid, "name": f"Customer {i} v{version + 1}"}
            yield _envelope("CustomerUpdated", "Customer", cid, version + 1, ts, data)
        elif pick < 37 or not open_orders:
            oid = uuid7(int(ts.timestamp() * 1000))
            quantity = 1 + i % 3
            price = f"{5 + i % 40}.{i % 100:02d}"
            cents = round(float(price) * 100) * quantity
            data = {
                "orderId": oid,
                "customerId": customers[(i * 31) % len(customers)][0],
                "items": [{"sku": f"SKU-{i % 50}", "quantity": quantity, "unitPrice": price}],
                "totalAmount": f"{cents // 100}.{cents % 100:02d}",
                "itemCount": quantity,
                "status": "Created",
            }
            open_orders.append((oid, 1))
            yield _envelope("OrderCreated", "Order", oid, 1, ts, data)
        else:
            k = (i * 104729) % min(len(open_orders), 2_000)  # a recent order moves on
            k = len(open_orders) - 1 - k
            oid, version = open_orders[k]
            previous = "Created" if version == 1 else STATUSES[version - 2]
            status = STATUSES[version - 1]
            data = {"orderId": oid, "previousStatus": previous, "status": status}
            if version + 1 == 4:
                open_orders[k] = open_orders[-1]
                open_orders.pop()
            else:
                open_orders[k] = (oid, version + 1)
            yield _envelope("OrderUpdated", "Order", oid, version + 1, ts, data)
        i += 1


def fill_bus(path: Path, n: int, partitions: int = PARTITIONS) -> None:
    """Publish the ``n``-event backlog to a new local bus at ``path``."""
    bus = LocalEventBus(path, partition_count=partitions)
    try:
        batch: list[OutgoingEvent] = []
        for event in backlog(n):
            batch.append(event)
            if len(batch) == SEND_BATCH:
                bus.send(batch)
                batch = []
        bus.send(batch)
    finally:
        bus.close()


def in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a fresh (spawned) process; its result plus ``peak_rss_mib``: the child's
    own peak resident set (:func:`peak_rss_mib`, read in the child at its end, so it is that
    process's peak alone, not the largest of all children nor the parent's)."""
    pool = mp.get_context("spawn").Pool(1)
    try:
        return pool.apply(_measured, (fn, *args))
    finally:
        pool.close()  # let the child exit on its own (terminate() interrupts its shutdown)
        pool.join()


def warm_up() -> None:
    """Pay the once-per-process costs before timing: pandas (pyarrow imports it on the first
    conversion from Python objects, ~0.5 s) and the process's DuckDB database (~20 ms). A
    long-lived projection process (a Dagster code server's run worker) has paid them already."""
    import pandas  # noqa: F401

    from cqrs_dagster.projections.engines.duckdb.connection import duck

    duck().close()


def peak_rss_mib() -> float:
    """This process's peak resident set: ``VmHWM`` of /proc/self/status, the high-water mark of
    its own address space. (``ru_maxrss`` is not used: Linux carries it across ``execve``, so a
    spawned child would report the parent's RSS at fork time if that was larger.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measured(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    warm_up()
    result = fn(*args)
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def make_engine(engine: str, remote: str) -> ProjectionEngine:
    """The engine a benchmark child computes with, built as a host builds it (the composition
    root, :func:`cqrs_dagster.wiring.make_engine`): ``duckdb``, or ``spark`` at ``remote``."""
    from cqrs_dagster.settings import load_settings
    from cqrs_dagster.wiring import make_engine as wired

    if engine == "spark":
        return wired(load_settings(projection_engine="spark", spark_remote=remote))
    return wired(load_settings(projection_engine="duckdb"))


def project_backlog(
    data_dir: str, events: int, batch: int, engine: str = "duckdb", remote: str = ""
) -> dict[str, Any]:
    """The catch-up as the Dagster assets do it, minus Dagster: ``catch_up`` (raw ingest, silver,
    gold) over the whole backlog, computed by ``engine`` (the session is opened before timing)."""
    from cqrs_dagster.projections.context import StepContext
    from cqrs_dagster.projections.pipeline import catch_up
    from cqrs_dagster.projections.tables import TableStore

    folder = Path(data_dir)
    bus = LocalEventBus(folder / "bus.sqlite", partition_count=PARTITIONS)
    tables = TableStore(root=str(folder / "delta"))
    computer = make_engine(engine, remote)
    started = time.perf_counter()
    try:
        reports = catch_up(
            StepContext(tables, "catch-up", engine=computer),
            bus,
            max_events=events,
            batch_size=batch,
        ).reports
    finally:
        bus.close()
        computer.close()
    seconds = time.perf_counter() - started
    steps: dict[str, float] = {}
    for report in reports:
        steps[report.table] = steps.get(report.table, 0.0) + report.seconds
    read = sum(r.events_read for r in reports if r.table == "raw_events")
    return {"seconds": seconds, "events_read": read, "steps": steps}


def project_backlog_dagster(data_dir: str, events: int) -> dict[str, Any]:
    """One real run of the ``project_read_models`` job (``execute_in_process``, ephemeral
    instance, its in-process executor and blocking checks) over the backlog."""
    import dagster as dg

    import cqrs_dagster
    from cqrs_dagster.defs.resources import PlatformResource

    defs = dg.load_from_defs_folder(path_within_project=Path(cqrs_dagster.__file__).parent)
    job = defs.resolve_job_def("project_read_models")
    platform = PlatformResource(data_dir=data_dir, env="local")
    started = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, resources={"platform": platform})
    seconds = time.perf_counter() - started
    meta = result.asset_materializations_for_node("raw_events")[-1].metadata
    read = meta["events_read"].value
    return {"seconds": seconds, "success": result.success, "events_read": read}


def fresh_copy(source: Path, folder: Path) -> str:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(source, folder / "bus.sqlite")
    return str(folder)


def run(repetitions: int) -> Report:
    events = sized(200_000, 1_000_000)
    batch = BATCH
    peer_events = sized(10_000, 50_000)
    rate = Measurement("catch-up rate (bus -> raw -> silver -> gold)", "events/s",
                       target=Target(">=", 65_000), key="c")  # fmt: skip
    seconds = Measurement(f"catch-up of {events:,} events", "s",
                          target=Target("<=", 15 * events / 1_000_000), key="c")  # fmt: skip
    rss = Measurement("catch-up peak RSS (projection process)", "MiB",
                      target=Target("<=", 1024), key="f")  # fmt: skip
    dagster_rate = Measurement("one Dagster run (execute_in_process) rate", "events/s", key="c")
    dagster_rss = Measurement("catch-up peak RSS, one Dagster run", "MiB",
                              target=Target("<=", 1024), key="f")  # fmt: skip
    peer = Measurement("peer: eventsourcing Projection", "events/s", key="c")
    notes = [
        f"{events:,} events on the local bus ({PARTITIONS} partitions): ~4% CustomerRegistered,"
        " ~2% CustomerUpdated, ~31% OrderCreated, the rest OrderUpdated status moves;"
        " UUIDv7 ids, time-ordered",
        f"timed: projections.pipeline.catch_up (the functions the Dagster assets call): silver"
        f" batches of {batch:,}, raw commits of {RAW_BATCH:,}, in a spawned child process (peak RSS = its own VmHWM); Dagster's run"
        " overhead NOT included in the rate; the 'one Dagster run' line is execute_in_process"
        " of project_read_models (projection_batch_size 50k, blocking checks and run start"
        " included)",
        f"peer: eventsourcing 9.5.6 Projection over {peer_events:,} stored order events",
    ]
    report = Report(f"catch-up: {events:,}-event backlog -> every read model", notes=notes)
    from .peer import projection_rate

    with tempfile.TemporaryDirectory(prefix="cqrs-bench-catch-up-") as tmp:
        root = Path(tmp)
        bus_file = root / "bus.sqlite"
        fill_bus(bus_file, events)
        for rep in range(repetitions):
            out = in_child(project_backlog, fresh_copy(bus_file, root / f"r{rep}"), events, batch)
            shutil.rmtree(root / f"r{rep}", ignore_errors=True)
            seconds.values.append(out["seconds"])
            rate.values.append(out["events_read"] / out["seconds"])
            rss.values.append(out["peak_rss_mib"])
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in out["steps"].items())
            report.notes.append(f"repetition {rep + 1}: {steps}")
            # the peer right after ours, repetition by repetition: the machine's load drifts
            peer.values.append(projection_rate(root / f"peer{rep}", peer_events))
        out = in_child(project_backlog_dagster, fresh_copy(bus_file, root / "dagster"), events)
        dagster_rate.values.append(out["events_read"] / out["seconds"])
        report.notes.append(
            f"one Dagster run: {out['events_read']:,} events in {out['seconds']:.1f} s (a run"
            f" applies at most {MAX_EVENTS_PER_RUN:,} events per read model)"
        )
        dagster_rss.values.append(out["peak_rss_mib"])
        with profiled("catch_up"):
            project_backlog(fresh_copy(bus_file, root / "profiled"), events, batch)
        report.profiles.append("bench/results/profiles/catch_up.txt")
    report.measurements += [rate, seconds, rss, dagster_rate, dagster_rss, peer]
    report.ratios.append(Ratio(rate.name, peer.name, Target(">=", 30), key="c"))
    return report
