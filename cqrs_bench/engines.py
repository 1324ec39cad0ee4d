"""Engines benchmark (issue 12, item 7): the same projection work on both engines, side by side in
one run: DuckDB in the projection process, and Spark over Spark Connect on a local Sail server.

- catch-up: the ``catch_up`` benchmark's backlog (:mod:`.catch_up`: bus -> raw -> silver -> gold,
  ``pipeline.catch_up``), 200k events quick / 1M full, from copies of ONE bus file;
- a 10k-event batch into ``orders`` (:mod:`.read_side`: ``silver.project_orders``), 1M orders quick
  / 5M full, from copies of ONE table.

Every timed run is a spawned child (its own peak RSS, ``VmHWM``); the Spark runs get a fresh Sail
server per part (``sail spark server`` from ``.venv-sail``, its own process group), whose peak RSS
is read from /proc before it is stopped. Both engines commit through the same committer (delta-rs in
the projection process): on Spark the changed rows come back to the driver with ``toArrow()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cqrs_dagster.cli.procs import stop_process_tree
from cqrs_dagster.cli.up import start_sail
from cqrs_dagster_tests.fixtures.procs import free_port

from . import Measurement, Ratio, Report, Target, sized
from .catch_up import BATCH, PARTITIONS, fill_bus, fresh_copy, in_child, project_backlog
from .datasets import build_orders
from .read_side import BATCH as READ_BATCH
from .read_side import DAYS, merge_batches, write_raw

ENGINES = ("duckdb", "spark")


def vm_hwm_mib(pid: int) -> float:
    """Peak resident set of process ``pid`` (``VmHWM``), 0 when it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Sail:
    """A local Sail server on a free port (started as ``cqrs up --engine spark`` starts it) and,
    once stopped, its peak RSS."""

    remote: str
    peak_rss_mib: float = 0.0


@contextlib.contextmanager
def server(engine: str) -> Iterator[Sail | None]:
    """A fresh Sail server for the ``spark`` engine (stopped at the end), nothing for ``duckdb``."""
    if engine != "spark":
        yield None
        return
    sail = Sail(f"sc://127.0.0.1:{free_port()}")
    proc = start_sail(sail.remote, dict(os.environ))
    if proc is None:
        raise RuntimeError(f"a server already answers at {sail.remote}")
    try:
        yield sail
    finally:
        sail.peak_rss_mib = vm_hwm_mib(proc.pid)
        stop_process_tree(proc)


def _peak_rss(name: str) -> Measurement:
    return Measurement(name, "MiB", target=Target("<=", 1024), key="f")


def _copy_tree(source: Path, target: Path) -> str:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return str(target)


def run(repetitions: int) -> Report:
    events = sized(200_000, 1_000_000)
    orders = sized(1_000_000, 5_000_000)
    report = Report(
        "engines: DuckDB vs Spark (Sail) on the same catch-up and the same 10k batch",
        notes=[
            f"catch-up: {events:,} events (the catch_up benchmark's backlog, {PARTITIONS} "
            f"partitions, silver batches of {BATCH:,}), bus -> raw -> silver -> gold, per engine "
            "from a copy of one bus file; a spawned child per repetition",
            f"10k batch: silver.project_orders of {READ_BATCH:,} events (half updates of recent "
            f"orders, half new) into {orders:,} orders over {DAYS} days, from a copy of one "
            "table per engine; seconds of each successive batch",
            "spark: a fresh local Sail server (pysail 0.7.2, .venv-sail) per part; its peak RSS "
            "(VmHWM) is the server process's; the projection process (the Spark Connect client "
            "and the delta-rs commit) is measured apart",
            "both engines on the same 2 cores; Sail's own threads and the projection process "
            "share them",
        ],
    )
    rates: dict[str, Measurement] = {}
    merges: dict[str, Measurement] = {}
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-engines-") as tmp:
        root = Path(tmp)
        bus_file = root / "bus.sqlite"
        fill_bus(bus_file, events)
        for engine in ENGINES:
            rate = Measurement(f"{engine}: catch-up rate", "events/s", key="c")
            seconds = Measurement(f"{engine}: catch-up of {events:,} events", "s", key="c")
            rss = _peak_rss(f"{engine}: catch-up peak RSS (projection process)")
            with server(engine) as sail:
                remote = sail.remote if sail else ""
                for rep in range(repetitions):
                    folder = fresh_copy(bus_file, root / f"{engine}-catch-up-{rep}")
                    out = in_child(project_backlog, folder, events, BATCH, engine, remote)
                    shutil.rmtree(folder, ignore_errors=True)
                    if out["events_read"] != events:
                        raise RuntimeError(f"{engine} read {out['events_read']} of {events}")
                    seconds.values.append(out["seconds"])
                    rate.values.append(out["events_read"] / out["seconds"])
                    rss.values.append(out["peak_rss_mib"])
                    steps = ", ".join(f"{k} {v:.1f} s" for k, v in out["steps"].items())
                    report.notes.append(f"{engine} catch-up {rep + 1}: {steps}")
            report.measurements += [rate, seconds, rss]
            if sail is not None:
                name = "spark: Sail server peak RSS, catch-up"
                report.measurements.append(Measurement(name, "MiB", [sail.peak_rss_mib], key="f"))
            rates[engine] = rate

        base = root / "orders"
        from cqrs_dagster.projections.tables import TableStore

        tables = TableStore(root=str(base))
        ids = build_orders(tables, orders, DAYS)
        recent = [oid for oid, _ in ids[-(READ_BATCH // 2) * repetitions :]]
        del ids
        write_raw(tables, recent, repetitions)  # each engine applies them to its own copy
        for engine in ENGINES:
            merge = Measurement(f"{engine}: 10k batch into {orders:,} orders", "s", key="d")
            rss = _peak_rss(f"{engine}: peak RSS, 10k batch into {orders:,} orders")
            with server(engine) as sail:
                copy = _copy_tree(base, root / f"orders-{engine}")
                out = in_child(merge_batches, copy, repetitions, "", engine,
                               sail.remote if sail else "")  # fmt: skip
                shutil.rmtree(copy, ignore_errors=True)
            merge.values += out["seconds"]
            rss.values.append(out["peak_rss_mib"])
            report.measurements += [merge, rss]
            if sail is not None:
                name = f"spark: Sail server peak RSS, 10k batch into {orders:,} orders"
                report.measurements.append(Measurement(name, "MiB", [sail.peak_rss_mib], key="f"))
            merges[engine] = merge
    report.ratios.append(Ratio(rates["spark"].name, rates["duckdb"].name, key="c"))
    report.ratios.append(Ratio(merges["spark"].name, merges["duckdb"].name, key="d"))
    return report
