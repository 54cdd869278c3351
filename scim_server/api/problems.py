"""Every failure of ``/api/v1`` as an RFC 9457 ``application/problem+json``
body, in this one module.

The status of a store error, and the headers and logging that go with it,
come from :func:`scim_server.errors.describe`, the one table the SCIM side
answers from too (``NotFoundError`` 404, ``ConflictError`` 409, ...,
``UnavailableError`` 503 with ``Retry-After``; anything unexpected a 500
with a generic detail and a logged traceback, never a traceback in the
body). This module adds what problem+json has and SCIM does not: a
``type`` URI and ``title`` per kind of problem, looked up along the
exception's class hierarchy, the request's id, and the list of invalid
fields of a request FastAPI refused (its 422, answered here as 400).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.exceptions import RequestValidationError, ResponseValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from identity_store.errors import (
    ConcurrentUpdateError,
    ConflictError,
    InvalidCursorError,
    NotFoundError,
    StateError,
    StoreError,
    UnavailableError,
    ValidationError,
    ValueRefusedError,
    VersionMismatchError,
)

from ..errors import ScimError, describe
from ..json_body import BodyError

logger = logging.getLogger("idstore.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:idstore:problem:"


class FieldError(BaseModel):
    """One invalid part of a request."""

    location: list[str | int] = Field(
        description='Where: `["body", "permissions", 3]`, `["query", "count"]`, '
        '`["path", "roleId"]`.'
    )
    detail: str
    type: str = Field(description="pydantic's error type (`string_too_long`, `missing`...).")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(populate_by_name=True)

    type: str = Field(
        description="The kind of problem, a URI (`urn:idstore:problem:not-found`); "
        "clients branch on it."
    )
    title: str = Field(description="The kind of problem, for people; the same for every `type`.")
    status: int
    detail: str = Field(description="This occurrence, for people.")
    instance: str | None = Field(default=None, description="The request's path.")
    request_id: str | None = Field(
        default=None,
        alias="requestId",
        description="The request's `X-Request-Id`, as logged and audited.",
    )
    errors: list[FieldError] | None = Field(
        default=None, description="The invalid fields, for a request that failed validation."
    )


class ProblemError(HTTPException):
    """A problem this API raises itself (an HTTPException, so that FastAPI
    lets it through while it reads a body)."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.kind = kind
        self.errors = errors


TITLES = {
    "invalid-request": "The request is not valid",
    "invalid-body": "The request body is not JSON this API reads",
    "invalid-value": "A value was refused",
    "invalid-cursor": "The cursor was not issued for this list",
    "unauthorized": "A valid bearer token is required",
    "insufficient-scope": "The token's scopes do not allow this",
    "not-found": "Not found",
    "no-such-endpoint": "No such endpoint",
    "method-not-allowed": "Method not allowed",
    "conflict": "The value is taken",
    "state-conflict": "The resource is not in a state this applies to",
    "precondition-failed": "The resource is not at the version If-Match names",
    "concurrent-update": "Concurrent changes kept winning",
    "too-large": "The request body is too large",
    "unsupported-media-type": "The body's media type is not one this endpoint reads",
    "unavailable": "The database is unavailable; retry later",
    "internal": "Internal server error",
    "not-a-user-token": "The token is not bound to a user",
    "user-not-active": "The user may not use its token now",
    "keys-unavailable": "The token issuer's signing keys cannot be fetched; retry later",
}
"""The title of each kind of problem; the kind, prefixed, is the ``type``."""

STORE_KINDS: dict[type[StoreError], str] = {
    NotFoundError: "not-found",
    ConflictError: "conflict",
    StateError: "state-conflict",
    VersionMismatchError: "precondition-failed",
    ConcurrentUpdateError: "concurrent-update",
    InvalidCursorError: "invalid-cursor",
    ValidationError: "invalid-request",
    ValueRefusedError: "invalid-value",
    UnavailableError: "unavailable",
}

STATUS_KINDS = {
    400: "invalid-request",
    401: "unauthorized",
    403: "insufficient-scope",
    404: "no-such-endpoint",
    405: "method-not-allowed",
    409: "conflict",
    412: "precondition-failed",
    413: "too-large",
    415: "unsupported-media-type",
    503: "unavailable",
}
"""The kind of an HTTP error raised by routing or authentication, by status."""

BODY_KINDS = {
    "tooLarge": "too-large",
    "invalidSyntax": "invalid-body",
    "invalidValue": "invalid-value",
}


def body_problem(exc: BodyError) -> ProblemError:
    """The problem of a body :mod:`scim_server.json_body` refused."""
    return ProblemError(exc.status, BODY_KINDS[exc.kind], exc.detail)


def _kind(exc: BaseException, status: int) -> str:
    if isinstance(exc, ProblemError):
        return exc.kind
    for cls in type(exc).__mro__:
        if cls in STORE_KINDS:
            return STORE_KINDS[cls]
    if status >= 500 and status != 503:
        return "internal"
    return STATUS_KINDS.get(status, "invalid-request" if status < 500 else "internal")


def _shortened(name: str, limit: int = 64) -> str:
    """A location part as sent (an unknown field's name is the caller's),
    cut to ``limit`` characters."""
    return name if len(name) <= limit else name[:limit] + "…"


def field_errors(exc: RequestValidationError) -> list[FieldError]:
    """pydantic's errors of a request, by location; never the input itself
    (it may be huge, or personal)."""
    found = []
    for error in exc.errors():
        location = [
            part if isinstance(part, int) else _shortened(str(part))
            for part in error.get("loc", ())
        ]
        found.append(
            FieldError(
                location=location,
                detail=str(error.get("msg", "invalid")),
                type=str(error.get("type", "invalid")),
            )
        )
    return found


def _summary(errors: list[FieldError]) -> str:
    first = errors[0] if errors else None
    if first is None:
        return "the request is not valid"
    where = ".".join(str(part) for part in first.location) or "the request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.detail}{more}"


def problem(
    request: Request,
    status: int,
    kind: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[FieldError] | None = None,
) -> Response:
    """The ``application/problem+json`` response."""
    body = Problem(
        type=TYPE_PREFIX + kind,
        title=TITLES.get(kind, kind),
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=request.scope.get("state", {}).get("request_id"),
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(by_alias=True, exclude_none=True),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def describe_problem(
    exc: BaseException,
) -> tuple[int, str, str, dict[str, str] | None, list[FieldError] | None]:
    """Status, kind, detail, headers and field errors of ``exc``."""
    if isinstance(exc, RequestValidationError):
        errors = field_errors(exc)
        return 400, "invalid-request", _summary(errors), None, errors
    if isinstance(exc, ProblemError):
        return (
            exc.status_code,
            exc.kind,
            str(exc.detail),
            dict(exc.headers or {}) or None,
            exc.errors,
        )
    if isinstance(exc, ResponseValidationError):
        # Our answer does not match its own schema: our bug, not the caller's.
        logger.error("response failed its schema: %s", exc.errors())
        return 500, "internal", "internal server error", None, None
    status, detail, _, headers = describe(exc)
    if isinstance(exc, ValidationError) and exc.location:
        # A value inside the body (customData.address.zip, crudSchema.type).
        location: list[str | int] = [
            "body",
            *(_shortened(p) if isinstance(p, str) else p for p in exc.location),
        ]
        errors = [FieldError(location=location, detail=detail, type="value_error")]
        return status, _kind(exc, status), detail, headers, errors
    if isinstance(exc, HTTPException) and not isinstance(exc, ScimError):
        if status == 404:
            detail = "no endpoint at this path"
        elif status == 405:
            detail = "the endpoint does not take this method"
    return status, _kind(exc, status), detail, headers, None


METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method the request's path takes. Starlette's 405 names only
    those of the first route matching the path, and here each method of a
    path is a route of its own."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


async def handle(request: Request, exc: Exception) -> Response:
    """FastAPI exception handler for every exception class."""
    status, kind, detail, headers, errors = describe_problem(exc)
    if status == 405 and kind == "method-not-allowed":
        headers = (headers or {}) | {"Allow": allowed_methods(request)}
    return problem(request, status, kind, detail, headers=headers, errors=errors)


def handlers() -> dict[Any, Any]:
    """Known classes are handled inside the routing; ``Exception`` goes to
    Starlette's server-error middleware, which answers our generic 500 and
    re-raises so the server logs the traceback (as on the SCIM side)."""
    known = (
        RequestValidationError,
        ResponseValidationError,
        ProblemError,
        ScimError,
        StoreError,
        HTTPException,
    )
    table: dict[Any, Any] = dict.fromkeys(known, handle)
    table[Exception] = handle
    return table


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries of problem statuses (their media type
    is set to ``application/problem+json`` when the description is built)."""
    descriptions = {
        400: "The request is not valid (`invalid-request`, `invalid-body`, `invalid-value`, "
        "`invalid-cursor`); `errors` lists the invalid fields.",
        401: "No valid bearer token (`unauthorized`); with `WWW-Authenticate: Bearer`.",
        403: "The token lacks the scope (`insufficient-scope`).",
        404: "Not found (`not-found`).",
        409: "A conflict (`conflict`, `state-conflict`, `concurrent-update`).",
        412: "The resource is not at the version `If-Match` names (`precondition-failed`).",
        413: "The body exceeds `IDSTORE_MAX_PAYLOAD_SIZE` (`too-large`).",
        415: "The body is not `application/json` (`unsupported-media-type`).",
        500: "An unexpected failure (`internal`); the detail is generic, the log has the rest.",
        503: "The database is unavailable (`unavailable`); with `Retry-After`.",
    }
    headers = {
        401: {
            "WWW-Authenticate": {
                "description": '`Bearer realm="idstore"`, with '
                '`error="invalid_token"` for a token that is not valid.',
                "schema": {"type": "string"},
            }
        },
        403: {
            "WWW-Authenticate": {
                "description": '`Bearer ..., error="insufficient_scope", scope="..."`.',
                "schema": {"type": "string"},
            }
        },
        503: {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}},
    }
    return {
        status: {"model": Problem, "description": descriptions[status]}
        | ({"headers": headers[status]} if status in headers else {})
        for status in statuses
    }
