"""The SCIM route table (RFC 7644 §3.2):

resource           endpoint                 operations
User               /Users                   GET (§3.4.1), POST (§3.3),
                                            PUT (§3.5.1), PATCH (§3.5.2),
                                            DELETE (§3.6)
Group              /Groups                  same as /Users
Self               /Me                      GET, PUT, PATCH, DELETE (§3.11)
Service config     /ServiceProviderConfig   GET (§4)
Resource type      /ResourceTypes           GET (§4)
Schema             /Schemas                 GET (§4)
Bulk               /Bulk                    POST (§3.7)
Search             [prefix]/.search         POST (§3.4.3)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette._utils import get_route_path  # what the routes match: the path past root_path
from starlette.datastructures import URLPath
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import (
    BaseRoute,
    Match,
    NoMatchFound,
    Route,
    request_response,
)
from starlette.types import Receive, Scope, Send

from . import bulk, discovery, groups_api, search, users_api
from .errors import ScimError

Endpoint = Callable[[Request], Awaitable[Response]]


async def me_create(request: Request) -> Response:
    raise ScimError(501, "creating a user through /Me is not supported (RFC 7644 §3.11)")


class MethodRoute(Route):
    """One path and an endpoint for each of its methods: Starlette's
    :class:`~starlette.routing.Route` serves one endpoint, so a path with
    five methods was five routes, tried one after the other. Each route
    tried costs about 6,000 instructions (its path regex, a child scope),
    and a ``PATCH /Groups/{id}`` tried thirteen of the SCIM table's 26
    (``bench.inprocess --instructions``, docs/benchmarks.md). A method the
    path does not serve is answered as Starlette's route answers it (405
    with ``Allow``), naming every method of the path."""

    def __init__(self, path: str, endpoints: Mapping[str, Endpoint]) -> None:
        first = next(iter(endpoints.values()))
        super().__init__(path, first, methods=list(endpoints))
        self.endpoints = dict(endpoints)
        self.apps = {method: request_response(e) for method, e in endpoints.items()}
        if "GET" in endpoints:
            self.endpoints["HEAD"] = endpoints["GET"]
            self.apps["HEAD"] = self.apps["GET"]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.FULL:
            child_scope["endpoint"] = self.endpoints[scope["method"]]
        return match, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.apps.get(scope["method"])
        if app is None:
            await super().handle(scope, receive, send)  # 405
        else:
            await app(scope, receive, send)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, MethodRoute) and (self.path, self.endpoints) == (
            other.path,
            other.endpoints,
        )


class RouteGroup(BaseRoute):
    """Routes under one path prefix, written with their full paths, tried
    only for a path under it: what a :class:`~starlette.routing.Mount`
    does for routing, without its second router and the scope it builds
    for it (about 25,000 instructions per request, docs/benchmarks.md).
    Other paths (``/api/v1``, ``/healthz``) skip them at the cost of one
    ``startswith``. The route that matched is passed to :meth:`handle` in
    the child scope."""

    _ROUTE = "idstore.route"

    def __init__(self, prefix: str, routes: list[Route]) -> None:
        self.prefix = prefix
        self.routes = routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not get_route_path(scope).startswith(self.prefix):
            return Match.NONE, {}
        partial: tuple[Route, Scope] | None = None
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                child_scope[self._ROUTE] = route
                return match, child_scope
            if match is Match.PARTIAL and partial is None:
                partial = route, child_scope
        if partial is None:
            return Match.NONE, {}
        route, child_scope = partial
        child_scope[self._ROUTE] = route
        return Match.PARTIAL, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope[self._ROUTE].handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)


def scim_routes(prefix: str = "") -> list[Route]:
    """The routes of the table above under ``prefix``, the most used first;
    a path's ``/.search`` is tried after its ``/{id}``, which does not take
    a ``POST``. The application groups them with their full paths
    (``/scim/v2/Users``) in a :class:`RouteGroup`."""
    return [
        MethodRoute(
            prefix + "/Users/{id}",
            {
                "GET": users_api.read,
                "PUT": users_api.replace,
                "PATCH": users_api.patch,
                "DELETE": users_api.delete,
            },
        ),
        MethodRoute(prefix + "/Users", {"GET": users_api.list_, "POST": users_api.create}),
        MethodRoute(
            prefix + "/Groups/{id}",
            {
                "GET": groups_api.read,
                "PUT": groups_api.replace,
                "PATCH": groups_api.patch,
                "DELETE": groups_api.delete,
            },
        ),
        MethodRoute(prefix + "/Groups", {"GET": groups_api.list_, "POST": groups_api.create}),
        MethodRoute(prefix + "/Users/.search", {"POST": search.users}),
        MethodRoute(prefix + "/Groups/.search", {"POST": search.groups}),
        MethodRoute(
            prefix + "/Me",
            {
                "GET": users_api.read,
                "PUT": users_api.replace,
                "PATCH": users_api.patch,
                "DELETE": users_api.delete,
                "POST": me_create,
            },
        ),
        MethodRoute(prefix + "/.search", {"POST": search.root}),
        MethodRoute(prefix + "/Bulk", {"POST": bulk.bulk}),
        MethodRoute(prefix + "/ServiceProviderConfig", {"GET": discovery.config}),
        MethodRoute(prefix + "/ResourceTypes", {"GET": discovery.resource_types}),
        MethodRoute(prefix + "/ResourceTypes/{id}", {"GET": discovery.resource_type}),
        MethodRoute(prefix + "/Schemas", {"GET": discovery.schemas}),
        MethodRoute(prefix + "/Schemas/{id:path}", {"GET": discovery.schema}),
    ]
