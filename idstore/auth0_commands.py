"""``idstore auth0 import|password-change|jobs|drift``: Auth0's bulk work
from the command line, in the foreground (docs/auth0.md "Bulk import",
"Password-change tickets", "Drift").

- ``import [--pending|--all]``: the users without an Auth0 account whose
  rows wait (``--all``: first an ``upsert`` row for every live user without
  one) go to Auth0 by bulk import jobs, at most two at a time, each printed
  as it goes (:class:`identity_sync.auth0_import.ImportRunner`). Users a job
  refuses are left to the dispatcher, which creates or adopts them one by one.
- ``password-change (--user ID ... | --user-group G | --all) --out FILE``,
  or ``--resume JOB_ID --out FILE``: a ticket per user at
  ``auth0_password_tickets_per_second`` (:mod:`identity_sync.password_tickets`);
  the URLs go to ``FILE`` only (CSV ``user_id,email,ticket_url``, created
  with mode 0600; a resumed job appends to it), never to the database or a log.
- ``jobs [ID]``: the jobs with their status and summary (one with its failures).
- ``drift [--repair]``: what differs between Auth0 and the store
  (:mod:`identity_sync.drift`); ``--repair`` enqueues an upsert for each
  user reported (orphans are reported only).

Each opens its own Auth0 client on the tenant's shared request budget (the
one the workers use), retrying passing failures itself.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging.config
import os
import socket
import stat
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from identity_store import accounts, jobs
from identity_store.jobs import JobKind, JobRecord
from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync import drift
from identity_sync.auth0 import Auth0Client
from identity_sync.auth0_import import ImportProgress, ImportRunner, ImportTotals
from identity_sync.auth_service import AuthServiceError
from identity_sync.clock import SystemClock
from identity_sync.dispatcher import DatabaseRateLimiter
from identity_sync.drift import DriftReport, Finding
from identity_sync.password_tickets import JobLost, Selection, TicketProgress, TicketRun
from identity_sync.password_tickets import create_job as create_ticket_job
from idstore import logs
from idstore.cli_common import cli_actor, term, user_id_arg
from idstore.opening import with_store
from idstore.worker_commands import UsageError

TARGET = "auth0"

CLI_ATTEMPTS = 5
"""Tries of one Auth0 call that fails for a passing reason (the client waits between)."""

FAILURES_SHOWN = 20
"""Failures of a job printed as text (``--json`` and ``jobs ID --json`` give all kept)."""

JOB_ID_MAX = 64
GROUP_MAX = 255

log = logging.getLogger("idstore.auth0")


def _worker_name(what: str) -> str:
    """The name the leases of this command carry: host, process and what."""
    return f"cli:{socket.gethostname()[:100]}:{os.getpid()}:{what}"


def _job_id(value: str) -> str:
    if not value.isalnum() or len(value) > JOB_ID_MAX:
        shown = value if len(value) <= 40 else f"{value[:40]}..."
        raise argparse.ArgumentTypeError(f"not a job id: {shown!r}")
    return value


def _group(value: str) -> str:
    if not value or len(value) > GROUP_MAX or not value.isprintable():
        raise argparse.ArgumentTypeError("not a user group name (printable, 1 to 255 characters)")
    return value


def _client(store: Store, clock: SystemClock) -> Auth0Client:
    """The Auth0 client of a command: the workers' shared budget, its own retries."""
    settings = store.settings
    _check_configured(settings)
    limiter = DatabaseRateLimiter(
        store,
        TARGET,
        rate=settings.auth0_requests_per_second,
        burst=settings.auth0_burst,
        clock=clock,
    )
    return Auth0Client(settings, clock=clock, limiter=limiter, max_attempts=CLI_ATTEMPTS)


def _check_configured(settings: Settings) -> None:
    """Refuse before the database is opened (the same checks as :func:`_client`)."""
    if settings.auth_service != "auth0":
        raise UsageError(f"IDSTORE_AUTH_SERVICE is {settings.auth_service!r}, not 'auth0'")
    if not settings.auth0_configured:
        raise UsageError(
            "Auth0 is not configured: set IDSTORE_AUTH0_BASE_URL, IDSTORE_AUTH0_CLIENT_ID "
            "and IDSTORE_AUTH0_CLIENT_SECRET"
        )


def _logging(settings: Settings) -> None:
    logging.config.dictConfig(logs.log_config(settings.log_level))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _say(line: str, *, json_mode: bool) -> None:
    """A progress line: stdout, or stderr when stdout carries JSON."""
    print(line, file=sys.stderr if json_mode else sys.stdout, flush=True)


# -- import ----------------------------------------------------------------------


def _progress_line(p: ImportProgress) -> str:
    head = f"job {p.job_id} (Auth0 {term(p.external_id)}): {p.state}, {p.users} users"
    if p.state in ("completed", "failed") or p.inserted or p.failed:
        head += f", {p.inserted} inserted, {p.updated} updated, {p.failed} refused"
    if p.message:
        head += f": {term(p.message)}"
    return head


def _import(args: argparse.Namespace, settings: Settings) -> int:
    _check_configured(settings)
    _logging(settings)
    actor = cli_actor()

    async def work(store: Store) -> tuple[int, ImportTotals, list[str]]:
        clock = SystemClock()
        enqueued = 0
        if args.all:
            enqueued = await accounts.enqueue_without_account(store, TARGET, actor, now=clock.now())
            _say(f"enqueued {enqueued} users without an Auth0 account", json_mode=args.json)
        started: list[str] = []

        def progress(p: ImportProgress) -> None:
            if p.job_id not in started:
                started.append(p.job_id)
            _say(_progress_line(p), json_mode=args.json)

        async with _client(store, clock) as service:
            runner = ImportRunner(
                store,
                service,
                clock=clock,
                name=_worker_name("import"),
                on_progress=progress,
            )
            try:
                totals = await runner.run()
            finally:
                await runner.close()
        return enqueued, totals, started

    try:
        enqueued, totals, started = asyncio.run(with_store(settings, work))
    except AuthServiceError as exc:
        print(f"idstore: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"enqueued": enqueued, "jobs": started, **asdict(totals)}, indent=2))
    else:
        print(
            f"{totals.started} jobs started ({totals.succeeded} succeeded, {totals.failed} "
            f"failed): {totals.imported} users imported, {totals.refused} refused and "
            f"{totals.given_back} given back to the dispatcher"
        )
    return 1 if totals.failed else 0


# -- password-change ----------------------------------------------------------------


class CsvTicketFile:
    """The tickets' CSV file: ``user_id,email,ticket_url``, mode 0600.

    A new job's file must not exist (``O_EXCL``: never written into a file
    someone else prepared); a resumed job's may, and is appended to, when it
    is a regular file that only its owner may read."""

    HEADER = ("user_id", "email", "ticket_url")

    def __init__(self, path: Path, *, append: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        flags |= os.O_APPEND if append else os.O_EXCL
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise UsageError(
                f"{path} exists: the tickets go to a new file (or --resume a job to append)"
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
            os.close(fd)
            raise UsageError(
                f"{path} is not a regular file only its owner may read "
                f"(mode {stat.filemode(info.st_mode)}): the tickets are secrets"
            )
        self.path = path
        self._file: TextIO = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._file)
        if info.st_size == 0:
            self._csv.writerow(self.HEADER)

    def write(self, user_id: str, email: str | None, url: str) -> None:
        self._csv.writerow((user_id, email or "", url))

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _selection(args: argparse.Namespace) -> Selection | None:
    chosen = [bool(args.user), args.user_group is not None, args.all]
    if args.resume is not None:
        if any(chosen):
            raise UsageError(
                "--resume takes the job's own selection: no --user, --user-group or --all"
            )
        return None
    if sum(chosen) != 1:
        raise UsageError("name the users: --user ID ..., --user-group GROUP or --all")
    try:
        if args.user:
            return Selection(user_ids=tuple(args.user))
        if args.user_group is not None:
            return Selection(user_group=args.user_group)
        return Selection(everyone=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _ticket_json(job: JobRecord, out: Path) -> dict[str, Any]:
    return {**_job_json(job), "out": str(out)}


def _password_change(args: argparse.Namespace, settings: Settings) -> int:
    selection = _selection(args)
    if args.out is None:
        raise UsageError("name --out FILE: the tickets' URLs are written there and nowhere else")
    _check_configured(settings)
    _logging(settings)
    actor = cli_actor()
    sink = CsvTicketFile(args.out, append=args.resume is not None)

    def progress(p: TicketProgress) -> None:
        total = f"/{p.total}" if p.total is not None else ""
        _say(
            f"job {p.job_id}: {p.done}{total} users, {p.tickets} tickets, {p.failed} failed",
            json_mode=args.json,
        )

    async def work(store: Store) -> JobRecord:
        clock = SystemClock()
        job_id = args.resume
        if selection is not None:
            job = await create_ticket_job(store, selection, now=clock.now(), created_by=actor.name)
            job_id = job.id
            _say(f"job {job_id}: tickets for {selection.describe()}", json_mode=args.json)
        async with _client(store, clock) as service:
            run = TicketRun(
                store,
                service,
                sink,
                clock=clock,
                name=_worker_name("tickets"),
                on_progress=progress,
            )
            try:
                return await run.run(job_id)
            except (KeyboardInterrupt, asyncio.CancelledError):
                _say(
                    f"interrupted: resume with idstore auth0 password-change --resume {job_id} "
                    f"--out {args.out}",
                    json_mode=args.json,
                )
                raise

    try:
        job = asyncio.run(with_store(settings, work))
    except LookupError as exc:
        print(f"idstore: {exc.args[0]}", file=sys.stderr)
        return 2
    except JobLost as exc:
        print(f"idstore: job {exc.args[0]} was taken over by another worker", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        sink.close()
    if args.json:
        print(json.dumps(_ticket_json(job, args.out), indent=2))
    else:
        print(
            f"job {job.id} {job.status}: {term(job.summary.get('message'))}; "
            f"tickets in {args.out} (mode 0600)"
        )
        _print_failures(job)
    return 0


# -- jobs ------------------------------------------------------------------------


def _job_json(job: JobRecord, *, failures: bool = True) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "externalId": job.external_id,
        "createdBy": job.created_by,
        "createdAt": _iso(job.created_at),
        "startedAt": _iso(job.started_at),
        "finishedAt": _iso(job.finished_at),
        "lockedBy": job.locked_by,
        "lockedUntil": _iso(job.locked_until),
        "params": _params(job),
        "summary": job.summary,
        "failuresTotal": job.failures_total,
    }
    if failures:
        shown["failures"] = job.failures
    return shown


def _params(job: JobRecord) -> dict[str, Any]:
    """The parameters, without an import's list of user ids (its count says enough)."""
    return {k: v for k, v in job.params.items() if k != "users" or job.kind != "AUTH0_IMPORT"}


def _summary_text(job: JobRecord) -> str:
    parts = [f"{k}={term(v)}" for k, v in job.summary.items() if k not in ("message", "after")]
    message = job.summary.get("message")
    text = ", ".join(parts) or "-"
    return f"{text}  {term(message)}" if message else text


def _job_line(job: JobRecord, now: datetime) -> str:
    status = job.status
    if status == "RUNNING" and not job.held(now):
        status = "RUNNING (no worker holds it)"
    return f"{job.id}  {job.kind:<20} {status:<11} {term(job.created_at)}  {_summary_text(job)}"


def _print_failures(job: JobRecord) -> None:
    if not job.failures:
        return
    print(f"failures ({job.failures_total}; the first {min(len(job.failures), FAILURES_SHOWN)}):")
    for f in job.failures[:FAILURES_SHOWN]:
        error = f.get("error") or "; ".join(str(e) for e in f.get("errors") or [])
        print(f"  {term(f.get('user_id'))}  {term(f.get('email'))}  {term(error)}")


def _jobs(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> list[JobRecord]:
        if args.id is not None:
            job = await jobs.get(store, args.id)
            return [job] if job is not None else []
        return await jobs.list_jobs(
            store, kinds=[JobKind.AUTH0_IMPORT, JobKind.BULK_PASSWORD_CHANGE], limit=args.limit
        )

    found = asyncio.run(with_store(settings, work))
    if args.id is not None and not found:
        print(f"idstore: no job {args.id}", file=sys.stderr)
        return 2
    if args.json:
        shown: Any = (
            _job_json(found[0])
            if args.id is not None
            else [_job_json(j, failures=False) for j in found]
        )
        print(json.dumps(shown, indent=2))
        return 0
    now = datetime.now(UTC)
    if not found:
        print("no Auth0 jobs")
    for job in found:
        print(_job_line(job, now))
    if args.id is not None:
        job = found[0]
        print(f"params   {json.dumps(_params(job))}")
        print(f"worker   {term(job.locked_by)} until {term(job.locked_until)}")
        print(f"started  {term(job.started_at)}  finished {term(job.finished_at)}")
        _print_failures(job)
    return 0


# -- drift -------------------------------------------------------------------------

_KIND_TITLES = {
    "missing": "should have an account, none in Auth0",
    "unlinked": "have an account in Auth0 the store does not name",
    "not_blocked": "gone or inactive here, still unblocked in Auth0",
    "not_deleted": "gone or inactive here, still in Auth0 (hard delete)",
    "differs": "synced fields differ",
    "orphan": "accounts no user of the store has (reported only)",
    "unchecked": "could not be checked",
}


def _finding_json(f: Finding) -> dict[str, Any]:
    return {
        "kind": f.kind,
        "userId": f.user_id,
        "authUserId": f.auth_user_id,
        "email": f.email,
        "fields": list(f.fields),
        "detail": f.detail,
        "repairable": f.repairable,
    }


def _drift_lines(report: DriftReport) -> list[str]:
    listed = f"{report.accounts} accounts" if report.accounts is not None else "accounts by id"
    lines = [f"checked {report.users} store ids against {listed} in Auth0"]
    if report.listing_refused:
        lines.append(
            f"note: {term(report.listing_refused)}; each user's account was looked up by id "
            "instead, and orphans were not looked for"
        )
    for kind, title in _KIND_TITLES.items():
        found = report.of(kind)  # type: ignore[arg-type]
        if not found:
            continue
        lines.append(f"{kind}: {len(found)} {title}")
        for f in found:
            lines.append(
                f"  {term(f.user_id)}  {term(f.auth_user_id)}  {term(f.email)}  {term(f.detail)}"
            )
    if not report.findings:
        lines.append("no drift")
    return lines


def _drift(args: argparse.Namespace, settings: Settings) -> int:
    _check_configured(settings)
    _logging(settings)
    actor = cli_actor()

    async def work(store: Store) -> tuple[DriftReport, list[str] | None]:
        clock = SystemClock()
        async with _client(store, clock) as service:
            report = await drift.check(store, service)
        repaired = None
        if args.repair:
            repaired = await drift.repair(store, TARGET, report, actor, now=clock.now())
        return report, repaired

    try:
        report, repaired = asyncio.run(with_store(settings, work))
    except AuthServiceError as exc:
        print(f"idstore: Auth0: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "users": report.users,
                    "accounts": report.accounts,
                    "listingRefused": report.listing_refused,
                    "findings": [_finding_json(f) for f in report.findings],
                    "enqueued": repaired,
                },
                indent=2,
            )
        )
    else:
        print("\n".join(_drift_lines(report)))
        if repaired is not None:
            print(
                f"enqueued an upsert for {len(repaired)} users; the dispatcher brings Auth0 "
                "to the store's state"
            )
            for user_id in repaired:
                print(f"  {user_id}")
    return 1 if report.findings else 0


# -- Wiring ------------------------------------------------------------------------


def cmd_auth0(args: argparse.Namespace, settings: Settings) -> int:
    handler = {
        "import": _import,
        "password-change": _password_change,
        "jobs": _jobs,
        "drift": _drift,
    }[args.auth0_command]
    return handler(args, settings)


def add_parsers(sub: Any) -> None:
    parser = sub.add_parser(
        "auth0", help="Auth0: bulk import, password-change tickets, jobs, drift"
    )
    commands = parser.add_subparsers(dest="auth0_command", required=True)

    imp = commands.add_parser(
        "import", help="create the accounts of the users without one by bulk import jobs"
    )
    which = imp.add_mutually_exclusive_group()
    which.add_argument(
        "--pending",
        action="store_true",
        help="the users whose auth0 rows wait (the default)",
    )
    which.add_argument(
        "--all",
        action="store_true",
        help="every live user without an account (an upsert row is written for each first)",
    )
    imp.add_argument("--json", action="store_true", help="print the outcome as JSON")

    tickets = commands.add_parser(
        "password-change", help="a password-change ticket for each user named, as a job"
    )
    tickets.add_argument(
        "--user", action="append", type=user_id_arg, metavar="ID", default=[], help="repeatable"
    )
    tickets.add_argument("--user-group", type=_group, metavar="GROUP")
    tickets.add_argument("--all", action="store_true", help="every live user")
    tickets.add_argument("--resume", type=_job_id, metavar="JOB_ID", help="go on with a job")
    tickets.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="CSV file of the tickets (user_id,email,ticket_url), created with mode 0600",
    )
    tickets.add_argument("--json", action="store_true")

    listing = commands.add_parser("jobs", help="the Auth0 jobs with their status and summary")
    listing.add_argument("id", nargs="?", type=_job_id, metavar="ID", help="one job, in full")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")

    check = commands.add_parser("drift", help="what differs between Auth0 and the store")
    check.add_argument(
        "--repair", action="store_true", help="enqueue an upsert for every user reported"
    )
    check.add_argument("--json", action="store_true")
    parser.set_defaults(handler=cmd_auth0)
