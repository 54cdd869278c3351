"""Group use cases (SPEC §3 "Group"): each function is a whole use case with
its transaction and retry inside (:meth:`~identity_store.store.Store.transaction`).

Membership changes touch only the members they name, whatever the size of
the group (:mod:`identity_store.group_changes`); a group's members are read
only when the caller wants them (``members=False`` for SCIM's
``excludedAttributes=members``).

**Concurrent membership changes of one group** (issue 15: Microsoft Entra ID
and the benchmark send many at once to the same group) are combined: a
change that only adds and removes members, without an expected version,
joins the queue of its group (:mod:`identity_store.batches`), and one task
per group and process applies
what has queued up in one transaction (:func:`group_changes.write_member_batch`),
one batch after the other. Each request still gets the outcome of its own
change applied alone in queue order: its own version (the group's version
moves on by one per change that changes something, so every such change
gets a new ETag), its own audit row, its own error (an unknown member
refuses that request only); it is answered once the batch is committed.
Without this, each change was one transaction that updated the group's row
(its version) and held that row's lock through its commit, so the changes
of one group ran one commit (one WAL flush) after the other. A change with
``If-Match`` (``expected_version``) or that renames the group takes the row
lock itself, checks the version under it, and runs alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from . import batches, filtering, group_changes
from .actor import Actor
from .errors import NotFoundError, ValidationError
from .group_changes import KEEP, GroupChanges, Member, MemberChange
from .models import Group
from .paging import CursorSorts, Page, PageRequest, plan_page
from .store import Store, database_errors
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
        if not member_ids:  # Microsoft Entra ID creates its groups empty
            return GroupRecord(group, [])
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

    if (
        expected_version is None
        and not members
        and action == "group.patch"
        and changes.display_name is None
        and changes.external_id is KEEP
        and changes.replace_members is None
    ):
        return await _queued_change(store, group_id, changes, actor)

    async def work(session: AsyncSession) -> GroupRecord:
        locked = expected_version is not None
        group = await group_changes.load_group(session, group_id, lock=locked)
        check_version(group.version, expected_version)
        group = await group_changes.write_changes(session, group, changes, actor, action=action)
        return (await _records(session, [group], members=members))[0]

    return await store.transaction(work)


BATCH_LIMIT = 64
"""Membership changes of one group applied in one transaction at most."""


_Queued = batches.Queued[MemberChange, GroupRecord]
_batches: batches.Batches[MemberChange, GroupRecord] = batches.Batches(BATCH_LIMIT)
"""The changes waiting, per store and group."""


async def _queued_change(
    store: Store, group_id: str, changes: GroupChanges, actor: Actor
) -> GroupRecord:
    """Queue a membership change of ``group_id`` and wait for its outcome."""

    async def apply(batch: list[_Queued]) -> None:
        await _apply_batch(store, group_id, batch)

    change = MemberChange(changes.add, changes.remove, actor)
    return await _batches.submit((id(store), group_id), change, apply)


async def _apply_batch(store: Store, group_id: str, batch: Sequence[_Queued]) -> None:
    if store.engine.dialect.name == "postgresql":
        try:
            with database_errors():
                at_once = await group_changes.write_member_batch_at_once(
                    store.engine, group_id, [q.item for q in batch]
                )
        except NotFoundError:
            for queued in batch:  # one exception each: each request raises its own
                queued.settle(NotFoundError("Group", group_id))
            return
        except Exception:
            at_once = None  # nothing was written: the transaction below says why
        if at_once is not None:
            group, outcomes = at_once
            for queued, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, ValidationError):
                    queued.settle(outcome)
                else:
                    queued.settle(GroupRecord(_at_version(group, outcome), None))
            return

    async def work(session: AsyncSession) -> tuple[Group, list[int | ValidationError]]:
        group = await group_changes.read_group(session, group_id)
        outcomes = await group_changes.write_member_batch(session, group, [q.item for q in batch])
        return group, outcomes

    try:
        group, outcomes = await store.transaction(work)
    except NotFoundError:
        for queued in batch:  # one exception each: each request raises its own
            queued.settle(NotFoundError("Group", group_id))
        return
    except Exception as exc:
        if len(batch) == 1:
            batch[0].settle(exc)
            return
        # Something no change was refused for: each alone, so that each
        # request gets its own outcome.
        for queued in batch:
            await _apply_batch(store, group_id, [queued])
        return
    for queued, outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, ValidationError):
            queued.settle(outcome)
        else:
            queued.settle(GroupRecord(_at_version(group, outcome), None))


def _at_version(group: Group, version: int) -> Group:
    """The group as one change of a batch left it (a copy, outside any session)."""
    return Group(
        id=group.id,
        display_name=group.display_name,
        display_name_normalized=group.display_name_normalized,
        external_id=group.external_id,
        created_at=group.created_at,
        updated_at=group.updated_at,
        version=version,
    )


async def delete_group(
    store: Store, group_id: str, actor: Actor, *, expected_version: int | None = None
) -> None:
    """Delete a group with its memberships, also where it is a member.

    :raises NotFoundError: No group has this id.
    :raises VersionMismatchError: The group is not at ``expected_version``.
    """

    async def work(session: AsyncSession) -> None:
        locked = expected_version is not None
        group = await group_changes.load_group(session, group_id, lock=locked)
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
