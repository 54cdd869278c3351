"""Password-change tickets in bulk (SPEC §1, the User Manager Service's bulk
change-password; docs/auth0.md "Password-change tickets"): a ticket (``POST
/api/v2/tickets/password-change``) for each user of a selection, at
``auth0_password_tickets_per_second``, as a job with its status in the
``jobs`` table (kind ``BULK_PASSWORD_CHANGE``).

The selection (``params["selection"]``) is a list of user ids, a user
group, or every live user. The job goes through it in id order, a page of
:data:`PAGE_SIZE` users at a time, and after each page records where it
stands (``summary``: ``after`` the last user done, counts) with that page's
failures, having flushed the tickets of the page to the output first. So a
job interrupted (Ctrl-C, a crash, a lost lease) and run again (``--resume
JOB_ID``) goes on after the last page recorded: the users done are skipped
(at most the users of one page get a second ticket, if it stopped between
writing their tickets and recording the page).

A user without an Auth0 account (none known to the store, or Auth0 answers
404), a user id that is not a live user, and a ticket Auth0 refuses are
failures of the job (user id, e-mail, error); a ticket that fails for a
passing reason (5xx, throttling) is tried again, up to
:data:`MAX_ATTEMPTS`, waiting as the answer says.

Ticket URLs are secrets (whoever has one sets the password): they go to the
:class:`TicketSink` only, never to the job's row or a log line: ``idstore
auth0 password-change --out FILE`` writes a CSV file of mode 0600; a job
asked for through the management API (run by the worker,
:mod:`identity_sync.bulk_jobs`) keeps them in the store until they expire
(:class:`KeptTickets`), for ``admin`` tokens to read.

Pacing goes through the injected clock (each ticket waits until ``1 /
rate`` after the previous one), within the tenant's budget that the client's
rate limiter applies to every request.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from identity_store import accounts, jobs, password_tickets
from identity_store.accounts import MAX_USERS_LISTED, AccountSubject, Selection
from identity_store.jobs import JobKind, JobRecord, JobStatus
from identity_store.settings import Settings
from identity_store.store import Store

from .account_rules import RetryPolicy, backoff
from .auth_service import AuthService, AuthServiceError, NotFound, Transient, current_request_id
from .clock import Clock, SystemClock
from .events import log_event

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_USERS_LISTED",
    "PAGE_SIZE",
    "JobLost",
    "KeptTickets",
    "Selection",
    "TicketProgress",
    "TicketRun",
    "TicketSink",
    "create_job",
    "unknown_users",
]

log = logging.getLogger("idstore.auth0")

PAGE_SIZE = 20
"""Users per page: the job records where it stands after each."""

MAX_ATTEMPTS = 5
"""Tries of one ticket that fails for a passing reason (throttling not counted)."""

MAX_THROTTLED = 20
"""Throttled answers one ticket waits through before it is a failure."""

RETRY = RetryPolicy(max_attempts=MAX_ATTEMPTS, base_seconds=1.0, max_seconds=60.0)

NO_ACCOUNT = "no Auth0 account"


class JobLost(Exception):
    """The job is no longer this worker's (its lease ran out and another took it)."""


class TicketSink(Protocol):
    """Where ticket URLs go (never a log, never the job's row)."""

    def write(self, user_id: str, email: str | None, url: str) -> None: ...

    def flush(self) -> Awaitable[None] | None:
        """Make what was written durable (before the job records the page);
        an awaitable when that takes the store."""
        ...


class KeptTickets:
    """The sink of jobs asked for through the management API: each page's
    tickets kept in the store (:mod:`identity_store.password_tickets`,
    ``admin`` tokens read them) until Auth0 lets them expire
    (``auth0_ticket_ttl_seconds`` after they were made)."""

    def __init__(self, store: Store, job_id: str, clock: Clock) -> None:
        self.store = store
        self.job_id = job_id
        self.clock = clock
        self.ttl = timedelta(seconds=store.settings.auth0_ticket_ttl_seconds)
        self._page: list[tuple[str, str | None, str]] = []
        self._made_at: datetime | None = None

    def write(self, user_id: str, email: str | None, url: str) -> None:
        if self._made_at is None:
            self._made_at = self.clock.now()
        self._page.append((user_id, email, url))

    async def flush(self) -> None:
        if not self._page or self._made_at is None:
            return
        page, made_at = self._page, self._made_at
        await password_tickets.keep(
            self.store, self.job_id, page, now=made_at, expires_at=made_at + self.ttl
        )
        self._page, self._made_at = [], None


@dataclass(frozen=True, slots=True)
class TicketProgress:
    """Where a job stands, after each page."""

    job_id: str
    done: int
    total: int | None
    tickets: int
    failed: int


async def unknown_users(store: Store, selection: Selection) -> list[dict[str, Any]]:
    """The ids a selection names that are no live user, as failures of its
    job (reported once, at the start)."""
    if selection.user_ids is None:
        return []
    wanted = sorted(set(selection.user_ids))
    live: set[str] = set()
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        live.update(await accounts.user_ids(store, after=None, limit=1000, ids=chunk))
    return [
        {"user_id": u, "email": None, "error": "no such live user"} for u in wanted if u not in live
    ]


async def create_job(
    store: Store, selection: Selection, *, now: datetime, created_by: str | None
) -> JobRecord:
    """A ``BULK_PASSWORD_CHANGE`` job of ``selection``, queued."""
    return await jobs.create(
        store,
        JobKind.BULK_PASSWORD_CHANGE,
        now=now,
        params={"selection": selection.params()},
        summary={"done": 0, "tickets": 0, "failed": 0},
        created_by=created_by,
    )


class TicketRun:
    """Runs password-change ticket jobs in the foreground (module docstring)."""

    def __init__(
        self,
        store: Store,
        service: AuthService,
        sink: TicketSink,
        *,
        clock: Clock | None = None,
        name: str = "tickets",
        settings: Settings | None = None,
        on_progress: Callable[[TicketProgress], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.sink = sink
        self.clock: Clock = clock or SystemClock()
        self.name = name
        self.settings: Settings = settings or store.settings
        self.on_progress = on_progress
        self.rng = rng or random.Random()  # noqa: S311 - retry jitter, not a secret
        self.interval = 1.0 / self.settings.auth0_password_tickets_per_second
        page_time = timedelta(seconds=self.interval * PAGE_SIZE * 2)
        self.lease = max(timedelta(seconds=self.settings.outbox_lease_seconds), page_time * 3)
        self._next_at = 0.0

    async def run(self, job_id: str) -> JobRecord:
        """Run (or resume) the job until it is done; the job as it ended.

        :raises LookupError: No such job, or one held by a live worker, or
            finished (``SUCCEEDED``, ``CANCELLED``).
        :raises JobLost: The job was taken over by another worker meanwhile.
        """
        now = self.clock.now()
        job = await jobs.claim(self.store, job_id, worker=self.name, now=now, lease=self.lease)
        if job is None:
            job = await jobs.claim(
                self.store, job_id, worker=self.name, now=now, lease=self.lease, resume_failed=True
            )
        if job is None:
            raise LookupError(await self._why_not(job_id))
        if job.kind != JobKind.BULK_PASSWORD_CHANGE.value:
            await jobs.release(self.store, job.id, worker=self.name, now=now)
            raise LookupError(f"job {job_id} is a {job.kind} job, not BULK_PASSWORD_CHANGE")
        token = current_request_id.set(f"job-{job.id}")
        try:
            return await self._run(job)
        except BaseException:
            # Interrupted (Ctrl-C, a failure of the store or of the output):
            # handed back as it stands, for --resume.
            await self._hand_back(job.id)
            raise
        finally:
            current_request_id.reset(token)

    async def _why_not(self, job_id: str) -> str:
        job = await jobs.get(self.store, job_id)
        if job is None:
            return f"no job {job_id}"
        if job.held(self.clock.now()):
            return f"job {job_id} is running in {job.locked_by} (lease until {job.locked_until})"
        return f"job {job_id} is {job.status}: nothing to resume"

    async def _hand_back(self, job_id: str) -> None:
        try:
            await jobs.release(self.store, job_id, worker=self.name, now=self.clock.now())
        except Exception:  # the store may be what failed: the lease runs out then
            log.warning("password tickets: job %s could not be handed back", job_id)

    async def _run(self, job: JobRecord) -> JobRecord:
        selection = Selection.of(dict(job.params.get("selection") or {}))
        summary = dict(job.summary)
        done = int(summary.get("done", 0))
        tickets = int(summary.get("tickets", 0))
        failed = int(summary.get("failed", 0))
        after: str | None = summary.get("after")
        if "total" not in summary:
            failures = await unknown_users(self.store, selection)
            summary["total"] = await self._total(selection) + len(failures)
            failed += len(failures)
            done += len(failures)
            recorded = await jobs.record(
                self.store,
                job.id,
                worker=self.name,
                now=self.clock.now(),
                lease=self.lease,
                summary={"total": summary["total"], "failed": failed, "done": done},
                failures=failures,
            )
            if recorded is None:
                raise JobLost(job.id)
        total = int(summary["total"])
        log_event(log, "tickets_started", job=job.id, selection=selection.describe(), after=after)
        while True:
            ids = await selection.page(self.store, after=after, limit=PAGE_SIZE)
            if not ids:
                break
            found = await accounts.subjects(self.store, self.service.name, ids)
            page_failures: list[dict[str, Any]] = []
            for user_id in ids:
                error = await self._ticket(found[user_id])
                if error is None:
                    tickets += 1
                else:
                    page_failures.append(
                        {"user_id": user_id, "email": found[user_id].email, "error": error}
                    )
            flushed = self.sink.flush()
            if inspect.isawaitable(flushed):
                await flushed
            after = ids[-1]
            done += len(ids)
            failed += len(page_failures)
            recorded = await jobs.record(
                self.store,
                job.id,
                worker=self.name,
                now=self.clock.now(),
                lease=self.lease,
                summary={"after": after, "done": done, "tickets": tickets, "failed": failed},
                failures=page_failures,
            )
            if recorded is None:
                raise JobLost(job.id)
            if self.on_progress is not None:
                self.on_progress(TicketProgress(job.id, done, total, tickets, failed))
        finished = await jobs.finish(
            self.store,
            job.id,
            worker=self.name,
            now=self.clock.now(),
            status=JobStatus.SUCCEEDED,
            summary={"done": done, "tickets": tickets, "failed": failed},
            message=f"{tickets} tickets, {failed} users failed",
        )
        if finished is None:
            raise JobLost(job.id)
        log_event(log, "tickets_finished", job=job.id, tickets=tickets, failed=failed)
        return finished

    async def _total(self, selection: Selection) -> int:
        total = 0
        after: str | None = None
        while True:
            ids = await selection.page(self.store, after=after, limit=1000)
            total += len(ids)
            if len(ids) < 1000:
                return total
            after = ids[-1]

    async def _ticket(self, subject: AccountSubject) -> str | None:
        """One user's ticket, written to the sink; the error, if it failed."""
        remote = subject.remote_id
        if remote is None:
            return f"{NO_ACCOUNT} (the store knows none)"
        attempts = throttled = 0
        while True:
            await self._pace()
            try:
                url = await self.service.password_change_ticket(remote)
            except NotFound:
                return f"{NO_ACCOUNT} (Auth0 answered 404 for {remote})"
            except Transient as exc:
                now = self.clock.now().timestamp()
                if exc.throttled:
                    throttled += 1
                    if throttled > MAX_THROTTLED:
                        return f"throttled {throttled} times: {exc.message}"
                    wait = (exc.retry_at or now + 1.0) - now
                else:
                    attempts += 1
                    if attempts >= MAX_ATTEMPTS:
                        return f"gave up after {attempts} attempts: {exc.message}"
                    wait = backoff(attempts, RETRY, self.rng)
                    if exc.retry_at is not None:
                        wait = max(wait, exc.retry_at - now)
                await self.clock.sleep(max(wait, 0.0))
                continue
            except AuthServiceError as exc:
                return exc.message
            self.sink.write(subject.user_id, subject.email, url)
            return None

    async def _pace(self) -> None:
        """Wait until ``1 / rate`` after the previous ticket."""
        now = self.clock.now().timestamp()
        if self._next_at > now:
            await self.clock.sleep(self._next_at - now)
            now = self._next_at
        self._next_at = now + self.interval
