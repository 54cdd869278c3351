"""``/users``: users the way Mia-Platform's User Manager Service manages
them: by user group, with ``customData`` validated against the group's
schema, RBAC roles, blocking, expiry, soft delete and restore (``admin``
only).

Every write is a use case of :mod:`identity_store.users` (or
:func:`identity_store.lifecycle_admin.reset_user`), the same ones SCIM
calls: one transaction with its lifecycle transition, audit row and
``auth0`` outbox row, so the two protocols cannot disagree. Answers carry
the user's ``ETag`` (``W/"<version>"``, as SCIM's); writes take
``If-Match`` (412 when the user moved on).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query
from pydantic.json_schema import SkipJsonSchema
from starlette.responses import Response

from identity_store import lifecycle_admin, users
from identity_store.users import UserInput, UserRecord

from . import cursors
from .auth0_properties import AUTH0_KEY, merge_auth0_properties
from .models import NO_CONTROL, NO_CONTROL_NOR_SLASH
from .parameters import COMMON, WITH_BODY, Count, CursorQuery
from .problems import problem_responses
from .routing import MOUNT, AdminRoute, Authorized
from .user_models import (
    ULID,
    LifecycleState,
    NewUser,
    NewUserWithId,
    StateChange,
    User,
    UserCount,
    UserPage,
    UserPatch,
)

router = APIRouter(route_class=AdminRoute, tags=["users"])


UserIdPath = Annotated[
    str,
    Path(
        alias="id",
        pattern=ULID,
        description="The user's id: a ULID (26 characters of upper-case Crockford base32); "
        "any other segment is no endpoint (404).",
    ),
]

MANUAL = "MANUAL"
"""``idpSource`` of users the management API creates."""

COLUMNS = {
    "user_group": "user_group",
    "name": "display_name",
    "given_name": "given_name",
    "family_name": "family_name",
    "middle_name": "middle_name",
    "custom_data": "custom_data",
    "expiration_date": "expiration_date",
    "external_id": "external_id",
    "idp_reference_id": "idp_reference_id",
    "idp_username": "idp_username",
    "idp_cloud_username": "idp_cloud_username",
    "idp_workforce_id": "idp_workforce_id",
}
"""Body field → the store's column, for the fields written as they are."""

UserGroupQuery = Annotated[
    str | None,
    Query(
        alias="userGroup",
        min_length=1,
        max_length=128,
        pattern=NO_CONTROL_NOR_SLASH,
        description="Users of this group.",
    ),
]
LifecycleQuery = Annotated[
    LifecycleState | None, Query(description="Users in this lifecycle state.")
]
SearchQuery = Annotated[
    str | None,
    Query(
        alias="q",
        min_length=1,
        max_length=255,
        pattern=NO_CONTROL,
        description="Case-insensitive substring of `username`, an e-mail address, `name`, "
        "`givenName`, `familyName` or `middleName`. No index serves it: each page examines "
        "at most `IDSTORE_USER_SEARCH_SCAN` users (10,000 by default) past the cursor.",
    ),
]
IfMatch = Annotated[
    str | SkipJsonSchema[None],
    Header(
        alias="If-Match",
        max_length=1024,
        description='The user\'s `ETag` (`W/"<version>"`): the write is refused with 412 '
        "when the user is at another version, or the value is no `ETag` of this API; "
        "`*` or absent: any version.",
    ),
]
_TAG = re.compile(r'(?:W/)?"([0-9]{1,18})"')
NEVER = -1
"""The version a tag that is not one of ours stands for: none has it."""

ETAG_HEADER = {"ETag": {"description": 'W/"<version>"', "schema": {"type": "string"}}}


def etag(version: int) -> str:
    return f'W/"{version}"'


def expected_version(if_match: str | None) -> int | None:
    """The version ``If-Match`` names; ``None`` for none or ``*``. A value
    that is not one ``ETag`` of ours can never match (412, as SCIM answers;
    after the 404 of a user that does not exist)."""
    if if_match is None or if_match.strip() == "*":
        return None
    match = _TAG.fullmatch(if_match.strip())
    return int(match.group(1)) if match is not None else NEVER


def _email(user: Any) -> str | None:
    """The primary e-mail address, else the first one."""
    emails = [v for v in user.multi_values if v.attribute == "emails" and v.value]
    emails.sort(key=lambda v: (not v.primary, v.position))
    return str(emails[0].value) if emails else None


def _utc(moment: datetime | None) -> datetime | None:
    """A stored time in UTC (a new user's record holds the times as given)."""
    return None if moment is None else moment.astimezone(UTC)


def document(record: UserRecord) -> User:
    """The User Manager Service's view of a user read with its roles."""
    user = record.user
    return User(
        id=user.id,
        user_group=user.user_group,
        username=user.user_name,
        email=_email(user),
        name=user.display_name,
        given_name=user.given_name,
        family_name=user.family_name,
        middle_name=user.middle_name,
        custom_data=user.custom_data,
        lifecycle=user.lifecycle,
        blocked=bool(user.blocked),
        expiration_date=_utc(user.expiration_date),
        roles=list(record.roles or []),
        auth_user_id=user.auth_user_id,
        external_id=user.external_id,
        idp_reference_id=user.idp_reference_id,
        idp_username=user.idp_username,
        idp_cloud_username=user.idp_cloud_username,
        idp_workforce_id=user.idp_workforce_id,
        idp_source=user.idp_source,
        created_at=_utc(user.created_at),
        updated_at=_utc(user.updated_at),
        version=user.version,
    )


def _answer(response: Response, record: UserRecord) -> User:
    response.headers["ETag"] = etag(record.user.version)
    return document(record)


def _new_input(body: NewUser) -> UserInput:
    columns = {
        column: getattr(body, field)
        for field, column in COLUMNS.items()
        if getattr(body, field) is not None
    }
    return UserInput(
        user_name=body.username or body.email,
        columns=columns,
        multi_values=[{"attribute": "emails", "value": body.email, "primary": True}],
    )


def _with_email(data: UserInput, email: str) -> None:
    """``email`` as the user's primary address (replacing the primary one,
    else the first one; a changed address is no longer verified)."""
    emails = [v for v in data.multi_values if v["attribute"] == "emails"]
    primary = next((v for v in emails if v.get("primary")), emails[0] if emails else None)
    if primary is None:
        data.multi_values.append({"attribute": "emails", "value": email, "primary": True})
    elif primary["value"] != email:
        primary.update(value=email, verified=None)


def _patched(body: UserPatch, current: UserRecord) -> UserInput | None:
    """The user's new state; ``None`` when the body changes nothing."""
    before = users.current_input(current.user)
    data = users.current_input(current.user)
    given = body.model_fields_set
    for field, column in COLUMNS.items():
        if field in given:
            data.columns[column] = getattr(body, field)
    if body.username is not None:
        data.user_name = body.username
    if body.email is not None:
        _with_email(data, body.email)
    return None if data == before else data


_CREATED = {
    "Location": {"description": "The user's URL.", "schema": {"type": "string"}},
    **ETAG_HEADER,
}


async def _create(caller: Authorized, body: NewUser, user_id: str | None) -> UserRecord:
    return await users.create_user(
        caller.store,
        _new_input(body),
        caller.actor,
        idp_source=MANUAL,
        user_id=user_id,
        roles=list(body.roles),
    )


def _created(response: Response, record: UserRecord) -> User:
    response.headers["Location"] = f"{MOUNT}/users/{quote(record.user.id, safe='')}"
    return _answer(response, record)


@router.get(
    "/users",
    responses=problem_responses(*COMMON),
    summary="List users, by id, of a group, a state, a search",
)
async def list_users(
    caller: Authorized,
    user_group: UserGroupQuery = None,
    lifecycle: LifecycleQuery = None,
    q: SearchQuery = None,
    count: Count = 100,
    cursor: CursorQuery = None,
) -> UserPage:
    """Live users (not deleted), every filter given holding. Without `q`
    each page is one index range; with `q` a page may be short (see `q`)."""
    listing = await users.list_users(
        caller.store,
        users.UserQuery(user_group=user_group, lifecycle=lifecycle, search=q),
        after=cursors.decode("users", cursor),
        limit=count,
        scan=caller.settings.user_search_scan,
    )
    items = [document(r) for r in listing.users]
    provider = caller.state.auth0_properties
    if provider is not None and provider.names:
        found = await merge_auth0_properties(
            [{"authUserId": u.auth_user_id} for u in items], provider
        )
        items = [
            u.model_copy(update={"auth0": f.get(AUTH0_KEY)})
            for u, f in zip(items, found, strict=True)
        ]
    return UserPage(items=items, next_cursor=cursors.encode("users", listing.next_after))


@router.get(
    "/users/count",
    responses=problem_responses(*COMMON),
    summary="Count users of a group, a state, a search",
)
async def count_users(
    caller: Authorized,
    user_group: UserGroupQuery = None,
    lifecycle: LifecycleQuery = None,
    q: SearchQuery = None,
) -> UserCount:
    """The filters of `GET /users`. Without any, the kept total (no scan);
    `userGroup` and `lifecycle` count an index range; `q` examines every user
    the other filters leave (an exact count, not bounded as a page is)."""
    query = users.UserQuery(user_group=user_group, lifecycle=lifecycle, search=q)
    return UserCount(count=await users.count_users(caller.store, query))


@router.post(
    "/users",
    status_code=201,
    responses=problem_responses(*WITH_BODY, 409)
    | {201: {"description": "The user, created.", "headers": _CREATED}},
    summary="Create a user in a user group",
)
async def create_user(body: NewUser, caller: Authorized, response: Response) -> User:
    """`customData` must satisfy the group's `crudSchema` (400 naming the
    failing path); unknown roles are a 400 naming them; a taken `username`
    is 409. `ACTIVE` with the required IdP identifiers, `CREATED` without
    (`SUSPENDED` with an `expirationDate` passed). An Auth0 account follows
    through the outbox unless the group has `authUserCreationDisabled`."""
    return _created(response, await _create(caller, body, None))


@router.post(
    "/users/with-id",
    status_code=201,
    responses=problem_responses(*WITH_BODY, 409)
    | {201: {"description": "The user, created.", "headers": _CREATED}},
    summary="Create a user with an id of the caller's choice",
)
async def create_user_with_id(body: NewUserWithId, caller: Authorized, response: Response) -> User:
    """As `POST /users`; `id` is a ULID no user (deleted ones included) has,
    else 409."""
    return _created(response, await _create(caller, body, body.id))


@router.get(
    "/users/{id:ulid}",
    responses=problem_responses(*COMMON, 404)
    | {200: {"description": "The user.", "headers": ETAG_HEADER}},
    summary="Read a user",
)
async def read_user(user_id: UserIdPath, caller: Authorized, response: Response) -> User:
    """404 for a deleted user (restore it with `POST /users/{id}/restore`)."""
    return _answer(response, await users.get_user(caller.store, user_id, groups=False, roles=True))


@router.patch(
    "/users/{id:ulid}",
    responses=problem_responses(*WITH_BODY, 404, 409, 412)
    | {200: {"description": "The user, changed.", "headers": ETAG_HEADER}},
    summary="Change some of a user's fields",
)
async def patch_user(
    user_id: UserIdPath,
    body: UserPatch,
    caller: Authorized,
    response: Response,
    if_match: IfMatch = None,
) -> User:
    """Absent fields are kept; `null` clears a field that may be empty
    (names, `customData`, `expirationDate`, IdP identifiers). A changed
    `userGroup` or `customData` is validated against the group's schema.
    An `expirationDate` passed suspends the user; clearing it (or a future
    one) reactivates it unless something else stops it."""

    def change(current: UserRecord) -> UserInput | None:
        return _patched(body, current)

    record = await users.update_user(
        caller.store,
        user_id,
        change,
        caller.actor,
        expected_version=expected_version(if_match),
        action="user.update",
        roles=None if body.roles is None else list(body.roles),
    )
    if record.roles is None:
        await users.add_roles(caller.store, [record])
    return _answer(response, record)


@router.delete(
    "/users/{id:ulid}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(*COMMON, 404, 412) | {204: {"description": "Deleted."}},
    summary="Delete a user (softly: restorable until the deletion sync)",
)
async def delete_user(
    user_id: UserIdPath, caller: Authorized, if_match: IfMatch = None
) -> Response:
    """As SCIM's DELETE: 404 from now on, `SUSPENDED` (its Auth0 account
    blocked, its group memberships ended) until the deletion sync makes it
    `INACTIVE` at the end of the day; until then `POST /users/{id}/restore`
    brings it back."""
    await users.delete_user(
        caller.store, user_id, caller.actor, expected_version=expected_version(if_match)
    )
    return Response(status_code=204)


@router.post(
    "/users/{id:ulid}/state",
    responses=problem_responses(*WITH_BODY, 404, 409, 412)
    | {200: {"description": "The user, in its new state.", "headers": ETAG_HEADER}},
    summary="Block, unblock, or reset a user in ERROR",
)
async def change_state(
    user_id: UserIdPath,
    body: StateChange,
    caller: Authorized,
    response: Response,
    if_match: IfMatch = None,
) -> User:
    """`block`: `SUSPENDED` (its Auth0 account blocked); `unblock`: back to
    `ACTIVE` (`CREATED` while IdP identifiers are missing) unless something
    else stops it; either is a no-op when already so. `reset`: a user in
    `ERROR` back to `CREATED` for the profile sync to try again (409
    `state-conflict` in any other state)."""
    version = expected_version(if_match)
    if body.action == "reset":
        await lifecycle_admin.reset_user(
            caller.store, user_id, caller.actor, expected_version=version
        )
        record = await users.get_user(caller.store, user_id, groups=False, roles=True)
        return _answer(response, record)
    blocked = body.action == "block"

    def change(current: UserRecord) -> UserInput | None:
        if bool(current.user.blocked) == blocked:
            return None
        data = users.current_input(current.user)
        data.columns["blocked"] = blocked
        return data

    record = await users.update_user(
        caller.store,
        user_id,
        change,
        caller.actor,
        expected_version=version,
        action=f"user.{body.action}",
    )
    await users.add_roles(caller.store, [record])
    return _answer(response, record)


@router.post(
    "/users/{id:ulid}/restore",
    responses=problem_responses(*COMMON, 404, 409, 412)
    | {200: {"description": "The user, restored.", "headers": ETAG_HEADER}},
    summary="Restore a deleted user before the deletion sync",
)
async def restore_user(
    user_id: UserIdPath, caller: Authorized, response: Response, if_match: IfMatch = None
) -> User:
    """Live again, `active`, `ACTIVE` or `CREATED` as its attributes say
    (still `SUSPENDED` when blocked or expired), with its roles; not back in
    the groups it left. 409 `state-conflict` when it is not deleted, was
    made `INACTIVE` by the deletion sync, or its user group was deleted; 409
    `conflict` when another user has its `username` now."""
    record = await users.restore_user(
        caller.store, user_id, caller.actor, expected_version=expected_version(if_match)
    )
    return _answer(response, record)
