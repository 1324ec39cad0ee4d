"""The raw-ASGI fast path of ``GET /api/v1/orders/{order_id}`` and cheap read-your-writes bursts.

The fast path answers exactly what the FastAPI route answers (status, media type, body, the auth
and rate-limit headers) for 200, 404, 412, 422, 401 and 429, open and keyed: each request is sent
to the real app and to the same app without the fast path. It serves only requests whose
parameters the route would accept (counted), and leaves every other one, 422 included, to the
route. Woken waiters are resolved in chunks with the event loop running other work in between;
hundreds of concurrent waits over real HTTP are all answered with their row, the rows read ahead
by the waking pass (one batched query) and otherwise looked up once per snapshot (SnapshotRows),
and plain lookups answer during the burst.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cqrs_dagster.cli.api import _served
from cqrs_dagster.query import watch
from cqrs_dagster.query.consistency import TokenState
from cqrs_dagster.settings import Settings
from cqrs_dagster.web.app import build_app
from cqrs_dagster.web.queries import OrderLookup, QueryApi
from cqrs_dagster.web.query_fast_path import OrderLookupFastPath, order_id_of, served_params
from cqrs_dagster_tests.query.conftest import Platform, Server

SERVED: list[tuple[str, dict[str, str]]] = [
    ("o000", {}),
    ("o037", {"consistent_with": "Order:o037:1"}),
    ("o000", {"consistent_with": "Order:o000:1", "wait_ms": "0"}),
    ("o000", {"consistent_with": "Order:o000:1,Customer:c0:1", "wait_ms": "2000"}),
    ("o000", {"wait_ms": "007"}),
    ("nope", {}),  # 404
    ("o 1+x", {}),  # 404 (an id with a space and a plus)
    ("o000", {"consistent_with": "Order:o000:99", "wait_ms": "0"}),  # 412
    ("o000", {"consistent_with": "Order:o000:99", "wait_ms": "60"}),  # 412 after a wait
    ("nope", {"consistent_with": "Order:nope:1", "wait_ms": "0"}),  # 412, current null
]
FALLBACK: list[tuple[str, dict[str, str]]] = [
    ("o000", {"consistent_with": "nope"}),  # 422: pattern
    ("o000", {"consistent_with": ""}),  # 422: pattern
    ("o000", {"consistent_with": "Order:o000:1", "wait_ms": "-1"}),  # 422: ge
    ("o000", {"wait_ms": "30001"}),  # 422: le
    ("o000", {"wait_ms": "x"}),  # 422: int
    ("o000", {"wait_ms": " 5"}),  # left to the route (whatever it answers)
    ("o000", {"other": "1"}),  # unknown parameter: the route ignores it
]


@dataclass
class Pair:
    """The real app (fast path in front) and the same app without it."""

    fast: TestClient
    route: TestClient
    served: list[str]  # order ids the fast path's lookup answered
    passed: list[str]  # paths of the requests the fast path left to the app


def _is_fast_path(cls: object) -> bool:
    return cls is OrderLookupFastPath


def _pair(settings: Settings) -> Iterator[Pair]:
    fast = build_app(settings, run_relay=False)
    served: list[str] = []
    found: list[Any] = [m for m in fast.user_middleware if _is_fast_path(m.cls)]
    assert len(found) == 1, "build_app installs the fast path once"
    inner: OrderLookup = found[0].kwargs["get_order"]

    async def counting(order_id: str, consistent_with: str | None, wait_ms: int) -> Response:
        served.append(order_id)
        response: Response = await inner(order_id, consistent_with, wait_ms)
        return response

    found[0].kwargs["get_order"] = counting
    passed: list[str] = []

    class Counting(OrderLookupFastPath):
        def __init__(self, app: ASGIApp, *, get_order: OrderLookup) -> None:
            async def behind(scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] == "http":
                    passed.append(scope["path"])
                await app(scope, receive, send)

            super().__init__(behind, get_order=get_order)

    found[0].cls = Counting
    route = build_app(settings, run_relay=False)
    route.user_middleware = [m for m in route.user_middleware if not _is_fast_path(m.cls)]
    with TestClient(fast) as f, TestClient(route) as r:
        yield Pair(f, r, served, passed)


@pytest.fixture(scope="module")
def pair(seeded: Platform) -> Iterator[Pair]:
    yield from _pair(seeded.settings)


def _same(a: httpx.Response, b: httpx.Response) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.headers["content-type"] == b.headers["content-type"]
    assert a.json() == b.json()
    for name in ("retry-after", "www-authenticate", "content-length"):
        assert a.headers.get(name) == b.headers.get(name), name


@pytest.mark.parametrize(("order_id", "params"), SERVED)
def test_fast_path_answers_what_the_route_answers(
    pair: Pair, order_id: str, params: dict[str, str]
) -> None:
    before, passed = len(pair.served), len(pair.passed)
    a = pair.fast.get(f"/api/v1/orders/{order_id}", params=params)
    b = pair.route.get(f"/api/v1/orders/{order_id}", params=params)
    _same(a, b)
    assert pair.served[before:] == [order_id], "served by the fast path"
    assert pair.passed[passed:] == []
    assert a.status_code in (200, 404, 412)
    if a.status_code == 200:
        assert a.json()["order_id"] == order_id
    if a.status_code == 412:
        assert a.json()["consistency"] and "current" in a.json()


def test_the_expected_statuses_are_covered(pair: Pair) -> None:
    statuses = {pair.fast.get(f"/api/v1/orders/{o}", params=p).status_code for o, p in SERVED}
    assert statuses == {200, 404, 412}


@pytest.mark.parametrize(("order_id", "params"), FALLBACK)
def test_parameters_the_route_may_refuse_are_left_to_the_route(
    pair: Pair, order_id: str, params: dict[str, str]
) -> None:
    before = len(pair.served)
    a = pair.fast.get(f"/api/v1/orders/{order_id}", params=params)
    b = pair.route.get(f"/api/v1/orders/{order_id}", params=params)
    _same(a, b)
    assert pair.served[before:] == [], "left to the route"
    assert pair.passed[-1] == f"/api/v1/orders/{order_id}"
    if params.get("other") is None and params.get("wait_ms") != " 5":
        assert a.status_code == 422
        assert a.headers["content-type"] == "application/problem+json"
        assert a.json()["errors"][0]["path"].startswith("query/")


def test_other_paths_and_methods_are_not_served(pair: Pair) -> None:
    before = len(pair.served)
    slash = pair.fast.get("/api/v1/orders/o000/", follow_redirects=False)
    assert slash.status_code == 307  # the router's redirect, not an answer
    assert (
        slash.status_code
        == pair.route.get("/api/v1/orders/o000/", follow_redirects=False).status_code
    )
    _same(pair.fast.post("/api/v1/orders/o000"), pair.route.post("/api/v1/orders/o000"))
    listed = pair.fast.get("/api/v1/orders", params={"limit": 2})
    assert listed.status_code == 200 and len(listed.json()["items"]) == 2
    assert pair.served[before:] == []


def test_auth_and_rate_limit_answers_match_the_route(seeded: Platform) -> None:
    settings = Settings(
        env="local",
        data_dir=seeded.settings.data_dir,
        api_keys="rk:reader,wk:writer",
        rate_limit_per_second=0.001,
        rate_limit_burst=2,
    )
    for p in _pair(settings):
        sequence: list[dict[str, str]] = [
            {},
            {"X-API-Key": "bad"},
            {"Authorization": "Bearer bad"},
            {"X-API-Key": "rk"},
            {"Authorization": "Bearer rk"},
            {"X-API-Key": "rk"},  # the bucket (burst 2) is empty: 429
        ]
        statuses = []
        for headers in sequence:
            a = p.fast.get("/api/v1/orders/o000", headers=headers)
            b = p.route.get("/api/v1/orders/o000", headers=headers)
            _same(a, b)
            statuses.append(a.status_code)
        assert statuses == [401, 401, 401, 200, 200, 429]
        assert p.passed == [], "every answer, refusals included, is the fast path's"
        assert len(p.served) == 2


def test_served_params_and_path() -> None:
    assert served_params(b"") == (None, 0)
    assert served_params(b"wait_ms=5&consistent_with=Order%3Ao1%3A2") == ("Order:o1:2", 5)
    assert served_params(b"wait_ms=5&wait_ms=6") is None
    assert served_params(b"wait_ms=30000") == (None, 30000)
    assert served_params(b"wait_ms=30001") is None
    assert served_params(b"consistent_with=Order:o1:2%0A") is None
    assert order_id_of("/api/v1/orders/o1") == "o1"
    assert order_id_of("/api/v1/orders/") is None
    assert order_id_of("/api/v1/orders/o1/x") is None
    assert order_id_of("/api/v1/customers/c1") is None


def test_woken_waiters_are_resolved_in_chunks_with_the_loop_running_between() -> None:
    count = 5 * watch.WAKE_CHUNK + 3

    async def run() -> list[int]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[list[TokenState] | None]] = [
            loop.create_future() for _ in range(count)
        ]
        seen: list[int] = []

        async def ticker() -> None:  # other work on the loop: one step per iteration
            while not all(f.done() for f in futures):
                seen.append(sum(f.done() for f in futures))
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        states: list[TokenState] = []
        woken = [(watch._Waiter((), loop, f), states) for f in futures]
        threading.Thread(target=watch._wake_all, args=(woken,)).start()  # as the watcher does
        await ticking
        assert all(f.result() is states for f in futures)
        return seen

    seen = asyncio.run(run())
    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert max(steps) <= watch.WAKE_CHUNK
    assert len({n for n in seen if 0 < n < count}) >= 4, seen


WAITS = 300
ORDERS = 10


def test_hundreds_of_waits_answered_once_per_row_and_snapshot(
    server: Server, platform: Platform
) -> None:
    platform.send(
        {"type": "RegisterCustomer", "customerId": "k1", "name": "Kim", "email": "k@x.io"}
    )
    platform.send(
        {
            "type": "CreateOrder",
            "orderId": "plain",
            "customerId": "k1",
            "items": [{"sku": "tea", "quantity": 1, "unitPrice": "1.00"}],
        }
    )
    platform.project()
    made = []
    for n in range(ORDERS):
        body = platform.send(
            {
                "type": "CreateOrder",
                "orderId": f"b{n}",
                "customerId": "k1",
                "items": [{"sku": "tea", "quantity": 1 + n, "unitPrice": "2.50"}],
            }
        )
        made.append((f"b{n}", str(body["consistencyToken"])))
    api: QueryApi = server.app.state.query_api
    misses_before, filled_before = api.rows.misses, api.rows.filled

    async def burst() -> tuple[list[httpx.Response], list[int]]:
        limits = httpx.Limits(max_connections=WAITS + 10)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:

            async def wait(n: int) -> httpx.Response:
                order_id, token = made[n % ORDERS]
                return await http.get(
                    f"/api/v1/orders/{order_id}",
                    params={"consistent_with": token, "wait_ms": 30_000},
                )

            tasks = [asyncio.create_task(wait(n)) for n in range(WAITS)]
            watcher = server.app.state.consistency_watcher
            deadline = time.monotonic() + 30
            while watcher.waiting < WAITS:
                assert time.monotonic() < deadline, f"only {watcher.waiting} waiting"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(platform.project)
            plain: list[int] = []
            # Plain lookups during the answers, on a connection of their own opened now: a pooled
            # connection idle since before the projection may be the one uvicorn is closing at
            # its 5 s keep-alive timeout just as the client reuses it.
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as own:
                while not all(t.done() for t in tasks):
                    plain.append((await own.get("/api/v1/orders/plain")).status_code)
            return list(await asyncio.gather(*tasks)), plain

    answers, plain = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * WAITS
    for n, a in enumerate(answers):
        assert a.json()["order_id"] == made[n % ORDERS][0]
        assert a.json()["item_count"] == 1 + n % ORDERS
    assert set(plain) <= {200}
    # Each woken row was read once for the snapshot that included it (a few more if a plain
    # refresh raced a pass), not once per waiter.
    assert api.rows.misses - misses_before <= 2 * ORDERS + 2, api.rows.misses - misses_before
    assert api.rows.filled - filled_before >= ORDERS  # the waking pass read them ahead


def test_as_served_in_front_of_the_stack_lookups_answer_what_the_route_answers(
    seeded: Platform,
) -> None:
    """``cqrs api`` serves both fast paths in front of the whole middleware stack."""
    app = build_app(seeded.settings, run_relay=False)
    served = _served(app)
    assert isinstance(served.app, OrderLookupFastPath) and served.app.front_of is app
    route = build_app(seeded.settings, run_relay=False)
    route.user_middleware = [m for m in route.user_middleware if not _is_fast_path(m.cls)]
    with TestClient(served) as f, TestClient(route) as r:
        for order_id, params in SERVED:
            _same(
                f.get(f"/api/v1/orders/{order_id}", params=params),
                r.get(f"/api/v1/orders/{order_id}", params=params),
            )
        assert f.get("/api/v1/healthz").status_code == 200  # other routes: the app itself


def test_in_front_an_unexpected_lookup_error_is_a_logged_500_problem(
    seeded: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(seeded.settings, run_relay=False)
    served = _served(app)

    async def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    served.app.get_order = broken
    with TestClient(served) as c:
        response = c.get("/api/v1/orders/anything")
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert "boom" not in response.text
    assert any("unhandled error on GET /api/v1/orders/" in r.getMessage() for r in caplog.records)
