"""The command side hosted on Azure Functions, free of the Functions SDK where it can be.

:func:`execute_command` is the framework-free core of ``POST /api/v1/commands``: bytes in,
``(status, headers, body bytes)`` out, with the same rules as the FastAPI route in
:mod:`cqrs_dagster.web.commands` (1 MiB cap, ``application/json`` only, JSON numbers decoded as
Decimal, 422 with field paths, 404/409 for domain errors, 201 applied / 200 replayed,
problem+json for every error, nothing written on any error). :class:`FunctionsHost` holds the
adapters one Functions worker process reuses across invocations (a
:class:`~cqrs_dagster.wiring.CommandSide` built from :class:`Settings` on first use) and adapts
``azure.functions`` requests; ``cqrs_dagster/function_app.py`` only
declares the triggers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import azure.functions as func
import orjson

from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.settings import Settings, load_settings
from cqrs_dagster.wiring import CommandSide

from .execution import (
    JSON_MEDIA_TYPE,
    apply_command,
    check_media_type,
    decode_json,
    result_status_and_body,
)
from .problems import PROBLEM_MEDIA_TYPE, ProblemError, problem_body
from .security import API_KEY_HEADER, ApiSecurity

RELAY_MAX_ROUNDS = 100  # per timer tick: bounded, the next tick continues

Outcome = tuple[int, dict[str, str], bytes]

log = logging.getLogger(__name__)


def problem(exc: ProblemError) -> Outcome:
    body = orjson.dumps(problem_body(exc.status, exc.slug, exc.detail, exc.errors))
    return exc.status, {"Content-Type": PROBLEM_MEDIA_TYPE, **exc.headers}, body


def execute_command(
    body: bytes,
    handler: CommandHandler,
    *,
    content_type: str | None = JSON_MEDIA_TYPE,
    user_id: str = "anonymous",
) -> Outcome:
    """Validate and apply one command: ``(status, headers, body)``, problem+json on error."""
    try:
        check_media_type(content_type)
        result = apply_command(decode_json(body), handler, user_id=user_id)
    except ProblemError as exc:
        return problem(exc)
    status, payload = result_status_and_body(result)
    return status, {"Content-Type": JSON_MEDIA_TYPE}, payload


class FunctionsHost:
    """The adapters one Functions worker reuses: write store, bus, handler, relay, API keys."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.side = CommandSide(settings, source="cqrs-functions")
        self.store = self.side.store
        self.handler: CommandHandler = self.side.handler
        self.security = ApiSecurity.from_settings(settings)

    def relay(self) -> OutboxRelay:
        """The relay, connecting to the bus on first use (the HTTP function never needs it)."""
        return self.side.relay()

    def handle_http(self, req: func.HttpRequest) -> func.HttpResponse:
        """``POST /api/v1/commands``: API key (if configured) -> writer role -> command."""
        headers: Mapping[str, str] = req.headers
        try:
            presented = headers.get(API_KEY_HEADER) or _bearer(headers.get("Authorization"))
            client = headers.get("X-Forwarded-For", "unknown").split(",")[0].strip()
            principal = self.security.admit(presented, client, "writer")
        except ProblemError as exc:
            return _response(problem(exc))
        outcome = execute_command(
            req.get_body(),
            self.handler,
            content_type=headers.get("Content-Type"),
            user_id=principal.id,
        )
        return _response(outcome)

    def run_relay(self) -> int:
        """Publish pending outbox events (at most ``RELAY_MAX_ROUNDS`` batches); how many."""
        return self.relay().drain(RELAY_MAX_ROUNDS)

    def close(self) -> None:
        self.side.close()


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


def _response(outcome: Outcome) -> func.HttpResponse:
    status, headers, body = outcome
    return func.HttpResponse(
        body=body,
        status_code=status,
        headers={k: v for k, v in headers.items() if k != "Content-Type"},
        mimetype=headers.get("Content-Type", JSON_MEDIA_TYPE),
    )


_host: FunctionsHost | None = None
_host_lock = threading.Lock()


def default_host() -> FunctionsHost:
    """The worker's host, built from the app settings (``CQRS_*``) on first use."""
    global _host
    with _host_lock:
        if _host is None:
            _host = FunctionsHost(load_settings())
        return _host


def reset_default_host() -> None:
    """Close and forget the worker's host (the next invocation builds a new one)."""
    global _host
    with _host_lock:
        if _host is not None:
            _host.close()
        _host = None
