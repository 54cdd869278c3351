"""What a user write does to the rows: the writable state of a user
(:class:`UserInput`), its validation, the identifiers derived from it, and
the statements of a create, a replace and a delete, in the caller's session;
on PostgreSQL also the create and the replace as one statement without a
session (``create_at_once``, ``replace_at_once``, at the end; the delete's
one statement is in :mod:`identity_store.user_deletes`).

:mod:`identity_store.users` wraps each of these in a use case (transaction,
retry, version check); nothing outside the store calls this module.
"""

from __future__ import annotations

import copy
import hashlib
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Select, Table, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from . import audit, counts, lifecycle, row_inserts, side_rows, user_group_schemas
from .actor import Actor
from .attributes import USER_ATTRIBUTES
from .comparison import normalize
from .errors import ConflictError, NotFoundError, StateError, ValidationError
from .limits import check_free_form, check_lengths, check_moment
from .models import (
    Group,
    GroupMember,
    IdpSource,
    Lifecycle,
    ResourceCount,
    User,
    UserAddress,
    UserMultiValue,
    UserType,
    new_id,
    utcnow,
)
from .models.user import ADDRESS_FIELDS, MULTI_VALUE_FIELDS, NORMALIZED_VALUE_LENGTH
from .read_models import USER_COLUMNS, Entry, UserRecord, UserRow

WRITABLE_COLUMNS = frozenset(
    a.own_column
    for a in USER_ATTRIBUTES.values()
    if a.writable and a.own_column is not None and a.normalized is None
)
"""Columns of ``users`` a client sets as they are (identity_store.attributes).
Not ``user_name``, written with its comparison key by :func:`_apply`, nor
``password_hash``; lifecycle, status, versions, timestamps and the Auth0 id
are the store's own."""

FREE_FORM_COLUMNS = ("custom_data", "tags")
"""JSON columns a client writes, held to the limits of free-form data."""

UNSET: Any = object()


def hash_password(password: str) -> str:
    """scrypt hash of a SCIM ``password`` (RFC 7643 §4.1.1: writeOnly, stored hashed)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


@dataclass(slots=True)
class UserInput:
    """The full writable state of a user, as a create or a replace gives it."""

    user_name: str
    columns: dict[str, Any] = field(default_factory=dict)
    multi_values: list[dict[str, Any]] = field(default_factory=list)
    """``{attribute, value, display, type, primary, verified}`` per entry."""
    addresses: list[dict[str, Any]] = field(default_factory=list)
    password: Any = UNSET
    """A new password, ``None`` to clear it, or :data:`UNSET` to keep it."""


def current_input(user: Any) -> UserInput:
    """The full writable state of a stored user (a :class:`User` with its
    entries loaded, or a read model of one), for a change of part of it:
    every writable column, entry and address as stored; the password kept."""
    columns = {name: getattr(user, name) for name in WRITABLE_COLUMNS}
    for name in FREE_FORM_COLUMNS:  # the change must not alter the stored objects
        columns[name] = _copy(columns[name])
    return UserInput(
        user_name=user.user_name,
        columns=columns,
        multi_values=[
            {"attribute": v.attribute, **{f: getattr(v, f) for f in MULTI_VALUE_FIELDS}}
            for v in sorted(user.multi_values, key=lambda v: (v.attribute, v.position))
        ],
        addresses=[
            {f: getattr(a, f) for f in ADDRESS_FIELDS}
            for a in sorted(user.addresses, key=lambda a: a.position)
        ],
    )


def _copy(value: Any) -> Any:
    """``copy.deepcopy(value)``: a list of strings (``tags``) copied as a
    list, ``None`` as itself, without ``deepcopy``'s dispatch and memo."""
    if value is None:
        return None
    if value.__class__ is list and all(item.__class__ is str for item in value):
        return list(value)
    return copy.deepcopy(value)


def live_users() -> Select[User]:
    """Users not deleted over SCIM."""
    return select(User).where(User.deleted_at.is_(None))


# Statements of the hot paths are built once: building a statement costs more
# than SQLAlchemy's cached compilation of it.
_USER_BY_ID = live_users().where(User.id == bindparam("user_id"))
_JOINED = _USER_BY_ID.options(joinedload(User.multi_values), joinedload(User.addresses))
"""A user with its entries and addresses joined: one statement, the cheapest
for the users nearly every request touches (a few e-mails, no address)."""
_SELECTED = _USER_BY_ID.options(selectinload(User.multi_values), selectinload(User.addresses))
"""The same as a statement each: joined, every entry row repeats (and decodes
again) the user's columns, and joining both multiplies entries by addresses
(10,000 rows for 100 of each); 800 entries loaded in 60 ms joined, 12 ms
this way."""
JOIN_LIMIT = 64
"""Rows (entries times addresses) up to which a user is loaded joined."""


def _sizes(lock: bool) -> Select[Any]:
    entries = select(func.count()).where(UserMultiValue.user_id == User.id).scalar_subquery()
    addresses = select(func.count()).where(UserAddress.user_id == User.id).scalar_subquery()
    query = select(User.id, entries, addresses).where(
        User.id == bindparam("user_id"), User.deleted_at.is_(None)
    )
    return query.with_for_update(of=User) if lock else query


_SIZES = _sizes(lock=False)
_SIZES_AND_LOCK = _sizes(lock=True)


async def load_user(session: AsyncSession, user_id: str, *, for_update: bool = False) -> User:
    """A live user with its multi-valued attributes, or :class:`NotFoundError`.

    A first statement counts its entries and addresses (and, with
    ``for_update``, locks its row on PostgreSQL; SQLite locks the database on
    write anyway); then the user is loaded with them joined when that makes
    few rows, by a statement each otherwise. Entries are never read by the
    locking statement: a statement that waited for the lock sees the locked
    row as the other writer committed it, but rows it read besides as they
    were when it started, so entries another writer replaced meanwhile would
    be loaded, and replaced, a second time (the counts it read only choose
    how to load).
    """
    lock = for_update and session.get_bind().dialect.name == "postgresql"
    sizes = (
        await session.execute(_SIZES_AND_LOCK if lock else _SIZES, {"user_id": user_id})
    ).first()
    if sizes is None:
        raise NotFoundError("User", user_id)
    joined = sizes[1] * max(sizes[2], 1) <= JOIN_LIMIT
    query = _JOINED if joined else _SELECTED
    user = (await session.scalars(query, {"user_id": user_id})).unique().one_or_none()
    if user is None:
        raise NotFoundError("User", user_id)
    return user


async def _ensure_user_name_free(
    session: AsyncSession, user_name: str, except_id: str | None = None
) -> None:
    query = select(User.id).where(
        User.user_name_normalized == normalize(user_name), User.deleted_at.is_(None)
    )
    if except_id is not None:
        query = query.where(User.id != except_id)
    if await session.scalar(query.limit(1)) is not None:
        raise ConflictError("userName", f"userName {user_name!r} is already taken")


ULID_PATTERN = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
"""A ULID as this store writes them: 26 characters of Crockford's base32, in
upper case, the first at most ``7`` (48 bits of time)."""


def check_user_id(user_id: str) -> str:
    """``user_id`` when it is a ULID (:data:`ULID_PATTERN`), else :class:`ValidationError`."""
    if not isinstance(user_id, str) or ULID_PATTERN.fullmatch(user_id) is None:
        raise ValidationError(
            "id must be a ULID: 26 characters of Crockford's base32 in upper case "
            "(0-9, A-Z without I, L, O, U), the first at most 7",
            location=("id",),
        )
    return user_id


async def _ensure_id_free(session: AsyncSession, user_id: str) -> None:
    """A chosen id no user row has (deleted users keep theirs)."""
    check_user_id(user_id)
    if await session.scalar(select(User.id).where(User.id == user_id)) is not None:
        raise ConflictError("id", f"id {user_id!r} is already taken")


async def _check_user_group(
    session: AsyncSession,
    data: UserInput,
    before: User | UserRow | None,
    known: dict[str, Any] | None = None,
) -> None:
    """A write that sets or changes ``userGroup`` or ``customData`` names a
    configured user group (when it names one) whose schema ``customData``
    satisfies (identity_store.user_group_schemas). A write that changes
    neither is not checked again: a schema changed since the user was
    written applies at its next change of either."""
    group = data.columns.get("user_group")
    if group is None:
        return
    custom_data = data.columns.get("custom_data")
    if before is not None and group == before.user_group and custom_data == before.custom_data:
        return
    await user_group_schemas.check_user_group(session, group, custom_data, known=known)


async def check_new_user(
    session: AsyncSession,
    data: UserInput,
    *,
    user_id: str | None = None,
    known_groups: dict[str, Any] | None = None,
) -> None:
    """What a new user must satisfy beyond its own values (:func:`build_user`),
    read from the database: a chosen id no user row has, and its user group
    configured with a schema its ``customData`` satisfies (``known_groups``:
    see :func:`identity_store.user_group_schemas.check_user_group`)."""
    if user_id is not None:
        await _ensure_id_free(session, user_id)
    await _check_user_group(session, data, None, known_groups)


_USER_TYPES = frozenset(t.value for t in UserType)


def _validate(data: UserInput, max_values: int) -> None:
    """:class:`ValidationError` for the first value of ``data`` a user may
    not hold. The checks whose outcome follows from a cheaper test are
    skipped when it says so (no attribute has more values than all of them
    together; no attribute has two primary values when fewer than two
    entries are primary): ``tests/test_user_rows.py`` compares the
    outcomes with every check run."""
    if not data.user_name or not data.user_name.strip():
        raise ValidationError("userName is required and may not be empty")
    if len(data.multi_values) > max_values or len(data.addresses) > max_values:
        sizes = Counter(mv["attribute"] for mv in data.multi_values)
        sizes["addresses"] = len(data.addresses)
        for attribute, size in sizes.items():
            if size > max_values:
                raise ValidationError(
                    f"{attribute} has {size} values; at most {max_values} allowed"
                )
    check_lengths(User, {"user_name": data.user_name, **data.columns})
    for entry in data.multi_values:
        check_lengths(UserMultiValue, entry, entry.get("attribute"))
    for address in data.addresses:
        check_lengths(UserAddress, address, "addresses")
    if not WRITABLE_COLUMNS.issuperset(data.columns):
        unknown = set(data.columns) - WRITABLE_COLUMNS
        raise ValidationError(f"not writable: {', '.join(sorted(unknown))}")
    for column in FREE_FORM_COLUMNS:
        check_free_form(column, data.columns.get(column))
    for column, value in data.columns.items():
        if isinstance(value, datetime):
            check_moment(column, value)
    user_type = data.columns.get("user_type")
    if user_type is not None and user_type not in _USER_TYPES:
        raise ValidationError(f"userType must be one of {[t.value for t in UserType]}")
    if sum(1 for mv in data.multi_values if mv.get("primary")) > 1:
        for attribute in {mv["attribute"] for mv in data.multi_values}:
            primaries = [
                mv for mv in data.multi_values if mv["attribute"] == attribute and mv.get("primary")
            ]
            if len(primaries) > 1:
                raise ValidationError(f"{attribute} has more than one primary value")
    if sum(1 for a in data.addresses if a.get("primary")) > 1:
        raise ValidationError("addresses has more than one primary value")


COLUMN_DEFAULTS: dict[str, Any] = {"tags": [], "active": True}
"""What an attribute a replace does not name becomes (``None`` otherwise)."""


def _apply(user: User | UserRow, data: UserInput) -> None:
    user.user_name = data.user_name
    user.user_name_normalized = normalize(data.user_name)
    for name in WRITABLE_COLUMNS:
        if name in data.columns:
            setattr(user, name, data.columns[name])
        else:
            default = COLUMN_DEFAULTS.get(name)
            setattr(user, name, list(default) if isinstance(default, list) else default)
    if data.password is not UNSET:
        user.password_hash = hash_password(data.password) if data.password else None


def _derive_identifiers(data: UserInput, before: User | UserRow | None = None) -> None:
    """The IdP identifiers a client did not give, from the SCIM ones.

    ``idp_reference_id`` defaults to ``externalId`` (Entra: the object id) and
    ``idp_cloud_username`` to ``userName`` (Entra: the UPN). A value that was
    derived keeps following its source when the source changes (a UPN
    rename); a value the client set, or cleared, itself is left as it is.
    """
    sources = {
        "idp_reference_id": data.columns.get("external_id"),
        "idp_cloud_username": data.user_name,
    }
    previous = {
        "idp_reference_id": before.external_id if before else None,
        "idp_cloud_username": before.user_name if before else None,
    }
    for column, source in sources.items():
        current = data.columns.get(column)
        if before is None:
            if not current:
                data.columns[column] = source
            continue
        kept = getattr(before, column)
        was_derived = kept is not None and kept == previous[column]
        if was_derived and current == kept and source != previous[column]:
            data.columns[column] = source


def _entry_values(data: UserInput) -> list[dict[str, Any]]:
    """The ``user_multi_values`` rows of ``data``'s entries (without ``user_id``)."""
    rows = []
    positions: dict[str, int] = {}
    for entry in data.multi_values:
        attribute = entry["attribute"]
        position = positions.get(attribute, 0)
        positions[attribute] = position + 1
        value = entry.get("value")
        rows.append(
            {
                "attribute": attribute,
                "position": position,
                "value": value,
                "value_normalized": normalize(value)[:NORMALIZED_VALUE_LENGTH]
                if isinstance(value, str)
                else None,
                "display": entry.get("display"),
                "type": entry.get("type"),
                "primary": entry.get("primary"),
                "verified": entry.get("verified"),
            }
        )
    return rows


def _address_values(data: UserInput) -> list[dict[str, Any]]:
    """The ``user_addresses`` rows of ``data`` (without ``user_id``)."""
    return [
        {"position": i, **{k: a.get(k) for k in ADDRESS_FIELDS}}
        for i, a in enumerate(data.addresses)
    ]


def _multi_value_rows(data: UserInput) -> list[UserMultiValue]:
    return [UserMultiValue(**values) for values in _entry_values(data)]


def _multi_value_key(rows: Sequence[UserMultiValue] | Sequence[Entry]) -> list[tuple[Any, ...]]:
    """What distinguishes two lists of entries, so unchanged rows are not rewritten."""
    return sorted(
        (r.attribute, r.position, r.value, r.display, r.type, r.primary, r.verified) for r in rows
    )


def _address_key(rows: Sequence[UserAddress] | Sequence[Entry]) -> list[tuple[Any, ...]]:
    return sorted((r.position, *(getattr(r, f) for f in ADDRESS_FIELDS)) for r in rows)


def _address_rows(data: UserInput) -> list[UserAddress]:
    return [UserAddress(**values) for values in _address_values(data)]


_TABLES = {model: cast(Table, model.__table__) for model in (User, UserMultiValue, UserAddress)}
_DEFAULTS = {
    model: {c.key: c.default for c in table.columns if c.default is not None and not c.primary_key}
    for model, table in _TABLES.items()
}
_COLUMN_ORDER = {model: [c.key for c in table.columns] for model, table in _TABLES.items()}
_COLUMN_KEYS = {model: frozenset(keys) for model, keys in _COLUMN_ORDER.items()}


def _values(row: User | UserMultiValue | UserAddress) -> dict[str, Any]:
    """The column values of a new row, as the ORM would insert them: the
    attributes that were set, the columns' Python defaults for the others
    (in the table's column order, so that equal rows make equal statements)."""
    return _row_values(type(row), row.__dict__)


_NO_DEFAULT: Any = object()


def _plan(model: type[Any]) -> tuple[tuple[str, Any, bool], ...]:
    """Per column of ``model``, in the table's order: its key, its Python
    default's argument (:data:`_NO_DEFAULT` for none) and whether that is
    called (``arg(None)``, as SQLAlchemy calls a context-free default)."""
    plan = []
    for key in _COLUMN_ORDER[model]:
        default = _DEFAULTS[model].get(key)
        arg = _NO_DEFAULT if default is None else getattr(default, "arg", None)
        plan.append((key, arg, callable(arg)))
    return tuple(plan)


_ROW_PLANS = {model: _plan(model) for model in _TABLES}


def _row_values(model: type[Any], given: dict[str, Any]) -> dict[str, Any]:
    """The columns of ``model`` in ``given``, and the Python defaults of
    those it lacks, in the table's column order."""
    values = {}
    for key, arg, call in _ROW_PLANS[model]:
        if key in given:
            values[key] = given[key]
        elif arg is not _NO_DEFAULT:
            values[key] = arg(None) if call else arg
    return values


assert set(USER_COLUMNS) >= WRITABLE_COLUMNS, "a read model must hold what input_of reads"


def _new_user() -> UserRow:
    """A user about to be created, as a plain row (a read model, rendered
    the same way): every column, the Python defaults set. Not an ORM
    object: the ORM's bookkeeping of some fifty attribute sets cost more
    than everything else a batch import does per user."""
    values = dict(_NEW_USER)
    for key, arg in _NEW_USER_MADE:
        values[key] = arg(None)
    values["id"] = new_id()
    values["version"] = 1
    return UserRow(values)


_NEW_USER = {
    key: None if arg is _NO_DEFAULT or call else arg for key, arg, call in _ROW_PLANS[User]
}
"""Every column of a new user, in order: its constant default, else ``None``."""
_NEW_USER_MADE = tuple(
    (key, arg) for key, arg, call in _ROW_PLANS[User] if call and key not in ("id", "version")
)
"""The columns whose default is made per user (``list``, ``utcnow``), but
the id and version, which :func:`_new_user` sets."""


def _grouped(rows: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``rows`` in groups of the same columns (one statement each), in order."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return list(groups.values())


async def insert_users(session: AsyncSession, users: Sequence[UserRow]) -> None:
    """Insert new users (from :func:`build_user`) and their entries and
    addresses, and count them (:func:`identity_store.counts.change`): a
    statement per table for all of them
    (:func:`identity_store.row_inserts.insert_rows`), not through the unit
    of work, which would first register, then inspect and sort every new
    object (about 1 ms for a user and one e-mail); these rows are never
    changed again in the transaction.

    :raises IntegrityError: A ``userName`` is taken (the unique index says so).
    """
    if not users:
        return
    for group in _grouped([_row_values(User, user.__dict__) for user in users]):
        await row_inserts.insert_rows(session, _TABLES[User], group)
    for model, attribute in ((UserMultiValue, "multi_values"), (UserAddress, "addresses")):
        rows = [
            _row_values(model, {**row.__dict__, "user_id": user.id})
            for user in users
            for row in getattr(user, attribute)
        ]
        for group in _grouped(rows):
            await row_inserts.insert_rows(session, _TABLES[model], group)
    counts.change(session, "User", len(users))


async def _replace_entries(
    session: AsyncSession,
    user: User,
    model: type[UserMultiValue] | type[UserAddress],
    rows: Sequence[UserMultiValue] | Sequence[UserAddress],
) -> None:
    """Replace a user's entries (or addresses) with one DELETE and one INSERT.

    Through the unit of work, replacing the collection costs a delete and an
    insert of ORM bookkeeping per row, on the event loop: about 0.1 s for the
    hundreds of entries a user may hold. The new rows are recorded as the
    loaded collection, so that the user reads back as written."""
    with session.no_autoflush:  # the user's own row is flushed once, later
        await session.execute(delete(model).where(model.user_id == user.id))
        for row in rows:
            row.user_id = user.id
        await row_inserts.insert_rows(session, _TABLES[model], [_values(r) for r in rows])
    attribute = "multi_values" if model is UserMultiValue else "addresses"
    set_committed_value(user, attribute, list(rows))


def _flush_conflict(exc: IntegrityError, data: UserInput) -> ConflictError:
    return ConflictError("userName", f"userName {data.user_name!r} is already taken")


SideRow = tuple[Table, dict[str, Any]]
"""A row a write adds besides the user's own: its table and values."""


def _moved(
    user: User | UserRow,
    to: Lifecycle,
    cause: str,
    actor: Actor,
    rows: list[SideRow],
    now: datetime | None = None,
) -> None:
    """:func:`identity_store.lifecycle.transition`, its history row added to
    ``rows`` rather than to a session (the one-statement writes below)."""
    if user.lifecycle == to.value:
        return
    at = now or utcnow()
    rows.append(
        (lifecycle.HISTORY, lifecycle.history_row(user.id, user.lifecycle, to, cause, actor, at))
    )
    user.lifecycle = to.value
    user.lifecycle_changed_at = at


def prepare_user(
    data: UserInput,
    actor: Actor,
    *,
    required_attributes: Sequence[str],
    max_values: int,
    default_idp_source: str = IdpSource.SCIM.value,
    user_id: str | None = None,
) -> tuple[UserRow, list[SideRow]]:
    """A new user of ``data``, validated, its lifecycle started (``ACTIVE``,
    ``CREATED`` or ``SUSPENDED``), and the history, audit and outbox rows
    its creation writes (not its count delta).

    :raises ValidationError: A value is not acceptable.
    """
    _derive_identifiers(data)
    _validate(data, max_values)
    # userName uniqueness is the unique index's to enforce: a taken name
    # fails the INSERT (IntegrityError -> ConflictError).
    user = _new_user()
    if user_id is not None:
        user.id = user_id
    user.lifecycle = ""
    _apply(user, data)
    if not user.idp_source:
        user.idp_source = default_idp_source
    if not user.user_type:
        user.user_type = UserType.PERSON.value
    if user.active is None:
        user.active = True  # a new user is active unless the client says otherwise
    user.multi_values = [Entry(values) for values in _entry_values(data)]
    user.addresses = [Entry(values) for values in _address_values(data)]
    # One time for the user's timestamps and its side rows: the one-statement
    # write sends it once (_sharing).
    now = user.created_at = user.updated_at = utcnow()
    rows: list[SideRow] = []
    _moved(user, lifecycle.target_state(user, required_attributes), "created", actor, rows, now)
    rows.append(
        (
            audit.AUDIT,
            audit.audit_row(
                actor, "user.create", "User", user.id, {"userName": user.user_name}, now
            ),
        )
    )
    rows.append(
        (
            audit.OUTBOX,
            audit.outbox_row(
                "auth0",
                "upsert",
                "User",
                user.id,
                {"version": user.version},
                now,
                request_id=actor.request_id,
            ),
        )
    )
    return user, rows


def build_user(
    session: AsyncSession,
    data: UserInput,
    actor: Actor,
    *,
    required_attributes: Sequence[str],
    max_values: int,
    default_idp_source: str = IdpSource.SCIM.value,
    user_id: str | None = None,
) -> UserRow:
    """A new user of ``data`` (:func:`prepare_user`), its history, audit and
    outbox rows added to the session's transaction; not inserted yet
    (:func:`insert_users`). What the database must say of it is
    :func:`check_new_user`'s, awaited before.

    :raises ValidationError: A value is not acceptable (nothing is added to
        the session then).
    """
    user, rows = prepare_user(
        data,
        actor,
        required_attributes=required_attributes,
        max_values=max_values,
        default_idp_source=default_idp_source,
        user_id=user_id,
    )
    for table, values in rows:
        side_rows.add(session, table, values)
    return user


async def insert_user(
    session: AsyncSession,
    data: UserInput,
    actor: Actor,
    *,
    required_attributes: Sequence[str],
    max_values: int,
    default_idp_source: str = IdpSource.SCIM.value,
    user_id: str | None = None,
) -> UserRow:
    """Create a user (:func:`check_new_user`, :func:`build_user`,
    :func:`insert_users`). ``user_id``: the id the caller chose (a ULID no
    user, live or deleted, has), else a new one.

    :raises ValidationError: A value is not acceptable.
    :raises ConflictError: The ``userName`` (or the chosen id) is taken.
    """
    await check_new_user(session, data, user_id=user_id)
    user = build_user(
        session,
        data,
        actor,
        required_attributes=required_attributes,
        max_values=max_values,
        default_idp_source=default_idp_source,
        user_id=user_id,
    )
    try:
        await insert_users(session, [user])
    except IntegrityError as exc:
        if user_id is not None:  # a concurrent create took the id or the name
            raise ConflictError(
                "userName", f"userName {data.user_name!r} or id {user_id!r} is already taken"
            ) from exc
        raise _flush_conflict(exc, data) from exc
    return user


def input_of(user: User | UserRow) -> UserInput:
    """The whole writable state of a user (loaded by :func:`load_user`, or
    read as a :class:`~identity_store.read_models.UserRow`): what a replace
    that changes nothing would give, so that a change can be told from
    none by comparing the two."""
    return UserInput(
        user_name=user.user_name,
        columns={
            name: list(value) if isinstance(value, list) else value
            for name in sorted(WRITABLE_COLUMNS)
            for value in (getattr(user, name),)
        },
        multi_values=[
            {"attribute": e.attribute, **{f: getattr(e, f) for f in MULTI_VALUE_FIELDS}}
            for e in user.multi_values
        ],
        addresses=[{f: getattr(a, f) for f in ADDRESS_FIELDS} for a in user.addresses],
    )


async def lock_user_ids(session: AsyncSession, column: str, values: Sequence[str]) -> list[str]:
    """The ids of the live users whose ``column`` (``user_name_normalized``
    or ``external_id``) is one of ``values``, locked for update
    (PostgreSQL; in id order, so that two batches never wait for each
    other in a circle; SQLite locks the whole database for a write). Read
    them after this: they are then as the last writer committed them (see
    :func:`load_user`)."""
    if not values:
        return []
    key = getattr(User, column)
    query = (
        select(User.id)
        .where(key.in_(sorted(set(values))), User.deleted_at.is_(None))
        .order_by(User.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return list((await session.scalars(query)).all())


async def taken_user_names(session: AsyncSession, user_names: Sequence[str]) -> dict[str, str]:
    """Of ``user_names`` (normalized), those live users hold, with the id of each."""
    if not user_names:
        return {}
    rows = await session.execute(
        select(User.user_name_normalized, User.id).where(
            User.user_name_normalized.in_(sorted(set(user_names))), User.deleted_at.is_(None)
        )
    )
    return {str(name): str(user_id) for name, user_id in rows.all()}


_STOPPED = frozenset({Lifecycle.SUSPENDED.value, Lifecycle.INACTIVE.value})


def _cause(before: str, user: User) -> str:
    """The history's ``cause`` of a write's transition, from what the user now
    is: what suspends it (``deactivated``, ``blocked``, ``expired``), or
    ``reactivated`` out of ``SUSPENDED``/``INACTIVE``, or ``updated`` (an
    admin's write that filled or removed required attributes)."""
    if lifecycle.is_suspended(user):
        if user.active is False:
            return "deactivated"
        return "blocked" if user.blocked else "expired"
    return "reactivated" if before in _STOPPED else "updated"


async def write_replacement(
    session: AsyncSession,
    user: User,
    data: UserInput,
    actor: Actor,
    *,
    required_attributes: Sequence[str],
    max_values: int,
    action: str,
) -> User:
    """Replace every writable attribute of ``user`` (loaded by :func:`load_user`)."""
    _derive_identifiers(data, user)
    _validate(data, max_values)
    await _check_user_group(session, data, user)
    if normalize(data.user_name) != user.user_name_normalized:
        await _ensure_user_name_free(session, data.user_name, except_id=user.id)
    before = user.lifecycle
    _apply(user, data)
    values = _multi_value_rows(data)
    if _multi_value_key(values) != _multi_value_key(user.multi_values):
        await _replace_entries(session, user, UserMultiValue, values)
    addresses = _address_rows(data)
    if _address_key(addresses) != _address_key(user.addresses):
        await _replace_entries(session, user, UserAddress, addresses)
    user.updated_at = utcnow()
    lifecycle.transition(
        session,
        user,
        lifecycle.target_state(user, required_attributes),
        _cause(before, user),
        actor,
    )
    try:
        await session.flush()
    except IntegrityError as exc:
        raise _flush_conflict(exc, data) from exc
    audit.record(session, actor, action, "User", user.id, {"version": user.version})
    operation = "block" if lifecycle.is_suspended(user) else "upsert"
    audit.enqueue(session, actor, "auth0", operation, "User", user.id, {"version": user.version})
    return user


async def _leave_groups(session: AsyncSession, user: User) -> list[str]:
    """Remove ``user`` from every group it is a direct member of, bump those
    groups' versions (their ``members`` changed), and return their ids."""
    group_ids = sorted(
        (
            await session.scalars(
                select(GroupMember.group_id).where(GroupMember.member_id == user.id)
            )
        ).all()
    )
    if not group_ids:
        return []
    await session.execute(delete(GroupMember).where(GroupMember.member_id == user.id))
    await session.execute(
        update(Group)
        .where(Group.id.in_(group_ids))
        .values(version=Group.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return group_ids


async def mark_deleted(session: AsyncSession, user: User, actor: Actor) -> None:
    """SCIM DELETE (RFC 7644 §3.6): the id answers 404 from now on; the row is
    kept ``SUSPENDED`` until the deletion sync makes it ``INACTIVE`` (SPEC §4).

    Its group memberships end now, so that no later read lists it among a
    group's ``members`` nor finds the group by ``members.value`` (§3.6: "omitted
    from future query results"). The groups it left are named in the
    ``user.delete`` audit entry; no outbox row is written per group (the
    role resolver reads memberships from the store, not from events)."""
    user.deleted_at = utcnow()
    user.active = False
    user.updated_at = utcnow()
    lifecycle.transition(session, user, lifecycle.after_delete(user), "deleted", actor)
    await session.flush()
    group_ids = await _leave_groups(session, user)
    counts.change(session, "User", -1)
    audit.record(
        session,
        actor,
        "user.delete",
        "User",
        user.id,
        {"userName": user.user_name, "groups": group_ids},
    )
    audit.enqueue(session, actor, "auth0", "delete", "User", user.id, {"version": user.version})


async def load_deleted_user(session: AsyncSession, user_id: str) -> User:
    """A user deleted over SCIM or the management API, with its entries,
    locked for its restore; :class:`NotFoundError` when no row has this id,
    :class:`StateError` when the user is not deleted."""
    user = (
        await session.scalars(
            select(User)
            .where(User.id == user_id)
            .options(selectinload(User.multi_values), selectinload(User.addresses))
            .with_for_update(of=User)
        )
    ).one_or_none()
    if user is None:
        raise NotFoundError("User", user_id)
    if user.deleted_at is None:
        raise StateError(f"user {user_id} is not deleted: there is nothing to restore")
    return user


async def restore(
    session: AsyncSession, user: User, actor: Actor, *, required_attributes: Sequence[str]
) -> User:
    """Undo a delete (:func:`mark_deleted`) before the deletion sync: the user
    is live again, ``active``, and its lifecycle what its attributes make it
    (``ACTIVE`` or ``CREATED``; still ``SUSPENDED`` when blocked or expired).
    Its group memberships, which ended with the delete, are not restored;
    its directly assigned roles were kept.

    :raises StateError: The deletion sync deprovisioned it (``INACTIVE``), or
        its user group no longer exists.
    :raises ConflictError: A live user has taken its ``userName`` meanwhile.
    """
    if user.lifecycle == Lifecycle.INACTIVE.value:
        raise StateError(
            f"user {user.id} was deprovisioned by the deletion sync (INACTIVE) and cannot "
            "be restored"
        )
    if user.user_group is not None and not await user_group_schemas.group_exists(
        session, user.user_group
    ):
        raise StateError(
            f"user {user.id} cannot be restored: its user group {user.user_group!r} was "
            "deleted meanwhile"
        )
    await _ensure_user_name_free(session, user.user_name, except_id=user.id)
    now = utcnow()
    user.deleted_at = None
    user.active = True
    user.updated_at = now
    lifecycle.transition(
        session,
        user,
        lifecycle.target_state(user, required_attributes, now),
        "restored",
        actor,
        now=now,
    )
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent create took the name
        raise ConflictError("userName", f"userName {user.user_name!r} is already taken") from exc
    counts.change(session, "User", +1)
    audit.record(
        session,
        actor,
        "user.restore",
        "User",
        user.id,
        {"userName": user.user_name, "version": user.version},
    )
    operation = "block" if lifecycle.is_suspended(user, now) else "upsert"
    audit.enqueue(session, actor, "auth0", operation, "User", user.id, {"version": user.version})
    return user


# One-statement writes (PostgreSQL). A create, an update and a delete of one
# user are each one statement of data-modifying WITH queries run in
# autocommit (identity_store.row_inserts.WithStatement): the user's row, its
# entries and addresses, its history, audit and outbox rows and its count
# delta commit together or not at all, in one round trip, without a session
# (BEGIN, the ORM's load and flush, before_commit, COMMIT: about 2 ms of
# Python and four round trips per write). An update or a delete is
# optimistic: computed from the user as read, it writes only where the row
# still has the version read (``UPDATE ... WHERE version = $n``), else
# nothing; the caller reads again and retries, as the session path retries a
# stale version. Every writer of a user's row or entries moves its version.

_COUNTS = cast(Table, ResourceCount.__table__)
_MANAGER = "(SELECT display_name FROM users WHERE id = {} AND deleted_at IS NULL)"


def _side_parts(
    statement: row_inserts.WithStatement,
    rows: list[SideRow],
    source: str | None,
    now: _Now | None = None,
) -> None:
    for n, (table, values) in enumerate(rows):
        if now is None:
            statement.insert(f"s{n}", table, values, source=source)
        else:
            row, shared = now.sharing(values)
            statement.insert(f"s{n}", table, row, source=source, computed=shared)


class _Now:
    """The time of a one-statement write, sent once: the columns of its parts
    holding that very time (the same object: :func:`prepare_user` and
    :func:`replace_at_once` give the user's timestamps, history, audit and
    outbox rows one) read the one parameter, not one each (asyncpg encodes a
    timestamp for about five times a string's CPU; a create held seven)."""

    def __init__(self, statement: row_inserts.WithStatement, now: datetime) -> None:
        self.now = now
        (bound,) = row_inserts.bound(_TABLES[User], {"updated_at": now}, statement.dialect)
        self.sql = statement.place(bound, "timestamptz")

    def sharing(self, row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """``row`` without its columns holding the time, and those columns
        as the time's parameter (``computed`` of an insert part)."""
        now = self.now
        shared = {k: self.sql for k, v in row.items() if v is now}
        if not shared:
            return row, shared
        return {k: v for k, v in row.items() if v is not now}, shared


async def _run(
    engine: AsyncEngine, statement: row_inserts.WithStatement, final: str
) -> asyncpg.Record:
    async with row_inserts.autocommit(engine) as connection:
        return await _run_on(connection, statement, final)


async def _run_on(
    connection: asyncpg.Connection, statement: row_inserts.WithStatement, final: str
) -> asyncpg.Record:
    """:func:`_run` on a connection of the engine's pool already taken
    (:func:`identity_store.row_inserts.autocommit`)."""
    sql = statement.sql(final)
    with row_inserts.as_sqlalchemy_errors(sql, statement.params):
        row = await connection.fetchrow(sql, *statement.params)
        if row["count_id"] is not None and row["count_id"] % counts.COMPACT_EVERY == 0:
            await connection.execute(counts.FOLD_STATEMENT, "User")
    return row


def _manager(statement: row_inserts.WithStatement, user: UserRow) -> str:
    if user.manager_id is None:
        return "NULL"
    return _MANAGER.format(statement.place(user.manager_id, "varchar"))


async def create_at_once(
    engine: AsyncEngine,
    data: UserInput,
    actor: Actor,
    *,
    required_attributes: Sequence[str],
    max_values: int,
    default_idp_source: str = IdpSource.SCIM.value,
) -> UserRecord:
    """Create a user in one statement (PostgreSQL): what
    :func:`insert_user` does for a user with a new id and no ``userGroup``
    (whose check reads the group's configuration in the transaction).

    :raises ValidationError: A value is not acceptable.
    :raises ConflictError: The ``userName`` is taken.
    """
    user, rows = prepare_user(
        data,
        actor,
        required_attributes=required_attributes,
        max_values=max_values,
        default_idp_source=default_idp_source,
    )
    statement = row_inserts.WithStatement(engine.dialect)
    now = _Now(statement, user.created_at)
    row, shared = now.sharing(_row_values(User, user.__dict__))
    statement.insert("u", _TABLES[User], row, returning="id", computed=shared)
    if user.multi_values:
        entries = [_row_values(UserMultiValue, e.__dict__) for e in user.multi_values]
        statement.insert_rows("v", _TABLES[UserMultiValue], entries, user_id_from="u")
    if user.addresses:
        addresses = [_row_values(UserAddress, a.__dict__) for a in user.addresses]
        statement.insert_rows("a", _TABLES[UserAddress], addresses, user_id_from="u")
    _side_parts(statement, rows, None, now)
    statement.insert("c", _COUNTS, {"resource_type": "User", "delta": 1}, returning="id")
    final = f"SELECT (SELECT id FROM c) AS count_id, {_manager(statement, user)} AS manager"  # noqa: S608
    try:
        row = await _run(engine, statement, final)
    except IntegrityError as exc:
        raise _flush_conflict(exc, data) from exc
    return UserRecord(user, [], row["manager"])


def checks_user_group(data: UserInput, before: UserRow | User) -> bool:
    """Whether a write of ``data`` over ``before`` checks its user group
    (:func:`_check_user_group`), which reads, and locks, the group's
    configuration in the write's transaction."""
    group = data.columns.get("user_group")
    if group is None:
        return False
    custom_data = data.columns.get("custom_data")
    return not (group == before.user_group and custom_data == before.custom_data)


_NOT_SET = frozenset({"id", "version", "multi_values", "addresses"})


async def replace_at_once(
    engine: AsyncEngine,
    current: UserRecord,
    data: UserInput,
    actor: Actor,
    *,
    required_attributes: Sequence[str],
    max_values: int,
    action: str,
    connection: asyncpg.Connection | None = None,
) -> UserRecord | None:
    """:func:`write_replacement` in one statement (PostgreSQL), for a user
    read as ``current`` (a live user) and a change that does not check its
    user group (:func:`checks_user_group`). ``None``: the user is no longer
    at the version read (changed or deleted since): nothing was written.
    ``connection``: one of the engine's pool the caller holds
    (:func:`identity_store.row_inserts.autocommit`), else one is taken.

    :raises ValidationError: A value is not acceptable.
    :raises ConflictError: The new ``userName`` is taken.
    """
    before = cast(UserRow, current.user)  # as identity_store.prepared_reads reads it
    _derive_identifiers(data, before)
    _validate(data, max_values)
    stored = before.__dict__.copy()
    stored.pop("multi_values", None)
    stored.pop("addresses", None)
    stored["deleted_at"] = None  # a live user (the reads do not fetch it)
    user = UserRow(dict(stored))
    state = user.lifecycle
    _apply(user, data)
    entries = [Entry(v) for v in _entry_values(data)]
    entries_changed = _multi_value_key(entries) != _multi_value_key(before.multi_values)
    addresses = [Entry(v) for v in _address_values(data)]
    addresses_changed = _address_key(addresses) != _address_key(before.addresses)
    user.multi_values = (
        sorted(entries, key=lambda e: (e.attribute, e.position))
        if entries_changed
        else before.multi_values
    )
    user.addresses = addresses if addresses_changed else before.addresses
    now = user.updated_at = utcnow()  # also its side rows' (_Now)
    rows: list[SideRow] = []
    _moved(
        user,
        lifecycle.target_state(user, required_attributes),
        _cause(state, user),  # type: ignore[arg-type]
        actor,
        rows,
        now,
    )
    user.version = before.version + 1
    rows.append((audit.AUDIT, audit.audit_row(actor, action, "User", user.id, _version(user), now)))
    operation = "block" if lifecycle.is_suspended(user) else "upsert"
    rows.append(
        (
            audit.OUTBOX,
            audit.outbox_row(
                "auth0",
                operation,
                "User",
                user.id,
                _version(user),
                now,
                request_id=actor.request_id,
            ),
        )
    )
    changed = {
        k: v
        for k, v in user.__dict__.items()
        if k not in _NOT_SET and (k not in stored or stored[k] != v)
    }
    statement = row_inserts.WithStatement(engine.dialect)
    at = _Now(statement, now)
    plain, shared = at.sharing(changed)
    values = dict(zip(plain, row_inserts.bound(_TABLES[User], plain, engine.dialect), strict=True))
    assignments = [
        f'"{k}" = {shared[k] if k in shared else statement.place(values[k])}' for k in changed
    ]
    where = (
        f"id = {statement.place(user.id)} AND version = {statement.place(before.version)}"
        " AND deleted_at IS NULL"
    )
    statement.add(
        "u",
        f"UPDATE users SET {', '.join(assignments)}, version = version + 1"  # noqa: S608
        f" WHERE {where} RETURNING id",
    )
    for name, model, new, replace in (
        ("v", UserMultiValue, entries, entries_changed),
        ("a", UserAddress, addresses, addresses_changed),
    ):
        if not replace:
            continue
        table = _TABLES[model]
        statement.add(
            f"d{name}",
            f'DELETE FROM "{table.name}" WHERE user_id IN (SELECT id FROM u)',  # noqa: S608
        )
        if new:
            rows_of = [_row_values(model, e.__dict__) for e in new]
            statement.insert_rows(name, table, rows_of, user_id_from="u")
    _side_parts(statement, rows, "u", at)
    same_manager = user.manager_id == before.manager_id
    manager_sql = "NULL" if same_manager else _manager(statement, user)
    final = (
        f"SELECT (SELECT count(*) FROM u) AS written, NULL AS count_id, {manager_sql} AS manager"  # noqa: S608
    )
    try:
        if connection is None:
            row = await _run(engine, statement, final)
        else:
            row = await _run_on(connection, statement, final)
    except IntegrityError as exc:
        raise _flush_conflict(exc, data) from exc
    if not row["written"]:
        return None
    manager = current.manager_display if same_manager else row["manager"]
    if user.manager_id == user.id:  # read before the write: its new name
        manager = user.display_name
    return UserRecord(user, current.groups, manager)


def _version(user: UserRow) -> dict[str, Any]:
    return {"version": user.version}
