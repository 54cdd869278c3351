"""SCIM resource models served by this server (RFC 7643), built on scim2-models.

The same models validate requests, serialize responses and generate the
discovery documents (``/Schemas``, ``/ResourceTypes``), so what the server
announces is what it accepts. Importing this module puts
:mod:`scim_server.validation`'s caches around scim2-models' validation.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from scim2_models import (
    URN,
    ComplexAttribute,
    EnterpriseUser,
    Extension,
    Group,
    Mutability,
    PatchOp,
    ResourceType,
    ScimPolicy,
    ScimProvider,
    User,
)

# The URNs are the store's: its attribute table is keyed by them. Re-exported.
from identity_store.attributes import CORE_GROUP_SCHEMA as CORE_GROUP_SCHEMA
from identity_store.attributes import CORE_USER_SCHEMA as CORE_USER_SCHEMA
from identity_store.attributes import ENTERPRISE_USER_SCHEMA as ENTERPRISE_USER_SCHEMA
from identity_store.attributes import PRODUCT_USER_SCHEMA as PRODUCT_USER_SCHEMA

from . import validation

validation.install()


class ProductUserType(StrEnum):
    """What kind of identity a user is (SPEC §3 ``user_type``)."""

    PERSON = "PERSON"
    SERVICE_ACCOUNT = "SERVICE_ACCOUNT"


class StatusStep(ComplexAttribute):
    """One step of a user's synchronisation status (SPEC §3 ``status``)."""

    name: Annotated[str | None, Mutability.read_only] = None
    """The step: ``PROFILE_SYNC``, ``AUTH0_SYNC``, ``RBAC_SYNC``..."""

    status: Annotated[str | None, Mutability.read_only] = None
    """``OK``, ``PENDING`` or ``ERROR``."""

    message: Annotated[str | None, Mutability.read_only] = None
    """What went wrong, when the step failed."""

    updated_at: Annotated[datetime | None, Mutability.read_only] = None
    """When the step last changed."""


class IdentityStoreUser(Extension):
    """The product's extension of User: identity-provider identifiers, lifecycle
    and management fields (SPEC §3)."""

    __schema__ = URN(PRODUCT_USER_SCHEMA)

    idp_reference_id: str | None = None
    """The identity provider's object id (Entra: the user's object id)."""

    idp_username: str | None = None
    """On-premises / LDAP account name."""

    idp_workforce_id: str | None = None
    """Employee id in the workforce system."""

    idp_cloud_username: str | None = None
    """Cloud sign-in name (Entra: the user principal name)."""

    idp_source: str | None = None
    """Where the identity comes from: ``AAD``, ``MANUAL``, ``IMPORT``..."""

    user_type: ProductUserType | None = None
    """``PERSON`` or ``SERVICE_ACCOUNT``."""

    tags: list[str] | None = None
    """Free labels."""

    lifecycle: Annotated[str | None, Mutability.read_only] = None
    """``CREATED``, ``ACTIVE``, ``ERROR``, ``SUSPENDED`` or ``INACTIVE`` (SPEC §4)."""

    lifecycle_changed_at: Annotated[datetime | None, Mutability.read_only] = None
    """When the user entered its ``lifecycle`` state."""

    status: Annotated[list[StatusStep] | None, Mutability.read_only] = None
    """Synchronisation steps and their state."""

    user_group: str | None = None
    """The user group whose JSON schema ``customData`` must satisfy."""

    custom_data: dict[str, Any] | None = None
    """Free JSON object, validated against the user group's schema."""

    expiration_date: datetime | None = None
    """When the user is blocked automatically."""

    blocked: bool | None = None
    """Whether the user is blocked (sign-in refused downstream)."""

    auth_user_id: Annotated[str | None, Mutability.read_only] = None
    """The user's id in Auth0, set by the sync module."""


ScimUser = User[EnterpriseUser | IdentityStoreUser]
"""The User resource as this server serves it."""

ScimGroup = Group
"""The Group resource as this server serves it."""

UserPatchOp = PatchOp[ScimUser]
"""A user PATCH body. Subscripting ``PatchOp`` costs about 12 µs (scim2-models
checks the parameter each time): validate with this class, built once."""

GroupPatchOp = PatchOp[ScimGroup]
"""A group PATCH body, built once like :data:`UserPatchOp`."""

PatchEnvelope = tuple[list[Any], list[tuple[dict[str, Any], str, str, Any]]]


def patch_envelope(body: Any) -> PatchEnvelope | None:
    """What the shape memos of PATCH requests (scim_server.user_patch,
    scim_server.group_patch) read of a message before its values: the start
    of a shape (the message's members and ``schemas``) and each operation as
    ``(operation, op, path, value)``. ``None`` when ``body`` is not a
    message of one or more operations that each name their ``op`` and
    ``path`` as strings: such a request is validated in full."""
    if not isinstance(body, dict):
        return None
    schemas = body.get("schemas")
    operations = body.get("Operations")
    if not isinstance(schemas, list) or not all(type(s) is str for s in schemas):
        return None
    if not isinstance(operations, list) or not operations:
        return None
    found: list[tuple[dict[str, Any], str, str, Any]] = []
    for operation in operations:
        if not isinstance(operation, dict):
            return None
        op, path = operation.get("op"), operation.get("path")
        if type(op) is not str or type(path) is not str:
            return None
        found.append((operation, op, path, operation.get("value")))
    return [tuple(sorted(body)), tuple(schemas)], found


USER_RESOURCE_TYPE = ResourceType.from_resource(ScimUser)
GROUP_RESOURCE_TYPE = ResourceType.from_resource(ScimGroup)


def entra_tolerant_policy() -> ScimPolicy:
    """How this server reads payloads.

    Microsoft Entra ID's provisioning service attaches schema URIs and
    attributes no schema declares (``http://schemas.microsoft.com/2006/11/
    ResourceManagement/ADSCIM/2.0/Group``), sends ``remove`` with a ``value``
    naming the members to remove, and ``add`` to ``emails[type eq "work"]``
    where no such entry exists yet. RFC 7644 would refuse each of these; the
    connector would then be quarantined, so they are accepted.
    """
    return ScimPolicy(
        unknown=ScimPolicy.Unknown.ignore,
        remove_value_as_filter=ScimPolicy.RemoveValue.apply,
        unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
    )


def patch_policy() -> ScimPolicy:
    """How PATCH requests are read: as tolerant as :func:`entra_tolerant_policy`
    except that a path naming an attribute no schema declares is an error
    (``invalidPath``), never an operation silently dropped."""
    return entra_tolerant_policy().model_copy(update={"unknown": ScimPolicy.Unknown.forbid})


PATCH_POLICY = patch_policy()


def build_provider() -> ScimProvider:
    """The description of this service, used for discovery and validation."""
    return ScimProvider(
        models=[User, EnterpriseUser, IdentityStoreUser, Group],
        resource_types=[USER_RESOURCE_TYPE, GROUP_RESOURCE_TYPE],
        policy=entra_tolerant_policy(),
    )
