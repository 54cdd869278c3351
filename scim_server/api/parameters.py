"""Path and query parameters shared by the endpoints, with their limits,
and the problem statuses every endpoint declares."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from . import cursors
from .models import NO_CONTROL, NO_CONTROL_NOR_SLASH


def _path_id(alias: str, what: str, max_length: int = 128) -> object:
    return Path(
        alias=alias,
        min_length=1,
        max_length=max_length,
        pattern=NO_CONTROL_NOR_SLASH,
        description=f"{what}: 1-{max_length} characters, no control characters, no `/`.",
    )


RoleIdPath = Annotated[str, _path_id("roleId", "The role's id")]
BindingIdPath = Annotated[str, _path_id("bindingId", "The binding's id")]
UserIdPath = Annotated[str, _path_id("id", "The user's id (a ULID)", 26)]
GroupIdPath = Annotated[str, _path_id("id", "The group's id (a ULID)", 26)]
ResourceTypePath = Annotated[str, _path_id("resourceType", "The resource type")]

Count = Annotated[int, Query(ge=1, le=1000, description="Page size (1-1,000).")]
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=cursors.MAX_CURSOR_LENGTH,
        pattern=cursors.CURSOR_PATTERN,
        description="`nextCursor` of the previous page.",
    ),
]
ResourceTypeQuery = Annotated[
    str | None,
    Query(
        alias="resourceType",
        min_length=1,
        max_length=128,
        pattern=NO_CONTROL_NOR_SLASH,
        description="With `resourceId`: one resource.",
    ),
]
ResourceIdQuery = Annotated[
    str | None,
    Query(
        alias="resourceId",
        min_length=1,
        max_length=255,
        pattern=NO_CONTROL,
        description="With `resourceType`: one resource.",
    ),
]

COMMON = (400, 401, 403, 500, 503)
"""Problems any endpoint may answer."""

WITH_BODY = (*COMMON, 413, 415)
"""Problems any endpoint taking a body may answer."""
