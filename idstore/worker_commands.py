"""``idstore worker`` and ``idstore jobs``: the scheduled jobs from the
command line (docs/operations.md, "Worker")."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging.config
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from identity_store import job_runs
from identity_store.job_runs import RunRecord
from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync import registry
from identity_sync.bulk_jobs import BulkTotals
from identity_sync.clock import SystemClock
from identity_sync.dispatcher import Totals
from identity_sync.schedules import ScheduleError
from idstore import logs
from idstore.opening import with_store


class UsageError(Exception):
    """A command line that names something that does not exist (exit 2)."""


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "job": run.job,
        "trigger": run.trigger,
        "scheduled_for": _iso(run.scheduled_for),
        "as_of": run.as_of.isoformat(),
        "dry_run": run.dry_run,
        "status": run.status,
        "attempts": run.attempts,
        "worker": run.worker,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_seconds": run.duration.total_seconds() if run.duration else None,
        "counts": run.counts,
        "errors": run.errors,
        "message": run.message,
    }


def _run_line(run: RunRecord) -> str:
    duration = f"{run.duration.total_seconds():.1f}s" if run.duration else "-"
    counts = ", ".join(f"{k}={v}" for k, v in sorted(run.counts.items())) or "nothing done"
    flags = " (dry run)" if run.dry_run else ""
    message = f"  {run.message}" if run.message else ""
    return (
        f"#{run.id:<6} {run.job:<14} {run.trigger:<8} {_when(run.started_at)}  {run.status:<11} "
        f"{duration:>8}  {counts}{flags}{message}"
    )


AS_OF_MAX_LENGTH = 64
"""Longest ``--as-of`` read (an ISO 8601 time with microseconds and an offset
is 32 characters)."""


def _loop_line(label: str, totals: Totals | BulkTotals | Any) -> str:
    if isinstance(totals, BulkTotals):
        return (
            f"{label}: {totals.succeeded} jobs succeeded, {totals.failed} failed, "
            f"{totals.interrupted} left for another worker"
        )
    if not isinstance(totals, Totals):
        return f"{label}: {totals.describe()}"
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(totals.outcomes.items()))
    return (
        f"{label}: {totals.delivered} users delivered ({totals.rows} rows"
        f"{'; ' + outcomes if outcomes else ''}), {totals.failed} to retry, "
        f"{totals.dead} dead letters"
    )


def _parse_as_of(value: str) -> datetime:
    """An ISO 8601 time (UTC unless it says otherwise), in UTC, in the years
    2 to 9998: a job converts it to its time zone, which must not leave the
    calendar ``datetime`` can hold."""
    if len(value) > AS_OF_MAX_LENGTH:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {value[:AS_OF_MAX_LENGTH]!r}... ({len(value)} characters)"
        )
    try:
        when = datetime.fromisoformat(value)
        when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc
    if not 1 < when.year < 9999:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time in the years 2-9998: {value!r}")
    return when


def _job_names(settings: Settings, wanted: list[str] | None) -> list[str] | None:
    if not wanted:
        return None
    names = [n.strip() for value in wanted for n in value.split(",") if n.strip()]
    known = [*registry.JOBS, registry.OUTBOX, registry.IMPORTS]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise UsageError(f"unknown job {unknown}; known: {', '.join(known)}")
    return names


def check_schedules(settings: Settings) -> None:
    """Raise :class:`ScheduleError` (one line, naming the setting's value)
    when a job's schedule does not parse."""
    registry.schedules(settings)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    logging.config.dictConfig(logs.log_config(settings.log_level))
    only = _job_names(settings, args.job)
    check_schedules(settings)

    async def work(store: Store) -> int:
        worker = registry.build_worker(store, SystemClock(), only=only)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        try:
            if args.until_idle:
                runs = await worker.run_due()
                for run in runs:
                    print(_run_line(run))
                for label, totals in (await worker.drain_loops()).items():
                    print(_loop_line(label, totals))
                return 1 if any(run.status == "FAILED" for run in runs) else 0
            await worker.run_forever()
            return 0
        finally:
            await worker.close()

    return asyncio.run(with_store(settings, work))


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    if args.jobs_command == "list":
        return _jobs_list(args, settings)
    if args.name not in registry.JOBS:
        raise UsageError(f"unknown job {args.name!r}; known: {', '.join(registry.JOBS)}")
    if args.jobs_command == "run":
        return _jobs_run(args, settings)
    return _jobs_history(args, settings)


def _jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    schedules = registry.schedules(settings)
    now = datetime.now(UTC)
    latest = asyncio.run(
        with_store(settings, lambda store: job_runs.latest_runs(store, list(registry.JOBS)))
    )
    rows = []
    for name in registry.JOBS:
        schedule = schedules[name]
        last = latest.get(name)
        rows.append(
            {
                "job": name,
                "schedule": schedule.text,
                "time_zone": settings.jobs_timezone,
                "next_run": _iso(schedule.next(now)),
                "last_run": _run_json(last) if last else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        last = latest.get(str(row["job"]))
        outcome = f"{last.status} at {_when(last.started_at)}" if last else "never run"
        print(
            f"{row['job']:<14} {row['schedule']:<12} next {row['next_run'] or 'off':<26} "
            f"last: {outcome}"
        )
    return 0


def _jobs_run(args: argparse.Namespace, settings: Settings) -> int:
    logging.config.dictConfig(logs.log_config(settings.log_level))

    async def work(store: Store) -> RunRecord | None:
        worker = registry.build_worker(store, SystemClock(), only=[args.name])
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        return await worker.run_now(args.name, as_of=args.as_of, dry_run=args.dry_run)

    run = asyncio.run(with_store(settings, work))
    if run is None:
        print("idstore: the run's outcome could not be read back", file=sys.stderr)
        return 1
    print(json.dumps(_run_json(run), indent=2) if args.json else _run_line(run))
    return 0 if run.status == "SUCCEEDED" else 1


def _jobs_history(args: argparse.Namespace, settings: Settings) -> int:
    runs = asyncio.run(
        with_store(settings, lambda store: job_runs.history(store, args.name, limit=args.limit))
    )
    if args.json:
        print(json.dumps([_run_json(run) for run in runs], indent=2))
        return 0
    for run in runs:
        print(_run_line(run))
        for error in run.errors[:5]:
            print(f"         error: {json.dumps(error)}")
    return 0


def add_parsers(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run the scheduled jobs and the outbox dispatchers")
    worker.add_argument(
        "--until-idle",
        action="store_true",
        help="run what is due now, then exit (for scripts and tests)",
    )
    worker.add_argument(
        "--job",
        action="append",
        help="run only these jobs (repeat or separate with commas; 'outbox' for the dispatchers, "
        "'import' for the CSV import jobs)",
    )
    worker.set_defaults(handler=cmd_worker)

    jobs = sub.add_parser("jobs", help="the scheduled jobs: list, run once, history")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = jobs_sub.add_parser("list", help="schedule, last run and next run of every job")
    listing.add_argument("--json", action="store_true")
    run = jobs_sub.add_parser("run", help="run a job once, now")
    run.add_argument("name", help=", ".join(registry.JOBS) or "job name")
    run.add_argument("--dry-run", action="store_true", help="report what would change only")
    run.add_argument(
        "--as-of",
        type=_parse_as_of,
        help="run as if the clock said this ISO 8601 time (UTC unless it says otherwise)",
    )
    run.add_argument("--json", action="store_true")
    history = jobs_sub.add_parser("history", help="the latest runs of a job")
    history.add_argument("name")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--json", action="store_true")
    jobs.set_defaults(handler=cmd_jobs)


ERRORS = (UsageError, ScheduleError)
"""Errors of these commands that ``idstore`` reports in one line (exit 2)."""
