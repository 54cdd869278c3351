"""The ``/api/v1`` application: a FastAPI app mounted in the server's
Starlette app (``Mount("/api/v1", ...)``), sharing its lifespan's state
(the open store, the settings, the token cache).

FastAPI because it writes the OpenAPI 3.1 description from the same
pydantic models that validate requests (so the two cannot drift), is well
kept, and runs on the Starlette the server already uses. The description
is served at ``/api/v1/openapi.json``; no documentation UI is served (it
would load scripts from a CDN).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute, Mount

from identity_store.settings import Settings

from . import (
    assignments,
    authz,
    bindings,
    bulk_jobs,
    imports,
    jobs,
    problems,
    profile,
    roles,
    rond,
    sync_state,
    user_groups,
    userinfo,
    users,
)
from .models import BATCH_CEILING, LIST_CEILING
from .problems import PROBLEM_MEDIA_TYPE, Problem
from .routing import MOUNT

TITLE = "idstore management API"
VERSION = "1"
DESCRIPTION = """\
Roles, bindings and role assignments in the model of Rönd, and
authorization checks that explain their answers. User groups with the JSON
Schema of their users' `customData`, and users managed by group, after
Mia-Platform's User Manager Service. CSV import of
users, and the jobs that run it (and the other bulk jobs), with their
per-row report.

Authentication: `Authorization: Bearer <token>` (`idstore token create`).
`admin` tokens may call everything; `authz:check` tokens only the checks
(`POST /authz/check`, `POST /authz/check-batch`, `GET /users/{id}/permissions`,
`GET /authz/subjects`); SCIM tokens nothing.

A user's whole profile (cidaas's user detail), lifecycle history and sync
state, and the replay of a dead letter, are `admin` too. `GET /userinfo`
takes the end user's own token instead (scheme `userBearer`): an Auth0
access token for `IDSTORE_USERINFO_AUDIENCE`, or an idstore token bound to
a user. See docs/management-api.md.

Errors are RFC 9457 `application/problem+json`. Every write answers with
the RBAC revision it made in the `RBAC-Revision` header; every check names
the revision it read. See docs/authorization.md and docs/management-api.md.
"""


def create_api(settings: Settings) -> FastAPI:
    """The ``/api/v1`` application. Its state (``app.state.idstore``: the
    store, the settings, the token cache) is set by the server's lifespan;
    ``settings`` give the description its configured limits."""
    api = FastAPI(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        exception_handlers=problems.handlers(),
        generate_unique_id_function=lambda route: route.name,
    )
    for module in (
        roles,
        bindings,
        assignments,
        authz,
        rond,
        user_groups,
        users,
        bulk_jobs,
        profile,
        sync_state,
        userinfo,
        imports,
        jobs,
    ):
        api.include_router(module.router)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = describe(api, settings)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


def _configured_limits(node: Any, limits: dict[int, int]) -> None:
    """Every ``maxItems`` that is a ceiling of :mod:`.models`, replaced by
    the configured limit it stands for (walked without recursion)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("maxItems") in limits:
                item["maxItems"] = limits[item["maxItems"]]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def mount(api: FastAPI) -> Mount:
    """``api`` (:func:`create_api`), mounted at :data:`MOUNT`. Starlette matches a
    mount's path with ``.*``, which stops at a newline: a path holding
    ``%0A`` would miss the mount and get the SCIM side's 404. Matched with
    ``re.DOTALL``, every path under the mount reaches this application,
    which answers with a problem."""
    mounted = Mount(MOUNT, app=api)
    mounted.path_regex = re.compile(mounted.path_regex.pattern, re.DOTALL)
    return mounted


def routes(api: FastAPI) -> list[BaseRoute]:
    """What the server routes to the API: its :func:`mount`, and before it
    the hot read served by Starlette alone (:class:`.profile.FastProfileRoute`,
    which leaves every request it does not take to the mount)."""
    return [profile.FastProfileRoute(), mount(api)]


def describe(api: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's description, told the truth: problem responses are
    ``application/problem+json``, FastAPI's 422 (which this API answers as
    a 400 problem) is gone, and lists are bounded by the configured limits
    rather than the models' ceilings."""
    schema = get_openapi(
        title=api.title,
        version=api.version,
        openapi_version=api.openapi_version,
        description=api.description,
        routes=api.routes,
        servers=[{"url": MOUNT}],
    )
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses: dict[str, Any] = operation.get("responses", {})
            responses.pop("422", None)
            for status, response in responses.items():
                content = response.get("content", {})
                if status[0] in "45" and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    _configured_limits(
        schema, {LIST_CEILING: settings.rbac_max_list, BATCH_CEILING: settings.authz_max_batch}
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components.setdefault("Problem", Problem.model_json_schema(by_alias=True))
    return schema
