"""The outbox dispatcher of the authentication service (SPEC §6 "Outbox",
docs/auth0.md): delivers the ``auth0`` rows the store's changes write.

Each round claims a batch of users (:func:`identity_store.outbox.claim`: a
lease per user, so one delivery per user is in flight across all workers,
and no transaction stays open while the service is called), reads those
users as they are now (:func:`identity_store.accounts.subjects`), and brings
the service to that state: all of a user's pending rows in one delivery,
whatever they said (:mod:`identity_sync.account_rules` decides what the
service should hold). Deliveries run concurrently, up to
``outbox_concurrency``, paced by the tenant's budget in the database
(:class:`DatabaseRateLimiter`). The leases are renewed while the round runs.

A delivery either completes (rows ``DONE`` with their outcome, the account's
id kept on the user, in one transaction) or fails
(:func:`~identity_sync.account_rules.decide`: retried later with backoff and
jitter, at the time a 429 names without counting an attempt, or
dead-lettered with its error). Every step is idempotent: a worker killed
between the service's answer and our commit leaves the rows pending; the
next delivery finds the account (by its deterministic id, or by e-mail) and
adopts it instead of creating a second one.

``outbox_dry_run``: each due row is read and logged with what would be sent
(:meth:`Dispatcher.dry_run`); nothing is sent, the rows stay pending.

The loop itself (claim, renew, deliver concurrently, record, drain, dry run)
is :class:`OutboxDispatcher`, shared with the other targets' dispatchers
(:mod:`identity_sync.rond`); :class:`Dispatcher` adds what is Auth0's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, Protocol, TypeVar

from identity_store import accounts, outbox
from identity_store.accounts import AccountSubject
from identity_store.errors import StoreError
from identity_store.outbox import Claim, Delivered, Failed, OutboxRow
from identity_store.settings import Settings
from identity_store.store import Store

from .account_rules import Action, Plan, RetryPolicy, changes, decide, plan, random_password
from .auth_service import (
    AuthAccount,
    AuthProfile,
    AuthService,
    Exists,
    NotFound,
    Permanent,
    Transient,
    current_request_id,
)
from .clock import Clock, SystemClock
from .events import log_event

__all__ = ["Companion", "DatabaseRateLimiter", "Dispatcher", "OutboxDispatcher", "Totals"]

log = logging.getLogger("idstore.outbox")

MAX_SLOTS_PER_RESERVATION = 10
"""Request slots a worker reserves from the shared budget at once."""


class Companion(Protocol):
    """Work the dispatcher does beside its rounds, in the same loop: the
    bulk import jobs that take over a large backlog of creations
    (:mod:`identity_sync.auth0_import`)."""

    async def tick(self) -> bool:
        """Do what is due now (start a job, poll one); whether anything is
        still going on (a job running: the dispatcher is not idle)."""
        ...

    @property
    def holds_creations(self) -> bool:
        """Whether it creates the accounts now (a backlog above the import
        threshold): the dispatcher then delivers only users that have one."""
        ...

    async def close(self) -> None: ...


class DatabaseRateLimiter:
    """The tenant's request budget, held in the database and shared by every
    worker (:func:`identity_store.outbox.reserve`).

    Slots are reserved a few at a time (a fifth of a second's worth, at most
    :data:`MAX_SLOTS_PER_RESERVATION`) and handed out in this process one per
    request, each at its time: one statement per handful of requests instead
    of one each. A slot whose time passed unused by more than one interval
    is dropped, so a lull never turns into a burst; a 429 drops them all."""

    def __init__(self, store: Store, target: str, *, rate: float, burst: int, clock: Clock) -> None:
        self.store = store
        self.target = target
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.interval = 1 / rate
        self.chunk = max(1, min(MAX_SLOTS_PER_RESERVATION, int(rate / 5)))
        self._slots: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = self.clock.now().timestamp()
            while self._slots and self._slots[0] < now - self.interval:
                self._slots.popleft()
            if not self._slots:
                wait = await outbox.reserve(
                    self.store,
                    self.target,
                    rate=self.rate,
                    burst=self.burst,
                    now=now,
                    cost=self.chunk,
                )
                first = now + wait
                self._slots.extend(first + i * self.interval for i in range(self.chunk))
            slot = self._slots.popleft()
        wait = slot - self.clock.now().timestamp()
        if wait > 0:
            await self.clock.sleep(wait)

    async def pause_until(self, epoch_seconds: float) -> None:
        self._slots.clear()
        await outbox.pause(self.store, self.target, until=epoch_seconds)


@dataclass(slots=True)
class Totals:
    """What the dispatcher did (since it started, or in one drain)."""

    rounds: int = 0
    delivered: int = 0
    """Users whose rows completed."""
    rows: int = 0
    failed: int = 0
    dead: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, other: Totals) -> None:
        self.rounds += other.rounds
        self.delivered += other.delivered
        self.rows += other.rows
        self.failed += other.failed
        self.dead += other.dead
        for k, v in other.outcomes.items():
            self.outcomes[k] = self.outcomes.get(k, 0) + v


def _kind(outcome: str) -> str:
    return outcome.split(":", 1)[0].split(" (", 1)[0]


def _log(event: str, claim: Claim, **fields: object) -> None:
    log_event(
        log,
        event,
        target=claim.target,
        **{claim.aggregate_type.lower(): claim.aggregate_id},
        rows=len(claim.row_ids),
        request_id=claim.request_id,
        **fields,
    )


T = TypeVar("T")


class OutboxDispatcher(Generic[T]):
    """The delivery loop every target shares (module docstring): claim a
    batch of users (or groups), look up what the target should hold for
    them (:meth:`look_up`, a value of type ``T`` each), bring the target to
    it (:meth:`carry_out`) with ``outbox_concurrency`` deliveries in flight,
    renew the leases meanwhile, and record what each did. A target's
    dispatcher implements those two, and :meth:`describe` for the dry run."""

    def __init__(
        self,
        store: Store,
        target: str,
        *,
        clock: Clock | None = None,
        name: str = "dispatcher",
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings: Settings = store.settings
        self.target = target
        self.clock: Clock = clock or SystemClock()
        self.name = name
        self.rng = rng or random.Random()  # noqa: S311 (retry jitter, not a secret)
        self.lease = timedelta(seconds=self.settings.outbox_lease_seconds)
        self.policy = RetryPolicy(
            max_attempts=self.settings.outbox_max_attempts,
            base_seconds=self.settings.outbox_backoff_seconds,
            max_seconds=self.settings.outbox_backoff_max_seconds,
        )
        self.totals = Totals()
        self._dry_cursor = 0

    @property
    def label(self) -> str:
        return f"outbox:{self.target}"

    # -- What a target's dispatcher provides -------------------------------------

    async def look_up(self, claims: Sequence[Claim]) -> Mapping[str, T]:
        """What the target should hold for each claim's user or group, by
        aggregate id, read from the store (a :class:`StoreError` gives the
        claims back untouched)."""
        raise NotImplementedError

    async def carry_out(self, claim: Claim, found: T | None) -> Delivered:
        """Bring the target to ``found`` for ``claim``; raise on failure
        (:func:`~identity_sync.account_rules.decide` says what it becomes)."""
        raise NotImplementedError

    async def describe(self, rows: Sequence[OutboxRow]) -> Mapping[int, Mapping[str, object]]:
        """For the dry run: what would be sent for each row, by row id."""
        raise NotImplementedError

    def with_account_only(self) -> bool:
        """Claim only users with an account at the target already
        (:func:`identity_store.outbox.claim`)."""
        return False

    async def side_work(self) -> bool:
        """Work beside the rounds; whether some is still going on."""
        return False

    busy_poll_seconds = 1.0
    """How long :meth:`drain` waits while :meth:`side_work` is busy."""

    async def close(self) -> None:
        return None

    # -- One round -------------------------------------------------------------

    async def run_once(self) -> Totals:
        """Claim one batch of users and deliver it; what was done (``rounds``
        is 0 when nothing was due)."""
        now = self.clock.now()
        claims = await outbox.claim(
            self.store,
            self.target,
            worker=self.name,
            now=now,
            lease=self.lease,
            limit=self.settings.outbox_batch_size,
            with_account_only=self.with_account_only(),
        )
        done = Totals()
        if not claims:
            return done
        done.rounds = 1
        renewing = asyncio.create_task(self._renew([c.aggregate_id for c in claims]))
        try:
            try:
                found = await self.look_up(claims)
            except StoreError:
                await outbox.release(self.store, claims, worker=self.name)
                raise
            limit = asyncio.Semaphore(self.settings.outbox_concurrency)

            async def one(claim: Claim) -> Delivered | Failed:
                async with limit:
                    return await self._deliver(claim, found.get(claim.aggregate_id))

            results = await asyncio.gather(*(one(c) for c in claims))
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        delivered = [r for r in results if isinstance(r, Delivered)]
        failed = [r for r in results if isinstance(r, Failed)]
        now = self.clock.now()
        await outbox.complete(self.store, delivered, worker=self.name, now=now)
        await outbox.fail(self.store, failed, worker=self.name, now=now)
        for d in delivered:
            done.delivered += 1
            done.rows += len(d.claim.row_ids)
            kind = _kind(d.outcome)
            done.outcomes[kind] = done.outcomes.get(kind, 0) + 1
        for f in failed:
            if f.retry_at is None:
                done.dead += 1
            else:
                done.failed += 1
        self.totals.add(done)
        return done

    async def _renew(self, aggregate_ids: list[str]) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await outbox.renew(
                    self.store,
                    self.target,
                    aggregate_ids,
                    worker=self.name,
                    until=self.clock.now() + self.lease,
                )
            except StoreError as exc:
                log.warning("outbox: lease renewal failed: %s", exc.detail)

    # -- One delivery ----------------------------------------------------------

    async def _deliver(self, claim: Claim, found: T | None) -> Delivered | Failed:
        token = current_request_id.set(claim.request_id)
        try:
            try:
                delivered = await self.carry_out(claim, found)
            except Exception as exc:  # every failure is recorded: nothing is lost or stuck
                failure = self._failed(claim, exc)
                _log(
                    "dead_letter" if failure.retry_at is None else "retry",
                    claim,
                    error=failure.error,
                    retry_at=failure.retry_at.isoformat() if failure.retry_at else None,
                )
                return failure
            _log("delivered", claim, outcome=delivered.outcome)
            return delivered
        finally:
            current_request_id.reset(token)

    def _failed(self, claim: Claim, exc: Exception) -> Failed:
        decision = decide(
            exc,
            attempts=claim.attempts,
            now=self.clock.now().timestamp(),
            policy=self.policy,
            rng=self.rng,
        )
        retry_at = (
            datetime.fromtimestamp(decision.retry_at, UTC)
            if decision.retry_at is not None
            else None
        )
        return Failed(claim, decision.error, retry_at, counts=decision.counts)

    # -- Loops -----------------------------------------------------------------

    async def drain(self, *, stopping: asyncio.Event | None = None) -> Totals:
        """Deliver what is due, round after round, until nothing is
        (``idstore worker --until-idle``); rows that failed and wait for a
        later retry are left for later."""
        total = Totals()
        if self.settings.outbox_dry_run:
            total.rows = await self.dry_run()
            return total
        while stopping is None or not stopping.is_set():
            busy = await self.side_work()
            done = await self.run_once()
            total.add(done)
            if done.rounds:
                continue
            if not busy:
                break
            await self.clock.sleep(self.busy_poll_seconds)
        return total

    async def run_forever(self, stopping: asyncio.Event) -> None:
        """Deliver until ``stopping`` is set; an idle dispatcher looks again
        every ``outbox_poll_seconds``; a database that is away is retried
        with backoff."""
        log.info("outbox dispatcher %s started for %s", self.name, self.target)
        failures = 0
        while not stopping.is_set():
            delay = self.settings.outbox_poll_seconds
            try:
                if self.settings.outbox_dry_run:
                    await self.dry_run()
                    busy = False
                else:
                    await self.side_work()
                    busy = bool((await self.run_once()).rounds)
                failures = 0
            except StoreError as exc:
                failures += 1
                busy = False
                delay = min(60.0, 2.0**failures)
                log.warning("outbox: cannot reach the store: %s", exc.detail)
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)
        log.info("outbox dispatcher %s stopped", self.name)

    async def dry_run(self) -> int:
        """Log what would be sent for each due row not logged yet; send
        nothing, claim nothing, change nothing. The rows looked at."""
        seen = 0
        while True:
            rows = await outbox.peek(
                self.store,
                self.target,
                after_id=self._dry_cursor,
                now=self.clock.now(),
                limit=self.settings.outbox_batch_size,
            )
            if not rows:
                return seen
            described = await self.describe(rows)
            for row in rows:
                line: dict[str, object] = {
                    "target": self.target,
                    "row": row.id,
                    row.aggregate_type.lower(): row.aggregate_id,
                    "request_id": row.request_id,
                    **described.get(row.id, {}),
                }
                log_event(log, "dry_run", **line)
            self._dry_cursor = rows[-1].id
            seen += len(rows)


class Dispatcher(OutboxDispatcher[AccountSubject]):
    """Delivers ``service.name`` rows of ``store`` (module docstring)."""

    def __init__(
        self,
        store: Store,
        service: AuthService,
        *,
        clock: Clock | None = None,
        name: str = "dispatcher",
        rng: random.Random | None = None,
        companions: Sequence[Companion] = (),
    ) -> None:
        super().__init__(store, service.name, clock=clock, name=name, rng=rng)
        self.service = service
        self.companions = list(companions)
        self.busy_poll_seconds = self.settings.auth0_import_poll_seconds

    async def close(self) -> None:
        for companion in self.companions:
            await companion.close()
        await self.service.aclose()

    async def side_work(self) -> bool:
        """Let every companion do what is due; whether one is still busy."""
        busy = False
        for companion in self.companions:
            busy = await companion.tick() or busy
        return busy

    def with_account_only(self) -> bool:
        return any(c.holds_creations for c in self.companions)

    async def look_up(self, claims: Sequence[Claim]) -> Mapping[str, AccountSubject]:
        return await accounts.subjects(self.store, self.target, [c.aggregate_id for c in claims])

    async def carry_out(self, claim: Claim, found: AccountSubject | None) -> Delivered:
        if claim.aggregate_type != "User" or found is None:
            raise ValueError(f"no {self.target} delivery for {claim.aggregate_type}")
        return await self._carry_out(
            claim, found, plan(found, hard_delete=self.settings.hard_delete)
        )

    async def _carry_out(self, claim: Claim, subject: AccountSubject, p: Plan) -> Delivered:
        service = self.service
        if p.action is Action.SKIP:
            return Delivered(claim, f"skipped: {p.reason}")
        if p.action is Action.REFUSE:
            raise Permanent(p.reason)
        if p.action is Action.DELETE:
            assert p.remote_id is not None
            await service.delete_user(p.remote_id)
            return Delivered(claim, f"deleted: {p.reason}", forget_remote=True)
        if p.action is Action.BLOCK:
            assert p.remote_id is not None
            synced = subject.sync.synced if subject.sync is not None else {}
            if synced.get("blocked") is True:
                return Delivered(claim, f"unchanged: already blocked ({p.reason})")
            try:
                account = await service.set_blocked(p.remote_id, True)
            except NotFound:
                return Delivered(claim, f"unchanged: no account to block ({p.reason})")
            return Delivered(
                claim,
                f"blocked: {p.reason}",
                synced=account.fields(),
                last_login=account.last_login,
            )
        assert p.profile is not None
        profile = p.profile
        if p.remote_id is None:
            return await self._create(claim, profile, "created")
        synced_fields = subject.sync.synced if subject.sync is not None else None
        if subject.sync is not None and subject.sync.remote_id != p.remote_id:
            synced_fields = None  # the account was set from elsewhere: send everything
        wanted = changes(profile, synced_fields)
        if not wanted:
            return Delivered(claim, "unchanged", remote_id=p.remote_id, set_auth_user_id=True)
        try:
            account = await service.update_user(p.remote_id, wanted)
        except NotFound:
            return await self._create(claim, profile, "recreated")
        return Delivered(
            claim,
            "updated: " + ",".join(sorted(wanted)),
            remote_id=account.auth_user_id,
            synced=account.fields(),
            set_auth_user_id=True,
            last_login=account.last_login,
        )

    async def _create(self, claim: Claim, profile: AuthProfile, outcome: str) -> Delivered:
        service = self.service
        password = None
        if self.settings.auth0_password_on_create:
            password = random_password(self.settings.auth0_password_length)
        try:
            account = await service.create_user(profile, password=password)
        except Exists:
            account = await self._adopt(profile)
            outcome = "adopted"
        return Delivered(
            claim,
            outcome,
            remote_id=account.auth_user_id,
            synced=account.fields(),
            set_auth_user_id=True,
            took_over=outcome == "adopted",
            last_login=account.last_login,
        )

    async def _adopt(self, profile: AuthProfile) -> AuthAccount:
        """The account that made the create clash: ours from an earlier try
        (its deterministic id), else the one with the e-mail (a user deleted
        here and kept blocked there, now created again): taken over,
        unblocked as the store says, its metadata naming this user."""
        service = self.service
        try:
            account = await service.get_user(service.remote_id(profile.user_id))
        except NotFound:
            matches = await service.find_by_email(profile.email)
            if not matches:
                raise Transient("the account exists but cannot be found by e-mail yet") from None
            ours = [m for m in matches if m.store_user_id == profile.user_id]
            account = (ours or matches)[0]
        wanted = changes(profile, account.fields())
        if wanted or account.store_user_id != profile.user_id:
            account = await service.update_user(
                account.auth_user_id, wanted, store_user_id=profile.user_id
            )
        return account

    # -- The dry run -------------------------------------------------------------

    async def describe(self, rows: Sequence[OutboxRow]) -> Mapping[int, Mapping[str, object]]:
        found = await accounts.subjects(self.store, self.target, [r.aggregate_id for r in rows])
        described: dict[int, Mapping[str, object]] = {}
        for row in rows:
            subject = found.get(row.aggregate_id)
            if subject is None:
                continue
            p = plan(subject, hard_delete=self.settings.hard_delete)
            line: dict[str, object] = {
                "action": p.action.value,
                "reason": p.reason,
                "remote_id": p.remote_id,
            }
            if p.profile is not None:
                synced = subject.sync.synced if subject.sync is not None else None
                line["fields"] = sorted(changes(p.profile, synced))
            described[row.id] = line
        return described
