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
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession

from . import filtering, user_changes
from .actor import Actor
from .comparison import normalize
from .errors import NotFoundError
from .models import IdpSource, User
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
from .user_changes import UNSET, UserInput
from .versions import check_version

__all__ = [
    "UNSET",
    "GroupRef",
    "UserInput",
    "UserRecord",
    "UserRow",
    "create_user",
    "delete_user",
    "find_users",
    "get_user",
    "normalize",
    "update_user",
]

Change = Callable[[UserRecord], UserInput | None]
"""A user's new state from its current record; ``None`` when nothing changes."""

CURSOR_SORTS: CursorSorts = {
    "id": (None, str),
    "meta.created": (User.created_at, datetime),
    "meta.lastmodified": (User.updated_at, datetime),
    "username": (User.user_name_normalized, str),
}


async def create_user(
    store: Store, data: UserInput, actor: Actor, *, idp_source: str | None = None
) -> UserRecord:
    """Create a user; its lifecycle starts ``ACTIVE``, ``CREATED`` or ``SUSPENDED``
    (SPEC §4). ``idp_source`` is where it comes from when ``data`` does not say.

    :raises ConflictError: The ``userName`` is taken.
    :raises ValidationError: A value is not acceptable.
    """

    async def work(session: AsyncSession) -> UserRecord:
        user = await user_changes.insert_user(
            session,
            data,
            actor,
            required_attributes=store.settings.required_idp_attributes,
            max_values=store.settings.max_multi_values,
            default_idp_source=idp_source or IdpSource.SCIM.value,
        )
        # A new user is in no group yet.
        return (await user_records(session, [user], groups=False))[0]

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

    :raises NotFoundError: No live user has this id.
    :raises VersionMismatchError: The user is not at ``expected_version``.
    :raises ConflictError: The new ``userName`` is taken.
    :raises ConcurrentUpdateError: Concurrent writers kept winning.
    """

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
        return (await user_records(session, [user]))[0]

    return await store.transaction(work)


async def delete_user(
    store: Store, user_id: str, actor: Actor, *, expected_version: int | None = None
) -> None:
    """Delete a user (RFC 7644 §3.6): 404 from now on, ``SUSPENDED`` until the
    deletion sync (service accounts: ``INACTIVE`` at once), SPEC §4.

    :raises NotFoundError: No live user has this id.
    :raises VersionMismatchError: The user is not at ``expected_version``.
    """

    async def work(session: AsyncSession) -> None:
        user = await user_changes.load_user(session, user_id, for_update=True)
        check_version(user.version, expected_version)
        await user_changes.mark_deleted(session, user, actor)

    await store.transaction(work)


async def get_user(store: Store, user_id: str, *, groups: bool = True) -> UserRecord:
    """A live user by id (``groups=False``: without its groups, one query fewer).

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
    return found[0]


async def find_users(store: Store, request: PageRequest, *, groups: bool) -> Page[UserRecord]:
    """A page of live users matching ``request.filter``, sorted and paged as
    it asks, and how many match in all (RFC 7644 §3.4.2; RFC 9865 cursors).

    :raises InvalidCursorError: ``request.cursor`` is not one of ours.
    :raises InvalidSortError: Cursor pagination by a key cursors do not support.
    """
    where = filtering.user_where(request.filter) if request.filter is not None else None
    plan = plan_page(request, filtering.user_order, CURSOR_SORTS)
    if store.prepared is not None:
        with database_errors():
            page = await _prepared_page(store, store.prepared, request, plan, where, groups)
        if page is not None:
            return page
    async with store.reading() as session:
        found = await list_user_rows(session, where, plan)
        rows, next_cursor = plan.trim(found.rows, request)
        records = await user_records(session, rows, groups=groups)
    return Page(total=found.total, rows=records, next_cursor=next_cursor)


async def _prepared_page(
    store: Store,
    prepared: PreparedReads,
    request: PageRequest,
    plan: PagePlan,
    where: ColumnElement[bool] | None,
    groups: bool,
) -> Page[UserRecord] | None:
    """The pages most clients ask for, as one prepared statement: pages by id
    (index or cursor) and first pages of a one-column look-up (``userName
    eq``, ``externalId eq``). ``None``: not one of those."""
    if request.sort is not None or request.count == 0:
        return None  # the plan orders by id alone from here on
    after = plan.after[0] if plan.after else None
    if where is None:
        found = await prepared.users_after(
            after, offset=plan.offset, limit=plan.limit, groups=groups
        )
    else:
        equality = filtering.column_equality(where)
        if equality is None or equality[0] not in LOOKUP_COLUMNS:
            return None
        if plan.after is not None or plan.offset != 0:
            return None
        found = await prepared.users_where(*equality, limit=plan.limit, groups=groups)
    total = total_of_page(len(found), plan.offset, plan.limit, plan.after)
    if total is None:
        if where is None:
            total = await prepared.total("User")
        else:  # a full first page of a look-up: count its matches
            async with store.reading() as session:
                total = await count_matching(session, live_user_ids(), where)
    page, next_cursor = plan.trim([r.user for r in found], request)
    return Page(total=total, rows=found[: len(page)], next_cursor=next_cursor)
