"""Read models built by the real pipeline: commands -> SQLite write store -> relay -> local bus ->
projection steps (raw, silver, gold) -> Delta tables in a temporary folder."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.domain.commands import parse_command
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.query.watch import ConsistencyWatcher
from cqrs_dagster.settings import Settings
from cqrs_dagster.web.app import build_app
from cqrs_dagster.wiring import make_event_bus, make_table_store, make_write_store

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
STATUSES = ("Paid", "Shipped", "Delivered")


@dataclass
class Clock:
    """A settable clock for the command handler (event timestamps, hence created_date)."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Platform:
    """The write side and the projection steps on one data dir; ``project()`` catches up."""

    settings: Settings
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.store = make_write_store(self.settings)
        self.bus = make_event_bus(self.settings)
        self.handler = CommandHandler(self.store, clock=self.clock)
        self.relay = OutboxRelay(self.store, self.bus)
        self.tables = make_table_store(self.settings)
        self.runs = 0

    def send(self, command: dict[str, Any]) -> dict[str, Any]:
        return self.handler.handle(parse_command(command)).body

    def publish(self) -> None:
        self.relay.drain()

    def project(self) -> None:
        self.relay.drain()
        self.runs += 1
        catch_up(StepContext(self.tables, f"test-{self.runs}"), self.bus, max_events=1_000_000)

    def close(self) -> None:
        self.bus.close()
        self.store.close()


def seed(p: Platform) -> dict[str, Any]:
    """6 customers (one renamed), 60 orders over 4 UTC days, in groups of 3 with one created_date
    (so keyset pagination must break ties on order_id), about half moved on in their lifecycle."""
    customers = [f"c{n}" for n in range(6)]
    names = ["Ada", "Grace", "Robert'); DROP TABLE orders;--", "Émile", "Zoë", "Linus"]
    for cid, name in zip(customers, names, strict=True):
        p.send(
            {"type": "RegisterCustomer", "customerId": cid, "name": name, "email": f"{cid}@x.io"}
        )
    orders = []
    for n in range(60):
        p.clock.now = START + timedelta(minutes=240 * (n // 3))
        oid = f"o{(n * 37) % 100:03d}"  # ids not in creation order
        items = [{"sku": "tea", "quantity": 1 + n % 4, "unitPrice": f"{3 + n % 7}.{n % 100:02d}"}]
        p.send(
            {"type": "CreateOrder", "orderId": oid, "customerId": customers[n % 6], "items": items}
        )
        orders.append(oid)
        for status in STATUSES[: n % 4]:
            p.clock.now += timedelta(minutes=5)
            p.send({"type": "UpdateOrderStatus", "orderId": oid, "status": status})
    p.clock.now = START + timedelta(days=5)
    p.send({"type": "UpdateCustomer", "customerId": "c1", "name": "Grace Hopper"})
    p.project()
    return {"customers": customers, "orders": orders}


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    """An empty platform on a fresh data dir."""
    p = Platform(settings)
    yield p
    p.close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A seeded, fully projected platform shared by a module's read-only tests."""
    root: Path = tmp_path_factory.mktemp("seeded")
    p = Platform(Settings(env="local", data_dir=root / "data"))
    seed(p)
    yield p
    p.close()


@dataclass
class Server:
    app: FastAPI
    url: str
    instance: uvicorn.Server
    thread: threading.Thread

    @property
    def watcher(self) -> ConsistencyWatcher:
        found: ConsistencyWatcher = self.app.state.consistency_watcher
        return found

    def stop(self) -> None:
        self.instance.should_exit = True
        self.thread.join(20)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def server(platform: Platform) -> Iterator[Server]:
    """``build_app`` (relay off: the test publishes and projects) under uvicorn on 127.0.0.1."""
    app = build_app(platform.settings, run_relay=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(instance.serve()), name="test-uvicorn")
    thread.start()
    running = Server(app, f"http://127.0.0.1:{port}", instance, thread)
    try:
        deadline = time.monotonic() + 20
        while not instance.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield running
    finally:
        running.stop()
