"""Framework-free command execution shared by the HTTP hosts (FastAPI route, Azure Functions).

Decoding: ``application/json`` only, at most 1 MiB, JSON numbers as :class:`~decimal.Decimal` so
money never passes through binary floating point. Applying: pydantic validation (422 with field
paths), domain errors (404 / 409), a write store that is down (503 with ``Retry-After``). Every
failure is a :class:`ProblemError`; all but the 503 write nothing, and a 503's command may have
committed before the store's answer was lost, so its retry with the same ``commandId`` replays it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, NoReturn

import orjson
from pydantic import ValidationError

from cqrs_dagster.command.handler import CommandHandler, CommandResult
from cqrs_dagster.command.writestore.port import StoreUnavailable
from cqrs_dagster.domain.commands import COMMAND_TYPES, Command, parse_command
from cqrs_dagster.domain.errors import AggregateNotFound, DomainError

from .problems import ProblemError, field_errors

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB
JSON_MEDIA_TYPE = "application/json"
#: Seconds a client waits before retrying a command the write store could not take (503).
RETRY_AFTER_SECONDS = 2


def check_media_type(content_type: str | None) -> None:
    """415 unless the body is declared as JSON."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE and not media_type.endswith("+json"):
        raise ProblemError(
            415, "unsupported-media-type", "send the command as Content-Type: application/json"
        )


def too_large() -> ProblemError:
    return ProblemError(
        413, "payload-too-large", f"the body is larger than {MAX_BODY_BYTES} bytes (1 MiB)"
    )


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _has_float(value: Any) -> bool:
    """Whether orjson's result holds a float anywhere (iterative: no recursion, no generators)."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return False


def decode_json(body: bytes) -> Any:
    """The body as JSON with numbers as Decimal / int; 413 over 1 MiB, 400 when malformed.

    orjson decodes first (several times faster than ``json``). Its result is used only when it
    holds no float: a fractional or exponent number (or an integer past 64 bits, which orjson
    turns into a float) is decoded again by ``json`` with ``Decimal``, and so is everything
    orjson refuses (surrogates, a BOM, other encodings, NaN, too deep), so that every body gets
    exactly the ``json`` module's answer.
    """
    if len(body) > MAX_BODY_BYTES:
        raise too_large()
    try:
        fast = orjson.loads(body)
        if not _has_float(fast):
            return fast
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body, parse_float=Decimal, parse_int=int, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors; keep the detail short.
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise ProblemError(
            400, "malformed-request", f"the body is not valid JSON: {reason}"
        ) from exc


def validate_command(raw: Any) -> Command:
    """A decoded body as a command; 422 ProblemError with field paths when it is not one."""
    try:
        return parse_command(raw)
    except ValidationError as exc:
        errors = field_errors(
            exc.errors(include_url=False, include_input=False), tags=COMMAND_TYPES
        )
        raise ProblemError(422, "validation", "the command is not valid", errors=errors) from exc


def domain_problem(exc: DomainError) -> ProblemError:
    """404 for an unknown aggregate, 409 for every other domain error."""
    if isinstance(exc, AggregateNotFound):
        return ProblemError(404, exc.code, exc.detail)
    return ProblemError(409, exc.code, exc.detail)  # InvalidTransition, AlreadyExists, ...


def unavailable_problem(exc: StoreUnavailable) -> ProblemError:
    """503 for a write store that is down: retry later with the same ``commandId``."""
    return ProblemError(
        503,
        "unavailable",
        "the write store is unavailable, so the command was not acknowledged; retry it after "
        "Retry-After seconds with the same commandId (if it was stored before the failure, the "
        f"retry returns its original result instead of applying it twice). Cause: {exc}",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def apply_command(raw: Any, handler: CommandHandler, *, user_id: str) -> CommandResult:
    """Validate a decoded body as a command and apply it (422 / 404 / 409 / 503 as ProblemError)."""
    command = validate_command(raw)
    try:
        return handler.handle(command, user_id=user_id)
    except DomainError as exc:
        raise domain_problem(exc) from exc
    except StoreUnavailable as exc:
        raise unavailable_problem(exc) from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # money stays an exact decimal string
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def result_status_and_body(result: CommandResult) -> tuple[int, bytes]:
    """201 for an applied command, 200 for a replayed commandId; the body as JSON bytes."""
    return (200 if result.replayed else 201), orjson.dumps(result.body, default=_json_default)
