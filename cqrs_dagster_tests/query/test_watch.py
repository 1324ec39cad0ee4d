"""The consistency watcher: read-your-writes waits that cost no thread and no Delta refresh each.

Over real HTTP (uvicorn on 127.0.0.1, the real app, its lifespan): 200 concurrent waits on 200
fresh orders all answer 200 with their row once a real projection lands; the Delta refreshes of
the tables the waits need are the watcher's, one per pass (none per waiter); the threads do not
grow with the waiters; a wait that times out answers the documented 412 with the watcher's last
states; the watcher's thread stops with the server. Directly: the watcher's states equal
``consistency.check`` on the same snapshot (one-by-one and batched lookups), a failing pass is
counted, logged and retried without ending the thread, ``close`` wakes waiters at once, and
waiters on different event loops are each woken on their own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from cqrs_dagster.projections.schemas import ORDER_SUMMARY, RAW_EVENTS
from cqrs_dagster.query import consistency, watch
from cqrs_dagster.query.consistency import Token, TokenState
from cqrs_dagster.query.views import ReadModels
from cqrs_dagster.query.watch import ConsistencyWatcher
from cqrs_dagster.web.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from cqrs_dagster.web.queries import WOKEN_ANSWER_THREADS
from cqrs_dagster.wiring import make_read_models
from cqrs_dagster_tests.query.conftest import Platform, Server

WAITERS = 200
WATCHER_THREAD = "consistency-watcher"


@dataclass
class RefreshLog:
    """Every ReadModels.refresh call: the thread that made it and the tables it named."""

    calls: list[tuple[str, tuple[str, ...]]]

    def by_watcher(self) -> int:
        return sum(1 for thread, _ in self.calls if thread == WATCHER_THREAD)

    def of_tables_by_others(self, tables: set[str]) -> list[tuple[str, tuple[str, ...]]]:
        return [c for c in self.calls if c[0] != WATCHER_THREAD and tables & set(c[1])]


@pytest.fixture
def refreshes(monkeypatch: pytest.MonkeyPatch) -> RefreshLog:
    log = RefreshLog([])
    original = ReadModels.refresh

    def counting(self: ReadModels, names: Any = None) -> dict[str, int | None]:
        listed = tuple(self.names if names is None else names)
        log.calls.append((threading.current_thread().name, listed))
        return original(self, listed)

    monkeypatch.setattr(ReadModels, "refresh", counting)
    return log


def _orders(platform: Platform, count: int) -> list[tuple[str, str]]:
    """Customer k1 and ``count`` orders (sent, not published): (order id, token) each."""
    platform.send(
        {"type": "RegisterCustomer", "customerId": "k1", "name": "Kim", "email": "k@x.io"}
    )
    made = []
    for n in range(count):
        order_id = f"w{n:04d}"
        body = platform.send(
            {
                "type": "CreateOrder",
                "orderId": order_id,
                "customerId": "k1",
                "items": [{"sku": "tea", "quantity": 1 + n % 3, "unitPrice": "2.50"}],
            }
        )
        made.append((order_id, str(body["consistencyToken"])))
    return made


def _threads() -> dict[str, int]:
    names: dict[str, int] = {}
    for t in threading.enumerate():
        names[t.name] = names.get(t.name, 0) + 1
    return names


def test_200_concurrent_waits_over_http_one_watcher(
    server: Server, platform: Platform, refreshes: RefreshLog
) -> None:
    orders = _orders(platform, WAITERS)
    # The app opens its read models on first use (a full refresh): do that before counting.
    assert httpx.get(f"{server.url}/api/v1/orders/none", timeout=30).status_code == 404
    refreshes.calls.clear()
    watcher = server.watcher
    before = _threads()
    seen: dict[str, Any] = {}

    async def waits() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=WAITERS + 10)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
            tasks = [
                asyncio.create_task(
                    http.get(
                        f"/api/v1/orders/{order_id}",
                        params={"consistent_with": token, "wait_ms": 20_000},
                    )
                )
                for order_id, token in orders
            ]
            deadline = time.monotonic() + 20
            while watcher.waiting < WAITERS and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            seen["waiting"] = watcher.waiting
            seen["threads"] = _threads()
            seen["passes_before_projection"] = watcher.passes
            seen["start"] = time.monotonic()
            # A real projection (relay -> bus -> raw, silver, gold) while every request waits.
            await asyncio.to_thread(platform.project)
            answers = await asyncio.gather(*tasks)
            seen["elapsed"] = time.monotonic() - seen["start"]
            return answers

    answers = asyncio.run(waits())

    assert seen["waiting"] == WAITERS  # all 200 waited at once, none answered early
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * WAITERS, {s: statuses.count(s) for s in set(statuses)}
    for (order_id, _), answer in zip(orders, answers, strict=True):
        row = answer.json()
        assert row["order_id"] == order_id and row["status"] == "Created", row
    # No thread per waiter: one watcher thread; the thread pool stays within its limits (40,
    # plus the few that answer woken waiters); the other threads are those there were before the
    # waits (plus the watcher).
    during: dict[str, int] = seen["threads"]
    assert during.get(WATCHER_THREAD) == 1
    assert during.get("AnyIO worker thread", 0) <= 40 + WOKEN_ANSWER_THREADS
    others = sum(n for name, n in during.items() if name not in ("AnyIO worker thread",))
    others_before = sum(n for name, n in before.items() if name not in ("AnyIO worker thread",))
    assert others <= others_before + 1, (before, during)
    # No Delta refresh per waiter: the tables the checks read are refreshed by the watcher only,
    # once per pass, and passes are paced by the interval, not by the number of waiters.
    assert refreshes.by_watcher() == watcher.refreshes == watcher.passes + watcher.full_passes
    assert refreshes.of_tables_by_others({RAW_EVENTS, "orders", "daily_order_metrics"}) == []
    paced = seen["elapsed"] / watch.DEFAULT_INTERVAL_SECONDS + 2
    assert watcher.passes - seen["passes_before_projection"] <= paced
    assert watcher.passes < WAITERS
    assert watcher.woken == WAITERS and watcher.waiting == 0
    # The answers read the snapshot the watcher's pass refreshed: no request refreshed anything.
    assert [c for c in refreshes.calls if c[0] != WATCHER_THREAD] == []
    # Tokens a pass has seen included answer at once: no wait, no pass, one refresh each (the
    # table the answer reads, as a plain lookup does).
    passes = watcher.passes
    again = [
        httpx.get(
            f"{server.url}/api/v1/orders/{order_id}",
            params={"consistent_with": token, "wait_ms": 20_000},
            timeout=30,
        )
        for order_id, token in orders[:10]
    ]
    assert [a.json()["order_id"] for a in again] == [o for o, _ in orders[:10]]
    assert watcher.passes == passes and watcher.woken == WAITERS
    assert [c[1] for c in refreshes.calls if c[0] != WATCHER_THREAD] == [(ORDER_SUMMARY,)] * 10

    thread = watcher.thread
    assert thread is not None and thread.is_alive()
    server.stop()  # the app's lifespan ends: the watcher's thread is stopped and joined
    assert not thread.is_alive() and watcher.thread is None


def test_wait_that_times_out_is_412_with_the_watchers_last_states(
    server: Server, platform: Platform
) -> None:
    ((order_id, first),) = _orders(platform, 1)
    platform.project()
    paid = platform.send({"type": "UpdateOrderStatus", "orderId": order_id, "status": "Paid"})
    platform.publish()  # on the bus, in no read model
    watcher = server.watcher
    start = time.monotonic()
    answer = httpx.get(
        f"{server.url}/api/v1/orders/{order_id}",
        params={"consistent_with": f"{first},{paid['consistencyToken']}", "wait_ms": 400},
        timeout=30,
    )
    took = time.monotonic() - start
    assert answer.status_code == 412 and 0.4 <= took < 10
    assert answer.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = answer.json()
    assert body["type"] == PROBLEM_BASE + "not-yet-consistent"
    assert body["detail"] == "after 400 ms the read models do not include: Order:w0000:2"
    assert body["consistency"] == [
        {
            "token": "Order:w0000:1",
            "satisfied": True,
            "silver_table": "orders",
            "silver_version": 1,
            "event_ingest_seq": 1,
            "gold_checkpoints": {"order_summary": 1, "daily_order_metrics": 1},
        },
        {
            "token": "Order:w0000:2",
            "satisfied": False,
            "silver_table": "orders",
            "silver_version": 1,
            "event_ingest_seq": None,
            "gold_checkpoints": {"order_summary": 1, "daily_order_metrics": 1},
        },
    ]
    assert body["current"]["status"] == "Created"
    # the answer came from the watcher's passes (how many fit in 400 ms depends on the load)
    assert watcher.passes >= 1 and watcher.failures == 0 and watcher.waiting == 0


def test_waiters_woken_together_for_one_row_share_its_answer(
    server: Server, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    ((order_id, token),) = _orders(platform, 1)
    assert httpx.get(f"{server.url}/api/v1/orders/none", timeout=30).status_code == 404
    lookups: list[str] = []
    original = ReadModels.rows_where

    def counting(self: ReadModels, name: str, column: str, value: str) -> Any:
        if name == ORDER_SUMMARY:
            lookups.append(value)
        return original(self, name, column, value)

    monkeypatch.setattr(ReadModels, "rows_where", counting)
    watcher = server.watcher
    many = 50

    async def waits() -> list[httpx.Response]:
        params: dict[str, str | int] = {"consistent_with": token, "wait_ms": 20_000}
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            tasks = [
                asyncio.create_task(http.get(f"/api/v1/orders/{order_id}", params=params))
                for _ in range(many)
            ]
            deadline = time.monotonic() + 20
            while watcher.waiting < many and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert watcher.waiting == many
            await asyncio.to_thread(platform.project)
            return await asyncio.gather(*tasks)

    answers = asyncio.run(waits())
    assert [a.status_code for a in answers] == [200] * many
    assert {a.json()["order_id"] for a in answers} == {order_id}
    # One pass woke them all: one read answers them (the pass's read-ahead of their row, else
    # a lookup; a few if they resumed across passes).
    filled = server.app.state.query_api.rows.filled
    assert watcher.woken == many and len(lookups) + filled >= 1 and len(lookups) <= 5, lookups


def _snapshot_models(platform: Platform) -> ReadModels:
    return make_read_models(platform.settings)


def _tokens_in_every_state(platform: Platform, count: int) -> list[Token]:
    """Tokens included, silver ahead of gold, not in silver yet, absent, of both types."""
    orders = _orders(platform, count)
    platform.project()
    platform.send({"type": "UpdateOrderStatus", "orderId": orders[0][0], "status": "Paid"})
    platform.send({"type": "UpdateCustomer", "customerId": "k1", "name": "Kim Lee"})
    platform.publish()
    from cqrs_dagster.projections.context import StepContext
    from cqrs_dagster.projections.raw_ingest import ingest_raw_events
    from cqrs_dagster.projections.silver import project_customers, project_orders

    run = StepContext(platform.tables, "partial")  # silver ahead of gold
    ingest_raw_events(run, platform.bus, max_events=100)
    project_orders(run, max_events=100)
    project_customers(run, max_events=100)
    tokens = consistency.parse_tokens(",".join(t for _, t in orders))
    return [
        *tokens,
        Token("Order", orders[0][0], 2),  # in silver, not in gold
        Token("Order", orders[0][0], 3),  # not in silver yet
        Token("Order", "never", 1),
        Token("Customer", "k1", 1),
        Token("Customer", "k1", 2),  # silver has it, order_summary does not
    ]


@pytest.mark.parametrize("count", [3, watch.BATCH_LOOKUPS_ABOVE + 5])
def test_watcher_states_equal_check_on_the_same_snapshot(platform: Platform, count: int) -> None:
    tokens = _tokens_in_every_state(platform, count)
    models = _snapshot_models(platform)
    watcher = ConsistencyWatcher(lambda: models, interval=0.01)
    seen: dict[str, int] = {}

    async def watch_a_while() -> list[TokenState] | None:
        task = asyncio.create_task(watcher.wait(tokens, 0.5))  # some never included: times out
        while watcher.passes < 2:
            await asyncio.sleep(0.005)
        seen["passes"], seen["lookups"] = watcher.passes, watcher.lookups
        return await task

    try:
        states = asyncio.run(watch_a_while())
        expected = consistency.check(models, tokens)
        assert states == expected
        assert [s.satisfied for s in expected][-5:] == [False, False, False, True, False]
        assert all(s.satisfied for s in expected[:count])
        # Later passes on an unchanged snapshot look nothing up again, and refresh only the
        # gold tables (a full pass at most every FULL_PASS_SECONDS).
        assert watcher.passes >= seen["passes"] + 1 and watcher.lookups == seen["lookups"]
        assert (
            watcher.full_passes <= 2 and watcher.refreshes == watcher.passes + watcher.full_passes
        )
        if count > watch.BATCH_LOOKUPS_ABOVE:
            # Orders: one batched query per table (orders, raw_events); the Customer tokens (one
            # id, below the batch size): one customers lookup, one raw_events lookup each.
            assert watcher.lookups == 5
        else:  # one by one: 4 order ids, 4 order tokens in silver, 1 customer id, 2 tokens
            assert watcher.lookups == 11
    finally:
        watcher.close()
        models.close()


@dataclass
class Flaky:
    """A models factory whose first ``failures`` calls raise."""

    models: ReadModels
    failures: int
    calls: int = 0

    def __call__(self) -> ReadModels:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(f"storage unavailable ({self.calls})")
        return self.models


def test_failing_passes_are_logged_retried_and_never_end_the_thread(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    ((_, token),) = _orders(platform, 1)
    platform.project()
    models = _snapshot_models(platform)
    flaky = Flaky(models, failures=3)
    watcher = ConsistencyWatcher(flaky, interval=0.01)
    try:
        with caplog.at_level(logging.INFO, logger=watch.__name__):
            states = asyncio.run(watcher.wait(consistency.parse_tokens(token), 10))
        assert states is not None and all(s.satisfied for s in states)
        assert watcher.failures == 3 and flaky.calls == 4
        failed = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(failed) == 1 and failed[0].exc_info is not None  # once per run of failures
        assert any("succeed again after 3 failures" in r.getMessage() for r in caplog.records)
        # Always failing: the waiter is answered at its deadline, the thread keeps running.
        broken = Flaky(models, failures=10**9)
        stuck = ConsistencyWatcher(broken, interval=0.01)
        start = time.monotonic()
        assert asyncio.run(stuck.wait(consistency.parse_tokens(token), 0.3)) is None
        assert time.monotonic() - start < 5 and stuck.failures >= 3
        thread = stuck.thread
        assert thread is not None and thread.is_alive()
        stuck.close()
        assert not thread.is_alive()
    finally:
        watcher.close()
        models.close()


def test_close_wakes_waiters_at_once_and_a_later_wait_restarts_the_thread(
    platform: Platform,
) -> None:
    ((order_id, _),) = _orders(platform, 1)
    platform.project()
    models = _snapshot_models(platform)
    watcher = ConsistencyWatcher(lambda: models, interval=0.01)
    never = [Token("Order", order_id, 5)]

    async def wait_then_close() -> tuple[list[TokenState] | None, float]:
        task = asyncio.create_task(watcher.wait(never, 20))
        while watcher.passes < 2:
            await asyncio.sleep(0.01)
        start = time.monotonic()
        await asyncio.to_thread(watcher.close)
        return await task, time.monotonic() - start

    try:
        states, took = asyncio.run(wait_then_close())
        assert took < 5 and states is not None and not states[0].satisfied
        assert states[0].silver_version == 1 and watcher.thread is None
        assert asyncio.run(watcher.wait(never, 0.1)) is not None  # restarted and watched
        assert watcher.thread is not None
    finally:
        watcher.close()
        models.close()
    assert watcher.thread is None


def test_waiters_on_different_event_loops_are_each_woken(platform: Platform) -> None:
    orders = _orders(platform, 2)
    platform.project()
    models = _snapshot_models(platform)
    watcher = ConsistencyWatcher(lambda: models, interval=0.01)
    platform.send({"type": "UpdateOrderStatus", "orderId": orders[0][0], "status": "Paid"})
    platform.send({"type": "UpdateOrderStatus", "orderId": orders[1][0], "status": "Paid"})
    results: dict[int, list[TokenState] | None] = {}
    loops: dict[int, int] = {}

    def waiter(n: int) -> None:
        async def one() -> None:
            loops[n] = id(asyncio.get_running_loop())
            results[n] = await watcher.wait([Token("Order", orders[n][0], 2)], 20)

        asyncio.run(one())

    threads = [threading.Thread(target=waiter, args=(n,)) for n in (0, 1)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while watcher.waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watcher.waiting == 2
        platform.project()
        for t in threads:
            t.join(20)
        assert loops[0] != loops[1]
        for n in (0, 1):
            states = results[n]
            assert states is not None and states[0].satisfied
        assert watcher.woken == 2
    finally:
        watcher.close()
        models.close()
