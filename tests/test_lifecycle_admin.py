"""An admin's view of a user's lifecycle and its reset (identity_store.lifecycle_admin),
on SQLite and PostgreSQL: the history of live, SCIM-deleted and removed users,
and the reset of a user the profile sync gave up on (SPEC §4 "ERROR | an admin
fixes the attributes and resets | CREATED")."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from identity_store import lifecycle, lifecycle_admin, users
from identity_store.actor import Actor, job_actor
from identity_store.errors import NotFoundError, StateError, VersionMismatchError
from identity_store.lifecycle_admin import RESET_MESSAGE, Transition
from identity_store.models import AuditEntry, Lifecycle, LifecycleTransition, OutboxEntry, User
from identity_store.store import Store
from identity_store.users import UserInput
from scim_server.errors import describe

ADMIN = Actor(name="cli:admin", request_id="req-reset")
ENTRA = Actor(name="token:entra", request_id="req-create")
PROFILE_RUN = 12
AUTH0_STEP = {"name": "AUTH0_SYNC", "status": "OK", "message": None, "updated_at": "2026-01-01"}
GAVE_UP = "idp_username still missing after 3 look-ups"


async def _new(store: Store, name: str = "ada@corp.example", **columns: Any) -> str:
    record = await users.create_user(store, UserInput(user_name=name, columns=columns), ENTRA)
    return record.user.id


async def _gave_up(store: Store, user_id: str) -> None:
    """What the profile sync leaves after its last attempt: ERROR, attempts
    counted, its step ERROR (another step beside it)."""

    async def work(session: Any) -> None:
        user = await session.get(User, user_id)
        user.profile_sync_attempts = 3
        user.status = [
            {"name": "PROFILE_SYNC", "status": "ERROR", "message": GAVE_UP, "updated_at": "x"},
            AUTH0_STEP,
        ]
        lifecycle.transition(
            session,
            user,
            Lifecycle.ERROR,
            "profile-sync",
            job_actor("profile-sync", PROFILE_RUN),
            GAVE_UP,
        )

    await store.transaction(work)


async def _counts(store: Store, user_id: str) -> tuple[int, ...]:
    async with store.reading() as session:
        found = []
        for model, column in (
            (LifecycleTransition, LifecycleTransition.user_id),
            (AuditEntry, AuditEntry.resource_id),
            (OutboxEntry, OutboxEntry.aggregate_id),
        ):
            query = select(func.count()).select_from(model).where(column == user_id)
            found.append(int(await session.scalar(query) or 0))
        version = await session.scalar(select(User.version).where(User.id == user_id))
        return (*found, int(version or 0))


async def test_reset_moves_an_error_user_back_to_created_for_the_profile_sync(
    store: Store,
) -> None:
    """CREATED, attempts at 0, its PROFILE_SYNC step PENDING in its place (the
    other steps kept), a new version, and the reset in the history, the
    audit log and the outbox, under the admin's name and request id."""
    user_id = await _new(store)
    await _gave_up(store, user_id)
    version = (await lifecycle_admin.user_lifecycle(store, user_id)).version
    assert version is not None

    after = await lifecycle_admin.reset_user(store, user_id, ADMIN)

    assert (after.lifecycle, after.profile_sync_attempts, after.version) == (
        "CREATED",
        0,
        version + 1,
    )
    assert [(s["name"], s["status"], s["message"]) for s in after.status] == [
        ("PROFILE_SYNC", "PENDING", RESET_MESSAGE),
        ("AUTH0_SYNC", "OK", None),
    ]
    assert datetime.fromisoformat(after.status[0]["updated_at"]) == after.lifecycle_changed_at
    last = after.history[-1]
    assert (last.from_state, last.to_state, last.cause, last.actor, last.request_id) == (
        "ERROR",
        "CREATED",
        "reset",
        "cli:admin",
        "req-reset",
    )
    assert (last.message, last.job_run_id, last.occurred_at) == (
        RESET_MESSAGE,
        None,
        after.lifecycle_changed_at,
    )
    assert after == await lifecycle_admin.user_lifecycle(store, user_id)  # as committed
    async with store.reading() as session:
        audit = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "user.reset"))
        ).one()
        outbox = (
            await session.scalars(select(OutboxEntry).order_by(OutboxEntry.id.desc()).limit(1))
        ).one()
    assert (audit.resource_id, audit.actor, audit.request_id) == (user_id, "cli:admin", "req-reset")
    assert audit.details == {"version": version + 1, "from": "ERROR", "to": "CREATED"}
    assert (outbox.aggregate_id, outbox.operation, outbox.payload) == (
        user_id,
        "upsert",
        {"version": version + 1},
    )


async def test_a_reset_user_is_created_even_when_its_attributes_are_there(store: Store) -> None:
    """The admin fixed the attributes, then reset: ``CREATED`` (SPEC §4), for
    the profile sync, which finds them filled, to make ``ACTIVE``."""
    user_id = await _new(store, idp_username="ada")
    await _gave_up(store, user_id)
    assert (await lifecycle_admin.reset_user(store, user_id, ADMIN)).lifecycle == "CREATED"


@pytest.mark.parametrize(
    ("columns", "then", "state"),
    [
        pytest.param({}, None, "CREATED", id="CREATED"),
        pytest.param({"idp_username": "ada"}, None, "ACTIVE", id="ACTIVE"),
        pytest.param({"active": False}, None, "SUSPENDED", id="SUSPENDED"),
        pytest.param({"active": False}, "inactive", "INACTIVE", id="INACTIVE"),
        pytest.param({}, "deleted", "SUSPENDED (deleted)", id="deleted over SCIM"),
        pytest.param({}, "reset", "CREATED", id="reset already"),
    ],
)
async def test_a_user_not_in_error_cannot_be_reset_and_nothing_is_written(
    store: Store, columns: dict[str, Any], then: str | None, state: str
) -> None:
    """StateError naming the state; no history, audit or outbox row, same version."""
    user_id = await _new(store, **columns)
    if then == "inactive":

        async def work(session: Any) -> None:
            user = await session.get(User, user_id)
            lifecycle.transition(session, user, Lifecycle.INACTIVE, "deletion-sync", ADMIN)

        await store.transaction(work)
    elif then == "deleted":
        await users.delete_user(store, user_id, ENTRA)
    elif then == "reset":
        await _gave_up(store, user_id)
        await lifecycle_admin.reset_user(store, user_id, ADMIN)
    before = await _counts(store, user_id)
    with pytest.raises(StateError) as caught:
        await lifecycle_admin.reset_user(store, user_id, ADMIN)
    assert caught.value.detail == (
        f"user {user_id} is {state}, not ERROR: only a user in ERROR can be reset"
    )
    assert await _counts(store, user_id) == before


async def test_reset_of_an_unknown_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await lifecycle_admin.reset_user(store, "01ZZZZZZZZZZZZZZZZZZZZZZZZ", ADMIN)


async def test_reset_based_on_another_version_is_refused(store: Store) -> None:
    user_id = await _new(store)
    await _gave_up(store, user_id)
    before = await _counts(store, user_id)
    with pytest.raises(VersionMismatchError):
        await lifecycle_admin.reset_user(store, user_id, ADMIN, expected_version=1)
    assert await _counts(store, user_id) == before


async def test_two_concurrent_resets_reset_once(store: Store) -> None:
    """The second finds the user ``CREATED`` (its row locked, then re-read)."""
    user_id = await _new(store)
    await _gave_up(store, user_id)
    results = await asyncio.gather(
        *(lifecycle_admin.reset_user(store, user_id, ADMIN) for _ in range(2)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["StateError", "UserLifecycle"]
    history = await lifecycle_admin.user_history(store, user_id)
    assert [t.cause for t in history] == ["created", "profile-sync", "reset"]


async def test_user_history_is_every_transition_oldest_first(store: Store) -> None:
    user_id = await _new(store, idp_username="ada")
    await users.update_user(
        store,
        user_id,
        lambda current: UserInput(user_name=current.user.user_name, columns={"active": False}),
        Actor(name="token:entra", request_id="req-off"),
    )
    await users.delete_user(store, user_id, Actor(name="token:entra", request_id="req-del"))
    history = await lifecycle_admin.user_history(store, user_id)
    assert [(t.from_state, t.to_state, t.cause, t.request_id) for t in history] == [
        (None, "ACTIVE", "created", "req-create"),
        ("ACTIVE", "SUSPENDED", "deactivated", "req-off"),
    ]
    assert all(isinstance(t, Transition) for t in history)
    assert history[0].occurred_at <= history[1].occurred_at


async def test_the_lifecycle_of_a_user_deleted_over_scim_is_still_shown(store: Store) -> None:
    user_id = await _new(store, idp_username="ada")
    await users.delete_user(store, user_id, ENTRA)
    view = await lifecycle_admin.user_lifecycle(store, user_id)
    assert view.stored
    assert view.deleted_at is not None
    assert (view.lifecycle, view.active) == ("SUSPENDED", False)
    assert [t.cause for t in view.history] == ["created", "deleted"]


async def test_the_history_of_a_removed_user_outlives_its_row(store: Store) -> None:
    """``IDSTORE_HARD_DELETE``: the deletion sync removes the row and keeps the
    history (no foreign key); the view says the row is gone."""
    user_id = await _new(store, idp_username="ada")
    await users.delete_user(store, user_id, ENTRA)

    async def remove(session: Any) -> None:
        user = await session.get(User, user_id)
        lifecycle.transition(
            session, user, Lifecycle.INACTIVE, "deletion-sync", job_actor("deletion-sync", 5)
        )
        await session.flush()
        await session.execute(delete(User).where(User.id == user_id))

    await store.transaction(remove)
    view = await lifecycle_admin.user_lifecycle(store, user_id)
    assert not view.stored
    assert (view.lifecycle, view.user_name, view.status) == (None, None, [])
    assert [(t.to_state, t.job_run_id) for t in view.history] == [
        ("ACTIVE", None),
        ("SUSPENDED", None),
        ("INACTIVE", 5),
    ]
    assert view.history == await lifecycle_admin.user_history(store, user_id)


async def test_an_id_that_never_was_a_user_has_no_history_and_no_lifecycle(store: Store) -> None:
    assert await lifecycle_admin.user_history(store, "01ZZZZZZZZZZZZZZZZZZZZZZZZ") == []
    with pytest.raises(NotFoundError):
        await lifecycle_admin.user_lifecycle(store, "01ZZZZZZZZZZZZZZZZZZZZZZZZ")


async def test_the_lifecycle_view_has_the_fields_an_operator_reads(store: Store) -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    user_id = await _new(store, blocked=False, expiration_date=expires)
    view = await lifecycle_admin.user_lifecycle(store, user_id)
    assert (view.user_name, view.user_type, view.lifecycle) == (
        "ada@corp.example",
        "PERSON",
        "CREATED",
    )
    assert (view.active, view.blocked, view.expiration_date, view.deleted_at) == (
        True,
        False,
        expires,
        None,
    )
    assert (view.profile_sync_attempts, view.status, view.version) == (0, [], 1)
    assert view.lifecycle_changed_at == view.history[0].occurred_at


def test_a_state_error_is_a_409_where_errors_become_responses() -> None:
    """The management API will answer a reset of a user not in ERROR as the
    SCIM layer answers any StateError: 409, the detail as it is."""
    status, detail, scim_type, _ = describe(StateError("user X is ACTIVE, not ERROR"))
    assert (status, detail, scim_type) == (409, "user X is ACTIVE, not ERROR", None)


async def test_status_entries_that_are_not_steps_are_left_out(store: Store) -> None:
    """``status`` is a JSON column: what is not a ``{name, ...}`` object in it is
    neither shown nor kept by a reset."""
    user_id = await _new(store)
    await _gave_up(store, user_id)

    async def junk(session: Any) -> None:
        user = await session.get(User, user_id)
        user.status = ["PROFILE_SYNC", 3, None, AUTH0_STEP]

    await store.transaction(junk)
    assert (await lifecycle_admin.user_lifecycle(store, user_id)).status == [AUTH0_STEP]
    after = await lifecycle_admin.reset_user(store, user_id, ADMIN)
    assert [s["name"] for s in after.status] == ["AUTH0_SYNC", "PROFILE_SYNC"]
