"""Write side: commands/s through the CommandHandler (SQLite FULL vs NORMAL) and through HTTP.

Workload: per customer, three commands (RegisterCustomer, CreateOrder with two lines,
UpdateOrderStatus -> Paid), so a third of the commands create, two thirds read-modify-write.
Every command is one atomic write of state + outbox + command id.

- handler: validated commands straight into ``CommandHandler.handle`` (parsing excluded).
- bare commit: one-row SQLite commits on the same disk, the fsync floor the handler sits on.
- HTTP: ``cqrs api`` as a real uvicorn process (store at the default FULL, open mode, rate limit
  off), httpx clients with keep-alive: one client and concurrent clients with the relay thread on
  (it competes for SQLite's write lock and the CPU), and one client with ``--no-relay``.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx

from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore
from cqrs_dagster.domain.commands import parse_command
from cqrs_dagster_tests.fixtures.procs import (
    ROOT,
    free_port,
    start_group,
    stop_group,
    wait_for_port,
    wait_until,
)

from . import Measurement, Report

HANDLER_CUSTOMERS = 1_000  # x3 commands per repetition
HTTP_CUSTOMERS = 300
CLIENTS = 4


def workload(prefix: str, customers: int) -> Iterator[dict[str, Any]]:
    for i in range(customers):
        cid, oid = f"{prefix}-c{i}", f"{prefix}-o{i}"
        yield {"type": "RegisterCustomer", "customerId": cid, "name": f"N{i}", "email": "a@b.co"}
        yield {
            "type": "CreateOrder",
            "orderId": oid,
            "customerId": cid,
            "items": [
                {"sku": "tea", "quantity": 2, "unitPrice": "4.50"},
                {"sku": "cup", "quantity": 1, "unitPrice": "12.10"},
            ],
        }
        yield {"type": "UpdateOrderStatus", "orderId": oid, "status": "Paid"}


def handler_rate(synchronous: Literal["FULL", "NORMAL"], folder: Path) -> float:
    commands = [parse_command(c) for c in workload("h", HANDLER_CUSTOMERS)]
    store = SqliteWriteStore(folder / f"write-{synchronous}.sqlite", synchronous=synchronous)
    try:
        handler = CommandHandler(store)
        start = time.perf_counter()
        for command in commands:
            handler.handle(command)
        return len(commands) / (time.perf_counter() - start)
    finally:
        store.close()


def bare_commit_rate(synchronous: Literal["FULL", "NORMAL"], folder: Path) -> float:
    """Baseline: one-row SQLite WAL commits/s on the same disk (the fsync floor)."""
    conn = sqlite3.connect(folder / f"bare-{synchronous}.sqlite", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
        n = HANDLER_CUSTOMERS * 3
        start = time.perf_counter()
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (str(i), "x" * 400))
            conn.execute("COMMIT")
        return n / (time.perf_counter() - start)
    finally:
        conn.close()


def _post_all(base_url: str, commands: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for command in commands:
            response = http.post("/api/v1/commands", json=command)
            if response.status_code != 201:
                raise RuntimeError(f"{response.status_code}: {response.text}")


@contextmanager
def serve(folder: Path, name: str, *, relay: bool) -> Iterator[str]:
    """A fresh ``cqrs api`` process on its own data dir; yields its base URL."""
    port = free_port()
    env = {
        "CQRS_ENV": "local",
        "CQRS_API_KEYS": "",
        "CQRS_RATE_LIMIT_PER_SECOND": "0",
        "CQRS_SQLITE_SYNCHRONOUS": "FULL",
    }
    args = [str(ROOT / ".venv/bin/cqrs"), "api", "--data-dir", str(folder / name)]
    args += ["--port", str(port), "--log-level", "warning", *([] if relay else ["--no-relay"])]
    proc = start_group(args, folder / f"{name}.log", env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, timeout=60, proc=proc)
        with httpx.Client(base_url=base_url) as http:
            wait_until(lambda: http.get("/api/v1/healthz").status_code == 200, timeout=30)
        yield base_url
    finally:
        stop_group(proc)


def sequential_rate(base_url: str, prefix: str) -> float:
    commands = list(workload(prefix, HTTP_CUSTOMERS))
    start = time.perf_counter()
    _post_all(base_url, commands)
    return len(commands) / (time.perf_counter() - start)


def concurrent_rate(base_url: str, prefix: str) -> float:
    batches = [list(workload(f"{prefix}-{n}", HTTP_CUSTOMERS // CLIENTS)) for n in range(CLIENTS)]
    errors: list[BaseException] = []

    def client(batch: list[dict[str, Any]]) -> None:
        try:
            _post_all(base_url, batch)
        except BaseException as exc:  # re-raised after the join
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(b,)) for b in batches]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(len(b) for b in batches) / elapsed


def run(repetitions: int) -> Report:
    n_handler, n_http = HANDLER_CUSTOMERS * 3, HTTP_CUSTOMERS * 3
    report = Report(
        "write side: commands/s (RegisterCustomer, CreateOrder, UpdateOrderStatus)",
        notes=[
            f"handler: {n_handler} commands per repetition, parsing excluded; bare commit: "
            f"{n_handler} one-row SQLite commits (the disk's fsync floor)",
            f"HTTP: cqrs api (uvicorn, store FULL), {n_http} commands per repetition, "
            f"one keep-alive client, or {CLIENTS} concurrent ones",
        ],
    )
    names = {
        "bare_full": "bare SQLite commit, FULL",
        "bare_normal": "bare SQLite commit, NORMAL",
        "full": "handler, SQLite FULL",
        "normal": "handler, SQLite NORMAL",
        "seq": "HTTP, 1 client, relay on",
        "conc": f"HTTP, {CLIENTS} clients, relay on",
        "seq_norelay": "HTTP, 1 client, --no-relay",
    }
    m = {key: Measurement(name, "commands/s") for key, name in names.items()}
    m["bare_full"].unit = m["bare_normal"].unit = "commits/s"
    report.measurements += list(m.values())
    report.ratios = [
        (names["full"], names["bare_full"]),
        (names["normal"], names["full"]),
        (names["seq"], names["full"]),
        (names["conc"], names["seq"]),
        (names["seq"], names["seq_norelay"]),
    ]
    with tempfile.TemporaryDirectory(prefix="cqrs-bench-") as tmp:
        for r in range(repetitions):
            folder = Path(tmp) / f"rep{r}"
            folder.mkdir()
            m["bare_full"].values.append(bare_commit_rate("FULL", folder))
            m["bare_normal"].values.append(bare_commit_rate("NORMAL", folder))
            m["full"].values.append(handler_rate("FULL", folder))
            m["normal"].values.append(handler_rate("NORMAL", folder))
            with serve(folder, "relay", relay=True) as url:
                m["seq"].values.append(sequential_rate(url, "s"))
                m["conc"].values.append(concurrent_rate(url, "c"))
            with serve(folder, "norelay", relay=False) as url:
                m["seq_norelay"].values.append(sequential_rate(url, "s"))
    return report
