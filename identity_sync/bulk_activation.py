"""Bulk activation (SPEC §1, the User Manager Service's bulk activation;
docs/management-api.md, "Bulk jobs and passwords"): the users of a
selection get their Auth0 accounts through Auth0's bulk import jobs, as a
job (kind ``BULK_ACTIVATION``) with its status and per-user outcome.

A run goes through the selection in id order, one import file's worth of
users at a time (at most :data:`~identity_sync.auth0_import.USERS_PER_CLAIM`,
under 500 KB), while fewer than two import jobs run across all workers:

1. each user is read as it is now and planned as the dispatcher plans it
   (:func:`identity_sync.account_rules.plan`), except that the group's
   ``authUserCreationDisabled`` does not hold it back (activating is what
   lifts it): a user with an account already counts as ``already``; one
   that cannot have an account now (suspended, no e-mail, gone) is a
   failure with the reason;
2. the others are claimed for the import (:func:`identity_store.accounts.claim_for_activation`:
   their outbox lease taken first, then an audited ``upsert`` row written,
   in one transaction, so that no dispatcher delivers them meanwhile) and
   put in one import job (kind ``AUTH0_IMPORT``, created by ``job:<id>``)
   of the :class:`~identity_sync.auth0_import.ImportRunner`, which polls it
   until done and writes the accounts back exactly as for the initial load.
   A user another worker is delivering just then is tried again on the next
   poll, for up to :data:`DEFER_LIMIT`;
3. where the job stands (``summary["after"]``, the counts, the deferred
   users) is recorded after each file, with that file's failures.

When every import job of the activation has finished (whoever polled it: a
worker that takes over a dead worker's jobs finishes them), its outcome is
folded in: the users it imported count as ``activated``, the users Auth0
refused are failures with Auth0's errors, and the users of an import that
failed as a whole are failures with its reason (they go back to ordinary
delivery: a user whose group does not disable creation still gets its
account one by one). The job then ends ``SUCCEEDED`` (with per-user failures
counted in ``failed``), or ``FAILED`` when Auth0 refuses to start import
jobs at all (a missing scope, no ``IDSTORE_AUTH0_CONNECTION_ID``).

A worker that dies leaves the job's lease to run out; the next worker
claims it and goes on after the last file recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from identity_store import accounts, jobs, outbox
from identity_store.accounts import AccountSubject, Selection
from identity_store.actor import Actor
from identity_store.jobs import JobKind, JobRecord, JobStatus
from identity_store.outbox import Claim, Delivered
from identity_store.settings import Settings
from identity_store.store import Store

from .account_rules import plan
from .auth0 import split_for_import
from .auth0_import import USERS_PER_CLAIM, ImportRunner
from .auth_service import AuthProfile, AuthService, AuthServiceError, current_request_id
from .clock import Clock, SystemClock
from .events import log_event
from .password_tickets import JobLost, unknown_users

__all__ = ["DEFER_LIMIT", "ActivationRun", "child_tag"]

log = logging.getLogger("idstore.auth0")

DEFER_LIMIT = timedelta(minutes=10)
"""How long a user another worker is delivering is tried again before it is
a failure of the activation."""

MAX_DEFERRED = 5000
"""Users a run keeps trying again at once (more: failures at once)."""


def child_tag(job_id: str) -> str:
    """The ``created_by`` of the import jobs of activation ``job_id``."""
    return f"job:{job_id}"


def _iso(moment: datetime) -> str:
    return moment.isoformat()


@dataclass(slots=True)
class _State:
    """Where a run stands, as kept in the job's ``summary``."""

    after: str | None = None
    selected: bool = False
    """Every user of the selection was looked at (or deferred)."""
    total: int = 0
    activated: int = 0
    already: int = 0
    importing: int = 0
    failed: int = 0
    imports: int = 0
    folded: list[str] = field(default_factory=list)
    """The import jobs whose outcome is counted."""
    deferred: dict[str, str] = field(default_factory=dict)
    """User id -> when it was first found held by another worker (ISO 8601)."""

    @classmethod
    def of(cls, summary: dict[str, Any]) -> _State:
        return cls(
            after=summary.get("after"),
            selected=bool(summary.get("selected", False)),
            total=int(summary.get("total", 0)),
            activated=int(summary.get("activated", 0)),
            already=int(summary.get("already", 0)),
            importing=int(summary.get("importing", 0)),
            failed=int(summary.get("failed", 0)),
            imports=int(summary.get("imports", 0)),
            folded=[str(j) for j in summary.get("folded", [])],
            deferred={str(k): str(v) for k, v in dict(summary.get("deferred") or {}).items()},
        )

    def summary(self) -> dict[str, Any]:
        return {
            "after": self.after,
            "selected": self.selected,
            "total": self.total,
            "activated": self.activated,
            "already": self.already,
            "importing": self.importing,
            "failed": self.failed,
            "imports": self.imports,
            "folded": list(self.folded),
            "deferred": dict(self.deferred),
        }


def _has_account(subject: AccountSubject) -> bool:
    return subject.present and not subject.deleted and subject.remote_id is not None


def _failure(subject: AccountSubject | None, user_id: str, error: str) -> dict[str, Any]:
    return {"user_id": user_id, "email": subject.email if subject else None, "error": error}


class ActivationRun:
    """Runs bulk activation jobs (module docstring)."""

    def __init__(
        self,
        store: Store,
        service: AuthService,
        *,
        clock: Clock | None = None,
        name: str = "activation",
        settings: Settings | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.clock: Clock = clock or SystemClock()
        self.name = name
        self.settings: Settings = settings or store.settings
        self.importer = ImportRunner(
            store, service, clock=self.clock, name=f"{name}:import", settings=self.settings
        )
        self.lease = self.importer.lease
        self.poll = self.importer.poll
        self._since: dict[str, str] = {}

    async def run(self, job_id: str) -> JobRecord:
        """Run (or resume) the job until it is done; the job as it ended.

        :raises LookupError: No such job, one held by a live worker, or finished.
        :raises JobLost: Another worker took the job over meanwhile.
        """
        now = self.clock.now()
        job = await jobs.claim(self.store, job_id, worker=self.name, now=now, lease=self.lease)
        if job is None:
            found = await jobs.get(self.store, job_id)
            raise LookupError(f"job {job_id} is not to be run: {found.status if found else 'none'}")
        if job.kind != JobKind.BULK_ACTIVATION.value:
            await jobs.release(self.store, job.id, worker=self.name, now=now)
            raise LookupError(f"job {job_id} is a {job.kind} job, not BULK_ACTIVATION")
        token = current_request_id.set(f"job-{job.id}")
        try:
            return await self._run(job)
        except BaseException:
            await self._hand_back(job.id)
            raise
        finally:
            current_request_id.reset(token)

    async def _hand_back(self, job_id: str) -> None:
        """Interrupted: the job and its import jobs back, for the next worker."""
        try:
            await self.importer.close()
            await jobs.release(self.store, job_id, worker=self.name, now=self.clock.now())
        except Exception:  # the store may be what failed: the leases run out then
            log.warning("bulk activation: job %s could not be handed back", job_id)

    async def _record(self, job: JobRecord, state: _State, failures: list[dict[str, Any]]) -> None:
        recorded = await jobs.record(
            self.store,
            job.id,
            worker=self.name,
            now=self.clock.now(),
            lease=self.lease,
            summary=state.summary(),
            failures=failures,
        )
        if recorded is None:
            raise JobLost(job.id)

    async def _run(self, job: JobRecord) -> JobRecord:
        selection = Selection.of(dict(job.params.get("selection") or {}))
        state = _State.of(job.summary)
        actor = Actor(name=f"job:{job.id}", request_id=f"job-{job.id}")
        if "total" not in job.summary:
            failures = await unknown_users(self.store, selection)
            state.total = await _count(self.store, selection) + len(failures)
            state.failed += len(failures)
            await self._record(job, state, failures)
        log_event(log, "activation_started", job=job.id, selection=selection.describe())
        refused: str | None = None
        while True:
            await self.importer.poll_jobs()
            failures = await self._fold(job, state)
            if not state.selected or state.deferred:
                refused = await self._next_file(job, selection, state, actor, failures)
            await self._record(job, state, failures)
            if refused is not None:
                break
            if state.selected and not state.deferred and not await self._importing(job):
                break
            await self.clock.sleep(self.poll.total_seconds())
        while await self._importing(job):  # refused: the jobs Auth0 took still finish
            await self.clock.sleep(self.poll.total_seconds())
            await self.importer.poll_jobs()
        failures = await self._fold(job, state)
        message = (
            f"Auth0 refused to start an import job: {refused}"
            if refused is not None
            else f"{state.activated} activated, {state.already} had an account, "
            f"{state.failed} failed"
        )
        finished = await jobs.finish(
            self.store,
            job.id,
            worker=self.name,
            now=self.clock.now(),
            status=JobStatus.FAILED if refused is not None else JobStatus.SUCCEEDED,
            summary=state.summary(),
            failures=failures,
            message=message,
        )
        if finished is None:
            raise JobLost(job.id)
        log_event(
            log,
            "activation_finished",
            job=job.id,
            activated=state.activated,
            already=state.already,
            failed=state.failed,
        )
        return finished

    async def _importing(self, job: JobRecord) -> bool:
        """Whether an import job of the activation has not finished."""
        return any(not c.finished for c in await self._children(job))

    async def _children(self, job: JobRecord) -> list[JobRecord]:
        return await jobs.list_jobs(
            self.store,
            kind=JobKind.AUTH0_IMPORT,
            created_by=child_tag(job.id),
            limit=100_000,
        )

    async def _fold(self, job: JobRecord, state: _State) -> list[dict[str, Any]]:
        """Count the outcome of the activation's import jobs that finished
        since the last look; their users' failures."""
        failures: list[dict[str, Any]] = []
        for child in await self._children(job):
            if not child.finished or child.id in state.folded:
                continue
            users = [str(u) for u in child.params.get("users", [])]
            state.folded.append(child.id)
            if child.summary.get("state") == "starting":
                # Never started (its worker died before Auth0 named it):
                # its users are tried again.
                await self._retry(users, state)
                continue
            state.importing = max(0, state.importing - len(users))
            if child.status == JobStatus.SUCCEEDED.value:
                imported = int(child.summary.get("imported", 0))
                refused = [
                    {
                        "user_id": f.get("user_id"),
                        "email": f.get("email"),
                        "error": "Auth0 refused the import: "
                        + ("; ".join(f.get("errors") or []) or "no reason given"),
                    }
                    for f in child.failures
                ]
                own = await self._adopt_own(job, [str(f["user_id"]) for f in refused])
                refused = [f for f in refused if f["user_id"] not in own]
                state.activated += imported + len(own)
                state.failed += len(users) - imported - len(own)
                failures.extend(refused)
                missing = len(users) - imported - len(own) - len(refused)
                if missing > 0:
                    # Lost leases (another worker delivered them meanwhile)
                    # or refusals past the kept ones: named by their state now.
                    failures.extend(await self._unexplained(users, refused, child))
                continue
            reason = str(child.summary.get("message") or "the import job failed")
            found = await accounts.subjects(self.store, self.service.name, users)
            for user_id in users:
                subject = found.get(user_id)
                if subject is not None and subject.remote_id is not None:
                    state.activated += 1
                else:
                    state.failed += 1
                    failures.append(_failure(subject, user_id, f"import job {child.id}: {reason}"))
        return failures

    async def _adopt_own(self, job: JobRecord, user_ids: list[str]) -> set[str]:
        """The users among ``user_ids`` (refused by an import) whose own
        account exists: made by an earlier import of the activation whose
        answer was lost (its worker died before it recorded Auth0's job id).
        Their accounts are adopted, as the dispatcher adopts after a 409."""
        wanted = [u for u in user_ids if u]
        if not wanted:
            return set()
        now = self.clock.now()
        claims = await accounts.claim_for_activation(
            self.store,
            self.service.name,
            wanted,
            Actor(name=f"job:{job.id}", request_id=f"job-{job.id}"),
            worker=self.importer.name,
            now=now,
            lease=self.lease,
            reason=f"bulk activation job {job.id}: adopting the accounts an import made",
        )
        delivered: list[Delivered] = []
        others: list[Claim] = []
        for c in claims:
            try:
                account = await self.service.get_user(self.service.remote_id(c.aggregate_id))
            except AuthServiceError:
                others.append(c)
                continue
            if account.store_user_id != c.aggregate_id:
                others.append(c)
                continue
            delivered.append(
                Delivered(
                    c,
                    f"adopted (bulk activation job {job.id})",
                    remote_id=account.auth_user_id,
                    synced=account.fields(),
                    set_auth_user_id=True,
                )
            )
        await outbox.complete(self.store, delivered, worker=self.importer.name, now=now)
        await outbox.release(self.store, others, worker=self.importer.name)
        return {d.claim.aggregate_id for d in delivered}

    async def _retry(self, users: list[str], state: _State) -> None:
        found = await accounts.subjects(self.store, self.service.name, users)
        now = _iso(self.clock.now())
        for user_id in users:
            if user_id not in state.deferred and not _has_account(found[user_id]):
                state.deferred[user_id] = now

    async def _not_started(self, job: JobRecord, state: _State) -> None:
        """The import jobs of the activation Auth0 did not start: folded
        (their users are counted or tried again by the caller)."""
        for child in await self._children(job):
            starting = child.summary.get("state") == "starting"
            if child.finished and starting and child.id not in state.folded:
                state.folded.append(child.id)

    async def _unexplained(
        self, users: list[str], refused: list[dict[str, Any]], child: JobRecord
    ) -> list[dict[str, Any]]:
        named = {str(f.get("user_id")) for f in refused}
        found = await accounts.subjects(self.store, self.service.name, users)
        return [
            _failure(found.get(u), u, f"not imported by job {child.id}")
            for u in users
            if u not in named and found.get(u) is not None and found[u].remote_id is None
        ]

    async def _next_file(
        self,
        job: JobRecord,
        selection: Selection,
        state: _State,
        actor: Actor,
        failures: list[dict[str, Any]],
    ) -> str | None:
        """Start the next import job of the activation when a slot is free
        (the deferred users first, then the next users of the selection);
        why Auth0 refused to start it for good, if it did."""
        if await self.importer.slots() <= 0:
            return None
        now = self.clock.now()
        retry = list(state.deferred)[:USERS_PER_CLAIM]
        ids = retry or await selection.page(self.store, after=state.after, limit=USERS_PER_CLAIM)
        if not ids:
            state.selected = True
            return None
        self._since = {u: state.deferred.pop(u) for u in retry}
        found = await accounts.subjects(self.store, self.service.name, ids)
        profiles: dict[str, AuthProfile | None] = {
            u: None
            if _has_account(found[u])
            else self.importer.importable(found[u], activation=True)
            for u in ids
        }
        wanted = [p for p in profiles.values() if p is not None]
        cut = len(ids)
        if wanted:
            first = split_for_import(wanted)[0]
            if len(first) < len(wanted):
                # The users from the first one left out are looked at next time.
                cut = ids.index(wanted[len(first)].user_id)
                wanted = first
        for user_id in ids[:cut]:
            if profiles[user_id] is None:
                self._count(found[user_id], state, failures)
        if retry:
            for user_id in ids[cut:]:
                state.deferred[user_id] = self._since[user_id]
        else:
            state.after = ids[cut - 1] if cut else state.after
            if len(ids) < USERS_PER_CLAIM and cut == len(ids):
                state.selected = True
        if not wanted:
            return None
        return await self._start(job, wanted, state, actor, now, failures)

    def _count(
        self, subject: AccountSubject, state: _State, failures: list[dict[str, Any]]
    ) -> None:
        """Count ``subject``, which is not imported, as ``already`` or failed."""
        if _has_account(subject):
            state.already += 1
            return
        state.failed += 1
        activated = replace(subject, creation_disabled=False)
        reason = plan(activated, hard_delete=self.settings.hard_delete).reason
        failures.append(_failure(subject, subject.user_id, f"not activated: {reason}"))

    async def _start(
        self,
        job: JobRecord,
        profiles: list[AuthProfile],
        state: _State,
        actor: Actor,
        now: datetime,
        failures: list[dict[str, Any]],
    ) -> str | None:
        wanted = [p.user_id for p in profiles]
        claims = await accounts.claim_for_activation(
            self.store,
            self.service.name,
            wanted,
            actor,
            worker=self.importer.name,
            now=now,
            lease=self.lease,
            reason=f"bulk activation job {job.id}",
        )
        claimed = {c.aggregate_id: c for c in claims}
        for user_id in wanted:
            if user_id not in claimed:
                self._defer(user_id, state, now, failures, "being delivered by another worker")
        # Read again as they are now that nothing else delivers them.
        found = await accounts.subjects(self.store, self.service.name, list(claimed))
        part = []
        others = []
        for user_id, c in claimed.items():
            profile = None
            if not _has_account(found[user_id]):
                profile = self.importer.importable(found[user_id], activation=True)
            if profile is None:
                others.append(c)
                self._count(found[user_id], state, failures)
            else:
                part.append((c, profile))
        if others:
            await outbox.release(self.store, others, worker=self.importer.name)
        if not part:
            return None
        child_id, refused = await self.importer.start_file(part, now, created_by=child_tag(job.id))
        if child_id is not None:
            state.imports += 1
            state.importing += len(part)
            return None
        await self._not_started(job, state)
        if refused is not None:
            state.failed += len(part)
            failures.extend(
                _failure(found[c.aggregate_id], c.aggregate_id, f"not activated: {refused}")
                for c, _ in part
            )
            return refused
        for c, _ in part:  # Auth0 could not start it for now: tried again
            self._defer(c.aggregate_id, state, now, failures, "Auth0 could not start the import")
        return None

    def _defer(
        self,
        user_id: str,
        state: _State,
        now: datetime,
        failures: list[dict[str, Any]],
        why: str,
    ) -> None:
        since = datetime.fromisoformat(
            state.deferred.get(user_id) or self._since.get(user_id) or _iso(now)
        )
        if now - since >= DEFER_LIMIT or len(state.deferred) >= MAX_DEFERRED:
            state.deferred.pop(user_id, None)
            state.failed += 1
            failures.append({"user_id": user_id, "email": None, "error": f"not activated: {why}"})
            return
        state.deferred[user_id] = _iso(since)


async def _count(store: Store, selection: Selection) -> int:
    total = 0
    after: str | None = None
    while True:
        ids = await selection.page(store, after=after, limit=1000)
        total += len(ids)
        if len(ids) < 1000:
            return total
        after = ids[-1]
