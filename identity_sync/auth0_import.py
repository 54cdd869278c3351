"""Bulk import jobs for a large backlog of creations (the initial load; SPEC
§6, docs/auth0.md "Bulk import"): the users the store has and Auth0 has not
yet go to Auth0 in files of up to 500 KB (``POST
/api/v2/jobs/users-imports``) instead of one request each.

:class:`ImportRunner` is a :class:`~identity_sync.dispatcher.Companion` of
the dispatcher: the dispatcher calls :meth:`ImportRunner.tick` beside its
rounds, and ``idstore auth0 import`` runs it in the foreground
(:meth:`ImportRunner.run`). A tick:

1. polls its running jobs, each every ``auth0_import_poll_seconds``
   (``GET /api/v2/jobs/{id}``), renewing the job's lease (the ``jobs`` row)
   and the outbox leases of its users, so that no dispatcher delivers them
   meanwhile. When a job completes, its per-user errors are read (``GET
   /api/v2/jobs/{id}/errors``) and kept in the ``jobs`` row; the outbox rows
   of the imported users are completed in one transaction (outcome
   ``imported (job <id>)``, the account's id ``auth0|<user id>`` written as
   ``auth_user_id``: the file names each user's id, so no look-up is needed),
   and each refused user goes back to ordinary delivery, due at once and no
   attempt counted: the dispatcher creates it, or adopts the account that
   made the import refuse it (an e-mail that exists in Auth0 already ends
   adopted, never duplicated). A job that failed as a whole, whose results
   cannot be matched to its users, or that Auth0 has not finished after
   :data:`JOB_TIMEOUT`, gives all its users back the same way and is
   recorded ``FAILED`` with the reason.
2. takes over the jobs of a worker that died (their ``jobs`` lease ran out)
   and goes on polling them;
3. starts jobs while fewer than :data:`MAX_RUNNING_JOBS` import jobs run
   across all workers (counted in the ``jobs`` table) and the backlog is
   above ``auth0_import_threshold`` (0: never; :func:`wants_job`). The
   backlog is the users without an account with due pending rows that no
   worker holds and that never failed
   (:func:`identity_store.accounts.count_backlog`): a user that failed once
   (in a delivery, or in an import job) is left to the dispatcher, so a
   user an import refuses is never put in the next file. The users are
   claimed with their outbox rows (:func:`identity_store.outbox.claim`), read
   as they are now, and those whose plan is to create an account (ENSURE
   with no account known) go in the files; the others are given back at
   once. One ``jobs`` row (kind ``AUTH0_IMPORT``) per Auth0 job, with the
   users, their count and the file's size in ``params``, Auth0's job id in
   ``external_id``, Auth0's summary in ``summary``, and the refused users
   (id, e-mail, errors) in ``failures``.

A worker that dies mid-job leaves both leases to run out: another runner
takes the job over and finishes it, or (when none does first) the
dispatcher delivers its users one by one: a create meets the account the
import made (409, ``auth0|<user id>``) and adopts it. Nothing is created
twice: the account id is the store's id, and e-mails are unique in the
connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from identity_store import accounts, jobs, outbox
from identity_store.accounts import AccountSubject
from identity_store.errors import StoreError
from identity_store.jobs import JobKind, JobRecord, JobStatus
from identity_store.outbox import Claim, Delivered, Failed
from identity_store.settings import Settings
from identity_store.store import Store

from .account_rules import Action, plan
from .auth0 import import_file, split_for_import
from .auth_service import (
    AuthProfile,
    AuthService,
    AuthServiceError,
    ImportFailure,
    ImportStatus,
    Transient,
    current_request_id,
)
from .clock import Clock, SystemClock
from .events import log_event

__all__ = [
    "JOB_TIMEOUT",
    "MAX_RUNNING_JOBS",
    "USERS_PER_CLAIM",
    "ImportProgress",
    "ImportRunner",
    "ImportTotals",
    "wants_job",
]

log = logging.getLogger("idstore.outbox")

MAX_RUNNING_JOBS = 2
"""Import jobs running at once across all workers (Auth0 refuses a third)."""

USERS_PER_CLAIM = 2000
"""Users claimed at a time to fill files (a file of 500 KB holds about
2,000). It bounds the users of one job, hence of one
:func:`identity_store.outbox.complete`, whose statements must stay under
PostgreSQL's 32,767 parameters (about 9 per user)."""

JOB_TIMEOUT = timedelta(hours=1)
"""A job Auth0 has not finished this long after it started is given up:
its users go to the dispatcher (which adopts what the job created after all)."""

MIN_LEASE = timedelta(seconds=30)

REFUSED_PAUSE = timedelta(minutes=10)
"""How long a worker starts no job after Auth0 refused one for good (a
missing scope, an unknown connection): the outbox goes on one by one."""

MAX_START_RETRIES = 10
"""Starts in a row that fail for a passing reason before ``idstore auth0
import`` gives up."""


def wants_job(backlog: int, *, threshold: int, running: int) -> bool:
    """Whether a worker starts an import job now: the threshold is set (0:
    never), fewer than :data:`MAX_RUNNING_JOBS` run, and the backlog is above it."""
    return threshold > 0 and running < MAX_RUNNING_JOBS and backlog > threshold


@dataclass(frozen=True, slots=True)
class ImportProgress:
    """Where one job stands, as the CLI prints it."""

    job_id: str
    external_id: str | None
    state: str
    """``pending``, ``processing``, ``completed``, ``failed`` (Auth0's), or
    ``starting``."""
    users: int
    inserted: int = 0
    updated: int = 0
    failed: int = 0
    finished: bool = False
    message: str | None = None


@dataclass(slots=True)
class ImportTotals:
    """What a runner's jobs did."""

    started: int = 0
    succeeded: int = 0
    failed: int = 0
    imported: int = 0
    """Users whose rows were completed as imported."""
    refused: int = 0
    """Users the jobs refused, given back to the dispatcher."""
    given_back: int = 0
    """Users of failed jobs, or not importable, given back to the dispatcher."""


@dataclass(slots=True)
class _Running:
    """A job this runner polls."""

    job_id: str
    external_id: str | None
    claims: dict[str, Claim]
    """User id -> its claim, while this runner holds it."""
    users: list[str]
    emails: dict[str, str]
    """Lower-case e-mail -> user id (to place an error that names no id)."""
    synced: dict[str, dict[str, Any]] | None
    """User id -> the fields the file sent; ``None`` after a take-over
    (the file is not kept: the next delivery sends every field)."""
    started: datetime
    next_poll: datetime
    lost: int = 0
    """Users whose lease ran out and went to a dispatcher."""
    status: ImportStatus | None = None


@dataclass(slots=True)
class _Pass:
    """What one look for a backlog found (:meth:`ImportRunner._start`)."""

    started: list[str] = field(default_factory=list)
    blocked: bool = False
    """No slot was free (jobs of other workers run)."""
    refused: str | None = None
    """Auth0 refused to start a job for good: why."""
    retry: bool = False
    """Auth0 could not start a job for now (throttled, unavailable)."""


def _summary(status: ImportStatus) -> dict[str, Any]:
    return {
        "state": status.state,
        "total": status.total,
        "inserted": status.inserted,
        "updated": status.updated,
        "failed": status.failed,
    }


class ImportRunner:
    """Runs the bulk import jobs of ``service`` (module docstring)."""

    def __init__(
        self,
        store: Store,
        service: AuthService,
        *,
        clock: Clock | None = None,
        name: str = "import",
        settings: Settings | None = None,
        on_progress: Callable[[ImportProgress], None] | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.target = service.name
        self.clock: Clock = clock or SystemClock()
        self.name = name
        self.settings: Settings = settings or store.settings
        self.on_progress = on_progress
        self.poll = timedelta(seconds=self.settings.auth0_import_poll_seconds)
        self.lease = max(
            timedelta(seconds=self.settings.outbox_lease_seconds), self.poll * 3, MIN_LEASE
        )
        self.totals = ImportTotals()
        self._jobs: dict[str, _Running] = {}
        self._cursor: str | None = None
        self._next_look: datetime | None = None
        self._holding = False
        self._next_start: datetime | None = None

    @property
    def running(self) -> int:
        """Jobs this runner polls now."""
        return len(self._jobs)

    # -- The dispatcher's companion -----------------------------------------------

    async def tick(self) -> bool:
        """Poll what is due, take over jobs of dead workers, start jobs when
        the backlog is above the threshold; whether a job of this runner is
        still running."""
        now = self.clock.now()
        await self._poll_due(now)
        if self._next_look is None or now >= self._next_look:
            self._next_look = now + self.poll
            # Looked at once per poll (one count, capped at the threshold): a
            # backlog that appears between two looks may see up to a poll's
            # worth of creations sent one by one before the jobs take over.
            self._holding = self._may_start(now) and await self._above_threshold(now, 0)
            await self._take_over(now)
            if self._may_start(now):
                found = await self._start(now, force=False)
                if found.refused is not None:
                    self._next_start = now + REFUSED_PAUSE
                    log.warning(
                        "auth0 import: Auth0 refused an import job (%s); none is started "
                        "before %s, the dispatcher delivers one by one",
                        found.refused,
                        self._next_start.isoformat(timespec="seconds"),
                    )
                    self._holding = False  # creations go one by one meanwhile
        return bool(self._jobs)

    @property
    def holds_creations(self) -> bool:
        """Whether the backlog was above the threshold at the last look:
        the dispatcher leaves account creations to the import jobs then."""
        return self._holding

    def _may_start(self, now: datetime) -> bool:
        if self.settings.auth0_import_threshold <= 0 or not self.settings.auth0_connection_id:
            return False
        return self._next_start is None or now >= self._next_start

    async def close(self) -> None:
        """Hand the running jobs back (the next worker takes them over at
        once) with their users' outbox leases."""
        now = self.clock.now()
        for job in list(self._jobs.values()):
            await jobs.release(self.store, job.job_id, worker=self.name, now=now)
            await outbox.release(self.store, list(job.claims.values()), worker=self.name)
            log_event(log, "import_released", job=job.job_id, auth0_job=job.external_id)
        self._jobs.clear()

    # -- In the foreground -----------------------------------------------------------

    async def run(self) -> ImportTotals:
        """Import the whole backlog whatever its size (``idstore auth0
        import``): start jobs while slots are free, poll them, until no job of
        this runner runs and the backlog has nothing left to import. Users
        refused or not importable are left to the dispatcher."""
        retries = 0
        while True:
            now = self.clock.now()
            await self._poll_due(now)
            await self._take_over(now)
            found = await self._start(now, force=True)
            if found.refused is not None:
                await self._finish_running()
                raise AuthServiceError(f"Auth0 refused an import job: {found.refused}")
            retries = retries + 1 if found.retry else 0
            if retries > MAX_START_RETRIES:
                await self._finish_running()
                raise AuthServiceError(
                    f"Auth0 could not start an import job {retries} times in a row"
                )
            if not self._jobs and not found.started and not found.blocked and not found.retry:
                return self.totals
            await self.clock.sleep(self.poll.total_seconds())

    async def _finish_running(self) -> None:
        """Poll this runner's jobs until they end (a refusal stops the
        starts, not the jobs Auth0 took)."""
        while self._jobs:
            await self.clock.sleep(self.poll.total_seconds())
            await self._poll_due(self.clock.now())

    # -- Starting jobs -------------------------------------------------------------

    async def _start(self, now: datetime, *, force: bool) -> _Pass:
        found = _Pass()
        running = await jobs.count_running(self.store, JobKind.AUTH0_IMPORT)
        slots = MAX_RUNNING_JOBS - running
        if slots <= 0:
            found.blocked = await self._has_backlog(now, 1)
            return found
        wrapped = self._cursor is None
        while slots > 0:
            if not force and not await self._above_threshold(now, MAX_RUNNING_JOBS - slots):
                break
            ids = await accounts.backlog_without_account(
                self.store, self.target, now=now, after=self._cursor, limit=USERS_PER_CLAIM
            )
            if not ids:
                if wrapped:
                    break
                self._cursor, wrapped = None, True
                continue
            self._cursor = ids[-1]
            files = await self._claim_files(ids, now)
            for part in files:
                if slots <= 0 or found.refused is not None:
                    await outbox.release(self.store, [c for c, _ in part], worker=self.name)
                    continue
                job_id, refused = await self._start_job(part, now)
                if job_id is not None:
                    found.started.append(job_id)
                    slots -= 1
                elif refused is not None:
                    found.refused = refused
                else:
                    found.retry = True
                    slots = 0
            if found.refused is not None or found.retry:
                break
        return found

    async def _above_threshold(self, now: datetime, running: int) -> bool:
        threshold = self.settings.auth0_import_threshold
        backlog = await accounts.count_backlog(
            self.store, self.target, now=now, limit=threshold + 1
        )
        return wants_job(backlog, threshold=threshold, running=running)

    async def _has_backlog(self, now: datetime, limit: int) -> bool:
        return await accounts.count_backlog(self.store, self.target, now=now, limit=limit) > 0

    async def _claim_files(
        self, ids: Sequence[str], now: datetime
    ) -> list[list[tuple[Claim, AuthProfile]]]:
        """Claim ``ids``' rows; the users to import, cut into files (the
        others are given back)."""
        claims = await outbox.claim(
            self.store,
            self.target,
            worker=self.name,
            now=now,
            lease=self.lease,
            limit=len(ids),
            aggregate_ids=ids,
        )
        if not claims:
            return []
        found = await accounts.subjects(self.store, self.target, [c.aggregate_id for c in claims])
        importable: list[tuple[Claim, AuthProfile]] = []
        others: list[Claim] = []
        for c in claims:
            profile = self._importable(found.get(c.aggregate_id), c)
            if profile is None:
                others.append(c)
            else:
                importable.append((c, profile))
        if others:
            await outbox.release(self.store, others, worker=self.name)
            self.totals.given_back += len(others)
        if not importable:
            return []
        by_user = {p.user_id: (c, p) for c, p in importable}
        return [
            [by_user[p.user_id] for p in part]
            for part in split_for_import([p for _, p in importable])
        ]

    def _importable(self, subject: AccountSubject | None, claim: Claim) -> AuthProfile | None:
        if subject is None or claim.aggregate_type != "User":
            return None
        return self.importable(subject)

    def importable(
        self, subject: AccountSubject, *, activation: bool = False
    ) -> AuthProfile | None:
        """The profile to import for ``subject``: its plan is to create an
        account (ENSURE, none known). An ``activation`` (a bulk activation
        job, :mod:`identity_sync.bulk_activation`) creates one even when the
        user's group has ``authUserCreationDisabled``: that is what it is for."""
        if activation and subject.creation_disabled:
            subject = replace(subject, creation_disabled=False)
        p = plan(subject, hard_delete=self.settings.hard_delete)
        if p.action is not Action.ENSURE or p.remote_id is not None or p.profile is None:
            return None
        return p.profile

    async def slots(self) -> int:
        """Import jobs that may start now across all workers."""
        return MAX_RUNNING_JOBS - await jobs.count_running(self.store, JobKind.AUTH0_IMPORT)

    async def poll_jobs(self) -> bool:
        """Poll this runner's jobs that are due and take over those of dead
        workers (what :meth:`tick` does besides starting jobs); whether a
        job of this runner still runs."""
        now = self.clock.now()
        await self._poll_due(now)
        await self._take_over(now)
        return bool(self._jobs)

    async def start_file(
        self, part: list[tuple[Claim, AuthProfile]], now: datetime, *, created_by: str
    ) -> tuple[str | None, str | None]:
        """One import job of ``part`` (claimed users, one file's worth),
        recorded as created by ``created_by``; its ``jobs`` id, or (``None``,
        why Auth0 refused it for good), or (``None``, ``None``) when it could
        not start for now. Either way, the users of a job that did not start
        are handed back."""
        return await self._start_job(part, now, created_by=created_by)

    async def _start_job(
        self, part: list[tuple[Claim, AuthProfile]], now: datetime, *, created_by: str | None = None
    ) -> tuple[str | None, str | None]:
        """One Auth0 job of ``part``; its ``jobs`` id, or why Auth0 refused it."""
        profiles = [p for _, p in part]
        users = [p.user_id for p in profiles]
        size = len(import_file(profiles))
        row = await jobs.create(
            self.store,
            JobKind.AUTH0_IMPORT,
            now=now,
            params={
                "users": users,
                "count": len(users),
                "bytes": size,
                "connection": self.settings.auth0_connection,
            },
            summary={"state": "starting"},
            created_by=created_by or self.name,
            worker=self.name,
            lease=self.lease,
        )
        token = current_request_id.set(f"job-{row.id}")
        try:
            external = await self.service.start_import(profiles, upsert=False)
        except (AuthServiceError, ValueError) as exc:
            message = exc.message if isinstance(exc, AuthServiceError) else str(exc)
            await outbox.release(self.store, [c for c, _ in part], worker=self.name)
            await jobs.finish(
                self.store,
                row.id,
                worker=self.name,
                now=self.clock.now(),
                status=JobStatus.FAILED,
                message=f"Auth0 did not start the job: {message}",
            )
            self.totals.failed += 1
            log_event(log, "import_not_started", job=row.id, users=len(users), error=message)
            if isinstance(exc, Transient):
                return None, None  # a slot may free later: no reason to stop
            return None, message
        finally:
            current_request_id.reset(token)
        await jobs.record(
            self.store,
            row.id,
            worker=self.name,
            now=self.clock.now(),
            external_id=external,
            summary={"state": "pending"},
        )
        self._jobs[row.id] = _Running(
            job_id=row.id,
            external_id=external,
            claims={c.aggregate_id: c for c, _ in part},
            users=users,
            emails={p.email.lower(): p.user_id for p in profiles},
            synced={p.user_id: p.fields() for p in profiles},
            started=now,
            next_poll=now + self.poll,
        )
        self.totals.started += 1
        log_event(
            log, "import_started", job=row.id, auth0_job=external, users=len(users), bytes=size
        )
        self._report(self._jobs[row.id], "pending")
        return row.id, None

    # -- Taking over jobs of dead workers -------------------------------------------

    async def _take_over(self, now: datetime) -> None:
        taken = await jobs.take_over_expired(
            self.store,
            JobKind.AUTH0_IMPORT,
            worker=self.name,
            now=now,
            lease=self.lease,
            limit=MAX_RUNNING_JOBS,
        )
        for row in taken:
            await self._adopt(row, now)

    async def _adopt(self, row: JobRecord, now: datetime) -> None:
        users = [str(u) for u in row.params.get("users", [])]
        claims: dict[str, Claim] = {}
        for start in range(0, len(users), USERS_PER_CLAIM):
            chunk = users[start : start + USERS_PER_CLAIM]
            for c in await outbox.claim(
                self.store,
                self.target,
                worker=self.name,
                now=now,
                lease=self.lease,
                limit=len(chunk),
                aggregate_ids=chunk,
            ):
                claims[c.aggregate_id] = c
        emails: dict[str, str] = {}
        for start in range(0, len(users), USERS_PER_CLAIM):
            found = await accounts.subjects(
                self.store, self.target, users[start : start + USERS_PER_CLAIM]
            )
            emails.update({s.email.lower(): i for i, s in found.items() if s.email})
        job = _Running(
            job_id=row.id,
            external_id=row.external_id,
            claims=claims,
            users=users,
            emails=emails,
            synced=None,
            started=row.started_at or row.created_at,
            next_poll=now,
            lost=len(users) - len(claims),
        )
        self._jobs[row.id] = job
        log_event(
            log,
            "import_taken_over",
            job=row.id,
            auth0_job=row.external_id,
            users=len(users),
            held=len(claims),
        )

    # -- Polling ----------------------------------------------------------------

    async def _poll_due(self, now: datetime) -> None:
        for job in list(self._jobs.values()):
            if job.next_poll > now:
                continue
            try:
                await self._poll(job)
            except StoreError:
                raise  # the dispatcher's loop waits for the store to come back
            except Exception:  # one broken job must not stop the dispatcher: polled again
                log.exception("auth0 import: polling job %s failed", job.job_id)

    async def _poll(self, job: _Running) -> None:
        now = self.clock.now()
        job.next_poll = now + self.poll
        if not await jobs.heartbeat(
            self.store, job.job_id, worker=self.name, now=now, lease=self.lease
        ):
            # Taken over by another worker after this one stalled: its now.
            await outbox.release(self.store, list(job.claims.values()), worker=self.name)
            del self._jobs[job.job_id]
            log_event(log, "import_lost", job=job.job_id, auth0_job=job.external_id)
            return
        held = await outbox.renew(
            self.store, self.target, list(job.claims), worker=self.name, until=now + self.lease
        )
        for user_id in set(job.claims) - held:
            del job.claims[user_id]
            job.lost += 1
        if job.external_id is None:
            await self._give_up(job, "the worker stopped before Auth0 named the job")
            return
        token = current_request_id.set(f"job-{job.job_id}")
        failures: list[ImportFailure] = []
        try:
            status = await self.service.import_status(job.external_id)
            if status.state == "completed":
                failures = await self.service.import_errors(job.external_id)
        except Transient as exc:
            log_event(log, "import_poll_failed", job=job.job_id, error=exc.message)
            return
        except AuthServiceError as exc:
            await self._give_up(job, f"Auth0 cannot tell how the job went: {exc.message}")
            return
        finally:
            current_request_id.reset(token)
        job.status = status
        if status.state == "completed":
            await self._completed(job, status, failures)
        elif status.state == "failed":
            await self._give_up(job, f"the job failed: {status.message or 'no reason given'}")
        elif now - job.started > JOB_TIMEOUT:
            await self._give_up(job, f"Auth0 has not finished the job after {JOB_TIMEOUT}")
        else:
            await jobs.record(
                self.store, job.job_id, worker=self.name, now=now, summary=_summary(status)
            )
            self._report(job, status.state)

    async def _completed(
        self, job: _Running, status: ImportStatus, failures: list[ImportFailure]
    ) -> None:
        users = set(job.users)
        refused: dict[str, ImportFailure] = {}
        unmatched = 0
        for f in failures:
            user_id = f.user_id if f.user_id in users else None
            if user_id is None and f.email:
                user_id = job.emails.get(f.email.lower())
            if user_id is None:
                unmatched += 1
            else:
                refused[user_id] = f
        accounted = status.inserted + status.updated + len(refused)
        if unmatched or accounted != len(users):
            await self._give_up(
                job,
                f"Auth0's results do not match the job's {len(users)} users "
                f"({status.inserted} inserted, {status.updated} updated, {len(failures)} "
                f"refused, {unmatched} of them unknown)",
                status=status,
                failures=failures,
            )
            return
        now = self.clock.now()
        outcome = f"imported (job {job.job_id})"
        delivered = []
        for user_id, c in job.claims.items():
            if user_id in refused:
                continue
            synced = job.synced.get(user_id) if job.synced is not None else None
            delivered.append(
                Delivered(
                    c,
                    outcome,
                    remote_id=self.service.remote_id(user_id),
                    synced=synced,
                    set_auth_user_id=True,
                )
            )
        given_back = [
            Failed(
                c,
                f"import job {job.job_id} refused the user: "
                + ("; ".join(refused[user_id].errors) or "no reason given"),
                retry_at=now,
                counts=False,
            )
            for user_id, c in job.claims.items()
            if user_id in refused
        ]
        await outbox.complete(self.store, delivered, worker=self.name, now=now)
        await outbox.fail(self.store, given_back, worker=self.name, now=now)
        summary = {
            **_summary(status),
            "imported": len(delivered),
            "given_back": len(given_back),
            "lost": job.lost,
        }
        await jobs.finish(
            self.store,
            job.job_id,
            worker=self.name,
            now=now,
            status=JobStatus.SUCCEEDED,
            summary=summary,
            failures=[_failure(f, user_id) for user_id, f in refused.items()],
        )
        del self._jobs[job.job_id]
        self.totals.succeeded += 1
        self.totals.imported += len(delivered)
        self.totals.refused += len(given_back)
        log_event(
            log,
            "import_finished",
            job=job.job_id,
            auth0_job=job.external_id,
            imported=len(delivered),
            refused=len(refused),
            lost=job.lost,
        )
        self._report(job, "completed", finished=True)

    async def _give_up(
        self,
        job: _Running,
        message: str,
        *,
        status: ImportStatus | None = None,
        failures: Sequence[ImportFailure] = (),
    ) -> None:
        """End ``job`` ``FAILED`` with ``message``: every user it holds goes
        back to ordinary delivery, due now, no attempt counted."""
        now = self.clock.now()
        given_back = [
            Failed(c, f"import job {job.job_id}: {message}", retry_at=now, counts=False)
            for c in job.claims.values()
        ]
        await outbox.fail(self.store, given_back, worker=self.name, now=now)
        last = status or job.status
        summary: dict[str, Any] = _summary(last) if last is not None else {}
        summary.update(given_back=len(given_back), lost=job.lost)
        await jobs.finish(
            self.store,
            job.job_id,
            worker=self.name,
            now=now,
            status=JobStatus.FAILED,
            summary=summary,
            failures=[_failure(f, f.user_id) for f in failures],
            message=message,
        )
        del self._jobs[job.job_id]
        self.totals.failed += 1
        self.totals.given_back += len(given_back)
        log_event(log, "import_failed", job=job.job_id, auth0_job=job.external_id, error=message)
        self._report(job, "failed", finished=True, message=message)

    def _report(
        self, job: _Running, state: str, *, finished: bool = False, message: str | None = None
    ) -> None:
        if self.on_progress is None:
            return
        s = job.status
        self.on_progress(
            ImportProgress(
                job_id=job.job_id,
                external_id=job.external_id,
                state=state,
                users=len(job.users),
                inserted=s.inserted if s else 0,
                updated=s.updated if s else 0,
                failed=s.failed if s else 0,
                finished=finished,
                message=message,
            )
        )


def _failure(f: ImportFailure, user_id: str | None) -> dict[str, Any]:
    return {"user_id": user_id, "email": f.email, "errors": list(f.errors)}
