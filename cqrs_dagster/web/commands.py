"""The command API: ``POST /api/v1/commands`` -> group commit -> 201 with the new state.

The body is read and decoded here, not by FastAPI, so that (1) its size is capped before it is
buffered whole and (2) JSON numbers are decoded as :class:`~decimal.Decimal` and money never passes
through binary floating point. Every error is problem+json and changes nothing.

The endpoint is ``async``: it validates on the event loop and awaits the app's
:class:`~cqrs_dagster.command.group_commit.GroupCommitter`, which answers once the commit that
holds the command is durable. Many concurrent requests thus share one fsync, and no thread-pool
thread is parked per request. With a store that cannot commit a batch at once (Cosmos DB,
``WriteStore.group_commit`` False) each command runs ``CommandHandler.handle`` in the thread
pool instead, concurrently, as before group commit.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cqrs_dagster.command.group_commit import CommitterClosed, GroupCommitter
from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.writestore.port import StoreUnavailable
from cqrs_dagster.domain.commands import COMMAND_ADAPTER, COMMAND_TYPES
from cqrs_dagster.domain.errors import DomainError

from .execution import (
    JSON_MEDIA_TYPE,
    MAX_BODY_BYTES,
    check_media_type,
    decode_json,
    domain_problem,
    result_status_and_body,
    too_large,
    unavailable_problem,
    validate_command,
)
from .problems import ProblemError, answer_unhandled, problem_response, problem_responses
from .security import AUTH_RESPONSES, ApiSecurity, Principal, presented_key, require_role

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["commands"])
COMMANDS_PATH = "/api/v1/commands"


class CommandAccepted(BaseModel):
    """What a command did: the aggregate's new version and state, and the events it recorded."""

    aggregateId: str
    aggregateType: Literal["Customer", "Order"]
    version: int
    eventIds: list[str]
    state: dict[str, Any]
    consistencyToken: str


def openapi_components() -> dict[str, Any]:
    """JSON schemas of the command union (``Command``) and its members for ``components``."""
    schema = COMMAND_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schema.pop("$defs", {})
    return {"Command": schema, **defs}


async def read_json_body(request: Request) -> Any:
    """The request body decoded as JSON (numbers as Decimal / int), at most 1 MiB.

    The size is checked on Content-Length and while streaming, before the body is buffered whole.
    """
    return await _read_json(request.headers, request.stream())


async def _read_json(headers: Mapping[str, str], chunks: AsyncIterator[bytes]) -> Any:
    check_media_type(headers.get("content-type"))
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProblemError(400, "malformed-request", "Content-Length is not a number")
        if int(declared) > MAX_BODY_BYTES:
            raise too_large()
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        parts.append(chunk)
    return decode_json(b"".join(parts))


async def _execute(state: Any, raw: Any, user_id: str) -> tuple[int, bytes]:
    """Validate, apply through the group commit, and render: (status, JSON body)."""
    command = validate_command(raw)
    committer: GroupCommitter | None = state.committer
    try:
        if committer is not None:
            result = await committer.execute(command, user_id)
        else:
            handler: CommandHandler = state.command_handler
            result = await run_in_threadpool(handler.handle, command, user_id=user_id)
    except DomainError as exc:
        raise domain_problem(exc) from exc
    except StoreUnavailable as exc:
        raise unavailable_problem(exc) from exc
    except CommitterClosed as exc:
        raise ProblemError(503, "unavailable", "the command API is shutting down") from exc
    return result_status_and_body(result)


_DESCRIPTION = f"""
Send one command as a JSON object whose `type` is one of {", ".join(COMMAND_TYPES)}.

* **201**: the command was applied; the body holds the aggregate's new version and state, the
  ids of the events it recorded, and a `consistencyToken` (`<type>:<id>:<version>`) that the
  query API accepts for read-your-writes.
* **200**: the `commandId` was processed before: nothing is written and the body is the
  ORIGINAL response of that command, even if this request's other fields differ. Retrying a
  command with its `commandId` is therefore always safe. A command sent without one gets an id
  from the server (its events' `causationId`) that is not recorded: only a client's own
  `commandId` makes a retry safe.
* Money (`unitPrice`) is an exact decimal with at most 2 places: send a string (`"12.50"`) or a
  JSON number; responses render money as decimal strings.
* Errors are `application/problem+json` (RFC 9457) and change nothing: 400 malformed JSON,
  401/403 key or role, 404 unknown aggregate, 409 already exists / invalid transition / version
  conflict (`expectedVersion`), 413 body over 1 MiB, 415 not JSON, 422 invalid fields
  (`errors[].path` is a JSON pointer into the body, e.g. `items/0/unitPrice`), 429 rate limit,
  503 write store unavailable (with `Retry-After`): the command was not acknowledged and may or
  may not have been stored, so retry it with the same `commandId` (a stored one replays).
"""


@router.post(
    COMMANDS_PATH.removeprefix("/api/v1"),
    status_code=201,
    response_model=None,
    summary="Send a command",
    description=_DESCRIPTION,
    operation_id="postCommand",
    responses={
        201: {"model": CommandAccepted, "description": "The command was applied."},
        200: {
            "model": CommandAccepted,
            "description": "Replayed commandId: the original response; nothing was written.",
        },
        **problem_responses(400, 404, 409, 413, 415, 422, 503),
        **AUTH_RESPONSES,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {JSON_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Command"}}},
        }
    },
)
async def post_command(
    request: Request,
    principal: Annotated[Principal, Depends(require_role("writer"))],
    raw: Annotated[Any, Depends(read_json_body)],
) -> Response:
    status, body = await _execute(request.app.state, raw, principal.id)
    return Response(body, status_code=status, media_type=JSON_MEDIA_TYPE)


class CommandFastPath:
    """ASGI middleware serving ``POST /api/v1/commands`` without FastAPI's per-request machinery.

    Same behaviour as :func:`post_command` (which stays the documented route, and the fallback
    when this middleware is not installed): authenticate, authorize ``writer`` and rate-limit
    first (401/403/429), then the body checks (415/413/400), validation (422), the group commit
    (404/409), all errors as problem+json. It skips the routing, dependency solving and
    exception-middleware layers, which cost more CPU per command than deciding the command.
    Unexpected errors propagate to the app's error middleware (500 problem), as for any route.
    """

    def __init__(self, app: ASGIApp, *, front_of: Starlette | None = None) -> None:
        self.app = app
        self.front_of = front_of

    @classmethod
    def in_front_of(cls, app: Starlette) -> CommandFastPath:
        """The fast path as the OUTERMOST ASGI app, in front of ``app``'s whole middleware stack.

        Commands then also skip Starlette's error middleware and FastAPI's telemetry and
        body-limit middleware (~40% of the event loop's time per command, py-spy under wrk);
        every other request goes to ``app`` unchanged. An unexpected error answers what the
        app's error handler would: a logged 500 problem. What servers serve (``cqrs api``).
        """
        return cls(app, front_of=app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != COMMANDS_PATH:
            await self.app(scope, receive, send)
            return
        if self.front_of is None:
            await self._serve(scope, receive, send)
            return
        scope["app"] = self.front_of  # as Starlette sets it for its routes
        try:
            await self._serve(scope, receive, send)
        except Exception as exc:  # the app's error middleware is behind us: do its work
            await answer_unhandled(scope, receive, send, f"POST {COMMANDS_PATH}", exc)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        headers = Headers(scope=scope)
        client = scope.get("client")
        try:
            security: ApiSecurity = state.security
            principal = security.admit(
                presented_key(headers), client[0] if client else "unknown", "writer"
            )
            raw = await _read_json(headers, _body_chunks(receive))
            status, body = await _execute(state, raw, principal.id)
        except ProblemError as exc:
            response = problem_response(
                exc.status, exc.slug, exc.detail, errors=exc.errors, headers=exc.headers
            )
            await response(scope, receive, send)
            return
        except _Disconnected:
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _Disconnected(Exception):
    """The client went away before sending its whole body."""


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
