"""``GET /api/v1/orders/{order_id}`` without FastAPI's per-request machinery (raw ASGI).

Read-your-writes readers keep hundreds of ``?consistent_with=...&wait_ms=...`` lookups in flight;
each projection commit answers ~all of them at once and each reader sends its next wait. Through
FastAPI's routing, dependency solving and parameter validation that burst costs the API's single
event loop ~0.5 ms per request, and plain lookups queue behind it. :class:`OrderLookupFastPath`
answers the same requests from the same code (:attr:`.queries.QueryApi.get_order`, the route's
own body), after the same ``reader`` admission (401/403/429 problems), for roughly a fifth of that.

It serves a request only when the route would certainly accept its parameters: ``GET``, one path
segment, no query parameter but ``consistent_with`` (the documented pattern and length) and
``wait_ms`` (decimal digits, 0..MAX_WAIT_MS), each at most once. Anything else (a parameter that
is not valid, or unknown, or repeated, another method or path) goes on to the app, whose route
answers it, 422 problems included: the error bodies are the route's by construction. The route
stays the documented operation (OpenAPI) and the fallback; problems raised while answering (404,
the 412 of a wait that ran out, a token the parser refuses: 422) are rendered as the app's problem
handler renders them. Installed by ``build_app`` as the outermost user middleware.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from cqrs_dagster.query import consistency

from .problems import ProblemError, answer_unhandled, problem_response
from .queries import OrderLookup
from .security import ApiSecurity, presented_key

ORDER_PATH_PREFIX = "/api/v1/orders/"
_TOKENS_RE = re.compile(consistency.TOKENS_PATTERN)
_WAIT_MS_RE = re.compile(r"[0-9]{1,9}")

Params = tuple[str | None, int]  # (consistent_with, wait_ms)


def served_params(query_string: bytes) -> Params | None:
    """The lookup's parameters when the route would accept them as they are, else None.

    Parsed as Starlette parses a query string (``parse_qsl`` of its Latin-1 text, blanks kept).
    """
    consistent_with: str | None = None
    wait_ms = 0
    if not query_string:
        return consistent_with, wait_ms
    seen: set[str] = set()
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in seen:
            return None
        seen.add(key)
        if key == "consistent_with":
            if len(value) > consistency.TOKENS_MAX_LENGTH or not _TOKENS_RE.fullmatch(value):
                return None
            consistent_with = value
        elif key == "wait_ms":
            if not _WAIT_MS_RE.fullmatch(value):
                return None
            wait_ms = int(value)
            if wait_ms > consistency.MAX_WAIT_MS:
                return None
        else:
            return None
    return consistent_with, wait_ms


def order_id_of(path: str) -> str | None:
    """The ``{order_id}`` of ``/api/v1/orders/{order_id}`` (one non-empty segment), else None."""
    if not path.startswith(ORDER_PATH_PREFIX):
        return None
    order_id = path[len(ORDER_PATH_PREFIX) :]
    return order_id if order_id and "/" not in order_id else None


class OrderLookupFastPath:
    """ASGI middleware: ``GET /api/v1/orders/{order_id}`` served by ``get_order`` directly."""

    def __init__(
        self, app: ASGIApp, *, get_order: OrderLookup, front_of: Starlette | None = None
    ) -> None:
        self.app = app
        self.get_order = get_order
        self.front_of = front_of

    @classmethod
    def in_front_of(cls, app: Starlette) -> OrderLookupFastPath:
        """The fast path as an outer ASGI app, in front of ``app``'s whole middleware stack (as
        :meth:`.commands.CommandFastPath.in_front_of`): lookups then also skip Starlette's error
        middleware and the telemetry and body-limit layers; an unexpected error answers what the
        app's error handler would (a logged 500 problem). ``app`` is a ``build_app`` app (its
        ``state.query_api`` answers). What servers serve (``cqrs api``)."""
        return cls(app, get_order=app.state.query_api.get_order, front_of=app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        order_id = order_id_of(scope["path"])
        params = None if order_id is None else served_params(scope["query_string"])
        if order_id is None or params is None:
            await self.app(scope, receive, send)
            return
        if self.front_of is None:
            await self._serve(scope, receive, send, order_id, params)
            return
        scope["app"] = self.front_of  # as Starlette sets it for its routes
        try:
            await self._serve(scope, receive, send, order_id, params)
        except Exception as exc:  # the app's error middleware is behind us: do its work
            await answer_unhandled(scope, receive, send, f"GET {scope['path']}", exc)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, order_id: str, params: Params
    ) -> None:
        consistent_with, wait_ms = params
        client = scope.get("client")
        try:
            security: ApiSecurity = scope["app"].state.security
            security.admit(
                presented_key(Headers(scope=scope)), client[0] if client else "unknown", "reader"
            )
            response = await self.get_order(order_id, consistent_with, wait_ms)
        except ProblemError as exc:
            response = problem_response(
                exc.status, exc.slug, exc.detail, errors=exc.errors, headers=exc.headers
            )
        await response(scope, receive, send)
