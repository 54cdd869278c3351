"""Every write path of a user through the store's use cases
(identity_store.users: create_user, update_user, delete_user) as a table: the
state it leaves the user in, and the ``lifecycle_history`` row it records
(from, to, cause, actor, request id), on SQLite and PostgreSQL (SPEC §4:
"Every transition is recorded (time, cause, actor)").

States only a job reaches (``ERROR`` from the profile sync, ``INACTIVE`` from
the deletion sync) are set up by a transition of a job's actor, as the jobs
record theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from identity_store import lifecycle, users
from identity_store.actor import Actor, job_actor
from identity_store.models import Lifecycle, LifecycleTransition, User
from identity_store.store import Store
from identity_store.user_changes import WRITABLE_COLUMNS
from identity_store.users import UserInput, UserRecord

CREATED, ACTIVE, ERROR = Lifecycle.CREATED, Lifecycle.ACTIVE, Lifecycle.ERROR
SUSPENDED, INACTIVE = Lifecycle.SUSPENDED, Lifecycle.INACTIVE

SETUP = Actor(name="token:setup", token_id=None, request_id="req-setup")
WRITER = Actor(name="token:entra", token_id=None, request_id="req-write")

COMPLETE = {"idp_username": "ada"}
"""With the derived ``idp_cloud_username`` (the userName), what ``ACTIVE`` needs."""
MISSING: dict[str, Any] = {}
ROBOT = {"user_type": "SERVICE_ACCOUNT"}
PAST = datetime(2020, 1, 1, tzinfo=UTC)
FUTURE = datetime.now(UTC) + timedelta(days=3650)
JOB_RUN = 41


@dataclass(frozen=True)
class Write:
    """A user created with ``created`` (by :data:`SETUP`), moved to ``job_state``
    by a job when given, then ``action`` (by :data:`WRITER`) with ``change``:
    the state it ends in, and the history row the action leaves (``None``: none)."""

    created: dict[str, Any]
    action: str
    """``create`` (the creation itself is the write under test), ``update``, ``delete``."""
    state: Lifecycle
    row: tuple[str | None, str, str] | None
    """(from, to, cause) of the action's row."""
    change: dict[str, Any] = field(default_factory=dict)
    job_state: Lifecycle | None = None


WRITES = [
    # -- Created (SPEC §4 rows 1, 2, 10)
    pytest.param(
        Write(COMPLETE, "create", ACTIVE, (None, "ACTIVE", "created")),
        id="created with the required attributes: ACTIVE",
    ),
    pytest.param(
        Write(MISSING, "create", CREATED, (None, "CREATED", "created")),
        id="created without them: CREATED",
    ),
    pytest.param(
        Write({**COMPLETE, "active": False}, "create", SUSPENDED, (None, "SUSPENDED", "created")),
        id="created with active=false: SUSPENDED",
    ),
    pytest.param(
        Write({**COMPLETE, "blocked": True}, "create", SUSPENDED, (None, "SUSPENDED", "created")),
        id="created blocked: SUSPENDED",
    ),
    pytest.param(
        Write(
            {**COMPLETE, "expiration_date": PAST},
            "create",
            SUSPENDED,
            (None, "SUSPENDED", "created"),
        ),
        id="created already expired: SUSPENDED",
    ),
    pytest.param(
        Write(ROBOT, "create", ACTIVE, (None, "ACTIVE", "created")),
        id="service account created: ACTIVE",
    ),
    # -- Deleted (rows 9, 10)
    pytest.param(
        Write(ROBOT, "delete", INACTIVE, ("ACTIVE", "INACTIVE", "deleted")),
        id="service account deleted: INACTIVE",
    ),
    pytest.param(
        Write(COMPLETE, "delete", SUSPENDED, ("ACTIVE", "SUSPENDED", "deleted")),
        id="ACTIVE person deleted: SUSPENDED",
    ),
    pytest.param(
        Write(MISSING, "delete", SUSPENDED, ("CREATED", "SUSPENDED", "deleted")),
        id="CREATED person deleted: SUSPENDED",
    ),
    pytest.param(
        Write(COMPLETE, "delete", SUSPENDED, ("ERROR", "SUSPENDED", "deleted"), job_state=ERROR),
        id="ERROR person deleted: SUSPENDED",
    ),
    # -- Suspended (row 6), each cause for each state it leaves
    *(
        pytest.param(
            Write(
                created,
                "update",
                SUSPENDED,
                (str(state), "SUSPENDED", cause),
                change=change,
                job_state=state if state is ERROR else None,
            ),
            id=f"{state}, {label}: SUSPENDED ({cause})",
        )
        for state, created in ((ACTIVE, COMPLETE), (CREATED, MISSING), (ERROR, COMPLETE))
        for label, change, cause in (
            ("active=false", {"active": False}, "deactivated"),
            ("blocked", {"blocked": True}, "blocked"),
            ("expiration date passed", {"expiration_date": PAST}, "expired"),
        )
    ),
    pytest.param(
        Write(
            ROBOT, "update", SUSPENDED, ("ACTIVE", "SUSPENDED", "deactivated"), {"active": False}
        ),
        id="service account, active=false: SUSPENDED",
    ),
    # -- Reactivated (row 7)
    pytest.param(
        Write(
            {**COMPLETE, "active": False},
            "update",
            ACTIVE,
            ("SUSPENDED", "ACTIVE", "reactivated"),
            {"active": True},
        ),
        id="SUSPENDED, active=true: ACTIVE",
    ),
    pytest.param(
        Write(
            {"active": False},
            "update",
            CREATED,
            ("SUSPENDED", "CREATED", "reactivated"),
            {"active": True},
        ),
        id="SUSPENDED, active=true without the attributes: CREATED",
    ),
    pytest.param(
        Write(
            {**COMPLETE, "blocked": True},
            "update",
            ACTIVE,
            ("SUSPENDED", "ACTIVE", "reactivated"),
            {"blocked": False},
        ),
        id="SUSPENDED, unblocked: ACTIVE",
    ),
    pytest.param(
        Write(
            {**COMPLETE, "expiration_date": PAST},
            "update",
            ACTIVE,
            ("SUSPENDED", "ACTIVE", "reactivated"),
            {"expiration_date": FUTURE},
        ),
        id="SUSPENDED, new expiry: ACTIVE",
    ),
    pytest.param(
        Write(
            {**COMPLETE, "active": False, "blocked": True},
            "update",
            SUSPENDED,
            None,
            {"active": True},
        ),
        id="SUSPENDED, active=true but still blocked: SUSPENDED, no row",
    ),
    # -- A write that fills or removes the required attributes
    pytest.param(
        Write(MISSING, "update", ACTIVE, ("CREATED", "ACTIVE", "updated"), {"idp_username": "x"}),
        id="CREATED, attributes filled by a write: ACTIVE",
    ),
    pytest.param(
        Write(
            COMPLETE, "update", CREATED, ("ACTIVE", "CREATED", "updated"), {"idp_username": None}
        ),
        id="ACTIVE, attribute removed by a write: CREATED",
    ),
    # -- Writes that move nothing
    pytest.param(
        Write(COMPLETE, "update", ACTIVE, None, {"title": "Lead"}), id="ACTIVE, a title: no row"
    ),
    pytest.param(
        Write(COMPLETE, "update", ACTIVE, None, {"active": None}),
        id="ACTIVE, active unassigned: no row",
    ),
    pytest.param(
        Write(COMPLETE, "update", ACTIVE, None, {"expiration_date": FUTURE}),
        id="ACTIVE, expiring later: no row",
    ),
    # -- Sticky states
    pytest.param(
        Write(MISSING, "update", ERROR, None, {"idp_username": "x"}, job_state=ERROR),
        id="ERROR, attributes filled by a write: stays ERROR",
    ),
    pytest.param(
        Write(COMPLETE, "update", ERROR, None, {"title": "Lead"}, job_state=ERROR),
        id="ERROR, a title: stays ERROR",
    ),
    pytest.param(
        Write(
            {**COMPLETE, "active": False},
            "update",
            INACTIVE,
            None,
            {"title": "Lead"},
            job_state=INACTIVE,
        ),
        id="INACTIVE, a title: stays INACTIVE",
    ),
    pytest.param(
        Write(
            {**COMPLETE, "active": False},
            "update",
            INACTIVE,
            None,
            {"blocked": True},
            job_state=INACTIVE,
        ),
        id="INACTIVE, blocked too: stays INACTIVE",
    ),
    pytest.param(
        Write(
            {**ROBOT, "active": False},
            "update",
            INACTIVE,
            None,
            {"title": "Lead"},
            job_state=INACTIVE,
        ),
        id="service account INACTIVE, a title: stays INACTIVE",
    ),
    pytest.param(
        Write(
            {**COMPLETE, "active": False},
            "update",
            ACTIVE,
            ("INACTIVE", "ACTIVE", "reactivated"),
            {"active": True},
            job_state=INACTIVE,
        ),
        id="INACTIVE, active=true: ACTIVE",
    ),
]


def _replacement(record: UserRecord, **changes: Any) -> UserInput:
    """The record's whole writable state with ``changes`` (what a PUT or a
    PATCH computes)."""
    current = {c: getattr(record.user, c) for c in WRITABLE_COLUMNS}
    return UserInput(user_name=record.user.user_name, columns={**current, **changes})


async def _as_job(store: Store, user_id: str, state: Lifecycle) -> None:
    """Move the user as the job that owns ``state`` does (with its run's actor)."""
    job = "profile-sync" if state is ERROR else "deletion-sync"

    async def work(session: Any) -> None:
        user = await session.get(User, user_id)
        assert lifecycle.transition(session, user, state, job, job_actor(job, JOB_RUN))

    await store.transaction(work)


async def _history(store: Store, user_id: str) -> list[LifecycleTransition]:
    async with store.reading() as session:
        query = (
            select(LifecycleTransition)
            .where(LifecycleTransition.user_id == user_id)
            .order_by(LifecycleTransition.id)
        )
        return list((await session.scalars(query)).all())


async def _row(store: Store, user_id: str) -> User:
    async with store.reading() as session:
        user = await session.scalar(select(User).where(User.id == user_id))
    assert user is not None
    return user


@pytest.mark.parametrize("write", WRITES)
async def test_write_path(store: Store, write: Write) -> None:
    creator = WRITER if write.action == "create" else SETUP
    created = await users.create_user(
        store, UserInput(user_name="ada@corp.example", columns=dict(write.created)), creator
    )
    user_id = created.user.id
    if write.job_state is not None:
        await _as_job(store, user_id, write.job_state)
    before = [] if write.action == "create" else await _history(store, user_id)
    version = (await _row(store, user_id)).version

    if write.action == "update":
        updated = await users.update_user(
            store, user_id, lambda current: _replacement(current, **write.change), WRITER
        )
        assert updated.user.version == version + 1
    elif write.action == "delete":
        await users.delete_user(store, user_id, WRITER)

    user = await _row(store, user_id)
    assert user.lifecycle == write.state.value
    rows = (await _history(store, user_id))[len(before) :]
    if write.row is None:
        assert rows == []
        return
    assert [(r.from_state, r.to_state, r.cause) for r in rows] == [write.row]
    (row,) = rows
    assert (row.actor, row.request_id, row.job_run_id) == ("token:entra", "req-write", None)
    assert row.message is None
    assert user.lifecycle_changed_at == row.occurred_at


async def test_a_jobs_transition_names_its_run(store: Store) -> None:
    """The state set up by a job's actor records the job's name and run, so the
    history tells a job's transition from an admin's."""
    created = await users.create_user(store, UserInput(user_name="bo@corp.example"), SETUP)
    await _as_job(store, created.user.id, ERROR)
    rows = await _history(store, created.user.id)
    assert [(r.to_state, r.actor, r.request_id, r.job_run_id) for r in rows] == [
        ("CREATED", "token:setup", "req-setup", None),
        ("ERROR", "job:profile-sync", f"job-run-{JOB_RUN}", JOB_RUN),
    ]
