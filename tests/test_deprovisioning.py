"""The deletion sync and the expiry job (SPEC §4), run through the real
worker on SQLite and PostgreSQL: one row per rule, then dry runs, batches,
repeated runs and row locks.

Users are made with the store's use cases. A user's "suspended yesterday" is
its ``lifecycle_changed_at`` moved back with one ``UPDATE`` (the store
stamps the wall clock); the jobs run with a fixed clock (``as_of``), as
``idstore jobs run --as-of`` runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import counts, deprovisioning, groups, users
from identity_store.actor import Actor
from identity_store.database import create_session_factory
from identity_store.job_runs import RunRecord
from identity_store.models import (
    AuditEntry,
    Binding,
    BindingRole,
    BindingSubject,
    Group,
    GroupMember,
    LifecycleTransition,
    OutboxEntry,
    Role,
    User,
    UserRole,
)
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.user_changes import WRITABLE_COLUMNS
from identity_store.users import UserInput, UserRecord
from identity_sync import registry
from identity_sync.clock import ManualClock
from tests.rbac_support import assert_grants_kept

ACTOR = Actor(name="test", request_id="req-setup")

DAY = datetime(2030, 6, 15, tzinfo=UTC)
"""The start of the jobs' "today" (UTC)."""
AS_OF = DAY + timedelta(hours=10)
YESTERDAY = DAY - timedelta(hours=12)
TODAY = DAY + timedelta(minutes=30)


# -- Helpers -------------------------------------------------------------------


@dataclass
class World:
    """The store of one test (with its settings) and the rows it set up."""

    store: Store
    engine: AsyncEngine
    groups: list[str] = field(default_factory=list)
    bystander: str = ""
    roles: set[str] = field(default_factory=set)

    @property
    def settings(self) -> Settings:
        return self.store.settings

    async def sql(self, statement: Any, params: Any = None) -> Any:
        async with create_session_factory(self.engine)() as session:
            result = await session.execute(statement, params)
            await session.commit()
            return result

    async def scalar(self, statement: Any) -> Any:
        async with self.store.reading() as session:
            return await session.scalar(statement)

    async def person(self, name: str, **columns: Any) -> str:
        data = UserInput(user_name=name, columns={"idp_username": name, **columns})
        return (await users.create_user(self.store, data, ACTOR)).user.id

    async def change(self, user_id: str, **columns: Any) -> None:
        def changed(current: UserRecord) -> UserInput:
            kept = {c: getattr(current.user, c) for c in WRITABLE_COLUMNS}
            return UserInput(user_name=current.user.user_name, columns={**kept, **columns})

        await users.update_user(self.store, user_id, changed, ACTOR)

    async def since(self, user_id: str, when: datetime, state: str | None = None) -> None:
        """The user entered its state (or ``state``) at ``when``."""
        values: dict[str, Any] = {"lifecycle_changed_at": when}
        if state is not None:
            values["lifecycle"] = state
        await self.sql(update(User).where(User.id == user_id).values(**values))

    async def equip(self, user_id: str) -> None:
        """Two groups (with a bystander), a binding and two roles for ``user_id``."""
        if not self.bystander:
            self.bystander = await self.person("bystander@example.com")
        for n in range(2):
            record = await groups.create_group(
                self.store, f"group-{n}", ACTOR, member_ids=[user_id, self.bystander]
            )
            self.groups.append(record.group.id)
        missing = [{"role_id": r, "name": r} for r in ("r-1", "r-2") if r not in self.roles]
        if missing:
            await self.sql(insert(Role), missing)
        self.roles.update(("r-1", "r-2"))
        await self.sql(insert(Binding).values(binding_id="b-1"))
        await self.sql(insert(BindingRole).values(binding_id="b-1", role_id="r-1"))
        await self.sql(
            insert(BindingSubject),
            [{"binding_id": "b-1", "user_id": user_id}, {"binding_id": "b-1", "user_id": "x"}],
        )
        await self.sql(
            insert(UserRole), [{"user_id": user_id, "role_id": r} for r in ("r-1", "r-2")]
        )

    async def run(self, job: str, as_of: datetime = AS_OF, *, dry_run: bool = False) -> RunRecord:
        worker = registry.build_worker(self.store, ManualClock(as_of), only=[job])
        # Bounded: a job that pages wrongly would run forever.
        run = await asyncio.wait_for(worker.run_now(job, as_of=as_of, dry_run=dry_run), 60)
        assert run is not None
        assert run.status == "SUCCEEDED", run.message
        return run

    async def snapshot(self) -> dict[str, Any]:
        """Everything a job may write: users' states and versions, memberships,
        subjects, groups' versions, and the number of history/audit/outbox rows."""
        async with self.store.reading() as session:
            people = (
                await session.execute(
                    select(User.id, User.lifecycle, User.version).order_by(User.id)
                )
            ).all()
            members = (
                await session.execute(select(GroupMember.group_id, GroupMember.member_id))
            ).all()
            versions = (await session.execute(select(Group.id, Group.version))).all()
            subjects = (await session.execute(select(BindingSubject.user_id))).all()
            sizes = [
                await session.scalar(select(func.count()).select_from(model))
                for model in (LifecycleTransition, AuditEntry, OutboxEntry)
            ]
        return {
            "users": [tuple(r) for r in people],
            "members": sorted(tuple(r) for r in members),
            "groups": sorted(tuple(r) for r in versions),
            "subjects": sorted(r[0] for r in subjects),
            "sizes": sizes,
        }


@pytest.fixture
async def world(store: Store, engine: AsyncEngine) -> World:
    return World(store, engine)


@asynccontextmanager
async def _world_with(
    settings: Settings, engine: AsyncEngine, **changes: Any
) -> AsyncIterator[World]:
    opened = await Store.open(settings.model_copy(update=changes))
    try:
        yield World(opened, engine)
    finally:
        await opened.close()


# -- Deletion sync: one row per rule -------------------------------------------

Setup = Callable[[World], Awaitable[str]]


async def _suspended_yesterday(w: World) -> str:
    user = await w.person("ada@example.com")
    await w.equip(user)
    await w.change(user, active=False)
    await w.since(user, YESTERDAY)
    return user


async def _suspended_today(w: World) -> str:
    user = await _suspended_yesterday(w)
    await w.since(user, TODAY)
    return user


async def _reactivated(w: World) -> str:
    user = await _suspended_yesterday(w)
    await w.change(user, active=True)
    return user


async def _deleted_over_scim(w: World) -> str:
    user = await w.person("ada@example.com")
    await w.equip(user)
    await users.delete_user(w.store, user, ACTOR)
    await w.since(user, YESTERDAY)
    return user


async def _service_account_suspended(w: World) -> str:
    user = await w.person("robot@example.com", user_type="SERVICE_ACCOUNT")
    await w.equip(user)
    await w.change(user, active=False)
    await w.since(user, YESTERDAY)
    return user


async def _service_account_deleted(w: World) -> str:
    user = await w.person("robot@example.com", user_type="SERVICE_ACCOUNT")
    await w.equip(user)
    await users.delete_user(w.store, user, ACTOR)
    await w.since(user, YESTERDAY)
    return user


async def _active(w: World) -> str:
    user = await w.person("ada@example.com")
    await w.equip(user)
    await w.since(user, YESTERDAY - timedelta(days=30))
    return user


async def _created(w: World) -> str:
    user = await w.person("ada@example.com", idp_username=None)
    await w.equip(user)
    await w.since(user, YESTERDAY - timedelta(days=30))
    return user


async def _error(w: World) -> str:
    user = await _created(w)
    await w.since(user, YESTERDAY - timedelta(days=30), state="ERROR")
    return user


async def _suspended_late_yesterday_utc(w: World) -> str:
    """Suspended at 23:00 UTC on the 14th: the 15th already in Rome."""
    user = await _suspended_yesterday(w)
    await w.since(user, DAY - timedelta(hours=1))
    return user


async def _suspended_late_evening_rome(w: World) -> str:
    """Suspended at 23:00 in Rome on the 14th (21:00 UTC)."""
    user = await _suspended_yesterday(w)
    await w.since(user, DAY - timedelta(hours=3))
    return user


@dataclass(frozen=True)
class Case:
    setup: Setup
    after: str | None
    """The user's state after the run; ``None``: its row is gone."""
    done: bool
    """Whether the deletion sync deprovisioned it."""
    settings: dict[str, Any] = field(default_factory=dict)
    as_of: datetime = AS_OF
    left_groups_before: bool = False
    """It had left its groups already (deleted over SCIM)."""


HARD = {"hard_delete": True}
ROME = {"jobs_timezone": "Europe/Rome"}

DELETION_CASES = {
    "suspended yesterday: INACTIVE, stripped": Case(_suspended_yesterday, "INACTIVE", True),
    "suspended today: untouched until tomorrow": Case(_suspended_today, "SUSPENDED", False),
    "reactivated before the run: keeps everything": Case(_reactivated, "ACTIVE", False),
    "deleted over SCIM: INACTIVE": Case(
        _deleted_over_scim, "INACTIVE", True, left_groups_before=True
    ),
    "service account suspended: INACTIVE": Case(_service_account_suspended, "INACTIVE", True),
    "service account deleted: INACTIVE already, untouched": Case(
        _service_account_deleted, "INACTIVE", False, left_groups_before=True
    ),
    "ACTIVE for a month: untouched": Case(_active, "ACTIVE", False),
    "CREATED for a month: untouched": Case(_created, "CREATED", False),
    "ERROR for a month: untouched": Case(_error, "ERROR", False),
    "hard delete: the row goes, history stays": Case(_suspended_yesterday, None, True, HARD),
    "hard delete of a user deleted over SCIM": Case(
        _deleted_over_scim, None, True, HARD, left_groups_before=True
    ),
    "hard delete spares a user suspended today": Case(_suspended_today, "SUSPENDED", False, HARD),
    "zone: today in Rome, yesterday in UTC: untouched": Case(
        _suspended_late_yesterday_utc, "SUSPENDED", False, ROME
    ),
    "zone: yesterday in Rome, today in UTC: INACTIVE": Case(
        _suspended_late_evening_rome, "INACTIVE", True, ROME, as_of=DAY - timedelta(minutes=30)
    ),
}


async def _job_events(w: World, cause: str) -> list[tuple[str, str, str]]:
    """``(target, operation, aggregate id)`` of the outbox rows a job wrote."""
    async with w.store.reading() as session:
        rows = (
            await session.execute(
                select(
                    OutboxEntry.target,
                    OutboxEntry.operation,
                    OutboxEntry.aggregate_id,
                    OutboxEntry.payload,
                ).order_by(OutboxEntry.id)
            )
        ).all()
    return [
        (r.target, r.operation, r.aggregate_id) for r in rows if r.payload.get("cause") == cause
    ]


async def _job_history(w: World, run: RunRecord) -> list[LifecycleTransition]:
    async with w.store.reading() as session:
        return list(
            (
                await session.scalars(
                    select(LifecycleTransition).where(LifecycleTransition.job_run_id == run.id)
                )
            ).all()
        )


async def _counted_users_match(w: World) -> bool:
    async with w.store.reading() as session:
        live = await session.scalar(
            select(func.count()).select_from(User).where(User.deleted_at.is_(None))
        )
        return await counts.total(session, "User") == live


@pytest.mark.parametrize("case", list(DELETION_CASES.values()), ids=list(DELETION_CASES))
async def test_deletion_sync_rules(settings: Settings, engine: AsyncEngine, case: Case) -> None:
    """Each row of SPEC §4 the deletion sync applies, run through the job:
    a user due loses its memberships, bindings and roles, gets its Auth0 and
    group events and its history, and goes INACTIVE (or away); any other
    user, and everything else, is left exactly as it was."""
    async with _world_with(settings, engine, **case.settings) as w:
        user = await case.setup(w)
        before = await w.snapshot()
        version = await w.scalar(select(User.version).where(User.id == user))
        run = await w.run("deletion-sync", case.as_of)

        assert await w.scalar(select(User.lifecycle).where(User.id == user)) == case.after
        assert await _counted_users_match(w)
        if not case.done:
            assert await w.snapshot() == before, "nothing changes"
            assert run.counts == {}
            assert await _job_history(w, run) == []
            return

        after = await w.snapshot()
        [row] = await _job_history(w, run)
        assert (row.user_id, row.from_state, row.to_state, row.cause) == (
            user,
            "SUSPENDED",
            "INACTIVE",
            "deletion-sync",
        )
        assert (row.actor, row.request_id) == ("job:deletion-sync", f"job-run-{run.id}")
        assert row.occurred_at == case.as_of, "the job's clock dates the transition"
        async with w.store.reading() as session:
            entry = (
                await session.scalars(
                    select(AuditEntry).where(AuditEntry.action == "user.deprovision")
                )
            ).one()
        hard = bool(case.settings.get("hard_delete"))
        left = [] if case.left_groups_before else w.groups
        assert (entry.resource_id, entry.request_id) == (user, f"job-run-{run.id}")
        assert entry.details == {
            "userName": entry.details["userName"],
            "groups": left,
            "bindings": ["b-1"],
            "roles": ["r-1", "r-2"],
            "hardDelete": hard,
        }
        assert await _job_events(w, "deletion-sync") == [
            ("auth0", "delete" if hard else "block", user),
        ]
        assert after["members"] == [m for m in before["members"] if m[1] != user]
        assert after["subjects"] == ["x"], "the binding's other subject stays"
        bump = dict.fromkeys(left, 1)
        assert after["groups"] == [(g, v + bump.get(g, 0)) for g, v in before["groups"]]
        expected = {
            "deprovisioned": 1,
            "memberships_removed": len(left),
            "group_updates": len(left),
            "bindings_removed": 1,
            "roles_removed": 2,
            "deleted": int(hard),
        }
        assert run.counts == {k: n for k, n in expected.items() if n}
        await assert_grants_kept(w.store)
        if not hard:
            changed = await w.scalar(select(User.version).where(User.id == user))
            assert changed == version + 1
            assert await w.scalar(select(UserRole.role_id).where(UserRole.user_id == user)) is None


# -- Expiry: one row per rule ----------------------------------------------------


async def _expired_active(w: World) -> str:
    return await w.person("ada@example.com", expiration_date=AS_OF - timedelta(hours=1))


async def _expiring_now(w: World) -> str:
    return await w.person("ada@example.com", expiration_date=AS_OF)


async def _expired_created(w: World) -> str:
    return await w.person(
        "ada@example.com", idp_username=None, expiration_date=AS_OF - timedelta(days=1)
    )


async def _expired_error(w: World) -> str:
    user = await _expired_created(w)
    await w.since(user, YESTERDAY, state="ERROR")
    return user


async def _expiring_later(w: World) -> str:
    return await w.person("ada@example.com", expiration_date=AS_OF + timedelta(seconds=1))


async def _moved_forward(w: World) -> str:
    user = await _expired_active(w)
    await w.change(user, expiration_date=AS_OF + timedelta(days=7))
    return user


async def _no_date(w: World) -> str:
    return await w.person("ada@example.com")


async def _expired_suspended(w: World) -> str:
    user = await _expired_active(w)
    await w.change(user, active=False)
    return user


async def _expired_inactive(w: World) -> str:
    user = await _expired_active(w)
    await w.since(user, YESTERDAY, state="INACTIVE")
    return user


async def _expired_deleted(w: World) -> str:
    user = await _expired_active(w)
    await users.delete_user(w.store, user, ACTOR)
    return user


async def _expired_service_account(w: World) -> str:
    return await w.person(
        "robot@example.com", user_type="SERVICE_ACCOUNT", expiration_date=AS_OF - timedelta(1)
    )


EXPIRY_CASES = {
    "date passed, ACTIVE: SUSPENDED": (_expired_active, "ACTIVE", "SUSPENDED"),
    "date is now: SUSPENDED": (_expiring_now, "ACTIVE", "SUSPENDED"),
    "date passed, CREATED: SUSPENDED": (_expired_created, "CREATED", "SUSPENDED"),
    "date passed, ERROR: SUSPENDED": (_expired_error, "ERROR", "SUSPENDED"),
    "service account, date passed: SUSPENDED": (_expired_service_account, "ACTIVE", "SUSPENDED"),
    "date a second away: untouched": (_expiring_later, None, "ACTIVE"),
    "date moved into the future before it passed: untouched": (_moved_forward, None, "ACTIVE"),
    "no date: untouched": (_no_date, None, "ACTIVE"),
    "suspended already: untouched": (_expired_suspended, None, "SUSPENDED"),
    "INACTIVE: untouched": (_expired_inactive, None, "INACTIVE"),
    "deleted over SCIM: untouched": (_expired_deleted, None, "SUSPENDED"),
}


@pytest.mark.parametrize(
    ("setup", "from_state", "after"), list(EXPIRY_CASES.values()), ids=list(EXPIRY_CASES)
)
async def test_expiry_rules(world: World, setup: Setup, from_state: str | None, after: str) -> None:
    """Each rule of the expiry job: a user whose date has come goes
    SUSPENDED with its history, audit and Auth0 ``block`` rows, keeping
    ``blocked`` and ``active`` as they were; anyone else is left as it was."""
    w = world
    user = await setup(w)
    before = await w.snapshot()
    columns = (User.version, User.blocked, User.active)
    async with w.store.reading() as session:
        version, blocked, active = (
            await session.execute(select(*columns).where(User.id == user))
        ).one()
    run = await w.run("expiry")

    assert await w.scalar(select(User.lifecycle).where(User.id == user)) == after
    if from_state is None:
        assert await w.snapshot() == before, "nothing changes"
        assert run.counts == {}
        return
    [row] = await _job_history(w, run)
    assert (row.user_id, row.from_state, row.to_state, row.cause) == (
        user,
        from_state,
        "SUSPENDED",
        "expired",
    )
    assert (row.actor, row.request_id) == ("job:expiry", f"job-run-{run.id}")
    assert row.occurred_at == AS_OF
    since = await w.scalar(select(User.lifecycle_changed_at).where(User.id == user))
    assert since == AS_OF, "the job's clock dates the transition"
    assert await _job_events(w, "expired") == [("auth0", "block", user)]
    async with w.store.reading() as session:
        entry = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "user.expire"))
        ).one()
        assert (entry.resource_id, entry.request_id) == (user, f"job-run-{run.id}")
        assert (await session.execute(select(*columns).where(User.id == user))).one() == (
            version + 1,
            blocked,
            active,
        )
    assert run.counts == {"suspended": 1}


async def test_a_new_expiration_date_reactivates_an_expired_user(world: World) -> None:
    """SPEC §4: a user suspended because its date passed comes back ACTIVE
    with a new date (the job leaves ``blocked`` alone, so nothing else holds
    it), on the real clock."""
    w = world
    now = datetime.now(UTC)
    user = await w.person("ada@example.com", expiration_date=now + timedelta(hours=1))
    # An hour later, without waiting: the date has passed.
    await w.sql(
        update(User).where(User.id == user).values(expiration_date=now - timedelta(minutes=1))
    )
    run = await w.run("expiry", now)
    assert run.counts == {"suspended": 1}
    assert await w.scalar(select(User.lifecycle).where(User.id == user)) == "SUSPENDED"

    await w.change(user, title="Engineer")  # any other change keeps it suspended
    assert await w.scalar(select(User.lifecycle).where(User.id == user)) == "SUSPENDED"
    await w.change(user, expiration_date=now + timedelta(days=30))
    assert await w.scalar(select(User.lifecycle).where(User.id == user)) == "ACTIVE"
    async with w.store.reading() as session:
        causes = (
            await session.scalars(
                select(LifecycleTransition.cause)
                .where(LifecycleTransition.user_id == user)
                .order_by(LifecycleTransition.id)
            )
        ).all()
    assert causes == ["created", "expired", "reactivated"]


# -- Batches, dry runs, repeated runs ----------------------------------------------


async def _due_for_both(w: World, n: int) -> list[str]:
    """``n`` users suspended yesterday, each in two groups, and ``n`` ACTIVE
    users whose date passed."""
    ids = []
    for i in range(n):
        user = await w.person(f"gone{i}@example.com")
        await w.change(user, active=False)
        await w.since(user, YESTERDAY)
        ids.append(user)
        await w.person(f"expired{i}@example.com", expiration_date=AS_OF - timedelta(hours=i + 1))
    for g in range(2):
        await groups.create_group(w.store, f"team-{g}", ACTOR, member_ids=ids)
    return ids


@pytest.mark.parametrize("n", [4, 5])
async def test_jobs_work_in_batches_and_a_second_run_changes_nothing(
    settings: Settings, engine: AsyncEngine, n: int
) -> None:
    """With batches of two, every due user is done (an exact multiple of the
    batch size ends on an empty batch), each group changes once per batch,
    and running the jobs again changes nothing."""
    async with _world_with(settings, engine, job_batch_size=2) as w:
        await _due_for_both(w, n)
        first = await w.run("deletion-sync")
        assert first.counts == {
            "deprovisioned": n,
            "memberships_removed": 2 * n,
            "group_updates": 2 * ((n + 1) // 2),
        }
        assert (await w.run("expiry")).counts == {"suspended": n}
        async with w.store.reading() as session:
            states = (
                await session.execute(select(User.lifecycle, func.count()).group_by(User.lifecycle))
            ).all()
        assert sorted(tuple(s) for s in states) == [("INACTIVE", n), ("SUSPENDED", n)]
        before = await w.snapshot()
        again = [await w.run(job) for job in ("deletion-sync", "expiry")]
        assert [run.counts for run in again] == [{}, {}]
        assert await w.snapshot() == before


async def test_dry_runs_count_what_would_change_and_write_nothing(
    settings: Settings, engine: AsyncEngine
) -> None:
    """A dry run pages through every due user (batches of two) and reports
    the counts a real run then reaches, without writing anything but its
    own run record."""
    async with _world_with(settings, engine, job_batch_size=2) as w:
        await _due_for_both(w, 5)
        before = await w.snapshot()
        previews = [await w.run(job, dry_run=True) for job in ("deletion-sync", "expiry")]
        assert await w.snapshot() == before
        assert [run.dry_run for run in previews] == [True, True]
        assert "would be" in (previews[0].message or "")
        real = [await w.run(job) for job in ("deletion-sync", "expiry")]
        preview_counts = [
            {k: v for k, v in r.counts.items() if k != "group_updates"} for r in previews
        ]
        real_counts = [{k: v for k, v in r.counts.items() if k != "group_updates"} for r in real]
        assert preview_counts == real_counts
        assert real_counts[0]["deprovisioned"] == 5


async def test_a_stopped_run_hands_back_between_batches_and_the_next_worker_finishes(
    settings: Settings, engine: AsyncEngine
) -> None:
    """A worker told to stop ends the deletion sync after the batch it is
    in (INTERRUPTED, counts so far); the next worker takes the tick over
    and does the rest, leaving no user half done."""
    async with _world_with(
        settings, engine, job_batch_size=2, job_deletion_sync_schedule="0 2 * * *"
    ) as w:
        ids = await _due_for_both(w, 5)
        clock = ManualClock(AS_OF)
        first = registry.build_worker(w.store, clock, only=["deletion-sync"])
        [run] = await first.claim_due()
        first.stop()
        stopped = await first.execute(run)
        assert stopped is not None
        assert (stopped.status, stopped.counts["deprovisioned"]) == ("INTERRUPTED", 2)
        async with w.store.reading() as session:
            done = (
                await session.scalars(
                    select(User.id).where(User.lifecycle == "INACTIVE").order_by(User.id)
                )
            ).all()
            members = (await session.scalars(select(GroupMember.member_id))).all()
        assert done == sorted(ids)[:2]
        assert sorted(set(members)) == sorted(ids)[2:]

        second = registry.build_worker(w.store, clock, only=["deletion-sync"])
        [finished] = await second.run_due()
        assert (finished.id, finished.attempts, finished.status) == (run.id, 2, "SUCCEEDED")
        assert finished.counts["deprovisioned"] == 5
        assert finished.as_of == DAY + timedelta(hours=2)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_user_another_transaction_holds_is_left_for_the_next_batch(
    world: World,
) -> None:
    """On PostgreSQL a batch skips the users another writer has locked
    (``FOR UPDATE SKIP LOCKED``) instead of waiting; the next run takes them."""
    w = world
    ids = sorted([await _suspended_yesterday(w)])
    other = await w.person("grace@example.com")
    await w.change(other, active=False)
    await w.since(other, YESTERDAY)
    ids = sorted([*ids, other])
    cutoff = deprovisioning.deletion_cutoff(AS_OF, "UTC")
    actor = Actor(name="test-job")
    async with create_session_factory(w.engine)() as holder:
        await holder.execute(select(User.id).where(User.id == ids[0]).with_for_update())
        batch = await asyncio.wait_for(
            deprovisioning.deprovision_batch(
                w.store, cutoff=cutoff, limit=10, actor=actor, hard_delete=False
            ),
            timeout=10,
        )
        assert (batch.users, batch.last_id) == (1, ids[1])
        await holder.rollback()
    batch = await deprovisioning.deprovision_batch(
        w.store, cutoff=cutoff, limit=10, actor=actor, hard_delete=False
    )
    assert (batch.users, batch.last_id) == (1, ids[0])
