"""The scheduled jobs of the product, by name, with their schedules from the
settings: what ``idstore worker`` and ``idstore jobs`` run."""

from __future__ import annotations

from collections.abc import Callable

from identity_store.settings import Settings
from identity_store.store import Store

from .clock import Clock
from .deletion_sync import DeletionSync
from .expiry import Expiry
from .profile_sync import ProfileSync
from .schedules import Schedule, ScheduleError, parse
from .worker import Job, Worker

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


def build_worker(store: Store, clock: Clock, *, only: list[str] | None = None) -> Worker:
    """The worker of every job (or of ``only`` those) on its schedule."""
    jobs = build_jobs(store.settings, clock)
    if only is not None:
        jobs = {name: job for name, job in jobs.items() if name in only}
    return Worker(store, jobs, schedules(store.settings), clock=clock)
