"""``/user-groups``: the user groups of Mia-Platform's User Manager Service
(its configuration collection), each with the JSON Schema of its users'
``customData`` (``admin`` only). The rules are the store's
(:mod:`identity_store.user_groups`)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path
from starlette.responses import Response

from identity_store import user_groups

from . import cursors
from .models import NO_CONTROL_NOR_SLASH
from .parameters import COMMON, WITH_BODY, Count, CursorQuery
from .problems import problem_responses
from .routing import MOUNT, AdminRoute, Authorized
from .user_models import NewUserGroup, UserGroup, UserGroupBody, UserGroupPage

router = APIRouter(route_class=AdminRoute, tags=["user groups"])

UserGroupPath = Annotated[
    str,
    Path(
        alias="userGroup",
        min_length=1,
        max_length=128,
        pattern=NO_CONTROL_NOR_SLASH,
        description="The group's name: 1-128 characters, no control characters, no `/`.",
    ),
]


def user_group(record: user_groups.UserGroupRecord) -> UserGroup:
    return UserGroup(
        user_group=record.user_group,
        label=record.label,
        auth_user_creation_disabled=record.auth_user_creation_disabled,
        crud_schema=record.crud_schema,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _input(body: UserGroupBody) -> user_groups.UserGroupInput:
    return user_groups.UserGroupInput(
        label=body.label,
        auth_user_creation_disabled=body.auth_user_creation_disabled,
        crud_schema=body.crud_schema,
    )


def _plain(status: int, description: str, **extra: object) -> dict[int | str, dict[str, object]]:
    """A success response without the RBAC revision header."""
    return {status: {"description": description, **extra}}


@router.get(
    "/user-groups", responses=problem_responses(*COMMON), summary="List user groups, by name"
)
async def list_user_groups(
    caller: Authorized, count: Count = 100, cursor: CursorQuery = None
) -> UserGroupPage:
    listing = await user_groups.list_user_groups(
        caller.store, after=cursors.decode("user-groups", cursor), limit=count
    )
    return UserGroupPage(
        items=[user_group(g) for g in listing.items],
        next_cursor=cursors.encode("user-groups", listing.next_after),
    )


@router.post(
    "/user-groups",
    status_code=201,
    responses=problem_responses(*WITH_BODY, 409)
    | _plain(
        201,
        "The user group, created.",
        headers={"Location": {"description": "The group's URL.", "schema": {"type": "string"}}},
    ),
    summary="Create a user group",
)
async def create_user_group(
    body: NewUserGroup, caller: Authorized, response: Response
) -> UserGroup:
    """A `crudSchema` that is not a valid JSON Schema (draft 2020-12) is a 400
    naming where, with the library's message; 409 `conflict` when the name
    is taken."""
    record = await user_groups.create_user_group(
        caller.store, body.user_group, _input(body), caller.actor
    )
    response.headers["Location"] = f"{MOUNT}/user-groups/{quote(record.user_group, safe='')}"
    return user_group(record)


@router.get(
    "/user-groups/{userGroup}",
    responses=problem_responses(*COMMON, 404),
    summary="Read a user group",
)
async def read_user_group(name: UserGroupPath, caller: Authorized) -> UserGroup:
    return user_group(await user_groups.get_user_group(caller.store, name))


@router.put(
    "/user-groups/{userGroup}",
    responses=problem_responses(*WITH_BODY, 404) | _plain(200, "The user group, replaced."),
    summary="Replace a user group's label, account setting and schema at once",
)
async def replace_user_group(
    name: UserGroupPath, body: UserGroupBody, caller: Authorized
) -> UserGroup:
    """Users already stored are not checked against the new schema until
    their `userGroup` or `customData` changes. Turning
    `authUserCreationDisabled` off gives the group's users without an Auth0
    account one, through the outbox."""
    return user_group(
        await user_groups.replace_user_group(caller.store, name, _input(body), caller.actor)
    )


@router.delete(
    "/user-groups/{userGroup}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(*COMMON, 404, 409) | _plain(204, "The user group, deleted."),
    summary="Delete a user group no user is in",
)
async def delete_user_group(name: UserGroupPath, caller: Authorized) -> Response:
    """409 `state-conflict` naming how many live users are still in it."""
    await user_groups.delete_user_group(caller.store, name, caller.actor)
    return Response(status_code=204)
