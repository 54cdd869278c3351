"""User use cases (SPEC §3, §4): each function is a whole use case, with its
transaction and its optimistic-concurrency retry inside
(:meth:`~identity_store.store.Store.transaction`).

Writes take plain inputs in the store's vocabulary (:class:`UserInput`),
return what is stored (:class:`UserRecord`) and raise store errors
(:mod:`identity_store.errors`). An update takes a *change*: a function of the
user's current record that returns its new state (or ``None``: nothing to
change); it runs inside the transaction, on the row locked for the update,
so the protocol that interprets a request (a SCIM PATCH or PUT, a management
API edit) never reads a state another writer is changing.

Reads choose their path here, never in the caller: on PostgreSQL the hottest
ones (a user by id, ``userName``/``externalId`` look-ups, pages by id) are one
prepared statement each (:mod:`identity_store.prepared_reads`); everything
else, and SQLite, goes through SQLAlchemy Core (:mod:`identity_store.read_models`).
Both return the same records.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from . import counts, filtering, prepared_reads, rbac, row_inserts, user_changes, user_deletes
from .actor import Actor
from .attributes import CORE_USER_SCHEMA
from .comparison import normalize
from .errors import NotFoundError
from .models import IdpSource, User, utcnow
from .paging import (
    CursorSorts,
    Page,
    PagePlan,
    PageRequest,
    count_matching,
    plan_page,
    total_of_page,
)
from .prepared_reads import LOOKUP_COLUMNS, PreparedReads
from .read_models import (
    GroupRef,
    UserRecord,
    UserRow,
    list_user_rows,
    live_user_ids,
    user_records,
    user_rows,
)
from .store import Store, database_errors
from .user_changes import UNSET, UserInput, check_user_id, current_input
from .versions import check_version

__all__ = [
    "UNSET",
    "GroupRef",
    "UserInput",
    "UserListing",
    "UserQuery",
    "UserRecord",
    "UserRow",
    "add_roles",
    "check_user_id",
    "count_users",
    "create_user",
    "current_input",
    "delete_user",
    "find_users",
    "get_user",
    "list_users",
    "normalize",
    "restore_user",
    "update_user",
]

OPTIMISTIC_ATTEMPTS = 2
"""Writes of a user at the version read before an update takes its lock."""

Change = Callable[[UserRecord], UserInput | None]
"""A user's new state from its current record; ``None`` when nothing changes."""

CURSOR_SORTS: CursorSorts = {
    "id": (None, str),
    "meta.created": (User.created_at, datetime),
    "meta.lastmodified": (User.updated_at, datetime),
    "username": (User.user_name_normalized, str),
}


async def create_user(
    store: Store,
    data: UserInput,
    actor: Actor,
    *,
    idp_source: str | None = None,
    user_id: str | None = None,
    roles: Sequence[str] | None = None,
) -> UserRecord:
    """Create a user; its lifecycle starts ``ACTIVE``, ``CREATED`` or ``SUSPENDED``
    (SPEC §4). ``idp_source`` is where it comes from when ``data`` does not say.
    ``user_id``: an id the caller chose (a ULID), else a new one. ``roles``:
    RBAC role ids assigned to the user directly, in the same transaction
    (the record then carries them). On PostgreSQL, a user without a chosen
    id, ``userGroup`` or roles is created by one autocommit statement
    (:func:`identity_store.user_changes.create_at_once`).

    :raises ConflictError: The ``userName`` (or the chosen id) is taken.
    :raises ValidationError: A value is not acceptable: an unknown role, a
        ``userGroup`` that is not configured, ``customData`` its schema refuses.
    """
    role_ids = None if roles is None else rbac.check_role_ids(store, roles)
    if (
        not store.settings.is_sqlite
        and roles is None
        and user_id is None
        and data.columns.get("user_group") is None
    ):
        with database_errors():
            return await user_changes.create_at_once(
                store.engine,
                data,
                actor,
                required_attributes=store.settings.required_idp_attributes,
                max_values=store.settings.max_multi_values,
                default_idp_source=idp_source or IdpSource.SCIM.value,
            )

    async def work(session: AsyncSession) -> UserRecord:
        user = await user_changes.insert_user(
            session,
            data,
            actor,
            required_attributes=store.settings.required_idp_attributes,
            max_values=store.settings.max_multi_values,
            default_idp_source=idp_source or IdpSource.SCIM.value,
            user_id=user_id,
        )
        if role_ids:
            await rbac.write_user_roles(session, store, user.id, role_ids, actor)
        # A new user is in no group yet.
        record = (await user_records(session, [user], groups=False))[0]
        if role_ids is not None:
            record.roles = role_ids
        return record

    return await store.transaction(work)


async def update_user(
    store: Store,
    user_id: str,
    change: Change,
    actor: Actor,
    *,
    expected_version: int | None = None,
    action: str = "user.patch",
    offload: bool = False,
    roles: Sequence[str] | None = None,
) -> UserRecord:
    """Change a user: lock it, check ``expected_version``, let ``change`` compute
    its new state from its current record (without ``groups``, which no
    change writes; the record is the locked row itself, valid during the
    call only), and store that state with its lifecycle transition, audit
    and outbox rows. A change that returns ``None`` writes nothing.
    ``offload`` runs the change in a worker thread, for a caller that knows
    it will take long (a SCIM PATCH of many operations), so that the event
    loop keeps serving other requests meanwhile; a short change runs inline,
    which costs less than the thread hand-off.

    On PostgreSQL (without ``roles``) the user is not locked: it is read by
    the prepared read of a GET, and its new state written by one
    autocommit statement that takes effect only if the user is still at the
    version read (:func:`_update_at_once`); when another writer got there
    first the change is computed again from a new read, and after two such
    races, or for a change that checks the user's group, the update takes
    the locking transaction described above.

    ``roles`` (not ``None``): the RBAC role ids the user is assigned
    directly from now on, replaced in the same transaction; when they change
    and nothing else does, the user still gets a new version (its management
    document changed), and the record carries them.

    :raises NotFoundError: No live user has this id.
    :raises VersionMismatchError: The user is not at ``expected_version``.
    :raises ConflictError: The new ``userName`` is taken.
    :raises ValidationError: A value is not acceptable (unknown roles included).
    :raises ConcurrentUpdateError: Concurrent writers kept winning.
    """
    role_ids = None if roles is None else rbac.check_role_ids(store, roles)
    if store.prepared is not None and roles is None:
        record = await _update_at_once(
            store, store.prepared, user_id, change, actor, expected_version, action, offload
        )
        if record is not None:
            return record

    async def work(session: AsyncSession) -> UserRecord:
        user = await user_changes.load_user(session, user_id, for_update=True)
        check_version(user.version, expected_version)
        current = (await user_records(session, [user], groups=False))[0]
        data = await asyncio.to_thread(change, current) if offload else change(current)
        if data is not None:
            user = await user_changes.write_replacement(
                session,
                user,
                data,
                actor,
                required_attributes=store.settings.required_idp_attributes,
                max_values=store.settings.max_multi_values,
                action=action,
            )
        if role_ids is not None:
            revision = await rbac.write_user_roles(session, store, user.id, role_ids, actor)
            if revision is not None and data is None:
                user.updated_at = utcnow()
                await session.flush()  # the version moves on
        record = (await user_records(session, [user]))[0]
        if role_ids is not None:
            record.roles = role_ids
        return record

    return await store.transaction(work)


async def _update_at_once(
    store: Store,
    prepared: PreparedReads,
    user_id: str,
    change: Change,
    actor: Actor,
    expected_version: int | None,
    action: str,
    offload: bool,
) -> UserRecord | None:
    """:func:`update_user` on PostgreSQL without a session: the user read by
    one prepared statement, its new state written by one statement that
    takes effect only at the version read
    (:func:`identity_store.user_changes.replace_at_once`); read again and
    computed again when another writer got there first. ``None``: a change
    that checks the user's group, which takes the transaction, or a user
    other writers kept changing meanwhile, which the transaction's lock
    serialises.

    The read and the write take one connection of the engine's pool
    (:func:`identity_store.prepared_reads.user_on`): a connection from each
    pool cost more Python than the read itself. A long change (``offload``)
    holds none while it runs: the user is read from the prepared reads'
    pool and the write takes its own connection."""
    if offload:
        return await _attempts(
            store, prepared, None, user_id, change, actor, expected_version, action, offload
        )
    with database_errors():
        async with row_inserts.autocommit(store.engine) as connection:
            return await _attempts(
                store,
                prepared,
                connection,
                user_id,
                change,
                actor,
                expected_version,
                action,
                offload,
            )


async def _attempts(
    store: Store,
    prepared: PreparedReads,
    connection: asyncpg.Connection | None,
    user_id: str,
    change: Change,
    actor: Actor,
    expected_version: int | None,
    action: str,
    offload: bool,
) -> UserRecord | None:
    """:func:`_update_at_once`'s reads and writes, on ``connection`` (its
    errors are the caller's to map) or each on a connection of its own."""
    errors = database_errors if connection is None else contextlib.nullcontext
    for _ in range(OPTIMISTIC_ATTEMPTS):
        with errors():
            if connection is None:
                found = await prepared.users([user_id], groups=True)
            else:
                read = await prepared_reads.user_on(connection, user_id)
                found = [] if read is None else [read]
        if not found:
            raise NotFoundError("User", user_id)
        current = found[0]
        check_version(current.user.version, expected_version)
        # The change sees the user without its groups, as in the transaction.
        alone = UserRecord(current.user, [], current.manager_display)
        data = await asyncio.to_thread(change, alone) if offload else change(alone)
        if data is None:
            return current
        if user_changes.checks_user_group(data, current.user):
            return None
        with errors():
            record = await user_changes.replace_at_once(
                store.engine,
                current,
                data,
                actor,
                required_attributes=store.settings.required_idp_attributes,
                max_values=store.settings.max_multi_values,
                action=action,
                connection=connection,
            )
        if record is not None:
            return record
    return None


async def restore_user(
    store: Store, user_id: str, actor: Actor, *, expected_version: int | None = None
) -> UserRecord:
    """Undo the delete of a user before the deletion sync made it ``INACTIVE``
    (:func:`identity_store.user_changes.restore`): live again, ``active``,
    ``ACTIVE`` or ``CREATED`` as its attributes say (still ``SUSPENDED``
    when blocked or expired), with its roles; not back in the groups it left.
    Audited (``user.restore``), in the history (cause ``restored``), with an
    ``auth0`` outbox row.

    :raises NotFoundError: No user row has this id.
    :raises StateError: The user is not deleted, is ``INACTIVE`` already, or
        its user group was deleted meanwhile.
    :raises ConflictError: A live user has its ``userName`` now.
    :raises VersionMismatchError: The user is not at ``expected_version``.
    """

    async def work(session: AsyncSession) -> UserRecord:
        user = await user_changes.load_deleted_user(session, user_id)
        check_version(user.version, expected_version)
        user = await user_changes.restore(
            session, user, actor, required_attributes=store.settings.required_idp_attributes
        )
        record = (await user_records(session, [user]))[0]
        record.roles = (await rbac.roles_of_users(session, [user.id]))[user.id]
        return record

    return await store.transaction(work)


async def delete_user(
    store: Store, user_id: str, actor: Actor, *, expected_version: int | None = None
) -> None:
    """Delete a user (RFC 7644 §3.6): 404 from now on, ``SUSPENDED`` until the
    deletion sync (service accounts: ``INACTIVE`` at once), SPEC §4. On
    PostgreSQL one autocommit statement that reads nothing beforehand, with
    the deletes of this process asked for at the same time
    (:mod:`identity_store.user_deletes`).

    :raises NotFoundError: No live user has this id.
    :raises VersionMismatchError: The user is not at ``expected_version``.
    """

    if store.prepared is not None:
        with database_errors():
            await user_deletes.delete(
                store.engine, user_deletes.Deletion(user_id, actor, expected_version)
            )
        return

    async def work(session: AsyncSession) -> None:
        user = await user_changes.load_user(session, user_id, for_update=True)
        check_version(user.version, expected_version)
        await user_changes.mark_deleted(session, user, actor)

    await store.transaction(work)


async def get_user(
    store: Store, user_id: str, *, groups: bool = True, roles: bool = False
) -> UserRecord:
    """A live user by id (``groups=False``: without its groups, one query
    fewer; ``roles``: with its directly assigned RBAC roles, one more).

    :raises NotFoundError: No live user has this id.
    """
    if store.prepared is not None:
        with database_errors():
            found = await store.prepared.users([user_id], groups=groups)
    else:
        async with store.reading() as session:
            found = await user_records(session, await user_rows(session, [user_id]), groups=groups)
    if not found:
        raise NotFoundError("User", user_id)
    if roles:
        await add_roles(store, found)
    return found[0]


async def add_roles(store: Store, records: list[UserRecord]) -> None:
    """Read the directly assigned RBAC roles of each record's user into it."""
    async with store.reading() as session:
        assigned = await rbac.roles_of_users(session, [r.user.id for r in records])
    for record in records:
        record.roles = assigned[record.user.id]


@dataclass(frozen=True, slots=True)
class UserQuery:
    """Which live users a management list or count takes (every condition
    given must hold)."""

    user_group: str | None = None
    lifecycle: str | None = None
    search: str | None = None
    """Case-insensitive substring of ``userName``, an e-mail address,
    ``displayName``, ``givenName``, ``familyName`` or ``middleName``."""


@dataclass(frozen=True, slots=True)
class UserListing:
    """A page of :func:`list_users`: the users (with their roles), and the id
    to continue after (``None``: the list is done)."""

    users: list[UserRecord]
    next_after: str | None


_SEARCHED = tuple(
    f"{CORE_USER_SCHEMA}:{name}"
    for name in (
        "userName",
        "emails.value",
        "displayName",
        "name.givenName",
        "name.familyName",
        "name.middleName",
    )
)


def _indexed(query: UserQuery) -> list[ColumnElement[bool]]:
    """The conditions an index serves: live, the group ``(user_group, id)``,
    the state ``(lifecycle, ...)``."""
    where: list[ColumnElement[bool]] = [User.deleted_at.is_(None)]
    if query.user_group is not None:
        where.append(User.user_group == query.user_group)
    if query.lifecycle is not None:
        where.append(User.lifecycle == query.lifecycle)
    return where


def _search(text: str) -> ColumnElement[bool]:
    """The search as the SCIM filter ``userName co "x" or emails.value co "x"
    or ...`` (:mod:`identity_store.filtering`: the same case folding)."""
    terms = tuple(filtering.Compare(name, "co", text, case_exact=False) for name in _SEARCHED)
    return filtering.user_where(filtering.Or(terms))


async def list_users(
    store: Store, query: UserQuery, *, after: str | None, limit: int, scan: int
) -> UserListing:
    """Live users matching ``query``, by id after ``after``, at most ``limit``
    of them, with their roles (the management API's ``GET /users``).

    Without ``search`` the page is one keyset query on an index (the live
    users by id, ``(user_group, id)``). A search is a substring match that
    no index serves: it examines at most ``scan`` users (the next ones by id
    that match the other conditions), so a page may hold fewer than
    ``limit`` users, even none, while ``next_after`` says the list goes on.
    """
    where = _indexed(query)
    if after is not None:
        where.append(User.id > after)
    async with store.reading() as session:
        if query.search is None:
            found = list(
                await session.scalars(
                    select(User.id).where(*where).order_by(User.id).limit(limit + 1)
                )
            )
            next_after = found[limit - 1] if len(found) > limit else None
        else:
            window = select(User.id).where(*where).order_by(User.id).limit(scan).subquery()
            found = list(
                await session.scalars(
                    select(User.id)
                    .where(User.id.in_(select(window.c.id)), _search(query.search))
                    .order_by(User.id)
                    .limit(limit + 1)
                )
            )
            if len(found) > limit:
                next_after = found[limit - 1]
            else:  # the list goes on after the window when the window was full
                examined, last = (
                    await session.execute(select(func.count(), func.max(window.c.id)))
                ).one()
                next_after = last if examined >= scan else None
        ids = found[:limit]
    records = await _records(store, ids)
    await add_roles(store, records)
    return UserListing(records, next_after)


async def _records(store: Store, ids: list[str]) -> list[UserRecord]:
    """The live users among ``ids``, in that order, without their groups."""
    if store.prepared is not None:
        with database_errors():
            return await store.prepared.users(ids, groups=False)
    async with store.reading() as session:
        return await user_records(session, await user_rows(session, ids), groups=False)


async def count_users(store: Store, query: UserQuery) -> int:
    """How many live users match ``query``: the kept total (identity_store.counts)
    without conditions, a count on an index with ``user_group`` or
    ``lifecycle``; with ``search``, every user the other conditions leave is
    examined (a scan: the count is exact, not bounded as a page is)."""
    async with store.reading() as session:
        if query == UserQuery():
            return await counts.total(session, "User")
        where = _indexed(query)
        if query.search is not None:
            where.append(_search(query.search))
        return int(await session.scalar(select(func.count()).select_from(User).where(*where)) or 0)


async def find_users(store: Store, request: PageRequest, *, groups: bool) -> Page[UserRecord]:
    """A page of live users matching ``request.filter``, sorted and paged as
    it asks, and how many match in all (RFC 7644 §3.4.2; RFC 9865 cursors).

    A single comparison that is a one-column look-up (``userName eq``,
    ``externalId eq``) is read off the filter tree
    (:func:`identity_store.filtering.user_equality`, by the translation's
    rules); its SQL translation is built only where it is needed (SQLite,
    another page, counting the matches of a full first page).

    :raises InvalidFilterError: The filter names what the store cannot filter on.
    :raises InvalidCursorError: ``request.cursor`` is not one of ours.
    :raises InvalidSortError: Cursor pagination by a key cursors do not support.
    """
    where = _Where(request.filter)
    plan = plan_page(request, filtering.user_order, CURSOR_SORTS)
    if store.prepared is not None:
        with database_errors():
            page = await _prepared_page(store, store.prepared, request, plan, where, groups)
        if page is not None:
            return page
    async with store.reading() as session:
        found = await list_user_rows(session, where.clause(), plan)
        rows, next_cursor = plan.trim(found.rows, request)
        records = await user_records(session, rows, groups=groups)
    return Page(total=found.total, rows=records, next_cursor=next_cursor)


class _Where:
    """A page request's filter: the look-up it is, if it is one, and its SQL
    translation, built on first use. Whatever the filter is refused for is
    raised here, before the page is planned, as the translation raised it
    (a single comparison's by :func:`~identity_store.filtering.user_equality`,
    which applies the translation's checks)."""

    __slots__ = ("_clause", "equality", "tree")

    def __init__(self, tree: filtering.Filter | None) -> None:
        self.tree = tree
        self._clause: ColumnElement[bool] | None = None
        self.equality = filtering.user_equality(tree) if tree is not None else None
        if tree is not None and self.equality is None:
            self._clause = filtering.user_where(tree)
            self.equality = filtering.column_equality(self._clause)

    def clause(self) -> ColumnElement[bool] | None:
        """The WHERE clause of the filter (``None``: no filter)."""
        if self._clause is None and self.tree is not None:
            self._clause = filtering.user_where(self.tree)
        return self._clause


async def _prepared_page(
    store: Store,
    prepared: PreparedReads,
    request: PageRequest,
    plan: PagePlan,
    where: _Where,
    groups: bool,
) -> Page[UserRecord] | None:
    """The pages most clients ask for, as one prepared statement: pages by id
    (index or cursor) and first pages of a one-column look-up (``userName
    eq``, ``externalId eq``). ``None``: not one of those."""
    if request.sort is not None or request.count == 0:
        return None  # the plan orders by id alone from here on
    after = plan.after[0] if plan.after else None
    if where.tree is None:
        found = await prepared.users_after(
            after, offset=plan.offset, limit=plan.limit, groups=groups
        )
    else:
        equality = where.equality
        if equality is None or equality[0] not in LOOKUP_COLUMNS:
            return None
        if plan.after is not None or plan.offset != 0:
            return None
        found = await prepared.users_where(*equality, limit=plan.limit, groups=groups)
    total = total_of_page(len(found), plan.offset, plan.limit, plan.after)
    if total is None:
        clause = where.clause()
        if clause is None:
            total = await prepared.total("User")
        else:  # a full first page of a look-up: count its matches
            async with store.reading() as session:
                total = await count_matching(session, live_user_ids(), clause)
    page, next_cursor = plan.trim([r.user for r in found], request)
    return Page(total=total, rows=found[: len(page)], next_cursor=next_cursor)
