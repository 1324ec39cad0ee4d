"""End-to-end latency: command accepted (HTTP 201) -> visible in the query API, under `cqrs up`.

Starts the whole platform (API + relay + dagster dev with the event sensor at its 5 s floor),
sends CreateOrder commands at a steady pace from one thread while another polls
GET /api/v1/orders/{id} for each, and reports the median and p95 of the delay in milliseconds.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from cqrs_dagster_tests.fixtures.platform import wait_ready
from cqrs_dagster_tests.fixtures.procs import free_port, start_group, stop_group

from . import Measurement, Report

COMMANDS = 60
PACE_SECONDS = 0.5


def measure(api: str, count: int) -> list[float]:
    """Latencies (ms) of ``count`` orders, from their 201 to their first 200 on the query API."""
    client = httpx.Client(base_url=api, timeout=10)
    customer = client.post(
        "/api/v1/commands",
        json={"type": "RegisterCustomer", "name": "Bench", "email": "bench@example.com"},
    ).json()["aggregateId"]
    accepted: dict[str, float] = {}
    visible: dict[str, float] = {}
    lock = threading.Lock()
    done = threading.Event()

    def poll() -> None:
        poller = httpx.Client(base_url=api, timeout=10)
        while not done.is_set() or len(visible) < len(accepted):
            with lock:
                pending = [o for o in accepted if o not in visible]
            for order_id in pending:
                if poller.get(f"/api/v1/orders/{order_id}").status_code == 200:
                    visible[order_id] = time.perf_counter()
            time.sleep(0.05)
            if done.is_set() and time.perf_counter() - max(accepted.values(), default=0) > 120:
                break

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    for _ in range(count):
        body = {
            "type": "CreateOrder",
            "customerId": customer,
            "items": [{"sku": "SKU-1", "quantity": 1, "unitPrice": "9.99"}],
        }
        resp = client.post("/api/v1/commands", json=body)
        now = time.perf_counter()
        resp.raise_for_status()
        with lock:
            accepted[resp.json()["aggregateId"]] = now
        time.sleep(PACE_SECONDS)
    done.set()
    watcher.join(180)
    return [(visible[o] - t) * 1000 for o, t in accepted.items() if o in visible]


def run(repetitions: int) -> Report:
    del repetitions  # one run of COMMANDS samples; the platform start-up dominates otherwise
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-e2e-") as tmp:
        api_port, ui_port = free_port(), free_port()
        proc = start_group(
            [
                sys.executable,
                "-m",
                "cqrs_dagster.cli",
                "up",
                "--data-dir",
                str(Path(tmp) / "data"),
                "--api-port",
                str(api_port),
                "--ui-port",
                str(ui_port),
            ],
            Path(tmp) / "cqrs-up.log",
        )
        try:
            api = f"http://127.0.0.1:{api_port}"
            wait_ready(f"{api}/api/v1/healthz", proc, 120)
            wait_ready(f"http://127.0.0.1:{ui_port}/server_info", proc, 240)
            time.sleep(10)  # let the daemon start the sensor loop
            samples = measure(api, COMMANDS)
        finally:
            stop_group(proc, timeout=30)
    samples.sort()
    p95 = samples[int(0.95 * (len(samples) - 1))] if samples else float("nan")
    report = Report(
        "end to end: command accepted -> visible in the query API (cqrs up, local defaults)",
        notes=[
            f"{len(samples)}/{COMMANDS} CreateOrder commands, one every {PACE_SECONDS} s; "
            f"p95 {p95:,.0f} ms, max {max(samples, default=float('nan')):,.0f} ms; "
            f"mean {statistics.fmean(samples) if samples else float('nan'):,.0f} ms",
        ],
    )
    report.measurements.append(Measurement("accepted -> visible", "ms", samples))
    return report
