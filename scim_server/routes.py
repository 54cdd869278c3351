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

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, request_response
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
    tried costs about 6,000 instructions (its path regex, a child scope), and
    a ``PATCH /Groups/{id}`` tried twelve (``bench.inprocess
    --instructions``, docs/benchmarks.md). A method the path does not
    serve is answered as Starlette's route answers it (405 with ``Allow``)."""

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


def scim_routes() -> list[Route]:
    """The routes of the table above, the most used first; a path's
    ``/.search`` is tried after its ``/{id}``, which does not take a
    ``POST``."""
    return [
        MethodRoute(
            "/Users/{id}",
            {
                "GET": users_api.read,
                "PUT": users_api.replace,
                "PATCH": users_api.patch,
                "DELETE": users_api.delete,
            },
        ),
        MethodRoute("/Users", {"GET": users_api.list_, "POST": users_api.create}),
        MethodRoute(
            "/Groups/{id}",
            {
                "GET": groups_api.read,
                "PUT": groups_api.replace,
                "PATCH": groups_api.patch,
                "DELETE": groups_api.delete,
            },
        ),
        MethodRoute("/Groups", {"GET": groups_api.list_, "POST": groups_api.create}),
        MethodRoute("/Users/.search", {"POST": search.users}),
        MethodRoute("/Groups/.search", {"POST": search.groups}),
        MethodRoute(
            "/Me",
            {
                "GET": users_api.read,
                "PUT": users_api.replace,
                "PATCH": users_api.patch,
                "DELETE": users_api.delete,
                "POST": me_create,
            },
        ),
        MethodRoute("/.search", {"POST": search.root}),
        MethodRoute("/Bulk", {"POST": bulk.bulk}),
        MethodRoute("/ServiceProviderConfig", {"GET": discovery.config}),
        MethodRoute("/ResourceTypes", {"GET": discovery.resource_types}),
        MethodRoute("/ResourceTypes/{id}", {"GET": discovery.resource_type}),
        MethodRoute("/Schemas", {"GET": discovery.schemas}),
        MethodRoute("/Schemas/{id:path}", {"GET": discovery.schema}),
    ]
