"""What a group write does to the rows, in the caller's session, with
membership changes whose cost does not depend on the size of the group
(SPEC §3 "Group").

Members are never loaded to change them: adding inserts the named rows
(ignoring those already there), removing deletes the named rows, and the
group's version is bumped with one ``UPDATE``. Both statements return the
ids they really inserted or deleted (``RETURNING``), so the audit log and the
outbox name only members that came or went, and a change that changes
nothing writes nothing (no version bump, no audit or outbox row).
:mod:`identity_store.groups` wraps each write in a use case; nothing outside
the store calls this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from . import audit, counts, rbac, row_inserts
from .actor import Actor
from .comparison import normalize
from .errors import ConflictError, NotFoundError, ValidationError
from .limits import check_lengths
from .models import Group, GroupMember, MemberType, User, new_id, utcnow
from .paging import Page, PagePlan, fetch_page

KEEP: Any = object()
"""An attribute a change leaves as it is."""


@dataclass(frozen=True, slots=True)
class Member:
    """One member as the HTTP layer reads it back: id, kind and display name."""

    id: str
    type: str
    display: str | None


async def load_group(session: AsyncSession, group_id: str, *, lock: bool = False) -> Group:
    """The group, or :class:`NotFoundError`; ``lock``: its row locked until
    the end of the transaction (``FOR UPDATE``: a change checked against an
    ``If-Match`` version, a delete), so that the version checked is the
    version changed."""
    group = await session.get(
        Group, group_id, populate_existing=True, with_for_update=True if lock else None
    )
    if group is None:
        raise NotFoundError("Group", group_id)
    return group


_GROUPS = cast(Table, Group.__table__)
_GROUP_ROW = select(_GROUPS).where(_GROUPS.c.id == bindparam("group_id"))


_STILL_THERE = _GROUP_ROW.with_only_columns(_GROUPS.c.id).with_for_update(read=True, key_share=True)
"""The group's row if it is still there (``FOR KEY SHARE``: waits for a
DELETE in progress, blocks none of the other changes)."""


async def read_group(session: AsyncSession, group_id: str) -> Group:
    """The group as a plain object outside the session (one Core ``SELECT``,
    no identity map), or :class:`NotFoundError`: what a membership change
    needs of it (:func:`write_member_batch`)."""
    row = (await session.execute(_GROUP_ROW, {"group_id": group_id})).mappings().one_or_none()
    if row is None:
        raise NotFoundError("Group", group_id)
    return Group(**row)


async def _ensure_name_free(
    session: AsyncSession, display_name: str, except_id: str | None = None
) -> None:
    query = select(Group.id).where(Group.display_name_normalized == normalize(display_name))
    if except_id is not None:
        query = query.where(Group.id != except_id)
    if await session.scalar(query.limit(1)) is not None:
        raise ConflictError("displayName", f"displayName {display_name!r} is already taken")


# Statements of membership changes are built once (Entra sends one PATCH of
# ten members per request): building and compiling one per request cost
# more than running it.
_MEMBER_TYPES = union_all(
    select(User.id, literal(MemberType.USER.value)).where(
        User.id.in_(bindparam("ids", expanding=True)), User.deleted_at.is_(None)
    ),
    select(Group.id, literal(MemberType.GROUP.value)).where(
        Group.id.in_(bindparam("ids", expanding=True))
    ),
)
# Both return the ids they really inserted or deleted (PostgreSQL, and
# SQLite from 3.35): one statement per batch, and events that name only
# what happened.
_ADD_MEMBERS = {
    name: dialect_insert(GroupMember)
    .on_conflict_do_nothing(index_elements=[GroupMember.group_id, GroupMember.member_id])
    .returning(GroupMember.member_id)
    for name, dialect_insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_REMOVE_MEMBERS = (
    delete(GroupMember)
    .where(
        GroupMember.group_id == bindparam("group_id"),
        GroupMember.member_id.in_(bindparam("ids", expanding=True)),
    )
    .returning(GroupMember.member_id)
    .execution_options(synchronize_session=False)
)
_INSERT_GROUP = insert(_GROUPS)
_BUMP = (
    update(Group)
    .where(Group.id == bindparam("group_id"))
    .values(version=Group.version + bindparam("by"), updated_at=bindparam("now"))
    .returning(Group.version)
    .execution_options(synchronize_session=False)
)


async def _member_types(session: AsyncSession, ids: Sequence[str]) -> dict[str, str]:
    """The type (``User`` or ``Group``) of each id that names one (the others
    are left out)."""
    found: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        rows = await session.execute(_MEMBER_TYPES, {"ids": list(ids[start : start + 500])})
        found.update({row[0]: row[1] for row in rows.all()})
    return found


def _unknown_members(missing: Sequence[str]) -> ValidationError:
    shown = ", ".join(repr(m) for m in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return ValidationError(f"no such member: {shown}{more}")


async def resolve_members(session: AsyncSession, member_ids: Iterable[str]) -> dict[str, str]:
    """The type (``User`` or ``Group``) of each id; an unknown id is a
    :class:`ValidationError` naming it."""
    ids = sorted(set(member_ids))
    if not ids:
        return {}
    found = await _member_types(session, ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise _unknown_members(missing)
    return found


async def _insert_members(session: AsyncSession, group_id: str, types: dict[str, str]) -> list[str]:
    """Add memberships; one that exists already is left as it is. The ids of
    the members really added, sorted."""
    if not types:
        return []
    if group_id in types:
        raise ValidationError("a group cannot be a member of itself")
    now = utcnow()
    rows = [
        {"group_id": group_id, "member_id": mid, "member_type": kind, "created_at": now}
        for mid, kind in types.items()
    ]
    statement = _ADD_MEMBERS[session.get_bind().dialect.name]
    added: list[str] = []
    try:
        for start in range(0, len(rows), 1000):
            added.extend(await session.scalars(statement, rows[start : start + 1000]))
    except IntegrityError as exc:
        # The one constraint ON CONFLICT leaves: the group's foreign key. The
        # group was deleted since it was read: the change applies to nothing.
        raise NotFoundError("Group", group_id) from exc
    return sorted(added)


async def _bump(session: AsyncSession, group: Group, by: int = 1) -> None:
    """New version (``by`` changes on) and ``lastModified`` with one atomic
    UPDATE, so concurrent membership changes never overwrite each other's
    version bump."""
    now = utcnow()
    result = await session.execute(_BUMP, {"group_id": group.id, "now": now, "by": by})
    # Written by the database: record them as loaded, not as changes to flush.
    set_committed_value(group, "version", result.scalar_one())
    set_committed_value(group, "updated_at", now)


async def insert_group(
    session: AsyncSession,
    display_name: str,
    actor: Actor,
    *,
    external_id: str | None = None,
    member_ids: Sequence[str] = (),
) -> Group:
    if not display_name or not display_name.strip():
        raise ValidationError("displayName is required and may not be empty")
    check_lengths(Group, {"display_name": display_name, "external_id": external_id})
    now = utcnow()
    values = {
        "id": new_id(),
        "display_name": display_name,
        "display_name_normalized": normalize(display_name),
        "external_id": external_id,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    # A Core INSERT (no unit of work to flush), and no look-up of the name
    # first: the unique index on the normalized name refuses a taken one.
    group = Group(**values)
    try:
        await session.execute(_INSERT_GROUP, values)
    except IntegrityError as exc:
        raise ConflictError(
            "displayName", f"displayName {display_name!r} is already taken"
        ) from exc
    counts.change(session, "Group", +1)
    types = await resolve_members(session, member_ids)
    added = await _insert_members(session, group.id, types)
    audit.record(
        session,
        actor,
        "group.create",
        "Group",
        group.id,
        {"displayName": display_name, "members": len(added), "added": added},
    )
    return group


@dataclass(slots=True)
class GroupChanges:
    """What one request does to a group, gathered before touching the store:
    a new ``displayName`` and ``externalId`` (``KEEP``: unchanged), and the
    members to add and remove, or the whole new member list."""

    display_name: str | None = None
    external_id: Any = KEEP
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    replace_members: list[str] | None = None
    """The whole member list (PUT, a ``replace`` of ``members``), or ``None``."""

    def add_members(self, ids: Sequence[str]) -> None:
        if self.replace_members is not None:
            self.replace_members.extend(ids)
        else:
            added = set(ids)
            self.add.extend(ids)
            self.remove = [i for i in self.remove if i not in added]

    def remove_members(self, ids: Sequence[str]) -> None:
        dropped = set(ids)
        if self.replace_members is not None:
            self.replace_members = [i for i in self.replace_members if i not in dropped]
        else:
            self.remove.extend(ids)
            self.add = [i for i in self.add if i not in dropped]

    def set_members(self, ids: Sequence[str]) -> None:
        self.replace_members = list(ids)
        self.add, self.remove = [], []


async def write_changes(
    session: AsyncSession, group: Group, changes: GroupChanges, actor: Actor, *, action: str
) -> Group:
    """Apply attribute and membership changes; touches only the rows named
    (``replace_members`` is the exception: it sets the whole list, as PUT and
    a path-less ``replace`` of ``members`` require).

    The audit row counts the members really added and removed, and the
    outbox rows name them; a change that changes nothing (the same name,
    members already there, non-members to remove) writes nothing at all:
    the group keeps its version and ``lastModified`` (RFC 7644 §3.14: the
    resource did not change, so neither does its ETag).
    """
    display_name, external_id = changes.display_name, changes.external_id
    add, remove, replace_members = changes.add, changes.remove, changes.replace_members
    check_lengths(
        Group,
        {"display_name": display_name, "external_id": None if external_id is KEEP else external_id},
    )
    renamed = False
    changed = False
    if display_name is not None and display_name != group.display_name:
        if not display_name.strip():
            raise ValidationError("displayName may not be empty")
        if normalize(display_name) != group.display_name_normalized:
            await _ensure_name_free(session, display_name, except_id=group.id)
        group.display_name = display_name
        group.display_name_normalized = normalize(display_name)
        renamed = changed = True
    if external_id is not KEEP and external_id != group.external_id:
        group.external_id = external_id
        changed = True
    if changed:
        try:
            await session.flush()
        except IntegrityError as exc:
            raise ConflictError("displayName", "displayName is already taken") from exc

    removed_ids: list[str] = []
    added_ids: list[str] = []
    if replace_members is not None:
        types = await resolve_members(session, replace_members)
        # The whole list is the request (PUT): reading the current one costs
        # what the request does. What is deleted and inserted is still
        # what the statements report, not this read.
        current = set(
            (
                await session.scalars(
                    select(GroupMember.member_id).where(GroupMember.group_id == group.id)
                )
            ).all()
        )
        removed_ids = await _delete_members(session, group.id, sorted(current - set(types)))
        added_ids = await _insert_members(
            session, group.id, {k: v for k, v in types.items() if k not in current}
        )
    else:
        if remove:
            removed_ids = await _delete_members(session, group.id, sorted(set(remove)))
        if add:
            types = await resolve_members(session, add)
            added_ids = await _insert_members(session, group.id, types)
    if not (changed or added_ids or removed_ids):
        return group
    if not changed:
        # A changed attribute was flushed above, which moved the version on
        # already (``version_id_col``): one write, one version.
        await _bump(session, group)
    audit.record(
        session,
        actor,
        action,
        "Group",
        group.id,
        {
            "added": len(added_ids),
            "removed": len(removed_ids),
            "renamed": renamed,
            "addedIds": added_ids,
            "removedIds": removed_ids,
        },
    )
    return group


@dataclass(frozen=True, slots=True)
class MemberChange:
    """One request's membership change in a batch: members to add and to
    remove (disjoint, as :class:`GroupChanges` folds them), and who asks."""

    add: Sequence[str]
    remove: Sequence[str]
    actor: Actor


async def write_member_batch(
    session: AsyncSession, group: Group, batch: Sequence[MemberChange]
) -> list[int | ValidationError]:
    """Apply membership changes of several requests to one group in one
    transaction, with the outcome of applying them one after another in
    their order; for each, the group's version right after it, or the
    :class:`ValidationError` that refuses it (an unknown member, the group
    itself), which changes nothing and leaves the others be.

    Each change that changes something moves the version on by one (one
    ``UPDATE`` by the number of them) and writes its own audit row, with its
    own actor and request id, as :func:`write_changes` does; one that changes
    nothing writes nothing. When no member is named by two changes (the
    usual case: each request adds and removes its own members), one
    ``DELETE`` and one ``INSERT`` serve them all and what each returns is
    whose it is (on PostgreSQL, one statement also resolving the members
    added: :data:`_PG_MEMBER_CHANGES`); otherwise each change runs its own
    statements, in order.
    """
    outcomes: list[int | ValidationError] = [0] * len(batch)
    candidates: list[int] = []
    for k, change in enumerate(batch):
        if group.id in change.add:
            outcomes[k] = ValidationError("a group cannot be a member of itself")
        else:
            candidates.append(k)
    named = [set(batch[k].add) | set(batch[k].remove) for k in candidates]
    disjoint = len(set().union(*named)) == sum(len(ids) for ids in named)
    wanted = sorted({i for k in candidates for i in batch[k].add})
    done: dict[int, tuple[list[str], list[str]]] = {}
    applied = False
    if disjoint and session.get_bind().dialect.name == "postgresql":
        removing = sorted({i for k in candidates for i in batch[k].remove})
        types, added, removed = await _pg_member_changes(session, group.id, wanted, removing)
        applied = len(types) == len(wanted)  # every member known: all applied
        if applied:
            for k in candidates:
                mine_added = sorted(i for i in set(batch[k].add) if i in added)
                mine_removed = sorted(i for i in set(batch[k].remove) if i in removed)
                done[k] = (mine_added, mine_removed)
    else:
        types = await _member_types(session, wanted) if wanted else {}
    valid: list[int] = []
    for k in candidates:
        missing = sorted({i for i in batch[k].add if i not in types})
        if missing:
            outcomes[k] = _unknown_members(missing)
        else:
            valid.append(k)
    if not applied and disjoint:
        removed = set(
            await _delete_members(
                session, group.id, sorted({i for k in valid for i in batch[k].remove})
            )
        )
        added = set(
            await _insert_members(
                session, group.id, {i: types[i] for k in valid for i in batch[k].add}
            )
        )
        for k in valid:
            mine_added = sorted(i for i in set(batch[k].add) if i in added)
            mine_removed = sorted(i for i in set(batch[k].remove) if i in removed)
            done[k] = (mine_added, mine_removed)
    elif not applied:
        for k in valid:
            mine_removed = await _delete_members(session, group.id, sorted(set(batch[k].remove)))
            mine_added = await _insert_members(
                session, group.id, {i: types[i] for i in batch[k].add}
            )
            done[k] = (mine_added, mine_removed)
    changed = [k for k in valid if done[k][0] or done[k][1]]
    if changed:
        await _bump(session, group, by=len(changed))
    elif await session.scalar(_STILL_THERE, {"group_id": group.id}) is None:
        # Nothing changed because the group went away since it was read (a
        # DELETE's cascade took the members to remove): 404, as after it.
        raise NotFoundError("Group", group.id)
    version = group.version - len(changed)
    for k in range(len(batch)):
        if k not in done:
            continue
        added_ids, removed_ids = done[k]
        if added_ids or removed_ids:
            version += 1
            audit.record(
                session,
                batch[k].actor,
                "group.patch",
                "Group",
                group.id,
                {
                    "added": len(added_ids),
                    "removed": len(removed_ids),
                    "renamed": False,
                    "addedIds": added_ids,
                    "removedIds": removed_ids,
                },
            )
        outcomes[k] = version
    return outcomes


_PG_MEMBER_CHANGES = text(
    """
WITH found AS (
    SELECT u.id, 'User' AS member_type FROM users u
     WHERE u.id = ANY(CAST(:add AS VARCHAR[])) AND u.deleted_at IS NULL
    UNION ALL
    SELECT g.id, 'Group' FROM groups g
     WHERE g.id = ANY(CAST(:add AS VARCHAR[]))
), complete AS (
    SELECT count(*) = cardinality(CAST(:add AS VARCHAR[])) AS ok FROM found
), removed AS (
    DELETE FROM group_members m USING complete
     WHERE complete.ok AND m.group_id = :group_id
       AND m.member_id = ANY(CAST(:remove AS VARCHAR[]))
    RETURNING m.member_id
), added AS (
    INSERT INTO group_members (group_id, member_id, member_type, created_at)
    SELECT :group_id, found.id, found.member_type, :now FROM found, complete WHERE complete.ok
    ON CONFLICT (group_id, member_id) DO NOTHING
    RETURNING member_id
)
SELECT 'found', id, member_type FROM found
UNION ALL SELECT 'removed', member_id, NULL FROM removed
UNION ALL SELECT 'added', member_id, NULL FROM added
"""
).bindparams(bindparam("now", type_=_GROUPS.c.created_at.type))
"""The members' types, the members removed and the members added, in one
statement: it writes only when every member to add names a user or a group
(else the caller refuses the changes that name unknown ones and applies
the others with :func:`_delete_members` and :func:`_insert_members`)."""


async def _pg_member_changes(
    session: AsyncSession, group_id: str, add: list[str], remove: list[str]
) -> tuple[dict[str, str], set[str], set[str]]:
    """:data:`_PG_MEMBER_CHANGES`: the types found, the ids added, the ids removed."""
    params = {"group_id": group_id, "add": add, "remove": remove, "now": utcnow()}
    try:
        rows = (await session.execute(_PG_MEMBER_CHANGES, params)).all()
    except IntegrityError as exc:  # the group's foreign key: deleted since it was read
        raise NotFoundError("Group", group_id) from exc
    types: dict[str, str] = {}
    added: set[str] = set()
    removed: set[str] = set()
    for kind, member_id, member_type in rows:
        if kind == "found":
            types[member_id] = member_type
        elif kind == "added":
            added.add(member_id)
        else:
            removed.add(member_id)
    return types, added, removed


_PG_MEMBER_BATCH = """
WITH g AS (
    SELECT * FROM groups WHERE id = $1
), e AS (
    SELECT * FROM unnest($3::int[], $4::varchar[], $5::bool[]) AS e(k, id, adding)
), found AS (
    SELECT u.id, 'User' AS member_type FROM users u
     WHERE u.id IN (SELECT id FROM e WHERE adding) AND u.deleted_at IS NULL
    UNION ALL
    SELECT o.id, 'Group' FROM groups o WHERE o.id IN (SELECT id FROM e WHERE adding)
), complete AS (
    SELECT EXISTS (SELECT FROM g)
       AND (SELECT count(*) FROM found) = (SELECT count(DISTINCT id) FROM e WHERE adding) AS ok
), removed AS (
    DELETE FROM group_members m USING complete
     WHERE complete.ok AND m.group_id = $1
       AND m.member_id IN (SELECT id FROM e WHERE NOT adding)
    RETURNING m.member_id
), added AS (
    INSERT INTO group_members (group_id, member_id, member_type, created_at)
    SELECT $1, found.id, found.member_type, $2 FROM found, complete WHERE complete.ok
    ON CONFLICT (group_id, member_id) DO NOTHING
    RETURNING member_id
), done AS (
    SELECT e.k, e.id, e.adding FROM e
     WHERE CASE WHEN e.adding THEN e.id IN (SELECT member_id FROM added)
                ELSE e.id IN (SELECT member_id FROM removed) END
), changed AS (
    SELECT DISTINCT k FROM done
), bump AS (
    UPDATE groups SET version = version + (SELECT count(*) FROM changed), updated_at = $2
     WHERE id = $1 AND EXISTS (SELECT FROM changed)
    RETURNING version
), audited AS (
    INSERT INTO audit_log
           (occurred_at, token_id, actor, action, resource_type, resource_id, request_id, details)
    SELECT $2, a.token_id, a.actor, 'group.patch', 'Group', $1, a.request_id,
           jsonb_build_object(
               'added', (SELECT count(*) FROM done d WHERE d.k = a.k AND d.adding),
               'removed', (SELECT count(*) FROM done d WHERE d.k = a.k AND NOT d.adding),
               'renamed', false,
               'addedIds', coalesce((SELECT jsonb_agg(d.id ORDER BY d.id COLLATE "C")
                                       FROM done d WHERE d.k = a.k AND d.adding), '[]'),
               'removedIds', coalesce((SELECT jsonb_agg(d.id ORDER BY d.id COLLATE "C")
                                         FROM done d WHERE d.k = a.k AND NOT d.adding), '[]'))
      FROM unnest($6::int[], $7::varchar[], $8::varchar[], $9::varchar[])
           AS a(k, token_id, actor, request_id), bump
     WHERE a.k IN (SELECT k FROM changed)
     ORDER BY a.k
    RETURNING id
)
SELECT c.ok, (SELECT version FROM bump) AS new_version,
       ARRAY(SELECT k FROM changed ORDER BY k) AS changed,
       (SELECT count(*) FROM audited) AS audit_rows,
       g.id, g.display_name, g.display_name_normalized, g.external_id,
       g.created_at, g.updated_at, g.version
  FROM complete c LEFT JOIN g ON true
"""
"""A whole batch of membership changes (:func:`write_member_batch_at_once`)
in one statement: the group read, the members to add resolved, the rows
removed and added, which changes changed something (``changed``: each
entry ``e`` is one member id of one change ``k``), the version moved on
by their number and an audit row for each, in queue order. It writes only
when the group exists and every member to add names a user or a group."""

_STILL_THERE_NOW = "SELECT id FROM groups WHERE id = $1 FOR KEY SHARE"


async def write_member_batch_at_once(
    engine: AsyncEngine, group_id: str, batch: Sequence[MemberChange]
) -> tuple[Group, list[int | ValidationError]] | None:
    """:func:`write_member_batch` in one autocommit statement (PostgreSQL,
    :data:`_PG_MEMBER_BATCH`): the same outcomes, versions and audit rows,
    without a transaction's ``BEGIN``, group read, separate version update,
    side-row statement and ``COMMIT``. The group as written, and the
    outcome of each change; ``None`` when it wrote nothing because the
    batch needs :func:`write_member_batch` (a member named by two changes,
    a member to add that names nothing, for the error of each change).

    :raises NotFoundError: The group is not there (or went away meanwhile).
    """
    outcomes: list[int | ValidationError] = [0] * len(batch)
    candidates: list[int] = []
    for k, change in enumerate(batch):
        if group_id in change.add:
            outcomes[k] = ValidationError("a group cannot be a member of itself")
        else:
            candidates.append(k)
    adds = {k: sorted(set(batch[k].add)) for k in candidates}
    removes = {k: sorted(set(batch[k].remove)) for k in candidates}
    named = [i for k in candidates for i in (*adds[k], *removes[k])]
    if len(set(named)) != len(named):
        return None
    ks: list[int] = []
    ids: list[str] = []
    adding: list[bool] = []
    for k in candidates:
        for flag, members in ((True, adds[k]), (False, removes[k])):
            ks.extend([k] * len(members))
            ids.extend(members)
            adding.extend([flag] * len(members))
    actors = [batch[k].actor for k in candidates]
    now = utcnow()
    params = (
        group_id,
        now,
        ks,
        ids,
        adding,
        candidates,
        [a.token_id for a in actors],
        [a.name for a in actors],
        [a.request_id for a in actors],
    )
    try:
        async with row_inserts.autocommit(engine) as connection:
            with row_inserts.as_sqlalchemy_errors(_PG_MEMBER_BATCH, params):
                row = await connection.fetchrow(_PG_MEMBER_BATCH, *params)
                if row["id"] is not None and row["ok"] and not row["changed"]:
                    # Nothing changed: maybe because a DELETE of the group
                    # took the members to remove (wait for it to end).
                    still = await connection.fetchval(_STILL_THERE_NOW, group_id)
                    if still is None:
                        raise NotFoundError("Group", group_id)
    except IntegrityError as exc:  # the group's foreign key: deleted since it was read
        raise NotFoundError("Group", group_id) from exc
    if row["id"] is None:
        raise NotFoundError("Group", group_id)
    if not row["ok"]:
        return None
    changed = set(row["changed"])
    if changed and row["new_version"] is None:  # never: the rows changed lock the group
        raise NotFoundError("Group", group_id)
    group = Group(
        id=row["id"],
        display_name=row["display_name"],
        display_name_normalized=row["display_name_normalized"],
        external_id=row["external_id"],
        created_at=row["created_at"],
        updated_at=now if changed else row["updated_at"],
        version=row["new_version"] if changed else row["version"],
    )
    version = group.version - len(changed)
    for k in candidates:
        if k in changed:
            version += 1
        outcomes[k] = version
    return group, outcomes


async def _delete_members(
    session: AsyncSession, group_id: str, member_ids: Sequence[str]
) -> list[str]:
    """Remove memberships; an id that is no member is no error. The ids of
    the members really removed, sorted."""
    removed: list[str] = []
    for start in range(0, len(member_ids), 500):
        removed.extend(
            await session.scalars(
                _REMOVE_MEMBERS,
                {"group_id": group_id, "ids": list(member_ids[start : start + 500])},
            )
        )
    return sorted(removed)


async def remove_group(
    session: AsyncSession, group: Group, actor: Actor, *, push: bool = False
) -> None:
    """Delete the group and its memberships; also remove it from parent
    groups and from every binding (:func:`identity_store.rbac.forget_group`;
    ``push``: a Rönd deployment is configured)."""
    await session.execute(delete(GroupMember).where(GroupMember.member_id == group.id))
    await rbac.forget_group(session, group.id, actor, push=push)
    await session.delete(group)
    await session.flush()
    counts.change(session, "Group", -1)
    audit.record(
        session, actor, "group.delete", "Group", group.id, {"displayName": group.display_name}
    )


_DELETED_USER = (
    select(User.id).where(User.id == GroupMember.member_id, User.deleted_at.is_not(None)).exists()
)
"""Users deleted over SCIM: no longer members anywhere (their membership rows
are removed at the delete; this hides those of users deleted before)."""


async def members_of(
    session: AsyncSession, group_ids: Sequence[str], *, limit: int | None = None
) -> dict[str, list[Member]]:
    """Members of each group with their display names, in one query; users
    deleted over SCIM are not members (RFC 7644 §3.6)."""
    result: dict[str, list[Member]] = {gid: [] for gid in group_ids}
    if not group_ids:
        return result
    member_user = select(User.display_name).where(User.id == GroupMember.member_id)
    member_group = select(Group.display_name).where(Group.id == GroupMember.member_id)
    display = func.coalesce(member_user.scalar_subquery(), member_group.scalar_subquery())
    query = (
        select(GroupMember.group_id, GroupMember.member_id, GroupMember.member_type, display)
        .where(GroupMember.group_id.in_(group_ids), ~_DELETED_USER)
        .order_by(GroupMember.group_id, GroupMember.member_id)
    )
    if limit is not None:
        query = query.limit(limit)
    for gid, mid, kind, name in (await session.execute(query)).all():
        result[gid].append(Member(mid, kind, name))
    return result


async def list_groups(
    session: AsyncSession, where: ColumnElement[bool] | None, plan: PagePlan
) -> Page[Group]:
    """The page of groups matching ``where`` that ``plan`` asks for."""
    return await fetch_page(session, select(Group), "Group", where, plan, Group.id)
