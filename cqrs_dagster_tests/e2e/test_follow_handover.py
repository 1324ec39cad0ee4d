"""Follow mode's handover at the cap, through `cqrs up`: the daemon's events sensor launches the next
following run before the current one reaches its cap, real run processes, the writer pool. The
successor is created while its predecessor still runs, its projection step starts only once the
predecessor's has finished (one writer at a time), and every order lands in the read models once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from cqrs_dagster.defs.follow import HANDOVER_TAG
from cqrs_dagster.defs.names import FOLLOW_JOB
from cqrs_dagster_tests.fixtures.platform import cqrs_sql, cqrs_up_args, wait_ready
from cqrs_dagster_tests.fixtures.procs import free_port, start_group, stop_group

pytestmark = pytest.mark.e2e

CAP_SECONDS = 25  # `cqrs up --follow 25`: a following run reaches its cap within the test
TRICKLE_SECONDS = 0.25  # a CreateOrder this often keeps the run busy (its idle end is 10 s)
HANDOVER_TIMEOUT = 150.0


def post(api: str, command: dict[str, Any]) -> str:
    resp = httpx.post(f"{api}/api/v1/commands", json=command, timeout=10)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["aggregateId"])


def step_times(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list[float]:
    return [
        e.timestamp
        for e in instance.all_logs(run_id, of_type=kind)
        if e.step_key == "follow_projection"
    ]


def handed_over(home: Path) -> bool:
    """Whether a handover run's projection step has started."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs(filters=dg.RunsFilter(job_name=FOLLOW_JOB)):
            if run.tags.get(HANDOVER_TAG) and step_times(
                instance, run.run_id, dg.DagsterEventType.STEP_START
            ):
                return True
    return False


def test_following_runs_hand_over_at_the_cap_one_writer_at_a_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    api_port, ui_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    proc = start_group(
        cqrs_up_args(data, api_port, ui_port, "--follow", str(CAP_SECONDS)),
        tmp_path / "cqrs-up.log",
        env={"CQRS_SENSOR_INTERVAL_SECONDS": "5", "PYTHONUNBUFFERED": "1"},
    )
    orders: list[str] = []
    try:
        wait_ready(f"{api}/api/v1/healthz", proc, 90)
        wait_ready(f"http://127.0.0.1:{ui_port}/server_info", proc, 240)
        customer = post(api, {"type": "RegisterCustomer", "name": "Ada", "email": "ada@x.io"})
        item = {"sku": "SKU-1", "quantity": 1, "unitPrice": "1.00"}
        deadline = time.monotonic() + HANDOVER_TIMEOUT
        next_check = time.monotonic() + CAP_SECONDS
        while True:
            orders.append(
                post(api, {"type": "CreateOrder", "customerId": customer, "items": [item]})
            )
            time.sleep(TRICKLE_SECONDS)
            if time.monotonic() >= next_check:
                if handed_over(data / "dagster"):
                    break
                assert time.monotonic() < deadline, "no handover run started its projection"
                next_check = time.monotonic() + 2.0
        caught_up = time.monotonic() + 120
        while True:  # every order applied: no lag left in any read model
            items = httpx.get(f"{api}/api/v1/projections", timeout=10).json()["items"]
            if all(m["lag_events"] == 0 for m in items):
                break
            assert time.monotonic() < caught_up, items
            time.sleep(0.5)
    finally:
        stop_group(proc, timeout=30)

    with dg.DagsterInstance.from_config(str(data / "dagster")) as instance:
        handovers = [
            r
            for r in instance.get_run_records(filters=dg.RunsFilter(job_name=FOLLOW_JOB))
            if r.dagster_run.tags.get(HANDOVER_TAG)
        ]
        took_over = {
            r.dagster_run.run_id: starts
            for r in handovers
            if (
                starts := step_times(instance, r.dagster_run.run_id, dg.DagsterEventType.STEP_START)
            )
        }
        assert took_over  # a handover launched at the stop may not have taken over yet
        for successor in handovers:
            started = took_over.get(successor.dagster_run.run_id)
            if started is None:
                continue
            previous = instance.get_run_record_by_id(successor.dagster_run.tags[HANDOVER_TAG])
            assert previous is not None and previous.end_time is not None
            assert previous.dagster_run.job_name == FOLLOW_JOB
            # launched before its predecessor ended: no tick and start-up gap at the cap
            assert successor.create_timestamp.timestamp() < previous.end_time
            finished = step_times(
                instance, previous.dagster_run.run_id, dg.DagsterEventType.STEP_SUCCESS
            )
            assert len(finished) == 1 and finished[0] <= started[0]  # one writer at a time

    rows = cqrs_sql(data, "SELECT count(*) AS n, count(DISTINCT order_id) AS d FROM order_summary")
    assert rows == [{"n": len(orders), "d": len(orders)}]
