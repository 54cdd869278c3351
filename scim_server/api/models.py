"""The wire shapes of ``/api/v1``'s roles, bindings and checks (camelCase
JSON, Rönd's field names), as pydantic models: they validate requests and
FastAPI writes the OpenAPI description from them, so the two cannot drift.

Identifiers are bounded strings without control characters (NUL included)
or lone surrogates (pydantic refuses those as no valid string); those that
appear in a path (role, binding, user, group ids, a resource type) have no
``/`` either. Lists are bounded here by the settings' own ceilings; the
configured limits are checked where the settings are known: each list's
(``IDSTORE_RBAC_MAX_LIST``) by the store, with its other rules
(:mod:`identity_store.rbac`), a batch's (``IDSTORE_AUTHZ_MAX_BATCH``) by
its handler.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

LIST_CEILING = 100_000
"""The largest ``IDSTORE_RBAC_MAX_LIST`` accepts; the store checks the configured one."""

BATCH_CEILING = 10_000
"""The largest ``IDSTORE_AUTHZ_MAX_BATCH`` accepts."""

NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]+$"
"""No control character (Unicode category Cc, as the store refuses)."""
NO_CONTROL_NOR_SLASH = r"^[^\x00-\x1f\x7f-\x9f/]+$"
NO_NUL = r"^[^\x00]*$"

RoleId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=NO_CONTROL_NOR_SLASH),
    Field(description="A role's id: 1-128 characters, no control characters, no `/`."),
]
BindingId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=NO_CONTROL_NOR_SLASH),
    Field(description="A binding's id: 1-128 characters, no control characters, no `/`."),
]
Permission = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=NO_CONTROL),
    Field(description="A permission (`orders.read`): 1-255 characters, no control characters."),
]
UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=26, pattern=NO_CONTROL_NOR_SLASH),
    Field(description="A user's id (the SCIM `id`, a 26-character ULID)."),
]
GroupId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=26, pattern=NO_CONTROL_NOR_SLASH),
    Field(description="A group's id (the SCIM `id`, a 26-character ULID)."),
]
ResourceType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=NO_CONTROL_NOR_SLASH),
    Field(description="A resource's type: 1-128 characters, no control characters, no `/`."),
]
ResourceId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=NO_CONTROL),
    Field(description="A resource's id: 1-255 characters, no control characters."),
]
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=NO_CONTROL),
    Field(description="1-255 characters, no control characters."),
]
Description = Annotated[
    str,
    StringConstraints(max_length=4096, pattern=NO_NUL),
    Field(description="At most 4,096 characters, no NUL."),
]
Revision = Annotated[
    int,
    Field(ge=0, description="The RBAC revision: every change of roles or bindings adds one."),
]
Cursor = Annotated[
    str,
    Field(description="Opaque: give it back as `cursor` for the next page; `null` on the last."),
]


_LISTED = "at most `IDSTORE_RBAC_MAX_LIST` (1,000 by default) entries"

RoleIds = Annotated[
    list[RoleId], Field(max_length=LIST_CEILING, description=f"Role ids; {_LISTED}.")
]
Permissions = Annotated[
    list[Permission], Field(max_length=LIST_CEILING, description=f"Permissions; {_LISTED}.")
]
UserIds = Annotated[
    list[UserId], Field(max_length=LIST_CEILING, description=f"User ids; {_LISTED}.")
]
GroupIds = Annotated[
    list[GroupId],
    Field(
        max_length=LIST_CEILING,
        description=f"Group ids (their members hold it, nested groups' too); {_LISTED}.",
    ),
]
ResourceIds = Annotated[
    list[ResourceId], Field(max_length=LIST_CEILING, description=f"Resource ids; {_LISTED}.")
]


class Wire(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


# -- Roles ---------------------------------------------------------------------


class RoleBody(Wire):
    """A role's name, description and whole set of permissions (``PUT``)."""

    name: Name
    description: Description | None = None
    permissions: Permissions


class NewRole(RoleBody):
    """A new role (``POST /roles``)."""

    role_id: RoleId


class Role(Wire):
    role_id: RoleId
    name: str
    description: str | None
    permissions: list[str] = Field(description="Sorted.")
    created_at: datetime
    updated_at: datetime


class RolePage(Wire):
    items: list[Role]
    next_cursor: Cursor | None


# -- Bindings ------------------------------------------------------------------


class BindingResource(Wire):
    """What a binding is scoped to; without one it applies everywhere."""

    resource_type: ResourceType
    resource_id: ResourceId


class BindingBody(Wire):
    """A binding's whole content (``PUT``): it needs a subject or a group,
    and a role or a permission."""

    subjects: UserIds = []
    groups: GroupIds = []
    roles: RoleIds = []
    permissions: Permissions = []
    resource: BindingResource | None = None


class NewBinding(BindingBody):
    """A new binding (``POST /bindings``); a new id unless ``bindingId`` is given."""

    binding_id: BindingId | None = None


class Binding(Wire):
    binding_id: BindingId
    subjects: list[str] = Field(description="Sorted.")
    groups: list[str] = Field(description="Sorted.")
    roles: list[str] = Field(description="Sorted.")
    permissions: list[str] = Field(description="Sorted.")
    resource: BindingResource | None
    created_at: datetime
    updated_at: datetime


class BindingPage(Wire):
    items: list[Binding]
    next_cursor: Cursor | None


# -- Role assignments --------------------------------------------------------


class RoleAssignment(Wire):
    """The whole set of roles of a group (every member holds them, everywhere)
    or of a user (held everywhere); sorted in answers."""

    roles: RoleIds


# -- Checks ------------------------------------------------------------------


class CheckResource(Wire):
    """A resource a check asks about, or a binding's resource in a reason."""

    type: ResourceType
    id: ResourceId


class Check(Wire):
    """Does ``userId`` hold ``permission`` (on ``resource``, or everywhere)?"""

    user_id: UserId
    permission: Permission
    resource: CheckResource | None = None


class CheckBatch(Wire):
    checks: Annotated[
        list[Check],
        Field(
            max_length=BATCH_CEILING,
            description="At most `IDSTORE_AUTHZ_MAX_BATCH` (1,000 by default) checks.",
        ),
    ]


ReasonCode = Literal[
    "granted", "user-not-found", "not-active", "blocked", "no-grant", "other-resource"
]
GrantSource = Literal["binding", "group-role", "user-role"]


class Reason(Wire):
    """One path that grants the permission (``granted``), or why none does."""

    code: ReasonCode = Field(
        description="`granted`: a path that grants it; `user-not-found`, `not-active`, "
        "`blocked`, `no-grant`, `other-resource` (a binding grants it on another "
        "resource): why it is denied."
    )
    message: str
    source: GrantSource | None = Field(
        default=None,
        description="`binding`, `group-role` (a role mapped to a group) or `user-role` "
        "(a role assigned to the user).",
    )
    binding_id: str | None = None
    role_id: str | None = None
    group_id: str | None = Field(
        default=None, description="The group the binding or mapping names."
    )
    via_group_id: str | None = Field(
        default=None,
        description="The user's own group through which it is a member of `groupId`, "
        "when the membership is nested.",
    )
    resource: CheckResource | None = Field(
        default=None, description="The binding's resource (`granted`, `other-resource`)."
    )


class Decision(Wire):
    allowed: bool
    revision: Revision
    reasons: list[Reason]


class BatchResult(Wire):
    allowed: bool
    reasons: list[Reason]


class BatchDecision(Wire):
    revision: Revision = Field(description="Every check of the batch was read at this revision.")
    results: list[BatchResult] = Field(description="In the order of `checks`.")


class HeldPermission(Wire):
    permission: str
    resource: CheckResource | None = Field(default=None, description="Absent: everywhere.")


class EffectivePermissions(Wire):
    user_id: str
    lifecycle: str
    blocked: bool
    revision: Revision
    roles: list[str] = Field(description="Every role the user holds, sorted.")
    permissions: list[HeldPermission] = Field(
        description="Sorted by permission, then resource; empty when the user is not "
        "`ACTIVE` or is blocked."
    )


class Subjects(Wire):
    permission: str
    resource: CheckResource | None = None
    revision: Revision
    subjects: list[str] = Field(description="Ids of active, unblocked users holding it, by id.")
    next_cursor: Cursor | None


# -- Rönd ----------------------------------------------------------------------


class RondWire(BaseModel):
    """Rönd's own bodies: unknown fields are ignored, as Rönd's decoder does."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class RondGrant(RondWire):
    """Rönd's ``POST /grant/bindings[/resource/{resourceType}]`` body."""

    resource_id: ResourceId | None = Field(
        default=None, description="Required when the path names a resource type."
    )
    subjects: UserIds = []
    groups: GroupIds = []
    roles: RoleIds = []
    permissions: Permissions = []


class RondGranted(RondWire):
    binding_id: str


class RondRevoke(RondWire):
    """Rönd's ``POST /revoke/bindings[/resource/{resourceType}]`` body."""

    subjects: UserIds = []
    groups: GroupIds = []
    resource_ids: ResourceIds = []


class RondRevoked(RondWire):
    deleted_bindings: int
    modified_bindings: int


class RondRole(RondWire):
    """A document of Rönd's ``roles`` collection."""

    role_id: str
    name: str
    description: str | None = None
    permissions: list[str]


class RondBindingResource(RondWire):
    resource_type: str
    resource_id: str


class RondBinding(RondWire):
    """A document of Rönd's ``bindings`` collection."""

    binding_id: str
    subjects: list[str]
    groups: list[str]
    roles: list[str]
    permissions: list[str]
    resource: RondBindingResource | None = None


class RbacExport(RondWire):
    roles: list[RondRole]
    bindings: list[RondBinding]
