"""The SCIM attributes of the resources the store keeps, each once: where it is
stored and what a client may do with it (RFC 7643 §2, §3.1, §4).

One table per resource type (:data:`USER_ATTRIBUTES`, :data:`GROUP_ATTRIBUTES`),
keyed by each attribute's full name as scim2-models spells it
(``urn:ietf:params:scim:schemas:core:2.0:User:name.givenName``), with its
column or the rows it lives in, its Python type, its case-exactness, whether
it can be filtered (or why not), whether it can be sorted by, whether a client
may write it and whether it is returned.

Everything that maps SCIM names to columns derives from these tables: the
documents scim_server.mapping renders and reads, the columns a client may set
(:data:`identity_store.user_changes.WRITABLE_COLUMNS`), the columns a representation
reads (:data:`identity_store.read_models.USER_COLUMNS`) and the filter translation
(:mod:`identity_store.filtering`). A new column is added here once.

No SCIM library is imported: the schema URNs are plain constants, and
scim_server.schemas takes them from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from .errors import InvalidFilterError, InvalidSortError
from .models.enums import MultiValuedAttribute
from .models.user import NORMALIZED_VALUE_LENGTH

CORE_USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PRODUCT_USER_SCHEMA = "urn:idstore:params:scim:schemas:extension:idstore:2.0:User"
"""The product's extension of User (SPEC §3)."""


class Rows(Enum):
    """Where the entries of a multi-valued attribute are (RFC 7643 §2.4)."""

    ENTRIES = "user_multi_values"
    """Rows of ``user_multi_values`` whose ``attribute`` is the attribute's name
    (``emails``, ``phoneNumbers``...), with ``primary`` and ``position``."""
    ADDRESSES = "user_addresses"
    """Rows of ``user_addresses``, with ``primary`` and ``position``."""
    GROUPS = "group_members.member_id"
    """A user's direct memberships: the ``group_members`` rows naming it a member."""
    MEMBERS = "group_members.group_id"
    """A group's members: its ``group_members`` rows."""
    TAGS = "users.tags"
    """The strings of the JSON list in the user's own ``tags`` column."""

    @property
    def ordered(self) -> bool:
        """Whether the entries have a primary one and a list order (RFC 7644 §3.4.2.3
        sorts a multi-valued attribute by its primary entry, else its first)."""
        return self in (Rows.ENTRIES, Rows.ADDRESSES)


class Derived(Enum):
    """A value read from other rows than the attribute's own, as
    scim_server.mapping and identity_store.groups render it."""

    GROUP_DISPLAY_NAME = "displayName of the group a membership names"
    MEMBER_DISPLAY_NAME = "displayName of the user or group a membership names"
    MANAGER_DISPLAY_NAME = "displayName of the live user manager.value names"
    DIRECT = 'the string "direct": only direct memberships are stored'


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute or sub-attribute of a resource type, and where it is stored.

    At most one of :attr:`column`, :attr:`derived` and :attr:`constant` says
    where a value comes from; an attribute with none of them is complex
    (its sub-attributes hold the values) or is not stored at all.
    """

    name: str
    """Full name: ``<schema URN>:<attribute>[.<sub-attribute>]``."""
    type: type | None
    """What a value is in Python: ``str``, ``bool``, ``datetime``, ``bytes``
    (stored as its base64 text), ``dict``; ``None`` for a complex attribute."""
    column: str | None = None
    """The column holding the value: of the resource's own table, or of
    :attr:`rows` for a sub-attribute of entries (``emails.value``:
    ``user_multi_values.value``), or the JSON list itself for ``tags``."""
    rows: Rows | None = None
    """Where the entries are, for a multi-valued attribute and its sub-attributes."""
    normalized: str | None = None
    """The column of the same table holding the comparison key
    (:func:`identity_store.comparison.normalize`) of a case-insensitive string."""
    normalized_length: int | None = None
    """How many characters :attr:`normalized` keeps, when it is truncated."""
    derived: Derived | None = None
    constant: str | None = None
    """The value every resource of the type has (``meta.resourceType``)."""
    case_exact: bool = False
    """RFC 7643 §2.2 caseExact, as scim2-models declares it."""
    refused: str | None = None
    """Why the attribute cannot be filtered on; ``None``: it can."""
    writable: bool = False
    """Whether a client may set it (mutability readWrite, immutable or writeOnly)."""
    returned: bool = True
    """Whether a representation shows it (``password`` is returned never)."""

    @property
    def path(self) -> str:
        """The name without its schema: ``name.givenName``."""
        return self.name.rpartition(":")[2]

    @property
    def schema(self) -> str:
        return self.name.rpartition(":")[0]

    @property
    def own_column(self) -> str | None:
        """The column of the resource's own row holding the attribute, if any."""
        return self.column if self.rows is None or self.rows is Rows.TAGS else None

    @property
    def sortable(self) -> bool:
        """A singular value, or a sub-attribute of entries that have a primary
        one and an order; never a complex, refused or constant attribute."""
        has_value = self.column is not None or self.derived is not None
        return (
            self.refused is None
            and self.type is not None
            and has_value
            and (self.rows is None or self.rows.ordered)
        )


def not_filterable(name: str) -> str:
    """The refusal of an attribute the store keeps no filterable value of."""
    return f"attribute '{name}' cannot be filtered on this server"


class AttributeTable(Mapping[str, Attribute]):
    """The attributes of one resource type, by full name, in schema order.

    The ``for_*`` methods say whether a filter term or ``sortBy`` may name an
    attribute, the store's rules in one place: the SCIM layer asks them while
    it reads a filter, so that their reasons come before any complaint about a
    compared value, and :mod:`identity_store.filtering` asks them again for
    any tree it is given.
    """

    def __init__(self, resource_type: str, attributes: list[Attribute]) -> None:
        self.resource_type = resource_type
        self._attributes = {a.name: a for a in attributes}
        assert len(self._attributes) == len(attributes), "an attribute is listed twice"

    def __getitem__(self, name: str) -> Attribute:
        return self._attributes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._attributes)

    def __len__(self) -> int:
        return len(self._attributes)

    def sub_attributes(self, name: str) -> list[Attribute]:
        """The sub-attributes of the complex attribute ``name``, in schema order."""
        prefix = f"{name}."
        return [a for a in self._attributes.values() if a.name.startswith(prefix)]

    def columns(self, *, returned: bool) -> set[str]:
        """The columns of the resource's own table that attributes are read from,
        comparison keys included (``returned``: of attributes a representation
        shows only)."""
        found: set[str] = set()
        for attribute in self._attributes.values():
            if attribute.own_column is None or (returned and not attribute.returned):
                continue
            found.add(attribute.own_column)
            if attribute.normalized is not None:
                found.add(attribute.normalized)
        return found

    def for_filter(self, name: str) -> Attribute:
        """The attribute a filter term names, or :class:`InvalidFilterError` saying
        why it cannot be filtered on."""
        attribute = self._attributes.get(name)
        if attribute is None:
            raise InvalidFilterError(not_filterable(name))
        if attribute.refused is not None:
            raise InvalidFilterError(attribute.refused)
        return attribute

    def for_compare(self, name: str) -> Attribute:
        """The attribute a comparison names: a filterable one holding values."""
        attribute = self.for_filter(name)
        if attribute.type is None:
            raise InvalidFilterError(f"'{name}' is complex: compare one of its sub-attributes")
        return attribute

    def for_within(self, name: str) -> Attribute:
        """The attribute a value path (``emails[...]``) names: a multi-valued one."""
        attribute = self.for_filter(name)
        if attribute.rows is None:
            raise InvalidFilterError(f"'{name}' is not multi-valued")
        return attribute

    def for_sort(self, name: str) -> Attribute:
        """The attribute ``sortBy`` names, or :class:`InvalidSortError`."""
        attribute = self._attributes.get(name)
        if attribute is None or not attribute.sortable:
            raise InvalidSortError(f"sortBy: '{name}' cannot be sorted by")
        return attribute


def _meta(schema: str, resource_type: str) -> list[Attribute]:
    """RFC 7643 §3.1's common attributes, which every resource type has."""
    return [
        Attribute(f"{schema}:id", str, column="id", case_exact=True),
        Attribute(
            f"{schema}:externalId", str, column="external_id", case_exact=True, writable=True
        ),
        Attribute(f"{schema}:meta", None),
        Attribute(f"{schema}:meta.created", datetime, column="created_at"),
        Attribute(f"{schema}:meta.lastModified", datetime, column="updated_at"),
        Attribute(f"{schema}:meta.resourceType", str, constant=resource_type, case_exact=True),
        Attribute(
            f"{schema}:meta.location",
            str,
            refused="'meta.location' cannot be filtered; filter on 'id'",
        ),
        Attribute(
            f"{schema}:meta.version",
            str,
            column="version",
            case_exact=True,
            refused="'meta.version' cannot be filtered",
        ),
        Attribute(f"{schema}:schemas", str, refused="'schemas' cannot be filtered"),
    ]


_REF = "'$ref' is derived from the server's base URL and cannot be filtered"


def _user_attributes() -> list[Attribute]:
    def core(name: str) -> str:
        return f"{CORE_USER_SCHEMA}:{name}"

    def enterprise(name: str) -> str:
        return f"{ENTERPRISE_USER_SCHEMA}:{name}"

    def product(name: str) -> str:
        return f"{PRODUCT_USER_SCHEMA}:{name}"

    def text(name: str, column: str) -> Attribute:
        return Attribute(name, str, column=column, writable=True)

    attributes = [
        Attribute(
            core("userName"),
            str,
            column="user_name",
            normalized="user_name_normalized",
            writable=True,
        ),
        Attribute(core("name"), None, writable=True),
        text(core("name.formatted"), "formatted_name"),
        text(core("name.familyName"), "family_name"),
        text(core("name.givenName"), "given_name"),
        text(core("name.middleName"), "middle_name"),
        text(core("name.honorificPrefix"), "honorific_prefix"),
        text(core("name.honorificSuffix"), "honorific_suffix"),
        text(core("displayName"), "display_name"),
        text(core("nickName"), "nick_name"),
        Attribute(core("profileUrl"), str, column="profile_url", case_exact=True, writable=True),
        text(core("title"), "title"),
        text(core("userType"), "scim_user_type"),
        text(core("preferredLanguage"), "preferred_language"),
        text(core("locale"), "locale"),
        text(core("timezone"), "timezone"),
        Attribute(core("active"), bool, column="active", writable=True),
        Attribute(
            core("password"),
            str,
            case_exact=True,
            refused="'password' cannot be filtered: only a salted hash of it is stored",
            writable=True,
            returned=False,
        ),
    ]

    def entries(multi_valued: MultiValuedAttribute) -> list[Attribute]:
        """An attribute kept in ``user_multi_values``, and its sub-attributes."""
        name = core(multi_valued.value)
        binary = multi_valued is MultiValuedAttribute.X509_CERTIFICATES
        return [
            Attribute(name, None, rows=Rows.ENTRIES, writable=True),
            Attribute(
                f"{name}.value",
                bytes if binary else str,
                column="value",
                rows=Rows.ENTRIES,
                normalized="value_normalized",
                normalized_length=NORMALIZED_VALUE_LENGTH,
                case_exact=binary or multi_valued is MultiValuedAttribute.PHOTOS,
                writable=True,
            ),
            Attribute(f"{name}.display", str, column="display", rows=Rows.ENTRIES, writable=True),
            Attribute(f"{name}.type", str, column="type", rows=Rows.ENTRIES, writable=True),
            Attribute(f"{name}.primary", bool, column="primary", rows=Rows.ENTRIES, writable=True),
        ]

    addresses = [
        Attribute(core("addresses"), None, rows=Rows.ADDRESSES, writable=True),
        *(
            Attribute(
                core(f"addresses.{sub}"),
                bool if sub == "primary" else str,
                column=column,
                rows=Rows.ADDRESSES,
                writable=True,
            )
            for sub, column in (
                ("formatted", "formatted"),
                ("streetAddress", "street_address"),
                ("locality", "locality"),
                ("region", "region"),
                ("postalCode", "postal_code"),
                ("country", "country"),
                ("type", "type"),
                ("primary", "primary"),
            )
        ),
    ]
    groups = [
        Attribute(core("groups"), None, rows=Rows.GROUPS),
        Attribute(core("groups.value"), str, column="group_id", rows=Rows.GROUPS, case_exact=True),
        Attribute(core("groups.$ref"), str, case_exact=True, refused=_REF),
        Attribute(
            core("groups.display"), str, derived=Derived.GROUP_DISPLAY_NAME, rows=Rows.GROUPS
        ),
        Attribute(core("groups.type"), str, derived=Derived.DIRECT, rows=Rows.GROUPS),
    ]
    attributes += [
        *entries(MultiValuedAttribute.EMAILS),
        *entries(MultiValuedAttribute.PHONE_NUMBERS),
        *entries(MultiValuedAttribute.IMS),
        *entries(MultiValuedAttribute.PHOTOS),
        *addresses,
        *groups,
        *entries(MultiValuedAttribute.ENTITLEMENTS),
        *entries(MultiValuedAttribute.ROLES),
        *entries(MultiValuedAttribute.X509_CERTIFICATES),
    ]
    attributes += _meta(CORE_USER_SCHEMA, "User")
    attributes += [
        text(enterprise("employeeNumber"), "employee_number"),
        text(enterprise("costCenter"), "cost_center"),
        text(enterprise("organization"), "organization"),
        text(enterprise("division"), "division"),
        text(enterprise("department"), "department"),
        Attribute(enterprise("manager"), None, writable=True),
        Attribute(
            enterprise("manager.value"), str, column="manager_id", case_exact=True, writable=True
        ),
        Attribute(enterprise("manager.$ref"), str, case_exact=True, refused=_REF),
        Attribute(enterprise("manager.displayName"), str, derived=Derived.MANAGER_DISPLAY_NAME),
    ]
    attributes += [
        text(product("idpReferenceId"), "idp_reference_id"),
        text(product("idpUsername"), "idp_username"),
        text(product("idpWorkforceId"), "idp_workforce_id"),
        text(product("idpCloudUsername"), "idp_cloud_username"),
        text(product("idpSource"), "idp_source"),
        text(product("userType"), "user_type"),
        Attribute(product("tags"), str, column="tags", rows=Rows.TAGS, writable=True),
        Attribute(product("lifecycle"), str, column="lifecycle"),
        Attribute(product("lifecycleChangedAt"), datetime, column="lifecycle_changed_at"),
        Attribute(product("status"), None, column="status", refused="'status' cannot be filtered"),
        *(
            Attribute(
                product(f"status.{sub}"),
                datetime if sub == "updatedAt" else str,
                refused=not_filterable(product(f"status.{sub}")),
            )
            for sub in ("name", "status", "message", "updatedAt")
        ),
        text(product("userGroup"), "user_group"),
        Attribute(
            product("customData"),
            dict,
            column="custom_data",
            refused="'customData' is a free JSON object and cannot be filtered",
            writable=True,
        ),
        Attribute(product("expirationDate"), datetime, column="expiration_date", writable=True),
        Attribute(product("blocked"), bool, column="blocked", writable=True),
        Attribute(product("authUserId"), str, column="auth_user_id"),
    ]
    return attributes


def _group_attributes() -> list[Attribute]:
    def core(name: str) -> str:
        return f"{CORE_GROUP_SCHEMA}:{name}"

    return [
        Attribute(
            core("displayName"),
            str,
            column="display_name",
            normalized="display_name_normalized",
            writable=True,
        ),
        Attribute(core("members"), None, rows=Rows.MEMBERS, writable=True),
        Attribute(
            core("members.value"),
            str,
            column="member_id",
            rows=Rows.MEMBERS,
            case_exact=True,
            writable=True,
        ),
        Attribute(core("members.$ref"), str, case_exact=True, refused=_REF),
        Attribute(
            core("members.type"), str, column="member_type", rows=Rows.MEMBERS, writable=True
        ),
        Attribute(
            core("members.display"), str, derived=Derived.MEMBER_DISPLAY_NAME, rows=Rows.MEMBERS
        ),
        *_meta(CORE_GROUP_SCHEMA, "Group"),
    ]


USER_ATTRIBUTES = AttributeTable("User", _user_attributes())
"""Users: the core schema, then the enterprise extension (RFC 7643 §4.3), then
the product's (SPEC §3)."""

GROUP_ATTRIBUTES = AttributeTable("Group", _group_attributes())
"""Groups (RFC 7643 §4.2)."""
