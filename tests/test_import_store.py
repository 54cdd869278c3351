"""The CSV import as the store and its workers run it
(identity_store.imports, identity_sync.csv_import), on SQLite and
PostgreSQL: the rows a SCIM create writes, re-runs that change nothing, a
batch the database refuses whole, a worker that lost its job, and a job
interrupted and finished by another worker."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import counts, imports, jobs, users
from identity_store.actor import Actor
from identity_store.database import create_session_factory
from identity_store.imports import ImportOptions, JobLostError, Totals
from identity_store.jobs import JobKind, JobRecord
from identity_store.models import AuditEntry, JobInput, LifecycleTransition, OutboxEntry, User
from identity_store.store import Store
from identity_store.users import UserInput
from identity_sync.clock import ManualClock
from identity_sync.csv_import import ImportJobs, ImportProgress, ImportRun, Interrupted

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
CREATOR = "token:importer"


def _csv(lines: list[str], header: str = "userName,idpUsername,givenName") -> io.BytesIO:
    return io.BytesIO(("\n".join([header, *lines]) + "\n").encode())


def _people(n: int, start: int = 0) -> list[str]:
    return [f"p{i}@corp.example,p{i},Given{i}" for i in range(start, start + n)]


async def _start(store: Store, data: io.BytesIO, **options: Any) -> JobRecord:
    return await imports.start_import(
        store, data, ImportOptions(**options), now=NOW, created_by=CREATOR, file_name="f.csv"
    )


async def _report(store: Store, job_id: str) -> list[list[Any]]:
    return [entry async for batch in imports.report_entries(store, job_id) for entry in batch]


async def _rows(engine: AsyncEngine, model: Any, *where: Any) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(select(model).where(*where))).all())


async def _count(engine: AsyncEngine, model: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(model))).scalar())


async def test_an_imported_user_has_the_rows_a_scim_create_writes(
    store: Store, engine: AsyncEngine
) -> None:
    """The lifecycle, audit, outbox and count rows of the single-user
    create, with the job as request id and the uploader as actor."""
    job = await _start(store, _csv(["ada@corp.example,ada,Ada", "bo@corp.example,,Bo"]))
    done = await ImportJobs(store, name="w").drain()
    assert done.finished[job.id].startswith("SUCCEEDED")
    [ada] = await _rows(engine, User, User.user_name == "ada@corp.example")
    assert (ada.lifecycle, ada.idp_source, ada.idp_cloud_username) == (
        "ACTIVE",
        "IMPORT",
        "ada@corp.example",
    )
    [bo] = await _rows(engine, User, User.user_name == "bo@corp.example")
    assert bo.lifecycle == "CREATED"  # idp_username missing
    audit = await _rows(engine, AuditEntry, AuditEntry.resource_id == ada.id)
    assert [(a.action, a.actor, a.request_id, a.details) for a in audit] == [
        ("user.create", CREATOR, f"job-{job.id}", {"userName": "ada@corp.example"})
    ]
    outbox = await _rows(engine, OutboxEntry, OutboxEntry.aggregate_id == ada.id)
    assert [(o.target, o.operation, o.payload, o.request_id) for o in outbox] == [
        ("auth0", "upsert", {"version": 1}, f"job-{job.id}")
    ]
    history = await _rows(engine, LifecycleTransition, LifecycleTransition.user_id == ada.id)
    assert [(h.to_state, h.cause, h.actor) for h in history] == [("ACTIVE", "created", CREATOR)]
    async with create_session_factory(engine)() as session:
        assert await counts.total(session, "User") == 2
    # The file is not kept once the job succeeded.
    assert await _count(engine, JobInput) == 0
    # The same user through the single-user use case reads the same.
    record = await users.get_user(store, ada.id)
    assert record.user.given_name == "Ada"


async def test_a_file_imported_again_changes_nothing_and_an_edit_updates(
    store: Store, engine: AsyncEngine
) -> None:
    await _start(store, _csv(_people(30)))
    await ImportJobs(store, name="w").drain()
    before = (await _count(engine, AuditEntry), await _count(engine, OutboxEntry))
    again = await _start(store, _csv(_people(30)))
    await ImportJobs(store, name="w").drain()
    finished = await jobs.get(store, again.id)
    assert finished is not None
    assert Totals.of(finished.summary) == Totals(rows=30, done=30, unchanged=30, last_row=30)
    assert (await _count(engine, AuditEntry), await _count(engine, OutboxEntry)) == before

    edited = _people(30)
    edited[7] = "P7@CORP.EXAMPLE,p7,Seven"
    third = await _start(store, _csv(edited))
    await ImportJobs(store, name="w").drain()
    report = await _report(store, third.id)
    assert [e[2] for e in report].count("updated") == 1
    assert report[7][2:5] == ["updated", report[7][3], "P7@CORP.EXAMPLE"]
    [user] = await _rows(engine, User, User.id == report[7][3])
    assert (user.user_name, user.given_name, user.version) == ("P7@CORP.EXAMPLE", "Seven", 2)
    audit = await _rows(engine, AuditEntry, AuditEntry.resource_id == user.id)
    assert [a.action for a in audit] == ["user.create", "user.import"]


async def test_a_key_twice_in_a_file_is_created_then_updated_in_file_order(
    store: Store, engine: AsyncEngine
) -> None:
    job = await _start(
        store, _csv(["a@corp.example,a,First", "b@corp.example,b,B", "A@corp.example,a,Second"])
    )
    await ImportJobs(store, name="w").drain()
    assert [e[2] for e in await _report(store, job.id)] == ["created", "created", "updated"]
    [user] = await _rows(engine, User, User.user_name_normalized == "a@corp.example")
    assert user.given_name == "Second"


async def test_a_batch_the_database_refuses_whole_is_written_row_by_row(
    store: Store, engine: AsyncEngine
) -> None:
    """Row 1 renames a user to the userName row 2 creates: no look-up
    before the writes can see it, the unique index refuses the batch, and
    row by row only row 2 fails."""
    await _start(store, _csv(["old@corp.example,ext-1"], header="userName,externalId"))
    await ImportJobs(store, name="w").drain()
    job = await _start(
        store,
        _csv(
            ["ext-1,new@corp.example", "ext-2,new@corp.example", "ext-3,other@corp.example"],
            header="externalId,userName",
        ),
        upsert_by="externalId",
    )
    await ImportJobs(store, name="w").drain()
    report = await _report(store, job.id)
    assert [(e[0], e[2], e[5]) for e in report] == [
        (1, "updated", None),
        (2, "failed", "userName 'new@corp.example' is already taken"),
        (3, "created", None),
    ]
    finished = await jobs.get(store, job.id)
    assert finished is not None
    assert finished.summary["failed"] == 1
    assert finished.failures == [
        {
            "row": 2,
            "line": 3,
            "key": "ext-2",
            "error": "userName 'new@corp.example' is already taken",
        }
    ]
    names = {u.user_name for u in await _rows(engine, User)}
    assert names == {"new@corp.example", "other@corp.example"}


async def test_a_worker_whose_lease_ran_out_writes_nothing_more(
    store: Store, engine: AsyncEngine
) -> None:
    lease = timedelta(seconds=60)
    job = await imports.start_import(
        store,
        _csv(_people(4)),
        ImportOptions(),
        now=NOW,
        created_by=CREATOR,
        worker="w1",
        lease=lease,
    )
    later = NOW + lease + timedelta(seconds=1)
    taken = await jobs.claim_next(store, JobKind.IMPORT, worker="w2", now=later, lease=lease)
    assert taken is not None
    assert taken.id == job.id
    rows = [row async for row in imports.read_rows(store, job, store.settings)]
    with pytest.raises(JobLostError):
        await imports.write_batch(
            store,
            job.id,
            rows,
            ImportOptions(),
            Totals(rows=4),
            actor=Actor(name=CREATOR),
            worker="w1",
            now=later,
            lease=lease,
        )
    assert await _count(engine, User) == 0
    assert await _report(store, job.id) == []


async def test_an_interrupted_import_is_finished_by_another_worker(
    store: Store, engine: AsyncEngine
) -> None:
    """Told to stop after its first batch, a worker hands the job back;
    another worker goes on after the last row committed: every row is
    imported and reported once."""
    settings = store.settings.model_copy(update={"import_batch_size": 10})
    store.settings = settings
    job = await _start(store, _csv(_people(35)))
    clock = ManualClock(NOW)
    first = ImportRun(store, name="w1", clock=clock, settings=settings)

    def stop_after_one_batch(progress: ImportProgress) -> None:
        first.stopping.set()

    first.on_progress = stop_after_one_batch
    claimed = await jobs.claim_next(
        store, JobKind.IMPORT, worker="w1", now=clock.now(), lease=first.lease
    )
    assert claimed is not None
    with pytest.raises(Interrupted):
        await first.run_claimed(claimed)
    handed_back = await jobs.get(store, job.id)
    assert handed_back is not None
    assert (handed_back.status, handed_back.summary["lastRow"]) == ("RUNNING", 10)
    assert await _count(engine, User) == 10

    second = ImportJobs(store, name="w2", clock=clock, settings=settings)
    done = await second.drain()
    assert done.jobs == [job.id]
    finished = await jobs.get(store, job.id)
    assert finished is not None
    assert finished.status == "SUCCEEDED"
    assert Totals.of(finished.summary) == Totals(rows=35, done=35, created=35, last_row=35)
    assert [e[0] for e in await _report(store, job.id)] == list(range(1, 36))
    assert await _count(engine, User) == 35
    assert await _count(engine, AuditEntry) == 35


async def test_a_failed_job_keeps_its_file_and_resumes(store: Store, engine: AsyncEngine) -> None:
    """A job that failed (here: its file's options no longer read it) keeps
    its file; ``idstore import --resume`` runs it again from its last row."""
    job = await _start(store, _csv(_people(3)))
    async with create_session_factory(engine)() as session:
        await session.execute(
            JobInput.__table__.update().values(data=b"\xff\xfe\x00")  # type: ignore[attr-defined]
        )
        await session.commit()
    await ImportJobs(store, name="w").drain()
    failed = await jobs.get(store, job.id)
    assert failed is not None
    assert failed.status == "FAILED"
    assert (
        failed.summary["message"] == "column 1 of the header holds bytes that are not valid utf-8"
    )
    assert await _count(engine, JobInput) == 1
    resumed = await ImportRun(store, name="cli").resume(job.id)
    assert resumed is not None
    assert resumed.status == "FAILED"
    with pytest.raises(LookupError, match="no job"):
        await ImportRun(store, name="cli").resume("01ZZZZZZZZZZZZZZZZZZZZZZZZ")


async def test_the_store_refuses_a_user_the_import_would_create_over_a_live_one(
    store: Store, engine: AsyncEngine
) -> None:
    """A user made over SCIM meanwhile is updated, not duplicated."""
    await users.create_user(store, UserInput(user_name="p1@corp.example"), Actor(name="scim"))
    job = await _start(store, _csv(_people(3)))
    await ImportJobs(store, name="w").drain()
    assert [e[2] for e in await _report(store, job.id)] == ["created", "updated", "created"]
    assert await _count(engine, User) == 3
