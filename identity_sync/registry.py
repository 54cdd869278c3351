"""The scheduled jobs of the product, by name, with their schedules from the
settings: what ``idstore worker`` and ``idstore jobs`` run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from identity_store.settings import Settings
from identity_store.store import Store

from .auth0 import Auth0Client
from .auth0_import import ImportRunner
from .bulk_jobs import BulkJobs
from .clock import Clock
from .csv_import import ImportJobs
from .deletion_sync import DeletionSync
from .dispatcher import DatabaseRateLimiter, Dispatcher, OutboxDispatcher
from .expiry import Expiry
from .profile_sync import ProfileSync
from .rond import ROND, RondClient, RondDispatcher
from .schedules import Schedule, ScheduleError, parse
from .worker import Job, Loop, Worker, worker_id

log = logging.getLogger("idstore.worker")

JobFactory = Callable[[Settings, Clock], Job]

JOBS: dict[str, tuple[str, JobFactory]] = {
    "profile-sync": ("job_profile_sync_schedule", ProfileSync),
    "deletion-sync": ("job_deletion_sync_schedule", DeletionSync),
    "expiry": ("job_expiry_schedule", Expiry),
}
"""Job name -> (name of its schedule setting, factory)."""


def schedule_setting(settings: Settings, name: str) -> str:
    field = JOBS[name][0]
    return str(getattr(settings, field))


def schedules(settings: Settings) -> dict[str, Schedule]:
    """Every job's schedule, parsed (a setting that does not parse raises
    :class:`~identity_sync.schedules.ScheduleError` naming it)."""
    parsed = {}
    for name, (field, _) in JOBS.items():
        try:
            parsed[name] = parse(schedule_setting(settings, name), settings.jobs_timezone)
        except ScheduleError as exc:
            raise ScheduleError(f"IDSTORE_{field.upper()}: {exc}") from exc
    return parsed


def build_jobs(settings: Settings, clock: Clock) -> dict[str, Job]:
    return {name: factory(settings, clock) for name, (_, factory) in JOBS.items()}


OUTBOX = "outbox"
"""The name that selects the outbox dispatchers in ``idstore worker --job``."""

IMPORTS = "import"
"""The name that selects the CSV import jobs in ``idstore worker --job``."""


def build_auth_service(store: Store, clock: Clock) -> Auth0Client | None:
    """The authentication-service module chosen by ``auth_service``, paced by
    the tenant's budget in the database; ``None`` when it is off or not
    configured (its rows wait)."""
    settings = store.settings
    if settings.auth_service != "auth0" or not settings.auth0_configured:
        return None
    limiter = DatabaseRateLimiter(
        store,
        "auth0",
        rate=settings.auth0_requests_per_second,
        burst=settings.auth0_burst,
        clock=clock,
    )
    return Auth0Client(settings, clock=clock, limiter=limiter)


ROND_BURST = 1
"""Requests to Rönd that may go at once after a quiet spell: none beyond
the rate (its CRUD service behind is not known to take bursts)."""


def build_rond_client(store: Store, clock: Clock) -> RondClient | None:
    """The Rönd client, paced by its budget in the database
    (``rond_requests_per_second``, shared by every worker); ``None`` when
    ``rond_base_url`` is not set (then no ``rond`` rows are written)."""
    settings = store.settings
    if not settings.rond_base_url:
        return None
    limiter = DatabaseRateLimiter(
        store, ROND, rate=settings.rond_requests_per_second, burst=ROND_BURST, clock=clock
    )
    return RondClient(settings, clock=clock, limiter=limiter)


def build_dispatchers(store: Store, clock: Clock, name: str) -> list[OutboxDispatcher[Any]]:
    """The outbox dispatchers of the configured targets: Auth0's (first),
    then Rönd's."""
    dispatchers: list[OutboxDispatcher[Any]] = []
    service = build_auth_service(store, clock)
    if service is None:
        log.info("no authentication service configured: auth0 outbox rows wait")
    else:
        importer = ImportRunner(store, service, clock=clock, name=f"{name}:import")
        dispatchers.append(
            Dispatcher(store, service, clock=clock, name=name, companions=[importer])
        )
    rond = build_rond_client(store, clock)
    if rond is not None:
        dispatchers.append(RondDispatcher(store, rond, clock=clock, name=name))
    return dispatchers


def build_loops(store: Store, clock: Clock, name: str) -> list[Loop]:
    """The worker's loops: the outbox dispatchers (:func:`build_dispatchers`)
    and, when Auth0 is configured, the bulk jobs the management API asks
    for (:class:`~identity_sync.bulk_jobs.BulkJobs`, on its own client)."""
    loops: list[Loop] = list(build_dispatchers(store, clock, name))
    service = build_auth_service(store, clock)
    if service is not None:
        loops.append(BulkJobs(store, service, clock=clock, name=name))
    return loops


def build_worker(store: Store, clock: Clock, *, only: list[str] | None = None) -> Worker:
    """The worker of every job (or of ``only`` those; :data:`OUTBOX` selects
    the dispatchers and the bulk jobs, :data:`IMPORTS` the CSV import jobs) on
    its schedule, with its loops."""
    jobs = build_jobs(store.settings, clock)
    if only is not None:
        jobs = {name: job for name, job in jobs.items() if name in only}
    name = worker_id()
    loops: list[Loop] = []
    if only is None or OUTBOX in only:
        loops.extend(build_loops(store, clock, name))
    if only is None or IMPORTS in only:
        loops.append(ImportJobs(store, name=f"{name}:import", clock=clock))
    return Worker(store, jobs, schedules(store.settings), clock=clock, name=name, loops=loops)
