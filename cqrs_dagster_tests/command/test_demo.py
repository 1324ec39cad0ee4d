"""`cqrs demo` against a real `cqrs api` process: a realistic mix of accepted commands (customers,
orders, status changes) and deliberately bad ones, whose rejections write nothing."""

from __future__ import annotations

import random
import re
import subprocess
from collections import Counter

from cqrs_dagster.cli.demo import DemoTraffic
from cqrs_dagster_tests.fixtures.api import CQRS, ApiProcess, bus_events
from cqrs_dagster_tests.fixtures.procs import wait_until


def test_demo_traffic_mixes_valid_and_invalid_commands(api_process: ApiProcess) -> None:
    done = subprocess.run(
        [
            CQRS,
            "demo",
            "--api",
            api_process.base_url,
            "--count",
            "80",
            "--rate",
            "200",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if re.match(r"^\d{3} ", line)]
    assert len(lines) == 80
    statuses = Counter(int(line[:3]) for line in lines)
    kinds = Counter(line.split()[1] for line in lines if line.startswith("201"))
    assert statuses[201] >= 50, statuses  # mostly accepted
    assert statuses[422] + statuses[409] >= 2, statuses  # and some deliberately bad ones
    assert set(statuses) <= {201, 409, 422}, statuses  # never a 5xx
    assert {"RegisterCustomer", "CreateOrder", "UpdateOrderStatus"} <= set(kinds)
    summary = done.stdout.strip().splitlines()[-1]
    assert summary == f"cqrs demo: sent 80, accepted {statuses[201]}"
    # Exactly one event per accepted command reaches the bus; rejected ones wrote nothing.
    assert wait_until(lambda: len(bus_events(api_process.data_dir)) == statuses[201], 30)


def test_demo_traffic_only_moves_orders_along_allowed_transitions() -> None:
    traffic = DemoTraffic(random.Random(3))
    traffic.customers = ["c1"]
    traffic.orders = {"o1": "Created", "o2": "Paid", "o3": "Shipped", "o4": "Delivered"}
    allowed = {("Created", "Paid"), ("Paid", "Shipped"), ("Shipped", "Delivered")}
    for _ in range(300):
        command = traffic.next_command()
        if command["type"] == "UpdateOrderStatus" and traffic.orders[command["orderId"]] not in (
            "Delivered",
            "Cancelled",
        ):
            assert (traffic.orders[command["orderId"]], command["status"]) in allowed
        if command["type"] == "CancelOrder":
            assert traffic.orders[command["orderId"]] in ("Created", "Paid")
