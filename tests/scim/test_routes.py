"""The SCIM route table (scim_server.routes): each method and path reaches
the endpoint RFC 7644 gives it, a method a path does not serve is a 405
naming the ones it does, whatever the order the routes are tried in."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.routing import Match

from scim_server import bulk, discovery, groups_api, search, users_api
from scim_server.routes import RouteGroup, me_create, scim_routes

from .helpers import assert_error, create_user

USER = "urn:ietf:params:scim:schemas:core:2.0:User"

# (method, path under /scim/v2, the endpoint, or the methods of a 405)
TABLE: list[tuple[str, str, Any]] = [
    ("GET", "/Users", users_api.list_),
    ("HEAD", "/Users", users_api.list_),
    ("POST", "/Users", users_api.create),
    ("PUT", "/Users", {"GET", "HEAD", "POST"}),
    ("GET", "/Users/abc", users_api.read),
    ("HEAD", "/Users/abc", users_api.read),
    ("PUT", "/Users/abc", users_api.replace),
    ("PATCH", "/Users/abc", users_api.patch),
    ("DELETE", "/Users/abc", users_api.delete),
    ("POST", "/Users/abc", {"GET", "HEAD", "PUT", "PATCH", "DELETE"}),
    ("POST", "/Users/.search", search.users),
    # an id ".search" (there is none: 404), as before the table was grouped
    ("GET", "/Users/.search", users_api.read),
    ("GET", "/Groups", groups_api.list_),
    ("POST", "/Groups", groups_api.create),
    ("DELETE", "/Groups", {"GET", "HEAD", "POST"}),
    ("GET", "/Groups/abc", groups_api.read),
    ("PUT", "/Groups/abc", groups_api.replace),
    ("PATCH", "/Groups/abc", groups_api.patch),
    ("DELETE", "/Groups/abc", groups_api.delete),
    ("POST", "/Groups/abc", {"GET", "HEAD", "PUT", "PATCH", "DELETE"}),
    ("POST", "/Groups/.search", search.groups),
    ("GET", "/Me", users_api.read),
    ("PUT", "/Me", users_api.replace),
    ("PATCH", "/Me", users_api.patch),
    ("DELETE", "/Me", users_api.delete),
    ("POST", "/Me", me_create),
    ("POST", "/.search", search.root),
    ("GET", "/.search", {"POST"}),
    ("POST", "/Bulk", bulk.bulk),
    ("GET", "/Bulk", {"POST"}),
    ("GET", "/ServiceProviderConfig", discovery.config),
    ("PUT", "/ServiceProviderConfig", {"GET", "HEAD"}),
    ("GET", "/ResourceTypes", discovery.resource_types),
    ("GET", "/ResourceTypes/User", discovery.resource_type),
    ("GET", "/Schemas", discovery.schemas),
    ("GET", f"/Schemas/{USER}", discovery.schema),
    ("GET", "/Schemas/a/b", discovery.schema),
    ("POST", "/Schemas/a", {"GET", "HEAD"}),
]


SCIM = RouteGroup("/scim/v2/", scim_routes("/scim/v2"))
"""The SCIM routes as the application lists them (scim_server.app)."""


def _resolve(method: str, path: str) -> Any:
    """What Starlette's router picks among the SCIM routes: the route
    matching fully, else the first matching the path only (its 405)."""
    scope = {"type": "http", "method": method, "path": f"/scim/v2{path}", "root_path": ""}
    match, child = SCIM.matches(scope)
    assert match is not Match.NONE, f"no route for {method} {path}"
    if match is Match.FULL:
        return child["endpoint"]
    return set(child[RouteGroup._ROUTE].methods)


@pytest.mark.parametrize(
    "path", ["/healthz", "/api/v1/users/abc", "/scim/v2", "/scim/v2x/Users", "/Users"]
)
def test_paths_outside_the_scim_prefix_skip_its_routes(path: str) -> None:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    assert SCIM.matches(scope) == (Match.NONE, {})


@pytest.mark.parametrize(
    ("method", "path", "expected"), TABLE, ids=[f"{m} {p}" for m, p, _ in TABLE]
)
def test_each_method_and_path_reaches_its_endpoint(method: str, path: str, expected: Any) -> None:
    assert _resolve(method, path) == expected


def test_every_route_is_in_the_table() -> None:
    served = {
        (method, route.path)
        for route in scim_routes()
        for method in route.methods or ()
        if method != "HEAD"
    }
    templates = {"abc": "{id}", "User": "{id}", USER: "{id:path}", "a/b": "{id:path}"}
    tested = set()
    for method, path, expected in TABLE:
        if isinstance(expected, set):
            continue
        head, _, tail = path[1:].partition("/")
        tested.add((method, f"/{head}/{templates.get(tail, tail)}" if tail else f"/{head}"))
    assert served <= tested


async def test_over_http_a_head_has_the_get_headers_and_no_body(scim: httpx.AsyncClient) -> None:
    user = await create_user(scim, "routed")
    got = await scim.get(f"/Users/{user['id']}")
    head = await scim.head(f"/Users/{user['id']}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == got.headers["etag"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [(m, p, e) for m, p, e in TABLE if isinstance(e, set)],
    ids=[f"{m} {p}" for m, p, e in TABLE if isinstance(e, set)],
)
async def test_over_http_a_method_not_served_is_405_with_allow(
    scim: httpx.AsyncClient, method: str, path: str, allow: set[str]
) -> None:
    response = await scim.request(method, path, json={} if method in ("POST", "PUT") else None)
    assert_error(response, 405)
    assert set(response.headers["allow"].split(", ")) == allow
