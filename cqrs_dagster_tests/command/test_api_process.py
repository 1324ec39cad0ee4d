"""``cqrs api`` as a real process on a free 127.0.0.1 port, driven over real HTTP with httpx.

Covers: healthz reports store, bus and relay; commands POSTed over HTTP are acknowledged and the
API's relay (a supervised child process by default, a thread with ``--relay-thread``) puts their
events on the local bus (read back from the same data dir), in version order per aggregate
(first delivery); a killed relay child is started again, and one whose API is killed stops by
itself; SIGTERM stops the server gracefully (lifespan done, relay stopped) with no process of
its group left; SIGKILL under concurrent load loses no acknowledged command (group commit
answers only after its COMMIT).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore
from cqrs_dagster.settings import Settings
from cqrs_dagster_tests.fixtures.api import CQRS, ApiProcess, bus_events
from cqrs_dagster_tests.fixtures.procs import (
    free_port,
    start_group,
    stop_group,
    wait_for_port,
    wait_until,
)


def test_commands_over_http_reach_the_bus_and_sigterm_stops_cleanly(
    api_process: ApiProcess,
) -> None:
    with httpx.Client(base_url=api_process.base_url, timeout=30) as http:
        health = http.get("/api/v1/healthz")
        assert health.status_code == 200
        assert health.json()["checks"] == {"store": "ok", "bus": "ok", "relay": "ok"}

        commands = [
            {"type": "RegisterCustomer", "customerId": "c1", "name": "Ada", "email": "a@b.co"},
            {
                "type": "CreateOrder",
                "orderId": "o1",
                "customerId": "c1",
                "items": [{"sku": "tea", "quantity": 3, "unitPrice": "0.10"}],
            },
            {"type": "UpdateOrderStatus", "orderId": "o1", "status": "Paid"},
        ]
        responses = [http.post("/api/v1/commands", json=c) for c in commands]
        assert [r.status_code for r in responses] == [201, 201, 201]
        assert responses[1].json()["state"]["totalAmount"] == "0.30"
        event_ids = {i for r in responses for i in r.json()["eventIds"]}

    def relayed() -> bool:
        return event_ids <= {e.event_id for e in bus_events(api_process.data_dir)}

    assert wait_until(relayed, timeout=30), api_process.log.read_text()
    # Delivery is at-least-once: the first delivery of each event follows version order.
    first_seen: dict[str, int] = {}
    for event in bus_events(api_process.data_dir):
        if event.aggregate_id == "o1":
            first_seen.setdefault(event.event_id, event.version)
    assert list(first_seen.values()) == [1, 2]

    _sigterm_stops_cleanly(api_process)


def _sigterm_stops_cleanly(api_process: ApiProcess) -> None:
    proc = api_process.proc
    os.killpg(proc.pid, signal.SIGTERM)
    # granian exits 0 once its worker stopped; uvicorn shuts down gracefully, then re-raises
    # the signal it caught: exit by SIGTERM.
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing left in the server's process group (the worker too)
    log = api_process.log.read_text()
    assert re.search(r"outbox relay (process \d+ )?stopped", log), log
    assert "command side closed" in log, log


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_each_server_answers_commands_and_stops_cleanly(tmp_path: Path, server: str) -> None:
    """``cqrs api --server granian|uvicorn``: same answers (201, replay 200, 415, 422 problem),
    the relay runs, SIGTERM runs the lifespan's shutdown."""
    port = free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "api.log"
    env = {"CQRS_ENV": "local", "CQRS_API_KEYS": "", "CQRS_RELAY_INTERVAL_SECONDS": "0.05"}
    args = [CQRS, "api", "--data-dir", str(data_dir), "--port", str(port), "--server", server]
    proc = start_group(args, log, env)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        body = {"type": "RegisterCustomer", "commandId": "k1", "name": "Ada", "email": "a@b.co"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            first = http.post("/api/v1/commands", json=body)
            again = http.post("/api/v1/commands", json=body)
            wrong_type = http.post(
                "/api/v1/commands", content=b"x", headers={"content-type": "text/plain"}
            )
            invalid = http.post("/api/v1/commands", json={"type": "RegisterCustomer"})
        assert first.status_code == 201 and again.status_code == 200, first.text
        assert again.content == first.content  # the original response, byte for byte
        assert first.headers["content-type"] == "application/json"
        assert first.headers["server"] == server  # the server asked for serves
        customer_id = first.json()["aggregateId"]
        assert len(customer_id) == 36 and customer_id[14] == "7"  # a server-made UUIDv7
        assert wrong_type.status_code == 415
        assert invalid.status_code == 422
        assert invalid.headers["content-type"] == "application/problem+json"
        event_ids = set(first.json()["eventIds"])
        assert wait_until(
            lambda: event_ids <= {e.event_id for e in bus_events(data_dir)}, timeout=30
        ), log.read_text()
        if server == "uvicorn":  # asyncio's loop: its socket writes release the GIL (cli/api.py)
            assert "(event loop: asyncio.unix_events." in log.read_text(), log.read_text()
        _sigterm_stops_cleanly(ApiProcess(proc, f"http://127.0.0.1:{port}", data_dir, log))
    finally:
        stop_group(proc)


def test_sigkill_under_concurrent_load_loses_no_acknowledged_command(
    api_process: ApiProcess,
) -> None:
    """Group commit acknowledges only after the COMMIT: kill -9 the server while 16 clients
    are sending, then every command it answered 201 is in the store with its events."""
    acked: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=api_process.base_url, timeout=30) as http:
            for i in range(10_000):
                body = {
                    "type": "RegisterCustomer",
                    "commandId": f"k{n}-{i}",
                    "customerId": f"c{n}-{i}",
                    "name": "Ada",
                    "email": "a@b.co",
                }
                try:
                    response = http.post("/api/v1/commands", json=body)
                except httpx.HTTPError:
                    return  # the server is gone
                assert response.status_code == 201, response.text
                with lock:
                    acked.append(body["commandId"])
                    if len(acked) >= 400:
                        enough.set()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    assert enough.wait(120), api_process.log.read_text()
    os.killpg(api_process.proc.pid, signal.SIGKILL)  # no shutdown, no final commit
    for t in threads:
        t.join(60)
    api_process.proc.wait(timeout=30)
    store = SqliteWriteStore(Settings(env="local", data_dir=api_process.data_dir).write_db_path)
    try:
        missing = [c for c in acked if store.command_result(c) is None]
        assert missing == [], f"{len(missing)} of {len(acked)} acknowledged commands were lost"
        for command_id in acked[:50]:
            result = store.command_result(command_id)
            assert result is not None
            stored = store.load("Customer", result["aggregateId"])
            assert stored is not None and stored.version == 1
    finally:
        store.close()


def relay_children(api_pid: int) -> list[int]:
    """Pids of the ``cqrs relay`` processes whose parent is ``api_pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == api_pid and b"relay" in cmdline and b"--parent-pid" in cmdline:
            found.append(int(entry.name))
    return found


def _relayed(api_process: ApiProcess, http: httpx.Client, customer_id: str) -> bool:
    body = {"type": "RegisterCustomer", "customerId": customer_id, "name": "A", "email": "a@b.co"}
    response = http.post("/api/v1/commands", json=body)
    assert response.status_code == 201, response.text
    event_ids = set(response.json()["eventIds"])
    return wait_until(
        lambda: event_ids <= {e.event_id for e in bus_events(api_process.data_dir)}, timeout=30
    )


def test_the_relay_is_a_supervised_child_restarted_when_killed_and_gone_with_the_api(
    api_process: ApiProcess,
) -> None:
    api_pid = api_process.proc.pid
    assert wait_until(lambda: len(relay_children(api_pid)) == 1, timeout=30)
    [first] = relay_children(api_pid)
    with httpx.Client(base_url=api_process.base_url, timeout=30) as http:
        assert _relayed(api_process, http, "c1"), api_process.log.read_text()
        os.kill(first, signal.SIGKILL)  # a crashed relay: the API starts another
        assert wait_until(lambda: relay_children(api_pid) not in ([], [first]), timeout=30)
        [second] = relay_children(api_pid)
        assert second != first
        assert http.get("/api/v1/healthz").json()["checks"]["relay"] == "ok"
        assert _relayed(api_process, http, "c2"), api_process.log.read_text()
    assert f"outbox relay process {first} exited with -9" in api_process.log.read_text()
    os.kill(api_pid, signal.SIGKILL)  # the API alone, not its group: the relay must notice
    api_process.proc.wait(timeout=30)
    started = time.monotonic()
    while time.monotonic() - started < 30:
        try:
            os.kill(second, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"relay {second} outlived its API by 30 s")
    assert "parent process" in api_process.log.read_text()


def test_relay_thread_runs_no_child_process(tmp_path: Path) -> None:
    port = free_port()
    data_dir, log = tmp_path / "data", tmp_path / "api.log"
    env = {"CQRS_ENV": "local", "CQRS_API_KEYS": "", "CQRS_RELAY_INTERVAL_SECONDS": "0.05"}
    args = [CQRS, "api", "--data-dir", str(data_dir), "--port", str(port), "--relay-thread"]
    proc = start_group(args, log, env)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        api = ApiProcess(proc, f"http://127.0.0.1:{port}", data_dir, log)
        with httpx.Client(base_url=api.base_url, timeout=30) as http:
            assert http.get("/api/v1/healthz").json()["checks"]["relay"] == "ok"
            assert _relayed(api, http, "c1"), log.read_text()
        assert relay_children(proc.pid) == []
        _sigterm_stops_cleanly(api)
        assert "outbox relay stopped" in log.read_text()
    finally:
        stop_group(proc)
