"""What every ``/api/v1`` request goes through before its endpoint runs:
the bearer token and its scope, then the body's media type and limits.

FastAPI reads and parses a body before it solves any dependency, so these
steps live in the route class (FastAPI's documented hook for a custom
request, ``APIRoute.get_route_handler``) rather than in a dependency: a
caller without a valid token gets its 401 before a byte of its body is
parsed, and the body is read through :mod:`scim_server.json_body`, the
limits SCIM applies (``IDSTORE_MAX_PAYLOAD_SIZE``, ``IDSTORE_MAX_JSON_DEPTH``,
lone surrogates, huge integers, NUL characters), instead of the standard
library's unbounded ``json.loads``. FastAPI's own ``max_body_size`` is not
used: it answers ``text/plain`` when the response starts before the body
is read, and every error here is problem+json.

Scopes (SPEC §7): ``admin`` may do everything; ``authz:check`` only the
checks (:class:`CheckRoute`); ``scim:read`` and ``scim:write`` nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from fastapi import Depends, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from identity_store.actor import Actor
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.tokens import Principal

from .. import json_body
from ..auth import authenticate
from ..state import AppState, app_state
from .problems import ProblemError, body_problem
from .user_models import ULID

MOUNT = "/api/v1"
"""Where the server mounts the application (:func:`scim_server.api.mount`)."""


class UlidConvertor(Convertor[str]):
    """A path segment that is a ULID in the store's form: ``/users/{id:ulid}``
    never takes ``/users/count`` nor ``/users/with-id``, nor ``/jobs/{id:ulid}``
    ``/jobs/bulk-activation``, so each path has exactly the methods its
    description lists (a 405 names them). Registered when this module is
    imported, before any router's paths are compiled."""

    regex = ULID.strip("^$")

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("ulid", UlidConvertor())


class LimitedRequest(Request):
    """A request whose body FastAPI reads within the server's limits."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            settings = app_state(self).settings
            try:
                self._body = await json_body.read_limited(
                    self.stream(), self.headers.get("content-length"), settings.max_payload_size
                )
            except json_body.BodyError as exc:
                raise body_problem(exc) from exc
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            raw = await self.body()
            try:
                self._json = json_body.parse(raw, app_state(self).settings.max_json_depth)
            except json_body.BodyError as exc:
                raise body_problem(exc) from exc
        return self._json


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


@dataclass(frozen=True, slots=True)
class Caller:
    """An authorized request: the application's state, the token, the actor
    its changes are recorded under."""

    state: AppState
    principal: Principal
    actor: Actor

    @property
    def store(self) -> Store:
        return self.state.store

    @property
    def settings(self) -> Settings:
        return self.state.settings


def insufficient_scope(scope: str) -> ProblemError:
    return ProblemError(
        403,
        "insufficient-scope",
        f"the token lacks the {scope!r} scope",
        headers={
            "WWW-Authenticate": f'Bearer realm="idstore", error="insufficient_scope", '
            f'scope="{scope}"'
        },
    )


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters an operation declares, its dependencies' included."""
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


def unknown_query(request: Request, known: set[str]) -> ProblemError | None:
    """A 400 naming the query parameters the operation does not declare: a
    misspelt filter (``resourcetype=``) would otherwise be ignored and the
    answer wider than asked, as bodies refuse unknown fields; and one naming
    those given more than once (``q=a&q=b`` would search for ``b`` alone)."""
    unknown = sorted({name for name in request.query_params if name not in known})
    if unknown:
        shown = ", ".join(repr(name[:64]) for name in unknown[:10])
        return ProblemError(400, "invalid-request", f"unknown query parameter(s): {shown}")
    # None takes a list: a repeated one would be read as its last value.
    times = Counter(name for name, _ in request.query_params.multi_items())
    repeated = sorted(name for name, count in times.items() if count > 1)
    if repeated:
        shown = ", ".join(repr(name[:64]) for name in repeated[:10])
        return ProblemError(400, "invalid-request", f"query parameter(s) given twice: {shown}")
    return None


class AdminRoute(APIRoute):
    """A route only ``admin`` tokens may call."""

    scope: ClassVar[str] = "admin"

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope = self.scope
        takes_body = self.body_field is not None
        known_query = _query_names(self.dependant)

        async def authorized(request: Request) -> Response:
            principal = await authenticate(request)
            if not principal.allows(scope):
                raise insufficient_scope(scope)
            if (problem := unknown_query(request, known_query)) is not None:
                raise problem
            if takes_body and not _is_json(request.headers.get("content-type", "")):
                raise ProblemError(
                    415,
                    "unsupported-media-type",
                    "send the body as application/json",
                )
            request.state.api_caller = Caller(
                state=app_state(request),
                principal=principal,
                actor=Actor(
                    name=f"token:{principal.name}",
                    token_id=principal.token_id,
                    request_id=request.scope.get("state", {}).get("request_id"),
                ),
            )
            return await handler(LimitedRequest(request.scope, request.receive))

        return authorized


class CheckRoute(AdminRoute):
    """A route ``authz:check`` tokens may call too (``admin`` implies it)."""

    scope: ClassVar[str] = "authz:check"


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An idstore API token (`idstore token create`): `admin` for everything, "
    "`authz:check` for the checks only.",
)


async def _caller(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> Caller:
    """The caller the route class authorized (the ``Security`` parameter
    only declares the scheme in the OpenAPI description). A coroutine: a
    plain function would run in a worker thread on every request."""
    caller: Caller = request.state.api_caller
    return caller


Authorized = Annotated[Caller, Depends(_caller)]
"""The parameter every endpoint takes."""
