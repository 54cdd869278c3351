"""Read models: users loaded with SQLAlchemy Core, without the ORM.

A read request does not change what it loads, so it needs neither the
identity map nor change tracking; building plain objects from rows costs a
fraction of ORM loading. :class:`UserRow` has the attributes of
:class:`~identity_store.models.User` that a representation reads, so the
same rendering code serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import ColumnElement, Select, bindparam, cast, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from .attributes import USER_ATTRIBUTES
from .models import Group, GroupMember, User, UserAddress, UserMultiValue
from .models.user import ADDRESS_FIELDS, MULTI_VALUE_FIELDS
from .paging import Page, PagePlan, fetch_page

_USERS = User.__table__
_VALUES = UserMultiValue.__table__
_ADDRESSES = UserAddress.__table__
_NOT_RENDERED = {c.key for c in _USERS.columns} - USER_ATTRIBUTES.columns(returned=True)
"""Columns no returned attribute reads (identity_store.attributes): the
password's hash, management and RBAC fields, ``deleted_at``."""
USER_COLUMNS = [c.key for c in _USERS.columns if c.key not in _NOT_RENDERED]
"""Every column a SCIM representation (or a cursor) reads; the others, JSON
among them, are not fetched nor decoded."""
VALUE_COLUMNS = ["id", "attribute", "position", *MULTI_VALUE_FIELDS]
ADDRESS_COLUMNS = ["id", "position", *ADDRESS_FIELDS]


class Entry:
    """One entry of a multi-valued attribute, or one address."""

    __slots__ = ("__dict__",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # for mypy: columns are dynamic
        raise AttributeError(name)


class UserRow:
    """A user as read: every column, its entries and its addresses."""

    __slots__ = ("__dict__",)

    multi_values: list[Entry]
    addresses: list[Entry]

    def __init__(self, columns: dict[str, Any]) -> None:
        self.__dict__.update(columns)
        self.multi_values = []
        self.addresses = []

    def __getattr__(self, name: str) -> Any:  # for mypy: columns are dynamic
        raise AttributeError(name)

    if TYPE_CHECKING:  # a new user is built as one (user_changes.build_user)

        def __setattr__(self, name: str, value: Any) -> None: ...


class GroupRef(NamedTuple):
    """A group a user is a direct member of, as its ``groups`` shows it."""

    id: str
    display_name: str


@dataclass(slots=True)
class UserRecord:
    """A user with what its representation reads besides its own row: its
    groups (empty when not asked for) and its manager's ``displayName``."""

    user: UserRow | User
    groups: list[GroupRef]
    manager_display: str | None
    roles: list[str] | None = None
    """The RBAC roles assigned to the user directly, sorted, when they were
    read (the management API's user documents); ``None`` otherwise."""


_GROUPS_OF = (
    select(GroupMember.member_id, Group.id, Group.display_name)
    .join(Group, Group.id == GroupMember.group_id)
    .where(GroupMember.member_id.in_(bindparam("ids", expanding=True)))
    .order_by(Group.display_name_normalized)
)
_DISPLAY_NAMES = select(User.id, User.display_name).where(
    User.id.in_(bindparam("ids", expanding=True)), User.deleted_at.is_(None)
)


async def groups_of(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, list[GroupRef]]:
    """The groups each user is a direct member of (the SCIM ``groups`` attribute)."""
    result: dict[str, list[GroupRef]] = {uid: [] for uid in user_ids}
    if not user_ids:
        return result
    rows = await session.execute(_GROUPS_OF, {"ids": list(user_ids)})
    for member_id, group_id, display_name in rows.all():
        result[member_id].append(GroupRef(group_id, display_name))
    return result


async def display_names(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, str | None]:
    """``displayName`` of each live user among ``user_ids`` (for ``manager.displayName``)."""
    ids = [uid for uid in set(user_ids) if uid]
    if not ids:
        return {}
    rows = await session.execute(_DISPLAY_NAMES, {"ids": ids})
    return {row[0]: row[1] for row in rows.all()}


async def user_records(
    session: AsyncSession, users: Sequence[UserRow | User], *, groups: bool = True
) -> list[UserRecord]:
    """Records of ``users``: two more statements at most, for all of them."""
    ids = [u.id for u in users]
    memberships = await groups_of(session, ids) if groups else {}
    managers: dict[str, str | None] = {}
    if any(u.manager_id for u in users):
        managers = await display_names(session, [u.manager_id or "" for u in users])
    return [
        UserRecord(
            u,
            memberships.get(u.id, []),
            managers.get(u.manager_id) if u.manager_id else None,
        )
        for u in users
    ]


def _absent(column: Any, label: str) -> Any:
    return cast(null(), column.type).label(label)


_VALUE_LABELS = [_VALUES.c[name].label(f"v_{name}") for name in VALUE_COLUMNS]
_ADDRESS_LABELS = [_ADDRESSES.c[name].label(f"a_{name}") for name in ADDRESS_COLUMNS]
_LIVE_BY_IDS = (
    _USERS.c.id.in_(bindparam("ids", expanding=True)),
    _USERS.c.deleted_at.is_(None),
)
_WITH_VALUES = (
    select(
        *[_USERS.c[name] for name in USER_COLUMNS],
        *_VALUE_LABELS,
        *[_absent(_ADDRESSES.c[n], f"a_{n}") for n in ADDRESS_COLUMNS],
    )
    .select_from(_USERS)
    .outerjoin(_VALUES, _VALUES.c.user_id == _USERS.c.id)
    .where(*_LIVE_BY_IDS)
)
_WITH_ADDRESSES = (
    select(
        *[_USERS.c[name] for name in USER_COLUMNS],
        *[_absent(_VALUES.c[n], f"v_{n}") for n in VALUE_COLUMNS],
        *_ADDRESS_LABELS,
    )
    .select_from(_USERS)
    .join(_ADDRESSES, _ADDRESSES.c.user_id == _USERS.c.id)
    .where(*_LIVE_BY_IDS)
)
_ROWS = union_all(_WITH_VALUES, _WITH_ADDRESSES).subquery()
_BY_IDS = select(_ROWS).order_by(
    _ROWS.c.id, _ROWS.c.v_attribute, _ROWS.c.v_position, _ROWS.c.a_position
)
"""Live users by id with their entries and addresses: one statement, whose
rows are a user's entries, then its addresses (a union, not a second join:
joining both would return entries x addresses rows, 10,000 for a user with
100 of each)."""


def _assemble(rows: Sequence[Any]) -> dict[str, UserRow]:
    users: dict[str, UserRow] = {}
    seen_values: set[int] = set()
    seen_addresses: set[int] = set()
    for row in rows:
        mapping = row._mapping
        view = users.get(mapping["id"])
        if view is None:
            view = users[mapping["id"]] = UserRow({k: mapping[k] for k in USER_COLUMNS})
        value_id = mapping["v_id"]
        if value_id is not None and value_id not in seen_values:
            seen_values.add(value_id)
            view.multi_values.append(Entry({k: mapping[f"v_{k}"] for k in VALUE_COLUMNS}))
        address_id = mapping["a_id"]
        if address_id is not None and address_id not in seen_addresses:
            seen_addresses.add(address_id)
            view.addresses.append(Entry({k: mapping[f"a_{k}"] for k in ADDRESS_COLUMNS}))
    return users


async def user_rows(session: AsyncSession, ids: Sequence[str]) -> list[UserRow]:
    """The live users among ``ids``, in the order of ``ids``."""
    if not ids:
        return []
    found = _assemble((await session.execute(_BY_IDS, {"ids": list(ids)})).all())
    return [found[i] for i in ids if i in found]


def live_user_ids() -> Select[Any]:
    """The ids of live users (not deleted over SCIM)."""
    return select(User.id).where(User.deleted_at.is_(None))


async def list_user_rows(
    session: AsyncSession, where: ColumnElement[bool] | None, plan: PagePlan
) -> Page[UserRow]:
    """The page of live users matching ``where`` that ``plan`` asks for,
    ordered by its keys then ``id`` (RFC 9865 keysets included).

    Two statements: the page's ids (small, built per request), then the users
    with their entries by id (built once). One statement joining a numbered
    page sub-query was measured slower: building a select of every column for
    each request costs more than the extra round trip.
    """
    page = await fetch_page(session, live_user_ids(), "User", where, plan, User.id)
    return Page(total=page.total, rows=await user_rows(session, page.rows))
