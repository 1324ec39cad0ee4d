"""RFC 9457 problem details (``application/problem+json``) for every HTTP error of the platform.

Each problem has a stable ``type`` URI (``https://cqrs-dagster.dev/problems/<slug>``), a ``title``
that is the same for every problem of that type, the HTTP ``status`` and a human ``detail``.
Validation problems add ``errors: [{path, message}]`` whose ``path`` is a JSON pointer into the
request body without the leading slash (``items/0/unitPrice``; ``""`` is the whole body).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://cqrs-dagster.dev/problems/"

log = logging.getLogger(__name__)

# slug -> title. The slug is the stable part of the type URI; clients switch on it.
TITLES: dict[str, str] = {
    "malformed-request": "Malformed request",
    "validation": "Invalid command or parameters",
    "unauthorized": "Missing or unknown API key",
    "forbidden": "Role not allowed",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "already-exists": "Already exists",
    "invalid-transition": "Invalid state transition",
    "version-conflict": "Version conflict",
    "duplicate-command": "Duplicate command",
    "domain-error": "Command rejected",
    "payload-too-large": "Payload too large",
    "unsupported-media-type": "Unsupported media type",
    "rate-limited": "Too many requests",
    "unavailable": "Service unavailable",
    "internal": "Internal server error",
    "http-error": "HTTP error",
}

_STATUS_SLUGS: dict[int, str] = {
    400: "malformed-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation",
    429: "rate-limited",
    503: "unavailable",
}


class FieldError(BaseModel):
    """One invalid field: where (JSON pointer without the leading slash) and why."""

    path: str = Field(examples=["items/0/unitPrice"])
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(examples=[PROBLEM_BASE + "validation"])
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


def type_uri(slug: str) -> str:
    return PROBLEM_BASE + slug


class ProblemError(Exception):
    """Raise anywhere in a request to answer with this problem (and change nothing)."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        errors: Sequence[Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})


def problem_body(
    status: int, slug: str, detail: str, errors: Sequence[Mapping[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type_uri(slug),
        "title": TITLES.get(slug, TITLES["http-error"]),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = [dict(e) for e in errors]
    return body


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    errors: Sequence[Mapping[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        orjson.dumps(problem_body(status, slug, detail, errors)),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def json_pointer(loc: Iterable[str | int]) -> str:
    """``("items", 0, "unitPrice")`` -> ``"items/0/unitPrice"`` (RFC 6901 escaping)."""
    return "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in loc)


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def field_errors(
    errors: Iterable[Mapping[str, Any]],
    *,
    skip: int = 0,
    tags: Sequence[str] = (),
    discriminator: str = "type",
) -> list[dict[str, str]]:
    """Pydantic error dicts -> ``[{path, message}]``.

    ``skip`` drops leading ``loc`` parts (FastAPI's ``"body"``); ``tags`` are a discriminated
    union's tags, which pydantic puts first in ``loc`` and which are not part of the body. An
    unknown or missing discriminator is reported at the discriminator's own path.
    """
    out: list[dict[str, str]] = []
    for error in errors:
        kind = error.get("type")
        loc = list(error.get("loc", ()))[skip:]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            allowed = ", ".join(tags) if tags else "a known type"
            missing = kind == "union_tag_not_found"
            message = f"{'is required' if missing else 'is unknown'}; must be one of: {allowed}"
            out.append({"path": json_pointer([*loc, discriminator]), "message": message})
            continue
        if loc and tags and loc[0] in tags:
            loc = loc[1:]
        out.append({"path": json_pointer(loc), "message": _message(error)})
    return out


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, typed as problem+json."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {
            "description": TITLES[_STATUS_SLUGS.get(status, "http-error")],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }


def openapi_components() -> dict[str, Any]:
    """JSON schemas of Problem and FieldError for ``components/schemas``."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"Problem": schema, **defs}


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status, exc.slug, exc.detail, errors=exc.errors, headers=exc.headers
    )


async def _on_request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        skip = 1 if loc and loc[0] == "body" else 0
        errors.extend(field_errors([err], skip=skip))
    return problem_response(422, "validation", "the request is not valid", errors=errors)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    slug = _STATUS_SLUGS.get(exc.status_code, "http-error")
    if exc.status_code == 404:
        detail = f"no resource at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    else:
        detail = str(exc.detail)
    return problem_response(exc.status_code, slug, detail, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal", "an unexpected error occurred")


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` a problem+json response."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)


async def answer_unhandled(
    scope: Scope, receive: Receive, send: Send, what: str, exc: BaseException
) -> None:
    """What the app's error middleware does for an unexpected error, for an ASGI fast path that
    serves requests in front of it: log it and answer a 500 problem (unless the answer had
    started or the client is gone)."""
    log.error("unhandled error on %s", what, exc_info=exc)
    response = problem_response(500, "internal", "an unexpected error occurred")
    try:
        await response(scope, receive, send)
    except Exception:
        log.debug("could not send the 500 problem", exc_info=True)
