"""The attribute table (identity_store.attributes) against the models on both
sides of it: the SQL tables it names and the SCIM schemas scim2-models declares."""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel
from scim2_models import EnterpriseUser, ScimFilter
from scim2_models import Group as CoreGroup
from scim2_models import User as CoreUser

from identity_store import read_models, user_changes
from identity_store.attributes import (
    CORE_GROUP_SCHEMA,
    CORE_USER_SCHEMA,
    ENTERPRISE_USER_SCHEMA,
    GROUP_ATTRIBUTES,
    PRODUCT_USER_SCHEMA,
    USER_ATTRIBUTES,
    Attribute,
    AttributeTable,
    Rows,
)
from identity_store.models import (
    Group,
    GroupMember,
    MultiValuedAttribute,
    User,
    UserAddress,
    UserMultiValue,
)
from scim_server import mapping
from scim_server.schemas import IdentityStoreUser, ScimGroup, ScimUser

NOT_ATTRIBUTES = {
    "password_hash": "a hash of the write-only password, never its value",
    "profile_sync_attempts": "the profile sync's own counter (idstore user show prints it)",
    "providers": "social identities of the management API",
    "last_logged_in_at": "management API",
    "deleted_at": "a deleted user is not served over SCIM",
}
"""Columns of ``users`` no SCIM attribute reads, and why."""

ROWS_TABLES: dict[Rows, Any] = {
    Rows.ENTRIES: UserMultiValue,
    Rows.ADDRESSES: UserAddress,
    Rows.GROUPS: GroupMember,
    Rows.MEMBERS: GroupMember,
}

TABLES = [
    pytest.param(USER_ATTRIBUTES, User, id="User"),
    pytest.param(GROUP_ATTRIBUTES, Group, id="Group"),
]


def _columns(model: Any) -> set[str]:
    return {c.key for c in model.__table__.columns}


def test_every_column_of_users_is_read_by_an_attribute_or_said_not_to_be() -> None:
    """A new column of ``users`` fails this test until it gets an attribute
    (or a reason here not to)."""
    assert _columns(User) - USER_ATTRIBUTES.columns(returned=False) == set(NOT_ATTRIBUTES)


def test_every_column_of_groups_is_read_by_an_attribute() -> None:
    assert _columns(Group) == GROUP_ATTRIBUTES.columns(returned=False)


@pytest.mark.parametrize(("table", "model"), TABLES)
def test_every_column_the_table_names_exists(table: AttributeTable, model: Any) -> None:
    """Columns of the resource's own table, of its entries' rows, and comparison keys."""
    for attribute in table.values():
        where = model if attribute.own_column else ROWS_TABLES.get(attribute.rows)  # type: ignore[arg-type]
        for column in (attribute.column, attribute.normalized):
            if column is not None:
                assert where is not None, attribute.name
                assert column in _columns(where), attribute.name


@pytest.mark.parametrize(("table", "model"), TABLES)
def test_each_attribute_says_where_its_value_comes_from_at_most_once(
    table: AttributeTable, model: Any
) -> None:
    for attribute in table.values():
        sources = [attribute.column, attribute.derived, attribute.constant]
        assert sum(s is not None for s in sources) <= 1, attribute.name
        if attribute.normalized is not None:  # the comparison key of a stored value
            assert attribute.column is not None, attribute.name


def test_the_entries_of_user_multi_values_are_the_multi_valued_attributes() -> None:
    """``user_multi_values.attribute`` holds the SCIM name of the head attribute."""
    heads = [
        a.path for a in USER_ATTRIBUTES.values() if a.rows is Rows.ENTRIES and "." not in a.path
    ]
    assert heads == [m.value for m in MultiValuedAttribute]


# -- The table and scim2-models --------------------------------------------------------


def test_the_schema_urns_are_the_ones_scim2_models_declares() -> None:
    assert str(CoreUser.__schema__) == CORE_USER_SCHEMA
    assert str(CoreGroup.__schema__) == CORE_GROUP_SCHEMA
    assert str(EnterpriseUser.__schema__) == ENTERPRISE_USER_SCHEMA
    assert str(IdentityStoreUser.__schema__) == PRODUCT_USER_SCHEMA


COMMON = ["id", "externalId", "schemas", "meta"]
"""RFC 7643 §3.1 common attributes, which no schema document lists."""


def _declared(models: list[Any], core: str) -> list[str]:
    """Full names of every attribute and sub-attribute the models declare."""
    names = [f"{core}:{name}" for name in COMMON]
    names += [
        f"{core}:meta.{sub}"
        for sub in ("resourceType", "created", "lastModified", "location", "version")
    ]
    for model in models:
        document = model.to_schema()
        for attribute in document.attributes:
            full = f"{document.id}:{attribute.name}"
            names.append(full)
            names += [f"{full}.{sub.name}" for sub in attribute.sub_attributes or []]
    return names


DECLARED = {
    "User": _declared([CoreUser, EnterpriseUser, IdentityStoreUser], CORE_USER_SCHEMA),
    "Group": _declared([CoreGroup], CORE_GROUP_SCHEMA),
}


@pytest.mark.parametrize(
    ("table", "resource"), [(USER_ATTRIBUTES, "User"), (GROUP_ATTRIBUTES, "Group")]
)
def test_the_table_lists_every_declared_attribute_and_nothing_else(
    table: AttributeTable, resource: str
) -> None:
    assert sorted(table) == sorted(DECLARED[resource])


def _kind(annotation: Any) -> type | None:
    """What scim2-models' Python type of an attribute compares as in the store."""
    if typing.get_origin(annotation) is dict:
        return dict
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return None
    for kind in (bool, datetime, bytes):
        if isinstance(annotation, type) and issubclass(annotation, kind):
            return kind
    return str


ALL = [
    *((ScimFilter[ScimUser], a) for a in USER_ATTRIBUTES.values()),
    *((ScimFilter[ScimGroup], a) for a in GROUP_ATTRIBUTES.values()),
]


@pytest.mark.parametrize(
    ("filter_type", "attribute"), ALL, ids=[f"{a.name.rpartition(':')[2]}" for _, a in ALL]
)
def test_type_and_case_exactness_are_the_ones_scim2_models_declares(
    filter_type: Any, attribute: Attribute
) -> None:
    """The store translates by the table what the SCIM layer checked with scim2-models."""
    scim_filter = filter_type(f"{attribute.name} pr")
    binding = scim_filter.resolve(scim_filter.ast.attr_path, strict=True)
    assert binding.urn == attribute.name
    assert _kind(binding.target_type) is attribute.type
    assert binding.case_exact is attribute.case_exact
    if attribute.refused is None:
        # A multi-valued attribute and its sub-attributes name the rows of its entries.
        assert binding.is_multivalued is (attribute.rows is not None)


# -- The maps derived from the table ---------------------------------------------------

MAPPING_BEFORE_THE_TABLE: dict[str, dict[str, str]] = {
    "MULTI_VALUED": {
        "emails": "emails",
        "phoneNumbers": "phone_numbers",
        "ims": "ims",
        "photos": "photos",
        "entitlements": "entitlements",
        "roles": "roles",
        "x509Certificates": "x509_certificates",
    },
    "NAME_COLUMNS": {
        "formatted": "formatted_name",
        "familyName": "family_name",
        "givenName": "given_name",
        "middleName": "middle_name",
        "honorificPrefix": "honorific_prefix",
        "honorificSuffix": "honorific_suffix",
    },
    "CORE_COLUMNS": {
        "displayName": "display_name",
        "nickName": "nick_name",
        "profileUrl": "profile_url",
        "title": "title",
        "userType": "scim_user_type",
        "preferredLanguage": "preferred_language",
        "locale": "locale",
        "timezone": "timezone",
        "externalId": "external_id",
    },
    "ENTERPRISE_COLUMNS": {
        "employeeNumber": "employee_number",
        "costCenter": "cost_center",
        "organization": "organization",
        "division": "division",
        "department": "department",
    },
    "PRODUCT_COLUMNS": {
        "idpReferenceId": "idp_reference_id",
        "idpUsername": "idp_username",
        "idpWorkforceId": "idp_workforce_id",
        "idpCloudUsername": "idp_cloud_username",
        "idpSource": "idp_source",
        "userType": "user_type",
        "userGroup": "user_group",
        "customData": "custom_data",
        "expirationDate": "expiration_date",
        "blocked": "blocked",
    },
    "PRODUCT_READ_ONLY": {
        "lifecycle": "lifecycle",
        "lifecycleChangedAt": "lifecycle_changed_at",
        "authUserId": "auth_user_id",
    },
    "STEP_KEYS": {
        "name": "name",
        "status": "status",
        "message": "message",
        "updatedAt": "updated_at",
    },
    "ADDRESS_COLUMNS": {
        "formatted": "formatted",
        "streetAddress": "street_address",
        "locality": "locality",
        "region": "region",
        "postalCode": "postal_code",
        "country": "country",
        "type": "type",
        "primary": "primary",
    },
}
"""scim_server.mapping's maps as they were written out before the table (by
hand, in this order, which is the order documents list their keys in)."""


@pytest.mark.parametrize(("name", "expected"), MAPPING_BEFORE_THE_TABLE.items())
def test_the_maps_mapping_derives_are_the_ones_it_wrote_out(
    name: str, expected: dict[str, str]
) -> None:
    assert list(getattr(mapping, name).items()) == list(expected.items())


WRITABLE_BEFORE_THE_TABLE = {
    *("external_id", "idp_reference_id", "idp_username", "idp_workforce_id"),
    *("idp_cloud_username", "idp_source", "display_name", "formatted_name", "given_name"),
    *("family_name", "middle_name", "honorific_prefix", "honorific_suffix", "nick_name"),
    *("profile_url", "title", "scim_user_type", "preferred_language", "locale", "timezone"),
    *("employee_number", "cost_center", "organization", "division", "department"),
    *("manager_id", "user_type", "tags", "active", "user_group", "custom_data", "blocked"),
    "expiration_date",
}
"""identity_store.user_changes.WRITABLE_COLUMNS as it was written out before the table."""


def test_the_writable_columns_are_the_ones_users_wrote_out() -> None:
    assert user_changes.WRITABLE_COLUMNS == WRITABLE_BEFORE_THE_TABLE


WRITTEN_APART = {
    f"{CORE_USER_SCHEMA}:userName": "UserInput.user_name, with its comparison key",
    f"{CORE_USER_SCHEMA}:password": "UserInput.password, hashed",
}


@pytest.mark.parametrize(
    "attribute", [a for a in USER_ATTRIBUTES.values() if a.writable], ids=lambda a: a.path
)
def test_every_writable_user_attribute_maps_to_a_column_the_store_writes(
    attribute: Attribute,
) -> None:
    """A value a client sends is kept: in a writable column of ``users``, in a
    column of its entries' rows, or through the input's own field."""
    if attribute.name in WRITTEN_APART:
        return
    if attribute.type is None:  # complex: its sub-attributes hold the values
        assert USER_ATTRIBUTES.sub_attributes(attribute.name) or attribute.rows, attribute.name
    elif attribute.rows is Rows.ENTRIES:
        assert attribute.column in user_changes.MULTI_VALUE_FIELDS
    elif attribute.rows is Rows.ADDRESSES:
        assert attribute.column in user_changes.ADDRESS_FIELDS
    else:
        assert attribute.own_column in user_changes.WRITABLE_COLUMNS


def test_a_user_view_reads_every_column_but_those_no_returned_attribute_reads() -> None:
    """Not the password's hash (``password`` is returned never), nor the columns
    that are no attribute at all."""
    assert set(read_models.USER_COLUMNS) == _columns(User) - set(NOT_ATTRIBUTES)
    assert "user_name_normalized" in read_models.USER_COLUMNS  # a cursor sorts by it
