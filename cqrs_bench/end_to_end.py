"""End-to-end latency (issues 7 and 14 e, f): command accepted (HTTP 201) -> visible in the query
API, through ``cqrs up`` (API + relay + ``dagster dev``: the event sensor starts the projection runs).

Two platform starts per call, the same load in each: ``cqrs up`` with no flag or setting (the
defaults: follow mode, one ``follow_read_models`` run keeps applying new events until idle), then
per-batch mode for comparison (``cqrs up --follow 0``: one ``project_read_models`` run per batch).
Each start (~30 s) goes through:

1. idle memory (f, the defaults' start only): the total RSS of every process ``cqrs up`` started,
   sampled after the platform has been up and idle for ~20 s (median of several samples);
2. load (e): CreateOrder commands on a fixed schedule (asyncio + httpx, a bounded number in
   flight) at 200/s for 180 s (``BENCH_FULL=1``; quick: 100/s for 15 s). Visibility is detected
   through the query API's list endpoint (``GET /api/v1/orders?customer_id=&created_from=``,
   keyset-paginated), polled from the oldest order not yet seen, so each poll reads about
   (lag x rate) rows instead of one request per order;
3. where the time goes: per order, its bus enqueue time (the local bus log) and the Dagster run
   that projected it (run created / started, raw_events step start, last step end) give the
   medians of each phase; in follow mode, the end of the pass that applied it (the first
   raw_events materialization whose bus checkpoint covers the event).

The API's rate limiter (200/s per principal by default) is disabled for the run: the benchmark
measures projection latency, not the limiter.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from cqrs_dagster.cli.procs import descendants
from cqrs_dagster_tests.fixtures.procs import free_port, start_group, stop_group

from . import Measurement, Report, Series, Target, full_mode, sized

IDLE_SECONDS = 20
RSS_SAMPLES = 5
IN_FLIGHT = 64
POLL_SECONDS = 0.2
PAGE = 500


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``url`` answers below 500 (a copy of the test fixture's helper, which lives
    in a module that imports pytest)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cqrs up exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def _rss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def wait_first_run(home: Path, job_name: str, timeout: float = 180) -> None:
    """Until the sensor's first (heartbeat) projection run has finished: idle means after it."""
    import dagster as dg

    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while time.monotonic() < deadline:
            runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name), limit=1)
            if runs and runs[0].is_finished:
                return
            time.sleep(1)


def _name(pid: int) -> str:
    """A short name for a process of the platform (its module or program)."""
    with contextlib.suppress(OSError):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        words = [a.decode(errors="replace") for a in argv if a]
        for i, word in enumerate(words):
            if word == "-m" and i + 1 < len(words):
                rest = [w for w in words[i + 2 : i + 4] if not w.startswith("-")]
                return " ".join([words[i + 1].rsplit(".", 1)[-1], *rest[:1]])
        for word in words[1:]:
            if not word.startswith("-"):
                return Path(word).name
    return "?"


def idle_rss(root: int) -> tuple[float, list[float], dict[str, float]]:
    """Median total RSS (MB) of ``root`` and its descendants, the samples, and MB per process."""
    samples = []
    per_process: dict[str, float] = {}
    for _ in range(RSS_SAMPLES):
        pids = {root, *descendants(root)}
        samples.append(_rss_mb(pids))
        per_process = {f"{_name(p)} ({p})": _rss_mb({p}) for p in sorted(pids)}
        time.sleep(1)
    return statistics.median(samples), samples, per_process


@dataclass
class Load:
    """What the load run saw: per order its 201 time and created_date (wall clock, seconds)."""

    start: float = 0.0
    accepted: dict[str, float] = field(default_factory=dict)
    created: dict[str, str] = field(default_factory=dict)
    visible: dict[str, float] = field(default_factory=dict)
    late_sends: list[float] = field(default_factory=list)  # send delay behind schedule (s)
    errors: int = 0
    sent: int = 0
    last_accept: float = 0.0


async def _send(api: str, customer: str, rate: float, seconds: float, load: Load) -> None:
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=api, timeout=30, limits=limits) as client:
        gate = asyncio.Semaphore(IN_FLIGHT)
        body = {
            "type": "CreateOrder",
            "customerId": customer,
            "items": [{"sku": "SKU-1", "quantity": 1, "unitPrice": "9.99"}],
        }

        async def one(due: float) -> None:
            async with gate:
                load.late_sends.append(time.time() - due)
                try:
                    resp = await client.post("/api/v1/commands", json=body)
                except httpx.HTTPError:
                    load.errors += 1
                    return
                now = time.time()
                if resp.status_code != 201:
                    load.errors += 1
                    return
                answer = resp.json()
                order_id = answer["aggregateId"]
                load.created[order_id] = answer["state"]["createdAt"]
                load.accepted[order_id] = now
                load.last_accept = max(load.last_accept, now)

        tasks = []
        load.start = time.time()
        end = load.start + seconds
        for i in range(int(rate * seconds)):
            due = load.start + i / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif time.time() > end:
                break  # the window is over: what was not sent in it counts as not achieved
            tasks.append(asyncio.create_task(one(due)))
        load.sent = len(tasks)
        await asyncio.gather(*tasks)


def _poll(api: str, customer: str, load: Load, stop: threading.Event) -> None:
    """Mark orders visible from the list endpoint, starting at the oldest order not yet seen."""
    with httpx.Client(base_url=api, timeout=30) as client:
        while not stop.is_set():
            pending = [o for o in list(load.accepted) if o not in load.visible]
            if pending:
                oldest = min(load.created[o] for o in pending)
                params: dict[str, Any] = {
                    "customer_id": customer,
                    "created_from": oldest,
                    "limit": PAGE,
                }
                while True:
                    resp = client.get("/api/v1/orders", params=params)
                    now = time.time()
                    if resp.status_code != 200:
                        break
                    page = resp.json()
                    for item in page["items"]:
                        load.visible.setdefault(item["order_id"], now)
                    if not page["next_cursor"]:
                        break
                    params = {"customer_id": customer, "cursor": page["next_cursor"], "limit": PAGE}
            stop.wait(POLL_SECONDS)


def measure(api: str, rate: float, seconds: float, drain_timeout: float) -> Load:
    load = Load()
    customer = httpx.post(
        f"{api}/api/v1/commands",
        json={"type": "RegisterCustomer", "name": "Bench", "email": "bench@example.com"},
        timeout=30,
    ).json()["aggregateId"]
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(api, customer, load, stop), daemon=True)
    poller.start()
    try:
        asyncio.run(_send(api, customer, rate, seconds, load))
        deadline = time.time() + drain_timeout
        while time.time() < deadline and len(load.visible) < len(load.accepted):
            time.sleep(0.2)
    finally:
        stop.set()
        poller.join(30)
    return load


def _ts(value: datetime | float | None) -> float | None:
    if value is None:
        return None
    return value.timestamp() if isinstance(value, datetime) else float(value)


def phases(data_dir: Path, load: Load) -> tuple[dict[str, float], int]:
    """Median seconds of each phase per order, and the number of projection runs."""
    import dagster as dg

    from cqrs_dagster.defs.names import PROJECTION_JOB

    with contextlib.closing(
        sqlite3.connect(f"file:{data_dir / 'bus.sqlite'}?mode=ro", uri=True)
    ) as db:
        enqueued = {
            key: us / 1e6
            for key, us in db.execute("SELECT partition_key, enqueued_us FROM bus_events")
            if key in load.accepted
        }
    runs = []
    with dg.DagsterInstance.from_config(str(data_dir / "dagster")) as instance:
        for record in instance.get_run_records(filters=dg.RunsFilter(job_name=PROJECTION_JOB)):
            run = record.dagster_run
            steps = instance.get_run_step_stats(run.run_id)
            raw = [s for s in steps if s.step_key == "raw_events"]
            if not raw or raw[0].start_time is None or record.start_time is None:
                continue
            ends = [s.end_time for s in steps if s.end_time is not None]
            runs.append(
                (
                    float(raw[0].start_time),
                    record.create_timestamp.timestamp(),
                    float(record.start_time),
                    max(ends) if ends else float(raw[0].start_time),
                )
            )
    runs.sort()
    starts = [r[0] for r in runs]
    # The phases of each order add up to its latency: the run that projected it is the first
    # whose raw_events step started after the event was on the bus.
    parts: dict[str, list[float]] = {
        "accepted -> on the bus (relay)": [],
        "on the bus -> run created (sensor tick, in-flight run)": [],
        "run created (or event, if later) -> raw_events step start (launch)": [],
        "raw_events step start -> last step end (steps)": [],
        "last step end -> seen by the poller": [],
    }
    for order, accepted in load.accepted.items():
        on_bus = enqueued.get(order)
        seen = load.visible.get(order)
        if on_bus is None or seen is None:
            continue
        i = bisect.bisect_left(starts, on_bus)
        if i == len(runs):
            continue
        raw_start, created, _started, end = runs[i]
        values = [
            on_bus - accepted,
            max(0.0, created - on_bus),
            raw_start - max(created, on_bus),
            end - raw_start,
            seen - end,
        ]
        for key, value in zip(parts, values, strict=True):
            parts[key].append(value)
    return {k: statistics.median(v) for k, v in parts.items() if v}, len(runs)


def follow_phases(data_dir: Path, load: Load) -> tuple[dict[str, float], int, int]:
    """Follow mode: median seconds of each phase per order, the runs and the passes that applied
    events. The pass that applied an event is the first whose raw_events checkpoint covers its
    (partition, sequence number); its materialization is logged when the pass has written every
    table."""
    import dagster as dg

    from cqrs_dagster.defs.names import FOLLOW_JOB
    from cqrs_dagster.projections.raw_ingest import partition_app_id

    with contextlib.closing(
        sqlite3.connect(f"file:{data_dir / 'bus.sqlite'}?mode=ro", uri=True)
    ) as db:
        on_bus = {
            key: (partition, seq, us / 1e6)
            for partition, seq, us, key in db.execute(
                "SELECT partition, sequence_number, enqueued_us, partition_key FROM bus_events"
            )
            if key in load.accepted
        }
    passes: list[tuple[float, dict[str, int]]] = []
    with dg.DagsterInstance.from_config(str(data_dir / "dagster")) as instance:
        runs = {r.run_id for r in instance.get_runs(filters=dg.RunsFilter(job_name=FOLLOW_JOB))}
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetKey("raw_events"), limit=1000, cursor=cursor, ascending=True
            )
            for record in page.records:
                mat = record.asset_materialization
                if record.run_id not in runs or mat is None or "checkpoint" not in mat.metadata:
                    continue
                applied = mat.metadata.get("events_read")
                if applied is not None and not applied.value:
                    continue
                checkpoint = mat.metadata["checkpoint"].value
                if isinstance(checkpoint, dict):
                    passes.append((record.timestamp, {k: int(v) for k, v in checkpoint.items()}))
            if not page.has_more:
                break
            cursor = page.cursor
    passes.sort(key=lambda p: p[0])
    parts: dict[str, list[float]] = {
        "accepted -> on the bus (relay)": [],
        "on the bus -> end of the pass that applied it (wait for a pass / a run, pass)": [],
        # negative when the poller saw the rows before the pass had logged its materializations
        "end of the pass (materializations logged) -> seen by the poller": [],
    }
    for order, accepted in load.accepted.items():
        where = on_bus.get(order)
        seen = load.visible.get(order)
        if where is None or seen is None:
            continue
        partition, seq, enqueued = where
        app = partition_app_id(partition)
        end = next((t for t, cp in passes if cp.get(app, -1) >= seq), None)
        if end is None:
            continue
        for key, value in zip(
            parts, [enqueued - accepted, end - enqueued, seen - end], strict=True
        ):
            parts[key].append(value)
    return {k: statistics.median(v) for k, v in parts.items() if v}, len(runs), len(passes)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Mode:
    """One platform start and its load run: ``follow`` None: ``cqrs up`` with no flags (the
    defaults: follow mode); 0: per-batch runs (``--follow 0``); else ``--follow SECONDS``."""

    label: str
    follow: float | None
    load: Load = field(default_factory=Load)
    breakdown: dict[str, float] = field(default_factory=dict)
    runs: int = 0
    passes: int = 0
    rss: float = float("nan")
    rss_samples: list[float] = field(default_factory=list)
    per_process: dict[str, float] = field(default_factory=dict)

    @property
    def per_batch(self) -> bool:
        return self.follow == 0

    @property
    def latency(self) -> dict[str, float]:
        load = self.load
        return {o: load.visible[o] - t for o, t in load.accepted.items() if o in load.visible}

    @property
    def achieved(self) -> float:
        load = self.load
        if not load.accepted:
            return 0.0
        return len(load.accepted) / (load.last_accept - load.start)


def run_mode(mode: Mode, root: Path, rate: float, seconds: float, *, idle_memory: bool) -> None:
    """Start ``cqrs up`` (``--follow`` only when the mode sets it), wait for its first projection run,
    optionally sample idle memory, run the load, and find where the time went."""
    from cqrs_dagster.defs.names import FOLLOW_JOB, PROJECTION_JOB

    tmp = root / mode.label
    tmp.mkdir(parents=True)
    data_dir = tmp / "data"
    api_port, ui_port = free_port(), free_port()
    follow = [] if mode.follow is None else ["--follow", str(mode.follow)]
    proc = start_group(
        [
            sys.executable,
            "-m",
            "cqrs_dagster.cli",
            "up",
            "--data-dir",
            str(data_dir),
            "--api-port",
            str(api_port),
            "--ui-port",
            str(ui_port),
            *follow,
        ],
        tmp / "cqrs-up.log",
    )
    try:
        api = f"http://127.0.0.1:{api_port}"
        wait_ready(f"{api}/api/v1/healthz", proc, 120)
        wait_ready(f"http://127.0.0.1:{ui_port}/server_info", proc, 240)
        wait_first_run(data_dir / "dagster", PROJECTION_JOB if mode.per_batch else FOLLOW_JOB)
        if idle_memory:
            time.sleep(IDLE_SECONDS)
            mode.rss, mode.rss_samples, mode.per_process = idle_rss(proc.pid)
        mode.load = measure(api, rate, seconds, drain_timeout=60)
        if mode.per_batch:
            mode.breakdown, mode.runs = phases(data_dir, mode.load)
        else:
            mode.breakdown, mode.runs, mode.passes = follow_phases(data_dir, mode.load)
    finally:
        stop_group(proc, timeout=30)


def _notes(mode: Mode, rate: float, seconds: float) -> list[str]:
    load = mode.load
    samples = sorted(mode.latency.values())
    runs = f"{mode.runs} projection runs" + (
        f", {mode.passes} passes that applied events" if not mode.per_batch else ""
    )
    short = (
        f" (BELOW the offered {rate:.0f}/s: its latencies are at the achieved rate)"
        if mode.achieved < 0.975 * rate
        else ""
    )
    return [
        f"{mode.label}: CreateOrder at {rate:.0f}/s for {seconds:.0f} s on a fixed schedule "
        f"(asyncio + httpx, <= {IN_FLIGHT} in flight); achieved {mode.achieved:,.1f} commands/s{short} "
        f"({load.sent} of {int(rate * seconds)} sent in the window, {len(load.accepted)} accepted, "
        f"{load.errors} errors; sends behind schedule p95 {_pct(load.late_sends, 0.95):.3f} s)",
        f"{mode.label}: {len(samples)}/{len(load.accepted)} orders seen through GET /api/v1/orders "
        f"(polled every {POLL_SECONDS} s from the oldest unseen); p50 {_pct(samples, 0.5):.2f} s, "
        f"p95 {_pct(samples, 0.95):.2f} s, max {max(samples, default=float('nan')):.2f} s; {runs}",
        f"{mode.label}: median seconds per phase: "
        + "; ".join(f"{k} {v:.2f}" for k, v in mode.breakdown.items()),
    ]


def run(repetitions: int) -> Report:
    del repetitions  # one platform start per mode, the load run once each: see the notes
    rate = float(sized(100, 200))
    seconds = float(sized(15, 180))  # quick: keeps `make bench` under 5 minutes
    modes = [Mode("defaults (follow mode)", None), Mode("per-batch (--follow 0)", 0.0)]
    keep = os.environ.get("BENCH_E2E_KEEP")  # a folder: keep the platforms' data for a look
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-e2e-", dir=keep) as tmp:
        root = Path(tempfile.mkdtemp(prefix="e2e-", dir=keep) if keep else tmp)
        for mode in modes:
            run_mode(mode, root, rate, seconds, idle_memory=mode.follow is None)
    batch = modes[0]  # the defaults: idle memory is measured on them
    report = Report(
        "end to end: command accepted (201) -> visible in the query API (cqrs up with no flag or "
        "setting: follow mode; then per-batch runs: cqrs up --follow 0, for comparison)",
        notes=[
            f"{'BENCH_FULL' if full_mode() else 'quick'}: two platform starts, one per mode, the "
            "load run once in each (repetitions ignored); every setting at its default",
            *(note for mode in modes for note in _notes(mode, rate, seconds)),
            f"idle RSS (cqrs up, defaults): {len(batch.per_process)} processes, samples "
            + ", ".join(f"{s:,.0f}" for s in batch.rss_samples)
            + f" MB, {IDLE_SECONDS} s after the first (heartbeat) projection run ended; "
            + ", ".join(f"{k} {v:,.0f}" for k, v in batch.per_process.items())
            + " MB",
        ],
    )
    for mode in modes:
        samples = sorted(mode.latency.values())
        label = mode.label
        report.measurements += [
            Measurement(
                f"{label}: accepted -> visible p50",
                "s",
                [_pct(samples, 0.5)],
                target=Target("<=", 2.5),
                key="e",
            ),
            Measurement(
                f"{label}: accepted -> visible p95",
                "s",
                [_pct(samples, 0.95)],
                target=Target("<=", 5),
                key="e",
            ),
            Measurement(
                f"{label}: accepted -> visible max",
                "s",
                [max(samples, default=float("nan"))],
                target=Target("<=", 10),
                key="e",
            ),
            # The latency targets hold at the offered rate only if the platform sustained it.
            Measurement(
                f"{label}: achieved command rate",
                "commands/s",
                [mode.achieved],
                target=Target(">=", 0.975 * rate),
                key="e",
            ),
        ]
        report.series.append(
            Series(
                "lag" if not mode.per_batch else "lag_per_batch",
                f"{label}: command accepted -> visible in the query API, per order",
                "seconds since the load started",
                "latency (s)",
                lines={
                    "CreateOrder": [
                        (mode.load.accepted[o] - mode.load.start, lat)
                        for o, lat in sorted(mode.latency.items())
                    ]
                },
                style="scatter",
                hlines={"p50 target 2.5 s": 2.5, "p95 target 5 s": 5.0},
            )
        )
    report.measurements.append(
        Measurement(
            "cqrs up idle RSS (all processes)", "MB", [batch.rss], Target("<=", 1200), key="f"
        )
    )
    return report
