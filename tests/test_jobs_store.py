"""The ``jobs`` table as the import and password-ticket jobs use it
(identity_store/jobs.py), on SQLite and PostgreSQL: leases, take-over,
progress, failures kept and counted, finishing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from identity_store import jobs
from identity_store.jobs import JobKind, JobStatus
from identity_store.settings import Settings
from identity_store.store import Store

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
IMPORT = JobKind.AUTH0_IMPORT


async def test_a_job_created_held_is_running_and_kept_as_given(store: Store) -> None:
    job = await jobs.create(
        store,
        IMPORT,
        now=NOW,
        params={"users": ["a", "b"], "count": 2},
        created_by="worker-1",
        worker="w1",
        lease=LEASE,
    )
    assert (job.kind, job.status, job.locked_by) == ("AUTH0_IMPORT", "RUNNING", "w1")
    assert job.locked_until == NOW + LEASE
    assert job.started_at == NOW
    assert job.held(NOW)
    assert not job.held(NOW + LEASE)
    stored = await jobs.get(store, job.id)
    assert stored == job
    assert stored is not None
    assert stored.params == {"users": ["a", "b"], "count": 2}


async def test_a_queued_job_is_not_held_until_claimed(store: Store) -> None:
    job = await jobs.create(store, JobKind.BULK_PASSWORD_CHANGE, now=NOW)
    assert (job.status, job.locked_by, job.started_at) == ("QUEUED", None, None)
    taken = await jobs.claim(store, job.id, worker="cli", now=NOW, lease=LEASE)
    assert taken is not None
    assert (taken.status, taken.locked_by) == ("RUNNING", "cli")
    assert taken.started_at == NOW


async def test_a_held_job_is_claimed_by_no_one_else_until_its_lease_runs_out(store: Store) -> None:
    job = await jobs.create(store, IMPORT, now=NOW, worker="w1", lease=LEASE)
    assert await jobs.claim(store, job.id, worker="w2", now=NOW + LEASE / 2, lease=LEASE) is None
    assert await jobs.take_over_expired(store, IMPORT, worker="w2", now=NOW, lease=LEASE) == []
    later = NOW + LEASE + timedelta(seconds=1)
    taken = await jobs.take_over_expired(store, IMPORT, worker="w2", now=later, lease=LEASE)
    assert [(j.id, j.locked_by, j.locked_until) for j in taken] == [(job.id, "w2", later + LEASE)]
    assert taken[0].started_at == NOW  # the start is the first worker's
    # The first worker, back from a pause, finds the job is not its own any more.
    assert not await jobs.heartbeat(store, job.id, worker="w1", now=later, lease=LEASE)
    assert await jobs.record(store, job.id, worker="w1", now=later, summary={"x": 1}) is None
    assert await jobs.heartbeat(store, job.id, worker="w2", now=later, lease=LEASE)


async def test_only_expired_jobs_of_the_kind_asked_for_are_taken_over(store: Store) -> None:
    other = await jobs.create(store, JobKind.BULK_PASSWORD_CHANGE, now=NOW, worker="w", lease=LEASE)
    mine = await jobs.create(store, IMPORT, now=NOW, worker="w", lease=LEASE)
    later = NOW + LEASE * 2
    taken = await jobs.take_over_expired(store, IMPORT, worker="w2", now=later, lease=LEASE)
    assert [j.id for j in taken] == [mine.id]
    assert (await jobs.get(store, other.id)).locked_by == "w"  # type: ignore[union-attr]


async def test_concurrent_claims_give_the_job_to_one_worker(
    settings: Settings, store: Store
) -> None:
    job = await jobs.create(store, IMPORT, now=NOW)
    stores = [await Store.open(settings) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(
                jobs.claim(s, job.id, worker=f"w{i}", now=NOW, lease=LEASE)
                for i, s in enumerate(stores)
            )
        )
    finally:
        for s in stores:
            await s.close()
    winners = [r.locked_by for r in results if r is not None]
    assert len(winners) == 1
    assert (await jobs.get(store, job.id)).locked_by == winners[0]  # type: ignore[union-attr]


async def test_record_merges_the_summary_and_keeps_failures_up_to_the_cap_counting_all(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "MAX_FAILURES", 3)
    job = await jobs.create(store, IMPORT, now=NOW, worker="w", lease=LEASE)
    first = await jobs.record(
        store,
        job.id,
        worker="w",
        now=NOW,
        summary={"state": "pending", "total": 5},
        failures=[{"user_id": "a", "errors": ["bad"]}, {"user_id": "b", "errors": ["bad"]}],
        external_id="job_abc",
        lease=LEASE,
    )
    assert first is not None
    assert first.summary == {"state": "pending", "total": 5, "failures": 2}
    assert first.external_id == "job_abc"
    second = await jobs.record(
        store,
        job.id,
        worker="w",
        now=NOW + timedelta(seconds=5),
        summary={"state": "completed"},
        failures=[{"user_id": c} for c in "cde"],
    )
    assert second is not None
    assert [f["user_id"] for f in second.failures] == ["a", "b", "c"]
    assert second.failures_total == 5
    assert second.summary == {"state": "completed", "total": 5, "failures": 5}
    assert second.locked_until == NOW + LEASE  # no lease given: not renewed


async def test_finish_closes_the_job_and_only_its_owner_can(store: Store) -> None:
    job = await jobs.create(store, IMPORT, now=NOW, worker="w", lease=LEASE)
    assert await jobs.finish(store, job.id, worker="x", now=NOW, status=JobStatus.SUCCEEDED) is None
    done = await jobs.finish(
        store,
        job.id,
        worker="w",
        now=NOW + timedelta(minutes=1),
        status=JobStatus.FAILED,
        summary={"state": "failed"},
        failures=[{"user_id": None, "errors": ["whole file refused"]}],
        message="the job failed: bad file",
    )
    assert done is not None
    assert (done.status, done.locked_by, done.locked_until) == ("FAILED", None, None)
    assert done.finished_at == NOW + timedelta(minutes=1)
    assert done.summary == {"state": "failed", "message": "the job failed: bad file", "failures": 1}
    assert done.finished
    # Finished: nobody takes it over, a resume may take it back.
    assert await jobs.claim(store, job.id, worker="y", now=NOW + LEASE * 5, lease=LEASE) is None
    resumed = await jobs.claim(
        store, job.id, worker="y", now=NOW + LEASE * 5, lease=LEASE, resume_failed=True
    )
    assert resumed is not None
    assert (resumed.status, resumed.finished_at) == ("RUNNING", None)
    with pytest.raises(ValueError, match="SUCCEEDED, FAILED or CANCELLED"):
        await jobs.finish(store, job.id, worker="y", now=NOW, status=JobStatus.RUNNING)


async def test_a_released_job_is_taken_over_at_once(store: Store) -> None:
    job = await jobs.create(store, IMPORT, now=NOW, worker="w", lease=LEASE)
    released = await jobs.release(store, job.id, worker="w", now=NOW, summary={"note": "stopping"})
    assert released is not None
    assert released.status == "RUNNING"
    taken = await jobs.take_over_expired(store, IMPORT, worker="w2", now=NOW, lease=LEASE)
    assert [j.summary["note"] for j in taken] == ["stopping"]


async def test_count_and_list_jobs(store: Store) -> None:
    a = await jobs.create(store, IMPORT, now=NOW, worker="w", lease=LEASE)
    b = await jobs.create(store, IMPORT, now=NOW + timedelta(seconds=1), worker="w", lease=LEASE)
    c = await jobs.create(store, JobKind.BULK_PASSWORD_CHANGE, now=NOW + timedelta(seconds=2))
    assert await jobs.count_running(store, IMPORT) == 2
    # A job whose worker died (lease run out) still runs at the remote end: it counts.
    assert not b.held(NOW + LEASE * 2)
    assert await jobs.count_running(store, "AUTH0_IMPORT") == 2
    await jobs.finish(store, a.id, worker="w", now=NOW, status=JobStatus.SUCCEEDED)
    assert await jobs.count_running(store, IMPORT) == 1
    assert [j.id for j in await jobs.list_jobs(store)] == [c.id, b.id, a.id]
    assert [j.id for j in await jobs.list_jobs(store, kind=IMPORT)] == [b.id, a.id]
    assert [j.id for j in await jobs.list_jobs(store, status=JobStatus.SUCCEEDED)] == [a.id]
    assert [j.id for j in await jobs.list_jobs(store, limit=1)] == [c.id]
    assert await jobs.get(store, "01NOSUCHJOB0000000000000000") is None


async def test_an_unknown_kind_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="NOT_A_KIND"):
        await jobs.create(store, "NOT_A_KIND", now=NOW)
