"""SCIM filters and sortBy (RFC 7644 §3.4.2.2, §3.4.2.3) run as SQL, on both databases.

Each filter is read by the SCIM layer (scim_server.filters) into the store's
tree, which the store translates (identity_store.filtering), as a request does.
A small fixed population is seeded through the ORM; each filter of the tables
below must select exactly the expected users or groups. The same expectations
are checked against scim2-models' in-memory ``ScimFilter.match``, the reference
semantics, on SCIM representations of the same population.
"""

from __future__ import annotations

import random
import unicodedata
from datetime import UTC, datetime
from typing import Any

import pytest
from scim2_models import (
    Address,
    Email,
    EnterpriseUser,
    GroupMembership,
    InvalidFilterException,
    InvalidValueException,
    Manager,
    Meta,
    Name,
    PhoneNumber,
    Role,
    ScimFilter,
    X509Certificate,
)
from scim2_models import Group as CoreGroup
from scim2_models import GroupMember as ScimGroupMember
from scim2_models import User as CoreUser
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store.errors import InvalidFilterError, InvalidSortError
from identity_store.filtering import group_order, group_where, user_order, user_where
from identity_store.models import (
    Group,
    GroupMember,
    Lifecycle,
    MemberType,
    User,
    UserAddress,
    UserMultiValue,
    UserType,
)
from identity_store.models.user import NORMALIZED_VALUE_LENGTH
from scim_server.errors import describe
from scim_server.filters import (
    MAX_TERMS,
    group_filter,
    group_sort_key,
    user_filter,
    user_sort_key,
)
from scim_server.schemas import (
    CORE_GROUP_SCHEMA,
    CORE_USER_SCHEMA,
    ENTERPRISE_USER_SCHEMA,
    PRODUCT_USER_SCHEMA,
    IdentityStoreUser,
    ScimGroup,
    ScimUser,
)

ENT = ENTERPRISE_USER_SCHEMA
PROD = PRODUCT_USER_SCHEMA


def _id(key: str) -> str:
    """A fixed 26-character id per seeded resource, so filters can name it."""
    return key.upper().ljust(26, "0")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _normalized(value: str) -> str:
    return unicodedata.normalize("NFC", value).lower()


# -- The population ------------------------------------------------------------------

USERS: dict[str, dict[str, Any]] = {
    "alice": {
        "user_name": "Alice@Example.com",
        "external_id": "EXT-Alice",
        "display_name": "Alice Liddell",
        "formatted_name": "Alice Liddell",
        "given_name": "Alice",
        "family_name": "Liddell",
        "title": "Engineer",
        "scim_user_type": "Employee",
        "locale": "en-GB",
        "active": True,
        "employee_number": "1001",
        "department": "R&D",
        "cost_center": "CC-1",
        "manager_id": _id("bob"),
        "idp_reference_id": "aad-alice",
        "idp_source": "AAD",
        "user_type": UserType.PERSON.value,
        "tags": ["vip", "Paris"],
        "lifecycle": Lifecycle.ACTIVE.value,
        "user_group": "staff",
        "blocked": False,
        "expiration_date": _at("2030-01-01T00:00:00"),
        "created_at": _at("2021-03-01T10:00:00"),
        "updated_at": _at("2024-05-01T00:00:00"),
    },
    "bob": {
        "user_name": "bob",
        "external_id": "ext-bob",
        "display_name": "Bob Builder",
        "given_name": "Bob",
        "active": False,
        "department": "Sales",
        "lifecycle": Lifecycle.SUSPENDED.value,
        "blocked": True,
        "tags": [],
        "created_at": _at("2019-06-01T00:00:00"),
        "updated_at": _at("2019-06-02T00:00:00"),
    },
    "elodie": {
        "user_name": "Élodie",
        "display_name": "Élodie Durand",
        "given_name": "Élodie",
        "family_name": "Durand",
        "title": "DIRECTRICE",
        "active": True,
        "department": "R&D",
        "manager_id": _id("alice"),
        "user_type": UserType.SERVICE_ACCOUNT.value,
        "tags": ["VIP"],
        "auth_user_id": "auth0|123",
        "created_at": _at("2022-01-01T00:00:00"),
        "updated_at": _at("2022-01-01T00:00:00"),
    },
    "wild": {
        "user_name": "50%_off/deal",
        "display_name": "Wild Card",
        "title": "a_b",
        "active": True,
        "created_at": _at("2023-01-01T00:00:00"),
        "updated_at": _at("2023-01-01T00:00:00"),
    },
    "carol": {
        "user_name": "carol",
        "nick_name": "",  # an empty string, as some clients send for no value
        "active": True,
        "created_at": _at("2020-01-01T00:00:00"),
        "updated_at": _at("2020-01-01T00:00:00"),
    },
}

# (attribute, type, value, primary), in list order.
ENTRIES: dict[str, list[tuple[str, str | None, str, bool]]] = {
    "alice": [
        ("emails", "work", "alice@example.com", True),
        ("emails", "home", "alice.home@mail.example.org", False),
        ("phoneNumbers", "work", "+33 1 23 45 67 89", False),
        ("roles", None, "admin", False),
        ("x509Certificates", None, "Y2VydC1h", False),
    ],
    "bob": [("emails", "work", "bob@corp.example.net", True)],
    "elodie": [
        ("emails", "home", "elodie@example.com", False),
        ("emails", "work", "ELODIE@WORK.EXAMPLE.NET", False),
    ],
    "wild": [
        ("emails", "other", "x_y@example.com", False),
        # Longer than the 512 characters value_normalized keeps.
        ("roles", None, "R" * 520 + "-Tail", False),
    ],
}

ADDRESSES: dict[str, list[dict[str, Any]]] = {
    "alice": [
        {
            "type": "work",
            "primary": True,
            "street_address": "1 Rue de Rivoli",
            "locality": "Paris",
            "postal_code": "75001",
            "country": "FR",
        }
    ],
    "elodie": [{"type": "home", "locality": "Lyon", "country": "FR"}],
}

GROUPS: dict[str, dict[str, Any]] = {
    "admins": {
        "display_name": "Admins",
        "external_id": "grp-ADM",
        "created_at": _at("2020-05-01T00:00:00"),
    },
    "engineering": {"display_name": "Engineering", "created_at": _at("2022-02-02T00:00:00")},
    "equipe": {"display_name": "Équipe", "created_at": _at("2023-03-03T00:00:00")},
    "empty": {"display_name": "Empty", "created_at": _at("2024-04-04T00:00:00")},
}

# group → [(member, type)]
MEMBERS: dict[str, list[tuple[str, MemberType]]] = {
    "admins": [
        ("alice", MemberType.USER),
        ("bob", MemberType.USER),
        ("equipe", MemberType.GROUP),
    ],
    "engineering": [("elodie", MemberType.USER)],
    "equipe": [("carol", MemberType.USER)],
}


async def _seed(session: AsyncSession) -> None:
    for key, fields in USERS.items():
        session.add(
            User(
                id=_id(key),
                user_name_normalized=_normalized(fields["user_name"]),
                **fields,
            )
        )
        for position, (attribute, type_, value, primary) in enumerate(ENTRIES.get(key, [])):
            session.add(
                UserMultiValue(
                    user_id=_id(key),
                    attribute=attribute,
                    position=position,
                    type=type_,
                    value=value,
                    value_normalized=_normalized(value)[:NORMALIZED_VALUE_LENGTH],
                    primary=primary,
                )
            )
        for position, address in enumerate(ADDRESSES.get(key, [])):
            session.add(UserAddress(user_id=_id(key), position=position, **address))
    for key, fields in GROUPS.items():
        session.add(
            Group(
                id=_id(key), display_name_normalized=_normalized(fields["display_name"]), **fields
            )
        )
    await session.flush()
    for group, members in MEMBERS.items():
        for member, member_type in members:
            session.add(
                GroupMember(group_id=_id(group), member_id=_id(member), member_type=member_type)
            )
    await session.commit()


def _keys_in_order(ids: Any, population: dict[str, Any]) -> list[str]:
    by_id = {_id(key): key for key in population}
    return [by_id[found] for found in ids]


def _keys(ids: Any, population: dict[str, Any]) -> set[str]:
    return set(_keys_in_order(ids, population))


def _user_where(expression: str, *, max_length: int = 4096) -> Any:
    """The WHERE clause of a user filter: read by the SCIM layer, translated by the store."""
    return user_where(user_filter(expression, max_length=max_length))


def _group_where(expression: str) -> Any:
    return group_where(group_filter(expression))


def _user_order(attribute: str) -> Any:
    return user_order(user_sort_key(attribute))


def _group_order(attribute: str) -> Any:
    return group_order(group_sort_key(attribute))


def _answer(exc: BaseException) -> tuple[int, str | None]:
    """The status and scimType the server answers ``exc`` with (scim_server.errors)."""
    status, _, scim_type, _ = describe(exc)
    return status, scim_type


async def _users_matching(session: AsyncSession, expression: str) -> set[str]:
    query = select(User.id).where(User.deleted_at.is_(None), _user_where(expression))
    return _keys(await session.scalars(query), USERS)


async def _groups_matching(session: AsyncSession, expression: str) -> set[str]:
    return _keys(await session.scalars(select(Group.id).where(_group_where(expression))), GROUPS)


EVERYONE = set(USERS)


def _but(*keys: str) -> set[str]:
    return EVERYONE - set(keys)


# -- The tables ----------------------------------------------------------------------

USER_CASES: list[tuple[str, set[str]]] = [
    # Attribute names, operators and values in any case (RFC 7643 §2.1, §2.2).
    ('userName eq "alice@example.com"', {"alice"}),
    ('USERNAME EQ "ALICE@EXAMPLE.COM"', {"alice"}),
    ('userName eq "élodie"', {"elodie"}),
    ('userName eq "ÉLODIE"', {"elodie"}),
    ('userName eq "E\u0301lodie"', {"elodie"}),  # NFD in the filter
    ('userName ne "BOB"', _but("bob")),
    ('userName sw "AL"', {"alice"}),
    ('userName ew ".COM"', {"alice"}),
    ('userName co "ODI"', {"elodie"}),
    ('userName gt "c"', {"carol", "elodie"}),  # code point order: "é" after "c"
    ('userName le "bob"', {"alice", "bob", "wild"}),
    ('displayName co "liddell"', {"alice"}),
    ('name.givenName eq "ÉLODIE"', {"elodie"}),
    ('urn:ietf:params:scim:schemas:core:2.0:User:name.familyName eq "durand"', {"elodie"}),
    ('userType eq "employee"', {"alice"}),
    # caseExact attributes (id, externalId, meta.resourceType).
    (f'id eq "{_id("alice")}"', {"alice"}),
    (f'id eq "{_id("alice").lower()}"', set()),
    ('externalId eq "EXT-Alice"', {"alice"}),
    ('externalId eq "ext-alice"', set()),
    ('externalId sw "ext"', {"bob"}),
    ('externalId co "Alice"', {"alice"}),
    ('externalId co "alice"', set()),
    ('externalId ew "bob"', {"bob"}),
    ('externalId ew "BOB"', set()),
    ('meta.resourceType eq "User"', EVERYONE),
    ('meta.resourceType eq "user"', set()),
    ('meta.resourceType ne "Group"', EVERYONE),
    ("meta pr", EVERYONE),
    # LIKE wildcards and the escape character are taken literally.
    ('title co "_"', {"wild"}),
    ('title co "%"', set()),
    ('userName co "_o"', {"wild"}),
    ('userName co "%_"', {"wild"}),
    ('userName sw "50%"', {"wild"}),
    ('userName co "/"', {"wild"}),
    ('title ew "_B"', {"wild"}),
    # Absent values: equal to nothing, unequal to everything.
    ('title eq "engineer"', {"alice"}),
    ('title ne "Engineer"', _but("alice")),
    ('not (title eq "Engineer")', _but("alice")),
    ("title pr", {"alice", "elodie", "wild"}),
    ("not (title pr)", {"bob", "carol"}),
    ("title eq null", {"bob", "carol"}),
    ("title ne null", {"alice", "elodie", "wild"}),
    ('title gt "a"', {"alice", "elodie", "wild"}),
    ('not (title gt "a")', {"bob", "carol"}),
    ('not (title co "e")', {"bob", "carol", "wild"}),
    ("name pr", {"alice", "bob", "elodie"}),
    # An empty string is no value (RFC 7644 §3.4.2.2 pr: "non-empty"), yet equals "".
    ("nickName pr", set()),
    ('nickName eq ""', {"carol"}),
    ("name.familyName pr", {"alice", "elodie"}),
    # Precedence: and binds tighter than or; not applies to its group.
    ('userName eq "bob" or title eq "engineer" and active eq false', {"bob"}),
    ('(userName eq "bob" or title eq "engineer") and active eq true', {"alice"}),
    ('not (userName eq "bob" or userName eq "carol")', {"alice", "elodie", "wild"}),
    ('not (userName eq "bob") and not (title pr)', {"carol"}),
    ('not(userName eq "bob" and active eq false)', _but("bob")),
    # Booleans.
    ("active eq false", {"bob"}),
    ("active eq true", _but("bob")),
    ("active ne true", {"bob"}),
    ("active pr", EVERYONE),
    ('active eq "False"', {"bob"}),  # read as a boolean, as Entra may quote it
    # Datetimes, compared chronologically whatever the zone.
    ('meta.created gt "2021-01-01T00:00:00Z"', {"alice", "elodie", "wild"}),
    ('meta.created lt "2020-01-01T02:00:00+02:00"', {"bob"}),
    ('meta.created le "2020-01-01T02:00:00+02:00"', {"bob", "carol"}),
    ('meta.created eq "2019-06-01T00:00:00Z"', {"bob"}),
    ('meta.created ge "2021-03-01T11:00:00+01:00"', {"alice", "elodie", "wild"}),
    ('meta.lastModified gt "2024-01-01T00:00:00Z"', {"alice"}),
    ('meta.created gt "2022-01-01T00:00:00"', {"wild"}),  # no zone: UTC
    ('meta.created ge "2022-01-01"', {"elodie", "wild"}),
    # Multi-valued attributes: one entry must match; ne means no entry is equal.
    ('emails co "example.com"', {"alice", "elodie", "wild"}),
    ('emails.value eq "ALICE@example.com"', {"alice"}),
    ('emails.value ne "bob@corp.example.net"', _but("bob")),
    ('emails.value co "_"', {"wild"}),
    ("emails pr", _but("carol")),
    ("not (emails pr)", {"carol"}),
    ("emails.value eq null", {"carol"}),
    ("emails.primary eq true", {"alice", "bob"}),
    ('emails[type eq "home"].value pr', {"alice", "elodie"}),
    ('emails.type eq "WORK"', {"alice", "bob", "elodie"}),
    # Value paths hold within one entry; plain sub-attributes may match across entries.
    ('emails[type eq "work" and value co "example.com"]', {"alice"}),
    ('emails[type eq "work"].value co "example.com"', {"alice"}),
    ('emails[type eq "work"].value eq "elodie@work.example.net"', {"elodie"}),
    ('emails[type eq "work"] and emails[value co "example.com"]', {"alice", "elodie"}),
    ('emails.type eq "work" and emails.value co "example.com"', {"alice", "elodie"}),
    ('emails[not (type eq "work")]', {"alice", "elodie", "wild"}),
    ('emails[primary eq true and type eq "home"]', set()),
    ('not (emails[type eq "home"])', {"bob", "wild", "carol"}),
    ('emails[type eq "work" or type eq "other"] and not (emails[type eq "home"])', {"bob", "wild"}),
    ("phoneNumbers pr", {"alice"}),
    ('phoneNumbers.value sw "+33"', {"alice"}),
    ('roles eq "ADMIN"', {"alice"}),
    # A key longer than value_normalized keeps, or a substring, reads lower(value).
    ('roles eq "' + "r" * 520 + '-TAIL"', {"wild"}),
    ('roles.value ew "-tail"', {"wild"}),
    ('x509Certificates.value eq "Y2VydC1h"', {"alice"}),
    ('addresses.locality eq "paris"', {"alice"}),
    ('addresses[type eq "home" and country eq "fr"]', {"elodie"}),
    ('addresses[type eq "work" and locality eq "lyon"]', set()),
    ('addresses.country eq "FR"', {"alice", "elodie"}),
    ('addresses.streetAddress co "RIVOLI"', {"alice"}),
    ('addresses.postalCode eq "75001"', {"alice"}),
    ("addresses pr", {"alice", "elodie"}),
    # A user's groups, from the membership table.
    ('groups.display eq "admins"', {"alice", "bob"}),
    ('groups.display eq "ÉQUIPE"', {"carol"}),
    (f'groups eq "{_id("admins")}"', {"alice", "bob"}),
    (f'groups[value eq "{_id("engineering")}"]', {"elodie"}),
    ("not (groups pr)", {"wild"}),
    ('groups.type eq "DIRECT"', _but("wild")),
    ('groups[type eq "direct" and display eq "engineering"]', {"elodie"}),
    # Enterprise extension.
    (f'{ENT}:employeeNumber eq "1001"', {"alice"}),
    (f'{ENT}:department eq "r&d"', {"alice", "elodie"}),
    (f'{ENT}:department ne "R&D"', {"bob", "wild", "carol"}),
    (f'{ENT.upper()}:COSTCENTER eq "cc-1"', {"alice"}),
    (f'{ENT}:manager.value eq "{_id("bob")}"', {"alice"}),
    (f'{ENT}:manager.displayName eq "bob builder"', {"alice"}),
    (f'{ENT}:manager.displayName sw "ALICE"', {"elodie"}),
    (f"{ENT}:manager pr", {"alice", "elodie"}),
    (f"not ({ENT}:manager.displayName pr)", {"bob", "wild", "carol"}),
    # Product extension.
    (f'{PROD}:userType eq "SERVICE_ACCOUNT"', {"elodie"}),
    (f'{PROD}:userType co "account"', {"elodie"}),
    (f'{PROD}:idpReferenceId eq "AAD-ALICE"', {"alice"}),
    (f'{PROD}:idpSource eq "aad"', {"alice"}),
    (f'{PROD}:lifecycle eq "suspended"', {"bob"}),
    (f'{PROD}:userGroup eq "staff"', {"alice"}),
    (f'{PROD}:authUserId eq "AUTH0|123"', {"elodie"}),
    (f"{PROD}:blocked eq true", {"bob"}),
    (f"{PROD}:blocked eq false", {"alice"}),  # unset is absent, not false
    (f"not ({PROD}:blocked eq true)", _but("bob")),
    (f'{PROD}:expirationDate lt "2031-01-01T00:00:00Z"', {"alice"}),
    (f"{PROD}:expirationDate pr", {"alice"}),
    (f'not ({PROD}:expirationDate gt "2000-01-01T00:00:00Z")', _but("alice")),
    (f'{PROD}:tags eq "vip"', {"alice", "elodie"}),
    (f'{PROD}:tags eq "paris"', {"alice"}),
    (f'{PROD}:tags co "AR"', {"alice"}),
    (f'{PROD}:tags ne "vip"', {"bob", "wild", "carol"}),
    (f"{PROD}:tags pr", {"alice", "elodie"}),
    (f'{PROD}:tags[value eq "VIP"]', {"alice", "elodie"}),
    (f'{PROD}:tags[value sw "p" or value ew "P"]', {"alice", "elodie"}),
]

# Filters scim2-models' match cannot serve as the reference for, and why.
NOT_FOR_THE_ORACLE: dict[str, str] = {
    'meta.created gt "2022-01-01T00:00:00"': "match compares a naive datetime to nothing",
    'meta.created ge "2022-01-01"': "match compares a naive datetime to nothing",
}

# Extension attributes without their URN resolve as the qualified ones (RFC 7644 §3.10).
UNQUALIFIED: list[tuple[str, str]] = [
    ('employeeNumber eq "1001"', f'{ENT}:employeeNumber eq "1001"'),
    ('department ne "r&d"', f'{ENT}:department ne "r&d"'),
    ('manager.displayName eq "Bob Builder"', f'{ENT}:manager.displayName eq "Bob Builder"'),
    ("blocked eq true", f"{PROD}:blocked eq true"),
    ('tags eq "VIP"', f'{PROD}:tags eq "VIP"'),
    ('tags[value eq "paris"]', f'{PROD}:tags[value eq "paris"]'),
    (
        'idpSource pr and not (lifecycle eq "created")',
        f'{PROD}:idpSource pr and not ({PROD}:lifecycle eq "created")',
    ),
    ('userType eq "Employee"', f'{CORE_USER_SCHEMA}:userType eq "Employee"'),
]

GROUP_CASES: list[tuple[str, set[str]]] = [
    ('displayName eq "ADMINS"', {"admins"}),
    ('displayname eq "équipe"', {"equipe"}),
    ('displayName co "E"', {"engineering", "equipe", "empty"}),
    ('displayName sw "é"', {"equipe"}),
    ('displayName gt "empty"', {"engineering", "equipe"}),
    ('externalId eq "grp-ADM"', {"admins"}),
    ('externalId eq "GRP-ADM"', set()),
    ("externalId pr", {"admins"}),
    ('externalId ne "grp-ADM"', {"engineering", "equipe", "empty"}),
    (f'id eq "{_id("empty")}"', {"empty"}),
    (f'members eq "{_id("alice")}"', {"admins"}),
    (f'members[value eq "{_id("carol")}"]', {"equipe"}),
    (f'{CORE_GROUP_SCHEMA}:displayName eq "Empty"', {"empty"}),
    (f'members.value eq "{_id("equipe")}"', {"admins"}),
    (f'members ne "{_id("alice")}"', {"engineering", "equipe", "empty"}),
    ('members[type eq "group"]', {"admins"}),
    ('members.type eq "User"', {"admins", "engineering", "equipe"}),
    ('members.display eq "élodie durand"', {"engineering"}),
    ('members.display eq "ÉQUIPE"', {"admins"}),
    ('members[type eq "User" and display sw "bob"]', {"admins"}),
    ('members[type eq "Group" and display sw "bob"]', set()),
    ("members pr", {"admins", "engineering", "equipe"}),
    ("not (members pr)", {"empty"}),
    ('meta.created lt "2021-01-01T00:00:00Z"', {"admins"}),
    ('meta.lastModified pr and meta.resourceType eq "Group"', set(GROUPS)),
    ('meta.resourceType eq "User"', set()),
]

INVALID_USER_FILTERS: list[str] = [
    # A lone UTF-16 surrogate escape (no database can compare it), on the
    # grammar-free path and in the grammar.
    'userName eq "\\ud800"',
    'externalId eq "a\\udc00"',
    'displayName sw "\\ud800" or userName eq "x"',
    'emails[value co "\\ud800"]',
    'not (title eq "\\udfff")',
    # Syntax.
    "",
    "userName",
    "userName eq",
    'userName eq "x" and',
    'userName xx "x"',
    '(userName eq "x"',
    'userName eq "unterminated',
    'userName eq "x" userName eq "y"',
    'emails[type eq "work"].value',  # selects values; a filter must be a boolean
    # Unknown attributes and schemas.
    'nope eq "x"',
    'name.nope eq "x"',
    'urn:example:unknown:2.0:User:userName eq "x"',
    f'{ENT}:nope eq "x"',
    f'{ENT}:userName eq "x"',
    'emails[nope eq "x"]',
    'members eq "x"',
    # Operators or values the attribute's type does not take.
    "active gt true",
    'active co "t"',
    'meta.created gt "yesterday"',
    "meta.created gt 5",
    'meta.created co "2020"',
    "userName eq 5",
    'emails.value eq "not an email"',
    'x509Certificates.value co "abc"',
    "emails.value sw true",
    "externalId ew 5",
    # Attributes this server does not filter on.
    'password eq "secret"',
    'password co "x"',
    'name eq "x"',
    'addresses eq "x"',
    'name[givenName eq "x"]',
    'groups.$ref eq "x"',
    f'{ENT}:manager.$ref eq "x"',
    'meta.location eq "x"',
    'meta.version eq "W/1"',
    'schemas eq "x"',
    f'{PROD}:customData eq "x"',
    f'{PROD}:status.name eq "x"',
    "customData pr",
    'emails[type.value eq "x"]',
    f'emails[{CORE_USER_SCHEMA}:type eq "work"]',
    f'{PROD}:tags[nope eq "x"]',
    # Size.
    'userName eq "' + "a" * 5000 + '"',
    " or ".join(['userName eq "x"'] * (MAX_TERMS + 1)),
    "not (" * 40 + "userName pr" + ")" * 40,
]

INVALID_GROUP_FILTERS: list[str] = [
    'displayName eq "\\ud800"',
    'userName eq "x"',
    'members.$ref eq "x"',
    'members.nope eq "x"',
    f'{ENT}:employeeNumber eq "1"',
    "displayName gt true",
]


# -- Filters -------------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "expected"), USER_CASES)
async def test_user_filter_selects_exactly_the_expected_users(
    session: AsyncSession, expression: str, expected: set[str]
) -> None:
    """Each user filter of the table selects exactly the expected seeded users."""
    await _seed(session)
    assert await _users_matching(session, expression) == expected


@pytest.mark.parametrize(("unqualified", "qualified"), UNQUALIFIED)
async def test_extension_attributes_may_be_named_without_their_urn(
    session: AsyncSession, unqualified: str, qualified: str
) -> None:
    """An extension attribute named without its URN selects what the qualified name does."""
    await _seed(session)
    expected = await _users_matching(session, qualified)
    assert expected  # the pair is not trivially empty
    assert await _users_matching(session, unqualified) == expected


async def test_manager_eq_means_manager_value_as_entra_sends_it(session: AsyncSession) -> None:
    """Microsoft Entra ID's validator filters ``manager eq "id"``: it selects what
    ``manager.value eq "id"`` selects, qualified or not."""
    await _seed(session)
    boss = _id("bob")
    assert await _users_matching(session, f'{ENT}:manager.value eq "{boss}"') == {"alice"}
    assert await _users_matching(session, f'{ENT}:manager eq "{boss}"') == {"alice"}
    assert await _users_matching(session, f'manager eq "{boss}"') == {"alice"}
    both = f'id eq "{_id("alice")}" and manager eq "{boss}"'
    assert await _users_matching(session, both) == {"alice"}
    assert await _users_matching(session, f'id eq "{_id("bob")}" and manager eq "{boss}"') == set()


@pytest.mark.parametrize(("expression", "expected"), GROUP_CASES)
async def test_group_filter_selects_exactly_the_expected_groups(
    session: AsyncSession, expression: str, expected: set[str]
) -> None:
    """Each group filter of the table selects exactly the expected seeded groups."""
    await _seed(session)
    assert await _groups_matching(session, expression) == expected


@pytest.mark.parametrize("expression", INVALID_USER_FILTERS)
def test_invalid_user_filter_is_an_invalid_filter_error(expression: str) -> None:
    """A malformed, unknown, ill-typed, refused or oversized user filter raises invalidFilter."""
    with pytest.raises((InvalidFilterException, InvalidFilterError)) as raised:
        _user_where(expression)
    assert _answer(raised.value) == (400, "invalidFilter")


@pytest.mark.parametrize("expression", INVALID_GROUP_FILTERS)
def test_invalid_group_filter_is_an_invalid_filter_error(expression: str) -> None:
    """A group filter naming what groups do not have raises invalidFilter."""
    with pytest.raises((InvalidFilterException, InvalidFilterError)) as raised:
        _group_where(expression)
    assert _answer(raised.value) == (400, "invalidFilter")


def test_max_length_is_the_callers_to_choose() -> None:
    """A filter longer than the caller's max_length is refused, a shorter one accepted."""
    with pytest.raises(InvalidFilterException):
        user_filter('userName eq "bob"', max_length=10)
    user_filter('userName eq "bob"', max_length=17)


# -- The reference semantics ---------------------------------------------------------


def _scim_user(key: str) -> ScimUser:
    """The SCIM representation of a seeded user, as scim2-models sees it."""
    fields = USERS[key]
    entries = ENTRIES.get(key, [])

    def entries_of(attribute: str, model: Any) -> list[Any] | None:
        found = [
            model(type=type_, value=value, primary=primary or None) if type_ else model(value=value)
            for name, type_, value, primary in entries
            if name == attribute
        ]
        return found or None

    memberships = [
        GroupMembership(value=_id(group), display=GROUPS[group]["display_name"], type="direct")
        for group, members in MEMBERS.items()
        if (key, MemberType.USER) in members
    ]
    manager_id = fields.get("manager_id")
    manager_key = next((k for k in USERS if _id(k) == manager_id), None)
    name_parts = {
        "formatted": fields.get("formatted_name"),
        "given_name": fields.get("given_name"),
        "family_name": fields.get("family_name"),
    }
    user = ScimUser(
        id=_id(key),
        user_name=fields["user_name"],
        external_id=fields.get("external_id"),
        display_name=fields.get("display_name"),
        name=Name(**name_parts) if any(name_parts.values()) else None,
        nick_name=fields.get("nick_name"),
        title=fields.get("title"),
        user_type=fields.get("scim_user_type"),
        locale=fields.get("locale"),
        active=fields["active"],
        emails=entries_of("emails", Email),
        phone_numbers=entries_of("phoneNumbers", PhoneNumber),
        roles=entries_of("roles", Role),
        x509_certificates=entries_of("x509Certificates", X509Certificate),
        addresses=[Address(**address) for address in ADDRESSES.get(key, [])] or None,
        groups=memberships or None,
        meta=Meta(
            resource_type="User",
            created=fields["created_at"],
            last_modified=fields["updated_at"],
        ),
    )
    user[EnterpriseUser] = EnterpriseUser(
        employee_number=fields.get("employee_number"),
        department=fields.get("department"),
        cost_center=fields.get("cost_center"),
        manager=Manager(value=manager_id, display_name=USERS[manager_key]["display_name"])
        if manager_key
        else None,
    )
    user[IdentityStoreUser] = IdentityStoreUser(
        idp_reference_id=fields.get("idp_reference_id"),
        idp_source=fields.get("idp_source"),
        user_type=fields.get("user_type"),
        tags=fields.get("tags") or None,
        lifecycle=fields.get("lifecycle", Lifecycle.CREATED.value),
        user_group=fields.get("user_group"),
        auth_user_id=fields.get("auth_user_id"),
        blocked=fields.get("blocked"),
        expiration_date=fields.get("expiration_date"),
    )
    return user


def _scim_group(key: str) -> ScimGroup:
    fields = GROUPS[key]
    members = [
        ScimGroupMember(
            value=_id(member),
            type=member_type.value,
            display=(USERS if member_type is MemberType.USER else GROUPS)[member].get(
                "display_name"
            ),
        )
        for member, member_type in MEMBERS.get(key, [])
    ]
    return ScimGroup(
        id=_id(key),
        display_name=fields["display_name"],
        external_id=fields.get("external_id"),
        members=members or None,
        meta=Meta(
            resource_type="Group", created=fields["created_at"], last_modified=fields["created_at"]
        ),
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [case for case in USER_CASES if case[0] not in NOT_FOR_THE_ORACLE],
)
def test_scim2_models_match_agrees_with_the_user_table(expression: str, expected: set[str]) -> None:
    """scim2-models' in-memory match selects the same users as the table says SQL must."""
    scim_filter = ScimFilter[ScimUser](expression)
    assert {key for key in USERS if scim_filter.match(_scim_user(key))} == expected


@pytest.mark.parametrize(("expression", "expected"), GROUP_CASES)
def test_scim2_models_match_agrees_with_the_group_table(
    expression: str, expected: set[str]
) -> None:
    """scim2-models' in-memory match selects the same groups as the table says SQL must."""
    scim_filter = ScimFilter[ScimGroup](expression)
    assert {key for key in GROUPS if scim_filter.match(_scim_group(key))} == expected


# -- Every declared attribute is mapped or refused -----------------------------------

REFUSED = {
    f"{CORE_USER_SCHEMA}:password",
    f"{CORE_USER_SCHEMA}:groups.$ref",
    f"{CORE_USER_SCHEMA}:meta.location",
    f"{CORE_USER_SCHEMA}:meta.version",
    f"{CORE_USER_SCHEMA}:schemas",
    f"{ENT}:manager.$ref",
    f"{PROD}:status",
    f"{PROD}:status.name",
    f"{PROD}:status.status",
    f"{PROD}:status.message",
    f"{PROD}:status.updatedAt",
    f"{PROD}:customData",
    f"{CORE_GROUP_SCHEMA}:members.$ref",
    f"{CORE_GROUP_SCHEMA}:meta.location",
    f"{CORE_GROUP_SCHEMA}:meta.version",
    f"{CORE_GROUP_SCHEMA}:schemas",
}

# RFC 7643 §3.1 common attributes, which no schema document lists.
COMMON = [
    ("id", "string", False),
    ("externalId", "string", False),
    ("schemas", "reference", True),
    ("meta", "complex", False),
    ("meta.created", "dateTime", False),
    ("meta.lastModified", "dateTime", False),
    ("meta.resourceType", "string", False),
    ("meta.location", "reference", False),
    ("meta.version", "string", False),
]

SAMPLES = {
    "string": '"x"',
    "reference": '"https://example.com/x"',
    "boolean": "true",
    "dateTime": '"2020-01-01T00:00:00Z"',
    "binary": '"YWJj"',
}
SAMPLE_OVERRIDES = {
    f"{CORE_USER_SCHEMA}:emails.value": '"someone@example.com"',
    f"{PROD}:userType": '"PERSON"',
}


def _declared(models: list[Any], schema: str) -> list[tuple[str, str, str, bool]]:
    """(resource, full name, type, complex) of every attribute and sub-attribute."""
    resource = "User" if "User" in schema else "Group"
    found = [(resource, f"{schema}:{name}", type_, type_ == "complex") for name, type_, _ in COMMON]
    for model in models:
        document = model.to_schema()
        for attribute in document.attributes:
            full = f"{document.id}:{attribute.name}"
            found.append((resource, full, attribute.type.value, attribute.type.value == "complex"))
            for sub in attribute.sub_attributes or []:
                found.append((resource, f"{full}.{sub.name}", sub.type.value, False))
    return found


DECLARED = _declared([CoreUser, EnterpriseUser, IdentityStoreUser], CORE_USER_SCHEMA) + _declared(
    [CoreGroup], CORE_GROUP_SCHEMA
)


def _probes(name: str, type_: str, is_complex: bool) -> list[str]:
    probes = [f"{name} pr"]
    if not is_complex:
        probes.append(f"{name} eq {SAMPLE_OVERRIDES.get(name, SAMPLES[type_])}")
    return probes


@pytest.mark.parametrize(
    ("resource", "name", "type_", "is_complex"),
    DECLARED,
    ids=[f"{name.rpartition(':')[2]}-{resource}" for resource, name, _, _ in DECLARED],
)
async def test_every_declared_attribute_is_mapped_or_refused(
    session: AsyncSession, resource: str, name: str, type_: str, is_complex: bool
) -> None:
    """Every attribute the models declare either runs as SQL or is refused with
    invalidFilter, by the store, which says why."""
    translate, entity = (_user_where, User) if resource == "User" else (_group_where, Group)
    for probe in _probes(name, type_, is_complex):
        if name in REFUSED:
            with pytest.raises(InvalidFilterError) as raised:
                translate(probe)
            assert _answer(raised.value) == (400, "invalidFilter")
        else:
            await session.scalars(select(entity.id).where(translate(probe)))


# -- Sorting -------------------------------------------------------------------------


async def _sorted_users(session: AsyncSession, attribute: str, *, descending: bool) -> list[str]:
    column = _user_order(attribute)
    order = column.desc().nulls_first() if descending else column.asc().nulls_last()
    ids = await session.scalars(select(User.id).order_by(order, User.id))
    return _keys_in_order(ids, USERS)


@pytest.mark.parametrize(
    ("attribute", "descending", "expected"),
    [
        ("userName", False, ["wild", "alice", "bob", "carol", "elodie"]),
        ("USERNAME", True, ["elodie", "carol", "bob", "alice", "wild"]),
        ("title", False, ["wild", "elodie", "alice", "bob", "carol"]),
        ("title", True, ["bob", "carol", "alice", "elodie", "wild"]),
        ("emails", False, ["alice", "bob", "elodie", "wild", "carol"]),
        ("emails.type", False, ["elodie", "wild", "alice", "bob", "carol"]),
        ("meta.created", False, ["bob", "carol", "alice", "elodie", "wild"]),
        ("active", False, ["bob", "alice", "carol", "elodie", "wild"]),
        ("externalId", False, ["alice", "bob", "carol", "elodie", "wild"]),
        ("employeeNumber", True, ["bob", "carol", "elodie", "wild", "alice"]),
        (f"{ENT}:manager.displayName", False, ["elodie", "alice", "bob", "carol", "wild"]),
        ("addresses.locality", False, ["elodie", "alice", "bob", "carol", "wild"]),
    ],
)
async def test_sort_column_orders_users_as_rfc_7644_says(
    session: AsyncSession, attribute: str, descending: bool, expected: list[str]
) -> None:
    """sortBy orders by code point in any case, by primary entry; absent values come last."""
    await _seed(session)
    assert await _sorted_users(session, attribute, descending=descending) == expected


async def test_group_sort_orders_groups_by_display_name(session: AsyncSession) -> None:
    """Groups sort by displayName in any case, non-ASCII after ASCII."""
    await _seed(session)
    ids = await session.scalars(
        select(Group.id).order_by(_group_order("displayname").asc().nulls_last())
    )
    assert _keys_in_order(ids, GROUPS) == ["admins", "empty", "engineering", "equipe"]


@pytest.mark.parametrize(
    "attribute",
    [
        "",
        "nope",
        "name",
        "addresses",
        "groups",
        "groups.display",
        "password",
        "tags",
        "meta.resourceType",
        'emails[type eq "work"]',
        'userName eq "x"',
        "urn:example:unknown:2.0:User:userName",
    ],
)
def test_unsortable_attribute_is_an_invalid_value_error(attribute: str) -> None:
    """sortBy naming nothing sortable raises invalidValue (RFC 7644 §3.12)."""
    with pytest.raises((InvalidValueException, InvalidSortError)) as raised:
        _user_order(attribute)
    assert _answer(raised.value) == (400, "invalidValue")


def test_group_sort_refuses_members() -> None:
    """Groups cannot be sorted by their members."""
    with pytest.raises(InvalidSortError) as raised:
        _group_order("members")
    assert _answer(raised.value) == (400, "invalidValue")


# -- Differential check against scim2-models -----------------------------------------

RANDOM_TERMS: list[tuple[str, list[str], list[str]]] = [
    # (attribute, operators, operands)
    (
        "userName",
        ["eq", "ne", "co", "sw", "ew", "gt", "le"],
        ['"bob"', '"ÉLODIE"', '"a"', '"_o"', '"%"', '"c"'],
    ),
    ("displayName", ["eq", "ne", "co", "sw", "gt"], ['"alice liddell"', '"D"', '"é"']),
    ("title", ["eq", "ne", "co", "ew", "lt", "ge"], ['"engineer"', '"_"', '"e"', "null"]),
    ("externalId", ["eq", "ne", "co", "sw", "ew"], ['"EXT-Alice"', '"ext"', '"b"', '"B"']),
    ("active", ["eq", "ne"], ["true", "false"]),
    (
        "meta.created",
        ["eq", "gt", "lt", "ge", "le"],
        ['"2021-03-01T10:00:00Z"', '"2020-06-01T00:00:00+02:00"'],
    ),
    ("emails.value", ["co", "sw", "ew"], ['"example"', '"ALICE"', '".net"']),
    ("emails", ["eq", "ne"], ['"BOB@corp.example.net"', '"elodie@example.com"']),
    ("emails.type", ["eq", "ne"], ['"work"', '"HOME"']),
    ("addresses.country", ["eq", "ne"], ['"fr"']),
    ("groups.display", ["eq", "ne", "sw"], ['"admins"', '"É"']),
    (f"{ENT}:department", ["eq", "ne", "co"], ['"r&d"', '"s"']),
    (f"{ENT}:manager.displayName", ["eq", "ne", "sw"], ['"bob builder"', '"A"']),
    (f"{PROD}:tags", ["eq", "ne", "co"], ['"vip"', '"PARIS"', '"i"']),
    (f"{PROD}:blocked", ["eq", "ne"], ["true", "false"]),
]
PRESENT = ["title", "emails", "name.familyName", f"{ENT}:manager", f"{PROD}:tags", "groups"]
VALUE_PATHS = [
    'emails[type eq "work" and value co "example"]',
    'emails[not (type eq "home")]',
    'addresses[locality sw "P" or type eq "home"]',
]


def _random_filter(rng: Any, depth: int = 0) -> str:
    """A random, valid filter over the seeded population."""
    roll = rng.random()
    if depth < 3 and roll < 0.3:
        joiner = rng.choice([" and ", " or "])
        terms = [_random_filter(rng, depth + 1) for _ in range(rng.randint(2, 3))]
        return "(" + joiner.join(terms) + ")"
    if depth < 3 and roll < 0.4:
        return f"not ({_random_filter(rng, depth + 1)})"
    if roll < 0.5:
        return f"{rng.choice(PRESENT)} pr"
    if roll < 0.55:
        return rng.choice(VALUE_PATHS)
    attribute, operators, operands = rng.choice(RANDOM_TERMS)
    return f"{attribute} {rng.choice(operators)} {rng.choice(operands)}"


async def test_random_filters_select_what_scim2_models_match_selects(
    session: AsyncSession,
) -> None:
    """On 300 random filters, SQL selects exactly the users scim2-models' match selects."""
    await _seed(session)
    rng = random.Random(7644)
    representations = {key: _scim_user(key) for key in USERS}
    disagreements = []
    for _ in range(300):
        expression = _random_filter(rng)
        scim_filter = ScimFilter[ScimUser](expression)
        expected = {key for key, user in representations.items() if scim_filter.match(user)}
        found = await _users_matching(session, expression)
        if found != expected:
            disagreements.append((expression, found, expected))
    assert disagreements == []


async def test_filters_leave_deleted_users_to_the_caller(session: AsyncSession) -> None:
    """The clause says nothing about deletion: a deleted user still matches it."""
    await _seed(session)
    bob = await session.get(User, _id("bob"))
    assert bob is not None
    bob.deleted_at = _at("2024-01-01T00:00:00")
    await session.commit()
    found = await session.scalars(select(User.id).where(_user_where('userName eq "bob"')))
    assert list(found) == [_id("bob")]


@pytest.mark.parametrize(
    "expression",
    [
        'userName eq "bjensen@example.com"',
        'USERNAME Eq "a\\"b"',
        'externalId eq "x\\u00e9\\n"',
        '  displayName eq ""  ',
        'id eq "01J0000000000000000000000A"',
    ],
)
def test_the_look_up_fast_path_builds_the_tree_the_grammar_builds(expression: str) -> None:
    """``attr eq "value"`` skips the grammar; its tree is the grammar's."""
    from scim2_models import ScimFilter

    from scim_server.filters import _simple_comparison

    assert _simple_comparison(expression) == ScimFilter(expression).ast


@pytest.mark.parametrize(
    "expression",
    [
        'userName eq "a" and id eq "b"',
        'emails.value eq "x"',
        "userName eq 5",
        'userName ne "x"',
        'userName eq "bad\\q"',
        'urn:x:y:userName eq "x"',
    ],
)
def test_other_filters_take_the_grammar(expression: str) -> None:
    from scim_server.filters import _simple_comparison

    assert _simple_comparison(expression) is None
