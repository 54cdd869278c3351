"""Every failure becomes an RFC 7644 §3.12 ``Error`` body, in this one module.

Exceptions are looked up along their class hierarchy: scim2-models' protocol
exceptions carry their own status and ``scimType``; the store's domain errors
map to theirs; anything unexpected is a 500 with a generic detail and a
logged traceback, never a traceback in the body.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic
from scim2_models import Error, SCIMException
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from identity_store.errors import (
    ConcurrentUpdateError,
    ConflictError,
    InvalidCursorError,
    InvalidFilterError,
    InvalidSortError,
    NotFoundError,
    StateError,
    StoreError,
    UnavailableError,
    ValidationError,
    ValueRefusedError,
    VersionMismatchError,
)

from .responses import ScimResponse

logger = logging.getLogger("idstore.errors")

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
RETRY_AFTER = {"Retry-After": "5"}


class ScimError(Exception):
    """An error this server raises itself, with its status and ``scimType``."""

    def __init__(
        self,
        status: int,
        detail: str,
        scim_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type
        self.headers = headers


def error_body(status: int, detail: str, scim_type: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return body


def error_response(
    status: int, detail: str, scim_type: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    return ScimResponse(error_body(status, detail, scim_type), status_code=status, headers=headers)


def _from_validation_error(exc: pydantic.ValidationError) -> tuple[int, str, str | None]:
    errors = Error.from_validation_errors(exc)
    first = errors[0] if errors else Error(status=400, scim_type="invalidValue", detail=str(exc))
    detail = "; ".join(e.detail or "" for e in errors[:5]) or "invalid value"
    return int(first.status or 400), detail, first.scim_type or "invalidValue"


def _failure(cause: BaseException | None, *, with_message: bool = False) -> str:
    """A database failure named by its class and SQLSTATE, for the log. A
    refused value's message stays out: the database quotes the value there
    (``invalid input syntax for type integer: "<userName>"``); a lost
    connection's first line (``Connect call failed``) is kept."""
    if cause is None:
        return "no cause"
    driver_error = getattr(cause, "orig", None) or cause
    sqlstate = getattr(driver_error, "sqlstate", None) or getattr(driver_error, "pgcode", None)
    described = type(driver_error).__name__
    if sqlstate:
        described += f" (SQLSTATE {sqlstate})"
    if with_message and (message := str(driver_error).strip()):
        described += f": {message.splitlines()[0]}"
    return described


def _from_store_error(error: StoreError) -> tuple[int, str, str | None, dict[str, str] | None]:
    """RFC 7644 §3.12 status and ``scimType`` of each store error."""
    if isinstance(error, NotFoundError):
        return 404, error.detail, None, None
    if isinstance(error, ConflictError):
        return 409, error.detail, "uniqueness", None
    if isinstance(error, ConcurrentUpdateError):
        return 409, error.detail, None, None
    if isinstance(error, StateError):
        return 409, error.detail, None, None
    if isinstance(error, VersionMismatchError):
        return 412, error.detail, None, None
    if isinstance(error, InvalidCursorError):
        return 400, error.detail, "invalidCursor", None
    if isinstance(error, InvalidFilterError):
        return 400, error.detail, "invalidFilter", None
    if isinstance(error, InvalidSortError):
        # Not a filter: RFC 7644 §3.12 has invalidValue for a value "not
        # compatible with the operation or attribute type".
        return 400, error.detail, "invalidValue", None
    if isinstance(error, ValidationError):
        return 400, error.detail, "invalidValue", None
    if isinstance(error, ValueRefusedError):
        # The client's mistake, though the store's own checks should have
        # caught it before the database did.
        logger.warning("database refused a value: %s", _failure(error.__cause__))
        return 400, error.detail, "invalidValue", None
    if isinstance(error, UnavailableError):
        logger.warning("database unavailable: %s", _failure(error.__cause__, with_message=True))
        return 503, error.detail, None, RETRY_AFTER
    return 400, error.detail, None, None


def describe(exc: BaseException) -> tuple[int, str, str | None, dict[str, str] | None]:
    """Status, detail, ``scimType`` and extra headers for ``exc``."""
    if isinstance(exc, ScimError):
        return exc.status, exc.detail, exc.scim_type, exc.headers
    if isinstance(exc, SCIMException):
        return exc.status, exc.detail, exc.scim_type or None, None
    if isinstance(exc, pydantic.ValidationError):
        status, detail, scim_type = _from_validation_error(exc)
        return status, detail, scim_type, None
    if isinstance(exc, StoreError):
        return _from_store_error(exc)
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), None, dict(exc.headers or {}) or None
    logger.exception("unexpected error", exc_info=exc)
    return 500, "internal server error", None, None


async def handle(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for every exception class."""
    status, detail, scim_type, headers = describe(exc)
    return error_response(status, detail, scim_type, headers)


def handlers() -> dict[Any, Any]:
    """Exception handlers for Starlette. Known classes are handled inside the
    routing (so the response is all that happens); ``Exception`` goes to
    Starlette's server-error middleware, which answers our generic 500 body
    and re-raises so the server logs the traceback."""
    known = (ScimError, SCIMException, pydantic.ValidationError, StoreError, HTTPException)
    table: dict[Any, Any] = dict.fromkeys(known, handle)
    table[Exception] = handle
    return table
