"""The query API: read models over HTTP, separable from the command API.

``build_query_router(settings)`` serves, for callers with the ``reader`` role:

- ``GET /api/v1/orders/{order_id}``: the order_summary row (404 until projected)
- ``GET /api/v1/orders``: order_summary rows, filtered, keyset-paginated on (created_date, order_id)
- ``GET /api/v1/customers/{customer_id}``: the customers row
- ``GET /api/v1/metrics/daily``: daily_order_metrics rows in a date range
- ``GET /api/v1/projections``: each read model's checkpoint and lag

JSON keys are the read-model column names; money is a decimal string, timestamps ISO-8601 UTC.
Every caller value reaches DuckDB as a bound parameter. The row endpoints accept
``consistent_with`` (consistency tokens) and ``wait_ms``: see docs/read-your-writes.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from weakref import WeakKeyDictionary

import anyio
import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from cqrs_dagster.domain.commands import OrderStatus
from cqrs_dagster.domain.events import ORDER
from cqrs_dagster.eventbus.port import EventBus
from cqrs_dagster.projections.schemas import (
    CUSTOMERS,
    DAILY_ORDER_METRICS,
    ORDER_SUMMARY,
    READ_MODELS,
)
from cqrs_dagster.projections.status import projection_lag, read_checkpoints
from cqrs_dagster.query import consistency
from cqrs_dagster.query.rows import json_rows, json_value
from cqrs_dagster.query.snapshot_rows import Rows, Snapshot, SnapshotRows
from cqrs_dagster.query.views import ReadModels
from cqrs_dagster.query.watch import ConsistencyWatcher, Prefetch
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus, make_read_models

from .problems import ProblemError, problem_body, problem_responses
from .security import AUTH_RESPONSES, require_role

log = logging.getLogger(__name__)


def plain_lookup_doc(max_staleness_ms: int) -> str:
    """What the two key lookups' OpenAPI operations say about freshness, on these settings."""
    plain = (
        "the row as of the read model's newest commit"
        if max_staleness_ms == 0
        else "the row as of a snapshot of the read model that was its newest commit at most "
        f"{max_staleness_ms} ms before the request (CQRS_QUERY_MAX_STALENESS_MS)"
    )
    return (
        f"Without consistent_with: {plain}. With consistent_with: only once the read models "
        "include those tokens (read-your-writes), waiting up to wait_ms."
    )


DEFAULT_LIMIT = 50
MAX_LIMIT = 500
NOT_YET_CONSISTENT = "not-yet-consistent"
NOT_YET_CONSISTENT_TITLE = "Read models do not include the write yet"

ConsistentWith = Annotated[
    str | None,
    Query(
        max_length=consistency.TOKENS_MAX_LENGTH,
        pattern=consistency.TOKENS_PATTERN,
        description="Comma-separated consistency tokens from command responses "
        "(<AggregateType>:<aggregateId>:<version>): answer only once the read models include them.",
    ),
]
WaitMs = Annotated[
    int,
    Query(ge=0, le=consistency.MAX_WAIT_MS, description="How long to wait for consistent_with."),
]


_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _rfc3339_date(value: Any) -> Any:
    """The document says ``format: date``: a ``YYYY-MM-DD`` string, not a number of seconds."""
    if isinstance(value, str) and not _DATE_RE.fullmatch(value):
        raise ValueError("use a date as YYYY-MM-DD")
    return value


def _rfc3339_date_time(value: Any) -> Any:
    """The document says ``format: date-time``: ``YYYY-MM-DDThh:mm...``, not a number."""
    if isinstance(value, str) and not _DATE_RE.match(value):
        raise ValueError("use an RFC 3339 date-time, e.g. 2026-03-04T09:00:00Z")
    return value


QueryDate = Annotated[date, BeforeValidator(_rfc3339_date)]
QueryDateTime = Annotated[datetime, BeforeValidator(_rfc3339_date_time)]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _invalid(param: str, message: str) -> ProblemError:
    return ProblemError(
        422,
        "validation",
        f"query parameter {param} is not valid: {message}",
        errors=[{"path": f"query/{param}", "message": message}],
    )


# A keyset position: ``<created_date in microseconds since 1970 UTC>.<order_id, base64url>``.
# Every string the pattern matches is a position (an order id that is not UTF-8 decodes with
# replacement characters and still sorts somewhere), so a schema-valid cursor is always accepted.
CURSOR_PATTERN = r"^[0-9]{1,17}\.[A-Za-z0-9_-]{0,2048}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(created_date: datetime, order_id: str) -> str:
    """Opaque keyset cursor (see CURSOR_PATTERN)."""
    micros = (_utc(created_date) - _EPOCH) // timedelta(microseconds=1)
    encoded = base64.urlsafe_b64encode(order_id.encode()).decode().rstrip("=")
    return f"{max(micros, 0)}.{encoded}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; 422 problem for anything the pattern refuses."""
    micros, dot, encoded = cursor.partition(".")
    if not dot or not micros.isascii() or not micros.isdigit() or len(micros) > 17:
        raise _invalid("cursor", "is not a cursor returned by this API")
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValueError, binascii.Error):
        # A base64url length of 4n+1 is one character too many: ignore the partial byte.
        raw = base64.urlsafe_b64decode(encoded[:-1] + "=" * (-len(encoded[:-1]) % 4))
    return _EPOCH + timedelta(microseconds=int(micros)), raw.decode("utf-8", errors="replace")


_UTC_MIN = datetime.min.replace(tzinfo=UTC)
_UTC_MAX = datetime.max.replace(tzinfo=UTC)


def _utc(ts: datetime) -> datetime:
    """``ts`` in UTC; a bound whose UTC time falls outside years 1-9999 is clamped to the edge.

    ``0001-01-01T00:03:46+07:06`` is a valid RFC 3339 date-time whose UTC time is in year 0,
    which Python cannot represent. Every order is on the same side of the clamped bound as of
    the real one, so a filter by it answers the same rows (there: none before it).
    """
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        return _UTC_MIN if ts.year == 1 else _UTC_MAX


class _Models:
    """The router's ReadModels, opened on first use (not at import or app build)."""

    def __init__(self, settings: Settings, models: ReadModels | None) -> None:
        self._settings = settings
        self._models = models
        self._lock = threading.Lock()
        self.shared_answers = _Shared()  # woken waiters' answers over these models
        self.rows = SnapshotRows()  # key lookups' rows per table snapshot
        self._refreshing: set[str] = set()  # tables a background refresh is loading

    def get(self) -> ReadModels:
        with self._lock:
            if self._models is None:
                self._models = make_read_models(self._settings)
            return self._models

    def latest(
        self, name: str, column: str, value: str, render: Callable[[Rows], Response]
    ) -> Latest:
        """The endpoint's answer to a plain key lookup, when its rows are known without I/O
        beyond two ``stat`` calls (SnapshotRows.peek_latest, within
        ``CQRS_QUERY_MAX_STALENESS_MS``), else None; never opens the read models. Called on the
        event loop: an answer from a snapshot that is behind starts a background refresh of
        the table."""
        max_age = self._settings.query_max_staleness_ms / 1000

        def known() -> Response | None:
            models = self._models
            if models is None:
                return None
            found = self.rows.peek_latest(models, name, column, value, max_age)
            if found is None:
                return None
            rows, behind = found
            if behind:
                self._refresh_soon(models, name)
            return render(rows)

        return known

    def _refresh_soon(self, models: ReadModels, name: str) -> None:
        """Refresh ``name`` in the loop's executor unless that is already under way (one
        refresh per table at a time, however many lookups find it behind)."""
        if name in self._refreshing:
            return
        self._refreshing.add(name)

        def refresh() -> None:
            try:
                models.refresh([name])
            except Exception:  # the next lookup past the bound refreshes on its own path
                log.warning("background refresh of %s failed", name, exc_info=True)
            finally:
                self._refreshing.discard(name)

        asyncio.get_running_loop().run_in_executor(None, refresh)


Answer = Callable[[bool], Response]  # answer(refresh): the endpoint's answer, refreshing its table
# peek(snapshot): the endpoint's answer at that snapshot of its table if known without I/O, else None
Peek = Callable[[Snapshot | None], Response | None]
# latest(): the endpoint's answer on its table's newest commit (or one that was the newest within
# the staleness bound) if known without a refresh, else None
Latest = Callable[[], Response | None]

# Threads that answer woken waiters at once. A watcher pass can wake hundreds of waiters together;
# their answers share this small pool (and queue there), so requests without a wait never queue
# behind such a burst in the default pool of 40 threads, nor the event loop behind 40 busy ones.
WOKEN_ANSWER_THREADS = 4


class _Limiters:
    """One anyio CapacityLimiter per event loop (an app may be served by several in turn)."""

    def __init__(self, tokens: int) -> None:
        self._tokens = tokens
        self._by_loop: WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
            WeakKeyDictionary()
        )

    def get(self) -> anyio.CapacityLimiter:
        loop = asyncio.get_running_loop()
        limiter = self._by_loop.get(loop)
        if limiter is None:
            limiter = self._by_loop[loop] = anyio.CapacityLimiter(self._tokens)
        return limiter


_WOKEN = _Limiters(WOKEN_ANSWER_THREADS)


class _Shared:
    """Answers of woken waiters, shared by those that ask the same thing after the same pass.

    Keyed by (the endpoint's request, the watcher's generation when the waiter resumed, whether
    it refreshes): an answer that starts once the generation is g reads a snapshot at least as new
    as pass g's, and a waiter that reads g was woken by pass g or an earlier one, so the shared
    answer includes its tokens' writes. One dict of in-flight answers per event loop.
    """

    def __init__(self) -> None:
        self._by_loop: WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, asyncio.Future[Response]]
        ] = WeakKeyDictionary()
        self.shared = 0  # answers handed to a waiter that did not compute one (for tests)

    async def answer(self, key: Hashable, compute: Callable[[], Awaitable[Response]]) -> Response:
        loop = asyncio.get_running_loop()
        flights = self._by_loop.setdefault(loop, {})
        running = flights.get(key)
        if running is not None:
            try:
                found = await asyncio.shield(running)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not running.cancelled() or (task is not None and task.cancelling()):
                    raise
                return await compute()  # the one computing it went away: compute our own
            self.shared += 1
            return Response(found.body, status_code=found.status_code, media_type=found.media_type)
        future: asyncio.Future[Response] = loop.create_future()
        flights[key] = future
        try:
            result = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: joiners get it raised; none may be waiting
            raise
        else:
            future.set_result(result)
            return result
        finally:
            if flights.get(key) is future:
                del flights[key]


async def _consistent(
    holder: _Models,
    watcher: ConsistencyWatcher,
    consistent_with: str | None,
    wait_ms: int,
    answer: Answer,
    reads: str,
    request: Hashable,
    peek: Peek | None = None,
    latest: Latest | None = None,
) -> Response:
    """``answer`` once the tokens are included, else a 412 with the tokens' and answer's state.

    The route is async and a waiting request holds no thread and refreshes nothing itself:

    - no token: the answer on freshly refreshed tables (in the thread pool), or on the event loop
      when ``latest`` knows it (the read models' snapshot of the table is the newest commit, or
      was within ``CQRS_QUERY_MAX_STALENESS_MS``, and the rows are known there);
    - ``wait_ms`` 0: one check on freshly refreshed tables (in the thread pool);
    - tokens a watcher pass has already seen included: answered at once (no check);
    - else the request awaits the router's one watcher, which refreshes the tables once per pass
      for all waiters and wakes each when its tokens are included. The answer then reads the
      snapshot that pass refreshed when ``reads`` (the endpoint's table) is one the tokens need,
      else it refreshes ``reads``. At the deadline: the 412 with the watcher's last states.
      A woken waiter whose answer ``peek`` knows at the watcher's snapshot of ``reads`` (rows
      already read at that snapshot) is answered on the event loop, without a thread.
    """
    if consistent_with is None:
        known = None if latest is None else latest()
        return known if known is not None else await run_in_threadpool(answer, True)
    try:
        tokens = consistency.parse_tokens(consistent_with)
    except consistency.TokenError as exc:
        raise _invalid("consistent_with", str(exc)) from exc
    if wait_ms == 0:
        states = await run_in_threadpool(lambda: consistency.check(holder.get(), tokens))
        refresh = reads not in consistency.tables_for(tokens)
    elif watcher.included(tokens):
        return await run_in_threadpool(answer, True)
    else:
        waited = await watcher.wait(tokens, min(wait_ms, consistency.MAX_WAIT_MS) / 1000)
        if waited is None:  # no pass ran for it in time (or the watcher closed): check now
            waited = await run_in_threadpool(
                lambda: consistency.check(holder.get(), tokens, refresh=False)
            )
        refresh = reads not in consistency.tables_for(tokens)
        if all(s.satisfied for s in waited):
            if peek is not None and not refresh:
                known = peek(watcher.snapshot(reads))
                if known is not None:
                    return known
            return await holder.shared_answers.answer(
                (request, watcher.generation, refresh),
                lambda: anyio.to_thread.run_sync(answer, refresh, limiter=_WOKEN.get()),
            )
        states = waited
    if all(s.satisfied for s in states):
        return await run_in_threadpool(answer, refresh)
    return await run_in_threadpool(_not_yet_consistent, states, wait_ms, answer)


def _prefetch_orders(rows: SnapshotRows) -> Prefetch:
    """The watcher's read-ahead: the order_summary rows of the woken Order tokens, in one query
    per pass, so that ``GET /orders/{id}`` waiters woken together answer from memory (peek)."""

    def prefetch(
        models: ReadModels, snapshots: Mapping[str, Snapshot], tokens: Sequence[consistency.Token]
    ) -> None:
        at = snapshots.get(ORDER_SUMMARY)
        ids = [t.aggregate_id for t in tokens if t.aggregate_type == ORDER]
        if at is not None and ids:
            rows.fill(models, ORDER_SUMMARY, at, "order_id", ids)

    return prefetch


def _not_yet_consistent(
    states: list[consistency.TokenState], wait_ms: int, answer: Answer
) -> Response:
    try:
        current: Any = orjson.loads(answer(True).body)
    except ProblemError:
        current = None
    waiting = [str(s.token) for s in states if not s.satisfied]
    body = problem_body(
        412,
        NOT_YET_CONSISTENT,
        f"after {wait_ms} ms the read models do not include: {', '.join(waiting)}",
    )
    body["title"] = NOT_YET_CONSISTENT_TITLE
    body["consistency"] = [s.to_json() for s in states]
    body["current"] = current
    return Response(orjson.dumps(body), status_code=412, media_type="application/problem+json")


OrderLookup = Callable[[str, str | None, int], Awaitable[Response]]


@dataclass(frozen=True)
class QueryApi:
    """The query routes, and what ``GET /api/v1/orders/{order_id}`` answers (for a caller already
    admitted as a reader, with valid parameters): the route's own body, which the raw-ASGI fast
    path (:mod:`.query_fast_path`) serves too."""

    router: APIRouter
    get_order: OrderLookup  # (order_id, consistent_with, wait_ms) -> the route's answer
    rows: SnapshotRows  # the key lookups' rows per snapshot (hits and misses counted)


def build_query_router(
    settings: Settings,
    *,
    models: ReadModels | None = None,
    watcher: ConsistencyWatcher | None = None,
) -> APIRouter:
    """The query routes over the read models that ``settings`` locate (or the given ``models``);
    read-your-writes waits go through ``watcher`` (default: one of its own, over the same models).

    The router's lifespan (merged into the app's by ``include_router``) publishes the watcher as
    ``app.state.consistency_watcher`` and, at shutdown, stops its thread (waking any waiter).
    """
    return build_query_api(settings, models=models, watcher=watcher).router


def build_query_api(
    settings: Settings,
    *,
    models: ReadModels | None = None,
    watcher: ConsistencyWatcher | None = None,
) -> QueryApi:
    """:func:`build_query_router`'s router with its order lookup (see :class:`QueryApi`)."""
    holder = _Models(settings, models)
    waits = (
        watcher
        if watcher is not None
        else ConsistencyWatcher(holder.get, prefetch=_prefetch_orders(holder.rows))
    )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        app.state.consistency_watcher = waits
        try:
            yield
        finally:
            await asyncio.to_thread(waits.close)

    router = APIRouter(
        prefix="/api/v1",
        tags=["queries"],
        dependencies=[Depends(require_role("reader"))],
        responses={**AUTH_RESPONSES, **problem_responses(412, 422)},
        lifespan=lifespan,
    )

    def select(
        sql: str, params: list[Any], tables: list[str], refresh: bool
    ) -> list[dict[str, Any]]:
        m = holder.get()
        if refresh:
            m.refresh(tables)
        return json_rows(m.execute(sql, params))

    def one(name: str, column: str, value: str, refresh: bool) -> Rows:
        """The rows of ``name`` with ``column = value`` (files pruned on the log's stats; once per
        snapshot: see SnapshotRows); ``refresh``: load the table's new commits first (else: the
        snapshot a check just read)."""
        return holder.rows.lookup(holder.get(), name, column, value, refresh=refresh)

    async def order(order_id: str, consistent_with: str | None, wait_ms: int) -> Response:
        def render(rows: Rows) -> Response:
            if not rows:
                raise ProblemError(404, "not-found", f"order {order_id} is not in the read model")
            return _json(rows[0])

        def answer(refresh: bool) -> Response:
            return render(one(ORDER_SUMMARY, "order_id", order_id, refresh))

        def peek(at: Snapshot | None) -> Response | None:
            rows = holder.rows.peek(ORDER_SUMMARY, at, "order_id", order_id)
            return None if rows is None else render(rows)

        return await _consistent(
            holder,
            waits,
            consistent_with,
            wait_ms,
            answer,
            ORDER_SUMMARY,
            ("order", order_id),
            peek,
            holder.latest(ORDER_SUMMARY, "order_id", order_id, render),
        )

    @router.get(
        "/orders/{order_id}",
        summary="One order (order_summary row)",
        description=plain_lookup_doc(settings.query_max_staleness_ms),
        responses=problem_responses(404),
    )
    async def get_order(
        order_id: str, consistent_with: ConsistentWith = None, wait_ms: WaitMs = 0
    ) -> Response:
        return await order(order_id, consistent_with, wait_ms)

    @router.get("/orders", summary="Orders (order_summary rows), oldest first, keyset-paginated")
    async def list_orders(
        customer_id: Annotated[str | None, Query(max_length=256)] = None,
        status: OrderStatus | None = None,
        created_from: Annotated[QueryDateTime | None, Query(description="inclusive")] = None,
        created_to: Annotated[QueryDateTime | None, Query(description="exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(max_length=2066, pattern=CURSOR_PATTERN)] = None,
        consistent_with: ConsistentWith = None,
        wait_ms: WaitMs = 0,
    ) -> Response:
        clauses: list[str] = []
        params: list[Any] = []
        if customer_id is not None:
            clauses.append("customer_id = ?")
            params.append(customer_id)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if created_from is not None:
            clauses.append("created_date >= ?")
            params.append(_utc(created_from))
        if created_to is not None:
            clauses.append("created_date < ?")
            params.append(_utc(created_to))
        if cursor is not None:
            after_created, after_id = decode_cursor(cursor)
            clauses.append("(created_date > ? OR (created_date = ? AND order_id > ?))")
            params += [after_created, after_created, after_id]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT * FROM order_summary{where} ORDER BY created_date, order_id LIMIT ?"

        def answer(refresh: bool) -> Response:
            m = holder.get()
            if refresh:
                m.refresh([ORDER_SUMMARY])
            table = m.execute(sql, [*params, limit + 1])
            items = json_rows(table.slice(0, limit))
            next_cursor = None
            if table.num_rows > limit:
                last = table.slice(limit - 1, 1).to_pylist()[0]
                next_cursor = encode_cursor(last["created_date"], last["order_id"])
            return _json({"items": items, "next_cursor": next_cursor})

        request = ("orders", sql, tuple(params), limit)
        return await _consistent(
            holder, waits, consistent_with, wait_ms, answer, ORDER_SUMMARY, request
        )

    @router.get(
        "/customers/{customer_id}",
        summary="One customer (customers row)",
        description=plain_lookup_doc(settings.query_max_staleness_ms),
        responses=problem_responses(404),
    )
    async def get_customer(
        customer_id: str, consistent_with: ConsistentWith = None, wait_ms: WaitMs = 0
    ) -> Response:
        def render(rows: Rows) -> Response:
            if not rows:
                raise ProblemError(
                    404, "not-found", f"customer {customer_id} is not in the read model"
                )
            return _json(rows[0])

        def answer(refresh: bool) -> Response:
            return render(one(CUSTOMERS, "customer_id", customer_id, refresh))

        return await _consistent(
            holder,
            waits,
            consistent_with,
            wait_ms,
            answer,
            CUSTOMERS,
            ("customer", customer_id),
            latest=holder.latest(CUSTOMERS, "customer_id", customer_id, render),
        )

    @router.get("/metrics/daily", summary="Daily order metrics (UTC days, both ends inclusive)")
    async def daily_metrics(
        from_: Annotated[QueryDate | None, Query(alias="from")] = None,
        to: Annotated[QueryDate | None, Query()] = None,
        consistent_with: ConsistentWith = None,
        wait_ms: WaitMs = 0,
    ) -> Response:
        clauses: list[str] = []
        params: list[Any] = []
        if from_ is not None:
            clauses.append("order_date >= ?")
            params.append(from_)
        if to is not None:
            clauses.append("order_date <= ?")
            params.append(to)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT * FROM daily_order_metrics{where} ORDER BY order_date"

        def answer(refresh: bool) -> Response:
            return _json({"items": select(sql, params, [DAILY_ORDER_METRICS], refresh)})

        return await _consistent(
            holder,
            waits,
            consistent_with,
            wait_ms,
            answer,
            DAILY_ORDER_METRICS,
            ("daily", sql, tuple(params)),
        )

    @router.get("/projections", summary="Each read model's checkpoint and lag behind the bus")
    def projections(request: Request) -> Response:
        tables = holder.get().tables
        shared: EventBus | None = getattr(request.app.state, "bus", None)
        bus = shared if shared is not None else make_event_bus(settings)
        try:
            checkpoints = read_checkpoints(tables)
            items = []
            heads = bus.partitions_info()  # one read of the bus heads for every table
            for name in READ_MODELS:
                lag = projection_lag(bus, tables, name, heads=heads)
                items.append(
                    {
                        "table": name,
                        "checkpoint": checkpoints.get(name, {}),
                        "newest_applied_event_time": json_value(lag.newest_applied_time),
                        "newest_bus_event_time": json_value(lag.newest_bus_time),
                        "lag_seconds": lag.lag_seconds,
                        "lag_events": lag.events_behind,
                    }
                )
        finally:
            if shared is None:
                bus.close()
        return _json({"items": items})

    return QueryApi(router, order, holder.rows)
