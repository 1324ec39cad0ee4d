"""The HTTP application: command API (and query API), health, OpenAPI, outbox relay thread.

``build_app(settings)`` is the HTTP host: on startup its lifespan opens the command side that
``settings`` selects (a :class:`~cqrs_dagster.wiring.CommandSide`: the write store and the bus),
starts its group committer (the one writer thread that applies HTTP commands in group commits) and
its outbox relay in a background thread; on shutdown it finishes the queued commands, stops and
joins the threads, then closes the adapters.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import JSONResponse, Response

from cqrs_dagster.command.relay_process import RelayProcess
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import CommandSide

from . import commands, problems
from .problems import problem_response, problem_responses
from .queries import build_query_api
from .query_fast_path import OrderLookupFastPath
from .security import ApiSecurity

log = logging.getLogger(__name__)

RELAY_JOIN_TIMEOUT_SECONDS = 30.0


def _version() -> str:
    try:
        return version("cqrs-dagster")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def build_app(
    settings: Settings, *, run_relay: bool = True, relay_process: bool = False
) -> FastAPI:
    """The FastAPI app for ``settings``; ``run_relay=False`` leaves the outbox to ``cqrs relay``.

    The relay runs as a thread of this process, or with ``relay_process`` as a supervised
    ``cqrs relay`` child (what ``cqrs api`` does: see :mod:`cqrs_dagster.command.relay_process`).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        side = CommandSide(settings)
        try:
            bus = side.bus()
        except BaseException:
            side.close()
            raise
        app.state.store = side.store
        app.state.bus = bus
        app.state.command_handler = side.handler
        # With a store that commits a batch at once (SQLite), every HTTP command goes through
        # one writer thread that group-commits (see group_commit); otherwise (Cosmos DB) each
        # command is its own write, run concurrently in the thread pool.
        committer = side.committer()
        app.state.committer = committer
        stop = threading.Event()
        thread: threading.Thread | None = None
        child: RelayProcess | None = None
        if run_relay and relay_process:
            child = RelayProcess(settings.data_dir)
            try:
                child.start()
            except BaseException:
                if committer is not None:
                    committer.close()
                side.close()
                raise
        elif run_relay:
            relay = side.relay()
            thread = threading.Thread(
                target=relay.run_forever,
                args=(stop, settings.relay_interval_seconds),
                name="outbox-relay",
                daemon=True,
            )
            thread.start()
            log.info("outbox relay started (every %s s when idle)", settings.relay_interval_seconds)
        app.state.relay_thread = thread
        app.state.relay_process = child
        loop = type(asyncio.get_running_loop())
        log.info("command side open (event loop: %s.%s)", loop.__module__, loop.__qualname__)
        try:
            yield
        finally:
            if committer is not None:
                committer.close()
            stop.set()
            if child is not None:
                child.stop()
            if thread is not None:
                thread.join(RELAY_JOIN_TIMEOUT_SECONDS)
                if thread.is_alive():
                    log.error("outbox relay did not stop within %s s", RELAY_JOIN_TIMEOUT_SECONDS)
                else:
                    log.info("outbox relay stopped")
            side.close()
            log.info("command side closed")

    app = FastAPI(
        title="cqrs-dagster",
        version=_version(),
        description="CQRS for analytics: send commands; read the Delta read models.",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.security = ApiSecurity.from_settings(settings)
    problems.install_problem_handlers(app)
    queries = build_query_api(settings)
    app.state.query_api = queries  # its order lookup and lookup counters (tests, figures)
    app.add_middleware(OrderLookupFastPath, get_order=queries.get_order)
    app.add_middleware(commands.CommandFastPath)
    app.include_router(commands.router)
    app.include_router(queries.router)
    app.add_api_route(
        "/api/v1/healthz",
        healthz,
        methods=["GET"],
        tags=["health"],
        summary="Health of the write store, the bus and the relay",
        response_model=None,
        responses={200: {"description": "All checks pass."}, **problem_responses(503)},
    )
    extra_components = {**problems.openapi_components(), **commands.openapi_components()}
    keyed = not app.state.security.open
    app.openapi = lambda: _openapi(app, extra_components, keyed=keyed)  # type: ignore[method-assign]
    return app


# Answers only a keyed API gives: with no keys (open, loopback-only) nothing is refused or throttled.
_KEYED_ONLY_STATUSES = ("401", "403", "429")


def _openapi(app: FastAPI, extra_components: dict[str, Any], *, keyed: bool) -> dict[str, Any]:
    """FastAPI's document plus the schemas of bodies that the routes decode themselves.

    It describes the mode the app runs in: with API keys, every guarded operation declares the
    ``ApiKey`` / ``Bearer`` schemes and its 401/403/429 answers; without keys (open mode) the
    document declares no security and no such answers, since none is enforced.
    """
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            description=app.description,
            routes=app.routes,
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, component in extra_components.items():
            schemas.setdefault(name, component)
        if not keyed:
            _drop_security(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _drop_security(schema: dict[str, Any]) -> None:
    schema.get("components", {}).pop("securitySchemes", None)
    schema.pop("security", None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            operation.pop("security", None)
            responses = operation.get("responses", {})
            for status in _KEYED_ONLY_STATUSES:
                responses.pop(status, None)


def healthz(request: Request) -> Response:
    """200 when the store and the bus answer and the relay (thread or child process, if any) runs."""
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        state.store.command_result("healthz-probe")
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"failed: {type(exc).__name__}"
    try:
        state.bus.partitions_info()
        checks["bus"] = "ok"
    except Exception as exc:
        checks["bus"] = f"failed: {type(exc).__name__}"
    thread: threading.Thread | None = state.relay_thread
    child: RelayProcess | None = state.relay_process
    if thread is None and child is None:
        checks["relay"] = "disabled"
    else:
        running = thread.is_alive() if thread is not None else child is not None and child.alive()
        checks["relay"] = "ok" if running else "stopped"
    failing = [name for name, status in checks.items() if status not in ("ok", "disabled")]
    if failing:
        log.warning("health check failing: %s", checks)
        return problem_response(503, "unavailable", f"failing checks: {', '.join(failing)}")
    return JSONResponse({"status": "ok", "checks": checks})
