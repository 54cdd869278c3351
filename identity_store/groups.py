"""Group use cases (SPEC §3 "Group"): each function is a whole use case with
its transaction and retry inside (:meth:`~identity_store.store.Store.transaction`).

Membership changes touch only the members they name, whatever the size of
the group (:mod:`identity_store.group_changes`); a group's members are read
only when the caller wants them (``members=False`` for SCIM's
``excludedAttributes=members``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from . import filtering, group_changes
from .actor import Actor
from .group_changes import KEEP, GroupChanges, Member
from .models import Group
from .paging import CursorSorts, Page, PageRequest, plan_page
from .store import Store
from .versions import check_version

__all__ = [
    "KEEP",
    "GroupChanges",
    "GroupRecord",
    "Member",
    "change_group",
    "create_group",
    "delete_group",
    "find_groups",
    "get_group",
]

CURSOR_SORTS: CursorSorts = {
    "id": (None, str),
    "meta.created": (Group.created_at, datetime),
    "meta.lastmodified": (Group.updated_at, datetime),
    "displayname": (Group.display_name_normalized, str),
}


@dataclass(slots=True)
class GroupRecord:
    """A group as stored, with its members when they were read (``None``: not read)."""

    group: Group
    members: list[Member] | None


async def _records(
    session: AsyncSession, groups: Sequence[Group], *, members: bool
) -> list[GroupRecord]:
    if not members:
        return [GroupRecord(g, None) for g in groups]
    found = await group_changes.members_of(session, [g.id for g in groups])
    return [GroupRecord(g, found[g.id]) for g in groups]


async def create_group(
    store: Store,
    display_name: str,
    actor: Actor,
    *,
    external_id: str | None = None,
    member_ids: Sequence[str] = (),
) -> GroupRecord:
    """Create a group with its first members.

    :raises ConflictError: The ``displayName`` is taken.
    :raises ValidationError: An empty name, or a member id that names nothing.
    """

    async def work(session: AsyncSession) -> GroupRecord:
        group = await group_changes.insert_group(
            session, display_name, actor, external_id=external_id, member_ids=member_ids
        )
        return (await _records(session, [group], members=True))[0]

    return await store.transaction(work)


async def change_group(
    store: Store,
    group_id: str,
    changes: GroupChanges,
    actor: Actor,
    *,
    expected_version: int | None = None,
    action: str = "group.patch",
    members: bool = False,
) -> GroupRecord:
    """Apply ``changes`` to a group (``members``: read its members back).

    :raises NotFoundError: No group has this id.
    :raises VersionMismatchError: The group is not at ``expected_version``.
    :raises ConflictError: The new ``displayName`` is taken.
    :raises ValidationError: A member id that names nothing, or the group itself.
    """

    async def work(session: AsyncSession) -> GroupRecord:
        group = await group_changes.load_group(session, group_id)
        check_version(group.version, expected_version)
        group = await group_changes.write_changes(session, group, changes, actor, action=action)
        return (await _records(session, [group], members=members))[0]

    return await store.transaction(work)


async def delete_group(
    store: Store, group_id: str, actor: Actor, *, expected_version: int | None = None
) -> None:
    """Delete a group with its memberships, also where it is a member.

    :raises NotFoundError: No group has this id.
    :raises VersionMismatchError: The group is not at ``expected_version``.
    """

    async def work(session: AsyncSession) -> None:
        group = await group_changes.load_group(session, group_id)
        check_version(group.version, expected_version)
        push = bool(store.settings.rond_base_url)
        await group_changes.remove_group(session, group, actor, push=push)

    await store.transaction(work)


async def get_group(store: Store, group_id: str, *, members: bool = True) -> GroupRecord:
    """A group by id, with its members unless ``members=False``.

    :raises NotFoundError: No group has this id.
    """
    async with store.reading() as session:
        group = await group_changes.load_group(session, group_id)
        return (await _records(session, [group], members=members))[0]


async def find_groups(store: Store, request: PageRequest, *, members: bool) -> Page[GroupRecord]:
    """A page of groups matching ``request.filter``, and how many match in all.

    :raises InvalidCursorError: ``request.cursor`` is not one of ours.
    :raises InvalidSortError: Cursor pagination by a key cursors do not support.
    """
    where = filtering.group_where(request.filter) if request.filter is not None else None
    plan = plan_page(request, filtering.group_order, CURSOR_SORTS)
    async with store.reading() as session:
        found = await group_changes.list_groups(session, where, plan)
        rows, next_cursor = plan.trim(found.rows, request)
        records = await _records(session, rows, members=members)
    return Page(total=found.total, rows=records, next_cursor=next_cursor)
