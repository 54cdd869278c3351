"""The wire shapes of ``/api/v1``'s user groups and users, after
Mia-Platform's User Manager Service (camelCase, its field names), as
pydantic models: they validate requests and FastAPI writes the OpenAPI
description from them.

Strings are bounded and hold no control characters (NUL included) nor lone
surrogates; the store checks its own rules again (lengths of its columns,
the free-form limits of ``customData`` and ``crudSchema``, the schema
itself, the group's schema of ``customData``, the roles' existence).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BeforeValidator,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from .models import LIST_CEILING, NO_CONTROL, NO_CONTROL_NOR_SLASH, Cursor, RoleId, Wire

ULID = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"
"""A ULID in the store's form: upper-case Crockford base32, 48-bit time."""
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"
"""``local@domain``: one ``@``, no spaces, no control characters."""

UserGroupName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=NO_CONTROL_NOR_SLASH),
    Field(description="A user group's name: 1-128 characters, no control characters, no `/`."),
]
Label = Annotated[
    str,
    StringConstraints(max_length=255, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$"),
    Field(description="At most 255 characters, no control characters."),
]
CrudSchema = Annotated[
    dict[str, Any],
    Field(
        description="The JSON Schema (draft 2020-12) of the group's users' `customData`: "
        "a JSON object of at most 32 levels and 65,536 bytes; its references resolve "
        "inside it (nothing is fetched)."
    ),
]
CustomData = Annotated[
    dict[str, Any],
    Field(
        description="Free JSON object (at most 32 levels, 65,536 bytes), validated against "
        "the user group's `crudSchema`."
    ),
]
Text = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=NO_CONTROL),
    Field(description="1-255 characters, no control characters."),
]
Username = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=NO_CONTROL),
    Field(description="The user's `userName`: unique (case-insensitive), 1-255 characters."),
]
Email = Annotated[
    str,
    StringConstraints(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$",
    ),
    Field(description="An e-mail address (its primary one): `local@domain`, at most 254."),
]
UserIdBody = Annotated[
    str,
    StringConstraints(min_length=26, max_length=26, pattern=ULID),
    Field(description="The user's id: a ULID, 26 characters of upper-case Crockford base32."),
]


def _text_only(value: Any) -> Any:
    """A time only as RFC 3339 text: pydantic would take a number as epoch
    seconds, which the description does not offer."""
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 date-time string")
    return value


ExpirationDate = Annotated[
    AwareDatetime,
    BeforeValidator(_text_only),
    Field(
        description="When the user stops being valid (RFC 3339 with a time zone); a date "
        "passed suspends it."
    ),
]
Roles = Annotated[
    list[RoleId],
    Field(
        max_length=LIST_CEILING,
        description="RBAC role ids assigned to the user directly (held everywhere); at most "
        "`IDSTORE_RBAC_MAX_LIST` (1,000 by default); unknown ids are a 400 naming them.",
    ),
]
LifecycleState = Literal["CREATED", "ACTIVE", "ERROR", "SUSPENDED", "INACTIVE"]


# -- User groups -----------------------------------------------------------------


class UserGroupBody(Wire):
    """A group's whole configuration (``PUT``)."""

    label: Label | None = None
    auth_user_creation_disabled: StrictBool = Field(
        default=False, description="When true, the group's users get no Auth0 account."
    )
    crud_schema: CrudSchema


class NewUserGroup(UserGroupBody):
    """A new group (``POST /user-groups``)."""

    user_group: UserGroupName


class UserGroup(Wire):
    user_group: str
    label: str | None
    auth_user_creation_disabled: bool
    crud_schema: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class UserGroupPage(Wire):
    items: list[UserGroup]
    next_cursor: Cursor | None


# -- Users -------------------------------------------------------------------------


class IdpFields(Wire):
    """The identity-provider identifiers (SPEC §3); with the required ones
    (``IDSTORE_REQUIRED_IDP_ATTRIBUTES``) a new user is ``ACTIVE``, without
    them ``CREATED`` until the profile sync finds them."""

    external_id: Text | None = Field(default=None, description="The IdP's object id.")
    idp_reference_id: Text | None = Field(
        default=None, description="The IdP's object id; defaults to `externalId`."
    )
    idp_username: Text | None = Field(default=None, description="On-premises / LDAP account name.")
    idp_cloud_username: Text | None = Field(
        default=None, description="Cloud sign-in name (UPN); defaults to `username`."
    )
    idp_workforce_id: Text | None = Field(default=None, description="Employee id.")


class NewUser(IdpFields):
    """A new user (``POST /users``)."""

    user_group: UserGroupName = Field(description="A configured user group.")
    email: Email
    username: Username | None = Field(default=None, description="Defaults to `email`.")
    name: Text | None = Field(default=None, description="The name displayed (`displayName`).")
    given_name: Text | None = None
    family_name: Text | None = None
    middle_name: Text | None = None
    custom_data: CustomData | None = None
    expiration_date: ExpirationDate | None = None
    roles: Roles = []


class NewUserWithId(NewUser):
    """A new user whose id the caller chose (``POST /users/with-id``)."""

    id: UserIdBody


class UserPatch(IdpFields):
    """The fields to change; absent ones are kept, ``null`` clears one that
    may be empty. ``customData`` and ``roles`` are replaced whole."""

    user_group: UserGroupName | SkipJsonSchema[None] = Field(
        default=None,
        description="Another configured group; `customData` is validated against its schema.",
    )
    email: Email | SkipJsonSchema[None] = Field(
        default=None, description="Replaces the primary e-mail address (cannot be cleared)."
    )
    username: Username | SkipJsonSchema[None] = Field(
        default=None, description="Cannot be cleared."
    )
    name: Text | None = None
    given_name: Text | None = None
    family_name: Text | None = None
    middle_name: Text | None = None
    custom_data: CustomData | None = None
    expiration_date: ExpirationDate | None = Field(
        default=None, description="`null` clears it; a date passed suspends the user."
    )
    roles: Roles | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _not_cleared(self) -> UserPatch:
        for name in ("user_group", "email", "username", "roles"):
            if name in self.model_fields_set and getattr(self, name) is None:
                alias = type(self).model_fields[name].alias or name
                raise ValueError(f"{alias} cannot be null")
        return self


class StateChange(Wire):
    """``block`` and ``unblock`` (SPEC §4: ``SUSPENDED``, then back to
    ``ACTIVE`` or ``CREATED``), or ``reset`` of a user in ``ERROR`` to ``CREATED``."""

    action: Literal["block", "unblock", "reset"]


class User(Wire):
    """A user as the User Manager Service shows it."""

    id: str
    user_group: str | None
    username: str
    email: str | None = Field(description="The primary e-mail address (else the first).")
    name: str | None = Field(description="The name displayed (`displayName`).")
    given_name: str | None
    family_name: str | None
    middle_name: str | None
    custom_data: dict[str, Any] | None
    lifecycle: LifecycleState
    blocked: bool
    expiration_date: datetime | None
    roles: list[str] = Field(description="Directly assigned RBAC role ids, sorted.")
    auth_user_id: str | None = Field(description="The user's Auth0 id, once it has an account.")
    external_id: str | None
    idp_reference_id: str | None
    idp_username: str | None
    idp_cloud_username: str | None
    idp_workforce_id: str | None
    idp_source: str | None
    created_at: datetime
    updated_at: datetime
    version: int = Field(description='Every write adds one; the `ETag` is `W/"<version>"`.')
    auth0: dict[str, Any] | None = Field(
        default=None,
        description="In `GET /users` pages: the Auth0 properties of the user's account named "
        "by `IDSTORE_AUTH0_USER_PROPERTIES`, Auth0's names as keys (`{}`: Auth0 has no such "
        "account); `null` without an account, when none are configured, when Auth0 could "
        "not be asked, and in every other answer.",
    )


class UserPage(Wire):
    items: list[User]
    next_cursor: Cursor | None = Field(
        description="Opaque: give it back as `cursor` for the next page; `null` on the last. "
        "With `q`, a page may hold fewer users than `count`, even none, while this is "
        "not `null`."
    )


class UserCount(Wire):
    count: int
