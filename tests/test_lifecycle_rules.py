"""The lifecycle rules (identity_store/lifecycle.py) as tables: one row per row
of SPEC §4's table, and per case of each rule function, on users built in
memory; then the SQL twins the jobs select with (``expiry_due_clause``,
``deletion_due_clause``) and the batched deletes write with
(``after_delete_clause``) against the pure rules, row by row over a grid of
users stored in SQLite and PostgreSQL.

A hand mutation check of lifecycle.py runs these tables
(tests/mutations/lifecycle_mutations.py): every mutation must fail a row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store import lifecycle
from identity_store.actor import Actor, job_actor
from identity_store.lifecycle import (
    after_delete,
    after_delete_clause,
    after_profile_sync,
    after_reset,
    deletion_cutoff,
    deletion_due,
    deletion_due_clause,
    expiry_due,
    expiry_due_clause,
    history_row,
    target_state,
)
from identity_store.models import Lifecycle, User, new_id

CREATED, ACTIVE, ERROR = Lifecycle.CREATED, Lifecycle.ACTIVE, Lifecycle.ERROR
SUSPENDED, INACTIVE = Lifecycle.SUSPENDED, Lifecycle.INACTIVE
STATES = list(Lifecycle)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
PAST = NOW - timedelta(days=1)
FUTURE = NOW + timedelta(days=1)
TICK = timedelta(microseconds=1)
REQUIRED = ("idp_username", "idp_cloud_username")
"""The default required IdP attributes (``IDSTORE_REQUIRED_IDP_ATTRIBUTES``)."""

COMPLETE = {"idp_username": "ada", "idp_cloud_username": "ada@corp.example"}
MISSING = {"idp_username": None, "idp_cloud_username": None}
PARTIAL = {"idp_username": None, "idp_cloud_username": "ada@corp.example"}
"""One of the two required attributes: still missing one."""


def person(state: Lifecycle | None, **fields: Any) -> User:
    """A person in ``state`` (``None``: being created), active, not blocked,
    with the required attributes unless ``fields`` say otherwise."""
    values: dict[str, Any] = {
        "user_type": "PERSON",
        "active": True,
        "blocked": None,
        "expiration_date": None,
        "deleted_at": None,
        **COMPLETE,
        **fields,
    }
    return User(lifecycle=state.value if state else "", **values)


def robot(state: Lifecycle | None, **fields: Any) -> User:
    """A service account in ``state``, without the IdP attributes (it needs none)."""
    return person(state, **{**MISSING, "user_type": "SERVICE_ACCOUNT", **fields})


# -- target_state: what a write (create, replace, PATCH) makes of a user ---------------

TARGET_STATE = [
    # SPEC §4 "— | created with all required IdP attributes present | ACTIVE"
    pytest.param(person(None), ACTIVE, id="created with the required attributes: ACTIVE"),
    # "— | created with required IdP attributes missing | CREATED"
    pytest.param(person(None, **MISSING), CREATED, id="created without them: CREATED"),
    pytest.param(person(None, **PARTIAL), CREATED, id="created with one of two: CREATED"),
    pytest.param(
        person(None, idp_username="", idp_cloud_username="a@corp.example"),
        CREATED,
        id="created with an empty one: CREATED",
    ),
    pytest.param(person(None, active=False), SUSPENDED, id="created with active=false: SUSPENDED"),
    pytest.param(person(None, blocked=True), SUSPENDED, id="created blocked: SUSPENDED"),
    pytest.param(
        person(None, expiration_date=PAST), SUSPENDED, id="created already expired: SUSPENDED"
    ),
    pytest.param(person(None, active=None), ACTIVE, id="created with active unassigned: ACTIVE"),
    # "CREATED, ACTIVE, ERROR | active=false, blocked, or expiration_date passed | SUSPENDED"
    *(
        pytest.param(
            person(state, **cause),
            SUSPENDED,
            id=f"{state} and {label}: SUSPENDED",
        )
        for state in (CREATED, ACTIVE, ERROR)
        for label, cause in (
            ("active=false", {"active": False}),
            ("blocked", {"blocked": True}),
            ("expiration passed", {"expiration_date": PAST}),
            ("expiration is now", {"expiration_date": NOW}),
        )
    ),
    # Not a suspension: an unassigned active, blocked=false, a future expiration.
    pytest.param(person(ACTIVE, active=None), ACTIVE, id="ACTIVE, active unassigned: ACTIVE"),
    pytest.param(person(ACTIVE, blocked=False), ACTIVE, id="ACTIVE, blocked=false: ACTIVE"),
    pytest.param(
        person(ACTIVE, expiration_date=FUTURE), ACTIVE, id="ACTIVE, expiring later: ACTIVE"
    ),
    pytest.param(
        person(ACTIVE, expiration_date=NOW + TICK),
        ACTIVE,
        id="ACTIVE, expiring a microsecond later: ACTIVE",
    ),
    # An admin's write that fills the attributes of a CREATED user.
    pytest.param(person(CREATED), ACTIVE, id="CREATED, attributes filled by a write: ACTIVE"),
    pytest.param(person(CREATED, **PARTIAL), CREATED, id="CREATED, one still missing: CREATED"),
    pytest.param(person(ACTIVE, **MISSING), CREATED, id="ACTIVE, attributes removed: CREATED"),
    # "SUSPENDED | reactivated before the deletion sync | ACTIVE (or CREATED ...)"
    pytest.param(person(SUSPENDED), ACTIVE, id="SUSPENDED, reactivated: ACTIVE"),
    pytest.param(
        person(SUSPENDED, **MISSING), CREATED, id="SUSPENDED, reactivated without them: CREATED"
    ),
    pytest.param(person(SUSPENDED, blocked=False), ACTIVE, id="SUSPENDED, unblocked: ACTIVE"),
    pytest.param(
        person(SUSPENDED, expiration_date=FUTURE), ACTIVE, id="SUSPENDED, new expiry: ACTIVE"
    ),
    pytest.param(person(SUSPENDED, active=False), SUSPENDED, id="SUSPENDED, still off: SUSPENDED"),
    pytest.param(
        person(SUSPENDED, active=True, blocked=True),
        SUSPENDED,
        id="SUSPENDED, active but blocked: SUSPENDED",
    ),
    # ERROR waits for an admin's reset (unless suspended meanwhile).
    pytest.param(person(ERROR), ERROR, id="ERROR, attributes filled by a write: ERROR"),
    pytest.param(person(ERROR, **MISSING), ERROR, id="ERROR, still missing: ERROR"),
    # INACTIVE stays INACTIVE while nothing reactivates the user.
    *(
        pytest.param(person(INACTIVE, **cause), INACTIVE, id=f"INACTIVE, {label}: INACTIVE")
        for label, cause in (
            ("still off", {"active": False}),
            ("still blocked", {"blocked": True}),
            ("still expired", {"expiration_date": PAST}),
        )
    ),
    pytest.param(person(INACTIVE), ACTIVE, id="INACTIVE, reactivated: ACTIVE"),
    pytest.param(
        person(INACTIVE, **MISSING), CREATED, id="INACTIVE, reactivated without them: CREATED"
    ),
    # "any | SCIM DELETE | SUSPENDED": a deleted person counts as suspended.
    pytest.param(person(ACTIVE, deleted_at=PAST), SUSPENDED, id="ACTIVE, deleted: SUSPENDED"),
    pytest.param(person(INACTIVE, deleted_at=PAST), INACTIVE, id="INACTIVE, deleted: INACTIVE"),
    # "— | service account created / deleted | ACTIVE / INACTIVE directly"
    pytest.param(robot(None), ACTIVE, id="service account created: ACTIVE without IdP attributes"),
    pytest.param(robot(ACTIVE), ACTIVE, id="service account written: ACTIVE"),
    pytest.param(robot(ACTIVE, deleted_at=PAST), INACTIVE, id="service account deleted: INACTIVE"),
    pytest.param(robot(ACTIVE, active=False), SUSPENDED, id="service account off: SUSPENDED"),
    pytest.param(robot(ACTIVE, blocked=True), SUSPENDED, id="service account blocked: SUSPENDED"),
    pytest.param(
        robot(ACTIVE, expiration_date=PAST), SUSPENDED, id="service account expired: SUSPENDED"
    ),
    pytest.param(
        robot(ACTIVE, active=None), ACTIVE, id="service account, active unassigned: ACTIVE"
    ),
    pytest.param(robot(SUSPENDED), ACTIVE, id="service account reactivated: ACTIVE"),
    pytest.param(
        robot(INACTIVE, active=False),
        INACTIVE,
        id="service account INACTIVE after the deletion sync, still off: INACTIVE",
    ),
    pytest.param(robot(INACTIVE), ACTIVE, id="service account reactivated from INACTIVE: ACTIVE"),
]


@pytest.mark.parametrize(("user", "expected"), TARGET_STATE)
def test_target_state(user: User, expected: Lifecycle) -> None:
    """The state a write leaves the user in, from its current state and row."""
    assert target_state(user, REQUIRED, NOW) is expected


def test_target_state_reads_the_required_set_it_is_given() -> None:
    """The required set is configuration: with ``idp_workforce_id`` required, a
    user without one is ``CREATED`` whatever else it has; with none required,
    any user is ``ACTIVE``."""
    user = person(None, idp_workforce_id=None)
    assert target_state(user, ("idp_workforce_id",), NOW) is CREATED
    assert target_state(person(None, **MISSING), (), NOW) is ACTIVE


def test_target_state_without_a_time_reads_the_clock() -> None:
    """Without ``now`` the expiration date is compared with the current time."""
    assert target_state(person(ACTIVE, expiration_date=PAST), REQUIRED) is SUSPENDED
    later = datetime.now(UTC) + timedelta(days=365)
    assert target_state(person(ACTIVE, expiration_date=later), REQUIRED) is ACTIVE


# -- after_delete: a SCIM DELETE ------------------------------------------------------


@pytest.mark.parametrize("state", [None, *STATES], ids=lambda s: str(s or "new"))
def test_a_deleted_person_waits_suspended_for_the_deletion_sync(state: Lifecycle | None) -> None:
    """SPEC §4 "any | SCIM DELETE | SUSPENDED now, INACTIVE at the next deletion sync"."""
    assert after_delete(person(state)) is SUSPENDED


@pytest.mark.parametrize("state", [None, *STATES], ids=lambda s: str(s or "new"))
def test_a_deleted_service_account_is_inactive_at_once(state: Lifecycle | None) -> None:
    """SPEC §4 "service account deleted | INACTIVE directly"."""
    assert after_delete(robot(state)) is INACTIVE


# -- after_profile_sync: a CREATED user looked up in the directory --------------------

PROFILE_SYNC = [
    # "CREATED | profile sync filled the required attributes | ACTIVE"
    pytest.param(person(CREATED), 1, 3, ACTIVE, id="filled at the first run: ACTIVE"),
    pytest.param(person(CREATED), 3, 3, ACTIVE, id="filled at the last run: ACTIVE"),
    pytest.param(person(CREATED), 9, 3, ACTIVE, id="filled after the limit: ACTIVE"),
    # "CREATED | profile sync could not fill them (after retries) | ERROR"
    pytest.param(person(CREATED, **MISSING), 1, 3, CREATED, id="missing, run 1 of 3: CREATED"),
    pytest.param(person(CREATED, **MISSING), 2, 3, CREATED, id="missing, run 2 of 3: CREATED"),
    pytest.param(person(CREATED, **MISSING), 3, 3, ERROR, id="missing, run 3 of 3: ERROR"),
    pytest.param(person(CREATED, **MISSING), 4, 3, ERROR, id="missing, past the limit: ERROR"),
    pytest.param(person(CREATED, **MISSING), 1, 1, ERROR, id="missing, one run allowed: ERROR"),
    pytest.param(person(CREATED, **PARTIAL), 2, 3, CREATED, id="one of two, run 2: CREATED"),
    pytest.param(person(CREATED, **PARTIAL), 3, 3, ERROR, id="one of two, run 3: ERROR"),
    # Other states are not the profile sync's to move.
    pytest.param(person(ACTIVE, **MISSING), 5, 3, ACTIVE, id="ACTIVE stays ACTIVE"),
    pytest.param(person(ERROR), 1, 3, ERROR, id="ERROR stays ERROR even when filled"),
    pytest.param(person(ERROR, **MISSING), 5, 3, ERROR, id="ERROR stays ERROR"),
    pytest.param(person(SUSPENDED), 1, 3, SUSPENDED, id="SUSPENDED stays SUSPENDED"),
    pytest.param(person(SUSPENDED, **MISSING), 5, 3, SUSPENDED, id="SUSPENDED, missing, stays"),
    pytest.param(person(INACTIVE), 1, 3, INACTIVE, id="INACTIVE stays INACTIVE"),
]


@pytest.mark.parametrize(("user", "attempts", "max_attempts", "expected"), PROFILE_SYNC)
def test_after_profile_sync(
    user: User, attempts: int, max_attempts: int, expected: Lifecycle
) -> None:
    assert after_profile_sync(user, REQUIRED, attempts, max_attempts) is expected


# -- after_reset: an admin's reset ----------------------------------------------------

RESET = [
    # "ERROR | an admin fixes the attributes and resets | CREATED"
    pytest.param(person(ERROR), CREATED, id="ERROR: CREATED"),
    pytest.param(person(ERROR, **MISSING), CREATED, id="ERROR, still missing: CREATED"),
    *(
        pytest.param(person(state), state, id=f"{state}: unchanged")
        for state in (CREATED, ACTIVE, SUSPENDED, INACTIVE)
    ),
]


@pytest.mark.parametrize(("user", "expected"), RESET)
def test_after_reset(user: User, expected: Lifecycle) -> None:
    assert after_reset(user) is expected


# -- expiry_due: what the expiry job suspends -----------------------------------------

EXPIRY = [
    # "CREATED, ACTIVE, ERROR | expiration_date passed | SUSPENDED"
    *(
        pytest.param(person(state, expiration_date=PAST), True, id=f"{state}, passed: due")
        for state in (CREATED, ACTIVE, ERROR)
    ),
    pytest.param(person(ACTIVE, expiration_date=NOW), True, id="expires at this instant: due"),
    pytest.param(person(ACTIVE, expiration_date=NOW - TICK), True, id="a microsecond ago: due"),
    pytest.param(person(ACTIVE, expiration_date=NOW + TICK), False, id="in a microsecond: not yet"),
    pytest.param(person(ACTIVE, expiration_date=FUTURE), False, id="tomorrow: not yet"),
    pytest.param(person(ACTIVE), False, id="no expiration date: never"),
    pytest.param(
        person(SUSPENDED, expiration_date=PAST), False, id="already SUSPENDED: nothing to do"
    ),
    pytest.param(person(INACTIVE, expiration_date=PAST), False, id="INACTIVE: nothing to do"),
    pytest.param(
        person(ACTIVE, expiration_date=PAST, deleted_at=PAST), False, id="deleted: not the job's"
    ),
    pytest.param(robot(ACTIVE, expiration_date=PAST), True, id="service account, passed: due"),
]


@pytest.mark.parametrize(("user", "due"), EXPIRY)
def test_expiry_due(user: User, due: bool) -> None:
    assert expiry_due(user, NOW) is due


# -- deletion_cutoff: the start of the day, in the jobs' time zone --------------------

CUTOFFS = [
    pytest.param("2026-01-15T10:00Z", "UTC", "2026-01-15T00:00Z", id="UTC"),
    pytest.param("2026-01-15T00:00Z", "UTC", "2026-01-15T00:00Z", id="UTC, at midnight"),
    pytest.param("2026-01-15T10:00Z", "Europe/Rome", "2026-01-14T23:00Z", id="Rome, winter"),
    pytest.param(
        "2026-01-15T23:30Z", "Europe/Rome", "2026-01-15T23:00Z", id="Rome, already tomorrow"
    ),
    pytest.param(
        "2026-01-15T03:00Z", "America/New_York", "2026-01-14T05:00Z", id="New York, yesterday"
    ),
    pytest.param("2026-01-15T12:00Z", "Asia/Kolkata", "2026-01-14T18:30Z", id="Kolkata +05:30"),
    pytest.param(
        "2026-01-15T12:00Z", "Pacific/Kiritimati", "2026-01-15T10:00Z", id="Kiritimati +14"
    ),
    pytest.param(
        "2026-03-29T12:00Z", "Europe/Rome", "2026-03-28T23:00Z", id="Rome, DST starts today"
    ),
    pytest.param(
        "2026-03-30T12:00Z", "Europe/Rome", "2026-03-29T22:00Z", id="Rome, the day after DST"
    ),
    pytest.param(
        "2026-10-25T12:00Z", "Europe/Rome", "2026-10-24T22:00Z", id="Rome, DST ends today"
    ),
    pytest.param(
        "2026-09-06T12:00Z",
        "America/Santiago",
        "2026-09-06T04:00Z",
        id="Santiago, a day without midnight (01:00 -03)",
    ),
    pytest.param(
        "2026-04-05T12:00Z",
        "America/Santiago",
        "2026-04-05T04:00Z",
        id="Santiago, the day after the repeated hour",
    ),
]


@pytest.mark.parametrize(("now", "zone", "cutoff"), CUTOFFS)
def test_deletion_cutoff_is_the_start_of_the_day_in_the_zone(
    now: str, zone: str, cutoff: str
) -> None:
    """SPEC §4 "grace period: end of the day it was suspended", a day of the
    jobs' time zone (``IDSTORE_JOBS_TIMEZONE``), on days of 23 and 25 hours too."""
    found = deletion_cutoff(datetime.fromisoformat(now), zone)
    assert found.tzinfo is not None
    assert found == datetime.fromisoformat(cutoff)


def test_a_day_without_midnight_starts_at_the_first_time_it_has() -> None:
    """America/Santiago skips from 23:59:59 to 01:00 on 6 September 2026: the
    cutoff is 01:00 -03, a time that happened, not 00:00 -04, which never did
    (and which Python compares unequal to every instant of another zone)."""
    found = deletion_cutoff(datetime(2026, 9, 6, 12, 0, tzinfo=UTC), "America/Santiago")
    assert found.isoformat() == "2026-09-06T01:00:00-03:00"
    assert str(found.tzinfo) == "America/Santiago"


# -- deletion_due: what the deletion sync deprovisions --------------------------------

CUTOFF = deletion_cutoff(NOW, "Europe/Rome")


def suspended_at(state: Lifecycle, when: datetime, **fields: Any) -> User:
    user = person(state, active=False, **fields)
    user.lifecycle_changed_at = when
    return user


DELETION = [
    # "SUSPENDED | deletion sync after the grace period | INACTIVE"
    pytest.param(suspended_at(SUSPENDED, CUTOFF - timedelta(days=3)), True, id="days ago: due"),
    pytest.param(suspended_at(SUSPENDED, CUTOFF - TICK), True, id="just before today: due"),
    pytest.param(suspended_at(SUSPENDED, CUTOFF), False, id="at today's start: tomorrow"),
    pytest.param(suspended_at(SUSPENDED, NOW), False, id="today: tomorrow"),
    pytest.param(
        suspended_at(SUSPENDED, CUTOFF - TICK, deleted_at=PAST), True, id="SCIM-deleted: due"
    ),
    *(
        pytest.param(suspended_at(state, CUTOFF - timedelta(days=3)), False, id=f"{state}: not")
        for state in (CREATED, ACTIVE, ERROR, INACTIVE)
    ),
]


@pytest.mark.parametrize(("user", "due"), DELETION)
def test_deletion_due(user: User, due: bool) -> None:
    assert deletion_due(user, CUTOFF) is due


def test_a_user_suspended_before_midnight_in_the_zone_is_due_although_it_was_today_in_utc() -> None:
    """The grace day is the zone's: suspended at 23:30 in Rome on the 14th
    (22:30 UTC) is due at the next morning's run; suspended at 00:30 on the
    15th in Rome (23:30 UTC on the 14th) waits one more day."""
    run = datetime(2026, 1, 15, 1, 0, tzinfo=UTC)  # 02:00 in Rome
    cutoff = deletion_cutoff(run, "Europe/Rome")
    assert deletion_due(suspended_at(SUSPENDED, datetime(2026, 1, 14, 22, 30, tzinfo=UTC)), cutoff)
    assert not deletion_due(
        suspended_at(SUSPENDED, datetime(2026, 1, 14, 23, 30, tzinfo=UTC)), cutoff
    )


# -- history_row and transition: the record every transition leaves --------------------


def test_history_row_names_the_transition_its_actor_and_its_request() -> None:
    actor = Actor(name="token:entra", token_id="01TOKEN", request_id="req-42")
    row = history_row("01USER", "ACTIVE", SUSPENDED, "deactivated", actor, NOW, "off")
    assert row == {
        "user_id": "01USER",
        "from_state": "ACTIVE",
        "to_state": "SUSPENDED",
        "cause": "deactivated",
        "actor": "token:entra",
        "message": "off",
        "occurred_at": NOW,
        "request_id": "req-42",
        "job_run_id": None,
    }


def test_history_row_of_a_job_names_its_run() -> None:
    row = history_row("01USER", "SUSPENDED", INACTIVE, "deletion-sync", job_actor("x", 7), NOW)
    assert (row["actor"], row["request_id"], row["job_run_id"]) == ("job:x", "job-run-7", 7)
    assert row["message"] is None


def test_history_row_of_a_new_user_has_no_from_state() -> None:
    """A user being created has ``lifecycle == ""``: the row says ``None``."""
    row = history_row("01USER", "", ACTIVE, "created", Actor(name="a"), NOW)
    assert row["from_state"] is None
    assert row["to_state"] == "ACTIVE"


# -- The SQL twins against the pure rules, on both databases --------------------------

EXPIRATIONS = [None, PAST, NOW - TICK, NOW, NOW + TICK, FUTURE]
DELETED = [None, PAST]
KINDS = ["PERSON", "SERVICE_ACCOUNT"]


def _grid_user(n: int, **fields: Any) -> User:
    return User(
        id=new_id(),
        user_name=f"grid{n}",
        user_name_normalized=f"grid{n}",
        version=1,
        tags=[],
        status=[],
        providers=[],
        **fields,
    )


async def _ids_where(session: AsyncSession, clause: Any) -> set[str]:
    return set((await session.scalars(select(User.id).where(clause))).all())


async def test_expiry_due_clause_selects_exactly_the_users_expiry_due_selects(
    session: AsyncSession,
) -> None:
    """Every state by expiration date (around ``now`` to the microsecond) by
    deleted or not by person or service account: the job's query finds the
    users the pure rule names, no more, no fewer."""
    grid = [
        _grid_user(
            n,
            lifecycle=state.value,
            expiration_date=expiration,
            deleted_at=deleted,
            user_type=kind,
            active=True,
        )
        for n, (state, expiration, deleted, kind) in enumerate(
            product(STATES, EXPIRATIONS, DELETED, KINDS)
        )
    ]
    session.add_all(grid)
    await session.commit()
    expected = {u.id for u in grid if expiry_due(u, NOW)}
    assert 0 < len(expected) < len(grid)
    assert await _ids_where(session, expiry_due_clause(NOW)) == expected


@pytest.mark.parametrize("zone", ["UTC", "Europe/Rome", "America/Santiago"])
async def test_deletion_due_clause_selects_exactly_the_users_deletion_due_selects(
    session: AsyncSession, zone: str
) -> None:
    """Every state by time of the last transition (around the cutoff to the
    microsecond) by deleted or not: the deletion sync's query finds the users
    the pure rule names, with a cutoff in the zone's offset."""
    now = datetime(2026, 9, 6, 12, 0, tzinfo=UTC)  # Santiago: a day without midnight
    cutoff = deletion_cutoff(now, zone)
    at = cutoff.astimezone(UTC)  # times as stored: UTC (wall-time arithmetic in
    # Santiago would step back into the skipped hour)
    moments = [
        at - timedelta(days=2),
        at - TICK,
        at,
        at + TICK,
        now,
    ]
    grid = [
        _grid_user(
            n,
            lifecycle=state.value,
            lifecycle_changed_at=moment,
            deleted_at=deleted,
            user_type="PERSON",
            active=state is not SUSPENDED,
        )
        for n, (state, moment, deleted) in enumerate(product(STATES, moments, DELETED))
    ]
    session.add_all(grid)
    await session.commit()
    expected = {u.id for u in grid if deletion_due(u, cutoff)}
    assert len(expected) == 2 * 2  # two moments before the cutoff, deleted or not
    assert await _ids_where(session, deletion_due_clause(cutoff)) == expected


async def test_after_delete_clause_gives_each_user_the_state_after_delete_gives(
    session: AsyncSession,
) -> None:
    """Every state by every kind (person, service account, unset, another
    text) by deleted or not: the state the batched deletes write is the one
    the pure rule names."""
    grid = [
        _grid_user(n, lifecycle=state.value, user_type=kind, deleted_at=deleted)
        for n, (state, kind, deleted) in enumerate(
            product(STATES, [*KINDS, None, "service_account"], DELETED)
        )
    ]
    session.add_all(grid)
    await session.commit()
    expected = {u.id: after_delete(u).value for u in grid}
    assert set(expected.values()) == {SUSPENDED.value, INACTIVE.value}
    got = dict((await session.execute(select(User.id, after_delete_clause()))).all())
    assert got == expected


async def test_transition_records_the_change_once(session: AsyncSession) -> None:
    """``transition`` moves the user, stamps ``lifecycle_changed_at`` and leaves
    one history row; to the state it is in already, it does nothing."""
    user = _grid_user(0, lifecycle="ACTIVE", lifecycle_changed_at=PAST, user_type="PERSON")
    session.add(user)
    await session.flush()
    actor = Actor(name="admin", request_id="req-7")
    assert lifecycle.transition(session, user, SUSPENDED, "blocked", actor, "why", now=NOW)
    assert not lifecycle.transition(session, user, SUSPENDED, "blocked", actor, now=FUTURE)
    await session.commit()
    stored = (
        await session.execute(
            select(User.lifecycle, User.lifecycle_changed_at).where(User.id == user.id)
        )
    ).one()
    assert tuple(stored) == ("SUSPENDED", NOW)
    rows = (
        await session.execute(
            select(lifecycle.HISTORY).where(lifecycle.HISTORY.c.user_id == user.id)
        )
    ).all()
    assert [
        (r.from_state, r.to_state, r.cause, r.actor, r.message, r.request_id, r.occurred_at)
        for r in rows
    ] == [("ACTIVE", "SUSPENDED", "blocked", "admin", "why", "req-7", NOW)]
