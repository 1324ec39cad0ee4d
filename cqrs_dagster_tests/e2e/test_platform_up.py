"""`make run` (= `cqrs up`) end to end over real processes: commands over HTTP, the sensor's run lands them in
the read models, the query API and `cqrs sql` return them, the lag check passes, and stopping
leaves no process behind."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx
import pytest

from cqrs_dagster_tests.fixtures.platform import RunningPlatform, cqrs_sql

pytestmark = pytest.mark.e2e


def post(platform: RunningPlatform, command: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(f"{platform.api}/api/v1/commands", json=command, timeout=10)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def wait_for(url: str, timeout: float, predicate: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = httpx.get(url, timeout=5)
        if last.status_code == 200 and (predicate is None or predicate(last.json())):
            body: dict[str, Any] = last.json()
            return body
        time.sleep(0.5)
    raise AssertionError(f"{url} not as expected after {timeout}s: {last and last.text}")


def test_commands_flow_to_the_query_api_and_sql(platform_up: RunningPlatform) -> None:
    customer = post(
        platform_up,
        {"type": "RegisterCustomer", "name": "Grace Hopper", "email": "grace@example.com"},
    )
    order = post(
        platform_up,
        {
            "type": "CreateOrder",
            "customerId": customer["aggregateId"],
            "items": [{"sku": "SKU-1", "quantity": 3, "unitPrice": "0.10"}],
        },
    )
    order_id = order["aggregateId"]
    post(platform_up, {"type": "UpdateOrderStatus", "orderId": order_id, "status": "Paid"})

    row = wait_for(
        f"{platform_up.api}/api/v1/orders/{order_id}",
        timeout=180,
        predicate=lambda b: b.get("status") == "Paid",
    )
    assert row["customer_name"] == "Grace Hopper"
    assert row["total_amount"] == "0.30" and row["item_count"] == 3

    rows = cqrs_sql(
        platform_up.data_dir,
        f"SELECT order_id, status, total_amount FROM order_summary WHERE order_id = '{order_id}'",
    )
    assert rows == [{"order_id": order_id, "status": "Paid", "total_amount": "0.30"}]

    status = wait_for(
        f"{platform_up.api}/api/v1/projections",
        timeout=60,
        predicate=lambda b: all(m["lag_events"] == 0 for m in b["items"]),
    )
    assert {m["table"] for m in status["items"]} >= {"raw_events", "orders", "order_summary"}
    assert all(m["lag_seconds"] == 0 for m in status["items"])


def test_freshness_lag_checks_pass_in_dagster(platform_up: RunningPlatform) -> None:
    import dagster as dg

    from cqrs_dagster.defs.alerting.dagster_state import latest_check_evaluations

    home = platform_up.data_dir / "dagster"
    # Evaluated by the every-minute read_model_freshness_sensor (in its tick, no run), or by a
    # following run (follow mode, the default) between its passes, while the sensor skips.
    deadline = time.monotonic() + 180
    seen: dict[str, bool] = {}
    while time.monotonic() < deadline:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            keys = [
                dg.AssetCheckKey(dg.AssetKey(t), f"{t}_freshness_lag")
                for t in ("raw_events", "orders", "order_summary")
            ]
            seen = {
                k.name: v.outcome == "passed"
                for k, v in latest_check_evaluations(instance, keys).items()
            }
        if len(seen) == 3 and all(seen.values()):
            break
        time.sleep(2)
    assert seen == {
        "raw_events_freshness_lag": True,
        "orders_freshness_lag": True,
        "order_summary_freshness_lag": True,
    }, platform_up.log_tail()


def test_ui_shows_graph_checks_automation_and_lag_plots(platform_up: RunningPlatform) -> None:
    from cqrs_dagster_tests.e2e.ui import ARTIFACTS, browser, dismiss_nux, open_and_capture

    dismiss_nux(platform_up.ui)
    ui = platform_up.ui
    with browser() as chrome:
        page = chrome.new_page(viewport={"width": 1600, "height": 1000})
        html = open_and_capture(
            page,
            f"{ui}/asset-groups",
            ["raw_events", "orders", "customers", "order_summary", "daily_order_metrics"],
            "asset-graph.png",
            90_000,
        )
        assert "Join the Dagster community" not in html
        open_and_capture(
            page,
            f"{ui}/assets/orders?view=checks",
            ["orders_freshness_lag", "orders_unique_keys", "orders_amounts"],
            "orders-checks.png",
            90_000,
        )
        open_and_capture(
            page,
            f"{ui}/automation",
            ["cqrs_events_sensor", "read_model_freshness_sensor", "table_maintenance_schedule"],
            "automation.png",
            90_000,
        )
        open_and_capture(
            page,
            f"{ui}/assets/raw_events?view=events",
            ["lag_seconds", "events_applied"],
            "raw-events-metadata.png",
            90_000,
        )
        # The same metadata plotted over materializations (Overview -> Metadata -> Plots).
        page.goto(f"{ui}/assets/raw_events?view=overview", wait_until="domcontentloaded")
        page.get_by_role("button", name="Plots").first.click(timeout=60_000)
        page.get_by_text("lag_seconds").first.wait_for(state="attached", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "raw-events-plots.png"), full_page=True)
    shots = sorted(p.name for p in ARTIFACTS.glob("*.png"))
    assert {
        "asset-graph.png",
        "orders-checks.png",
        "automation.png",
        "raw-events-plots.png",
    } <= set(shots)
    assert all((ARTIFACTS / s).stat().st_size > 10_000 for s in shots)


def test_dagster_runs_nicer_than_the_api(platform_up: RunningPlatform) -> None:
    """CQRS_DAGSTER_NICE (default 10): dagster dev and everything it starts yield the CPU to
    the API; the API and `cqrs up` itself keep the priority they were started with. The API
    runs its relay as a thread (no `cqrs relay` child)."""
    from cqrs_dagster.cli.procs import descendants

    own = os.getpriority(os.PRIO_PROCESS, 0)
    argv: dict[int, list[str]] = {}
    for pid in descendants(platform_up.proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv[pid] = [a.decode(errors="replace") for a in fh.read().split(b"\0")]
        except OSError:  # gone meanwhile (a run that ended)
            continue
    api = [p for p, a in argv.items() if "cqrs_dagster.cli" in a and "api" in a]
    dev = [p for p, a in argv.items() if len(a) > 2 and a[1].endswith("/dagster") and a[2] == "dev"]
    assert len(api) == 1 and len(dev) == 1, argv
    # The relay is a thread of the API here (memory: cqrs_dagster/cli/up.py), no child process.
    assert "--relay-thread" in argv[api[0]]
    assert not [a for a in argv.values() if "relay" in a], argv
    dagster = {dev[0], *descendants(dev[0])}
    assert len(dagster) >= 3, argv  # dagster dev, its webserver, daemon, code server, ...
    assert os.getpriority(os.PRIO_PROCESS, api[0]) == own
    seen = set()
    for pid in dagster:
        try:
            seen.add(os.getpriority(os.PRIO_PROCESS, pid))
        except OSError:
            continue
    assert seen == {min(own + 10, 19)}, seen


def test_ctrl_c_stops_every_process(platform_up: RunningPlatform) -> None:
    platform_up.remember_children()
    assert len(platform_up.pids_seen) >= 4, "expected cqrs up, the API and dagster dev children"
    # make was started with SIGINT ignored (as `make run &` is); none of the processes under it
    # may inherit that, or SIGTERM ignored too (Dagster maps SIGTERM to SIGINT's disposition),
    # or each stop waits 15 s and kills them. multiprocessing's resource tracker ignores both by
    # design and exits when its pipe closes.
    ignoring = {
        pid: ignored
        for pid in platform_up.pids_seen - {platform_up.proc.pid}
        if (ignored := _ignored_stop_signals(pid)) and "resource_tracker" not in _cmdline(pid)
    }
    assert not ignoring, f"processes ignoring SIGINT/SIGTERM: {ignoring}"
    # Ctrl-C in a terminal: SIGINT to the foreground process group (make and cqrs up).
    os.killpg(platform_up.proc.pid, signal.SIGINT)
    platform_up.proc.wait(60)
    deadline = time.monotonic() + 30
    alive = set(platform_up.pids_seen)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if _alive(p)}
        time.sleep(0.5)
    assert not alive, f"left behind: {alive}\n{platform_up.log_tail()}"
    log = platform_up.log.read_text(errors="replace")
    assert "cqrs: stopped" in log, platform_up.log_tail()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _ignored_stop_signals(pid: int) -> list[str]:
    """The stop signals (SIGINT, SIGTERM) ``pid`` ignores, from /proc's SigIgn mask."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            mask = next(int(line.split()[1], 16) for line in fh if line.startswith("SigIgn:"))
    except (OSError, StopIteration):
        return []
    return [sig.name for sig in (signal.SIGINT, signal.SIGTERM) if mask >> (sig - 1) & 1]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
