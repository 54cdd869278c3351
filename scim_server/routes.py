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

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import bulk, discovery, groups_api, search, users_api
from .errors import ScimError


async def me_create(request: Request) -> Response:
    raise ScimError(501, "creating a user through /Me is not supported (RFC 7644 §3.11)")


def scim_routes() -> list[Route]:
    return [
        Route("/Users", users_api.list_, methods=["GET"]),
        Route("/Users", users_api.create, methods=["POST"]),
        Route("/Users/.search", search.users, methods=["POST"]),
        Route("/Users/{id}", users_api.read, methods=["GET"]),
        Route("/Users/{id}", users_api.replace, methods=["PUT"]),
        Route("/Users/{id}", users_api.patch, methods=["PATCH"]),
        Route("/Users/{id}", users_api.delete, methods=["DELETE"]),
        Route("/Groups", groups_api.list_, methods=["GET"]),
        Route("/Groups", groups_api.create, methods=["POST"]),
        Route("/Groups/.search", search.groups, methods=["POST"]),
        Route("/Groups/{id}", groups_api.read, methods=["GET"]),
        Route("/Groups/{id}", groups_api.replace, methods=["PUT"]),
        Route("/Groups/{id}", groups_api.patch, methods=["PATCH"]),
        Route("/Groups/{id}", groups_api.delete, methods=["DELETE"]),
        Route("/Me", users_api.read, methods=["GET"]),
        Route("/Me", users_api.replace, methods=["PUT"]),
        Route("/Me", users_api.patch, methods=["PATCH"]),
        Route("/Me", users_api.delete, methods=["DELETE"]),
        Route("/Me", me_create, methods=["POST"]),
        Route("/.search", search.root, methods=["POST"]),
        Route("/Bulk", bulk.bulk, methods=["POST"]),
        Route("/ServiceProviderConfig", discovery.config, methods=["GET"]),
        Route("/ResourceTypes", discovery.resource_types, methods=["GET"]),
        Route("/ResourceTypes/{id}", discovery.resource_type, methods=["GET"]),
        Route("/Schemas", discovery.schemas, methods=["GET"]),
        Route("/Schemas/{id:path}", discovery.schema, methods=["GET"]),
    ]
