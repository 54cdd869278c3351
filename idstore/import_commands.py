"""``idstore import FILE``: a CSV file of users imported from the command
line (docs/management-api.md, "CSV import").

The command runs the store's import directly, not through the HTTP API
(no server or token needed), and through the same job as ``POST
/api/v1/users/import``: the file is checked and kept with an ``IMPORT``
job (:func:`identity_store.imports.start_import`), held by this process,
which runs it in the foreground (:class:`identity_sync.csv_import.ImportRun`)
with a progress bar. So the job has the same status, totals and per-row
report as one started over HTTP, and an interruption loses nothing:
Ctrl-C stops it between two batches and hands it back (``idstore import
--resume JOB_ID`` goes on, or a running worker takes it over); a process
killed outright leaves the job to be taken over when its lease runs out.
``--background`` only keeps the file and queues the job for the workers.

Exit status: 0 when every row was imported, 1 when some failed (the report
says which) or the job failed, 2 when the file or an option was refused
(nothing imported), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging.config
import os
import signal
import socket
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from tqdm import tqdm

from identity_store import imports
from identity_store.csv_files import ENCODINGS, CsvFormat
from identity_store.import_rows import UPSERT_KEYS
from identity_store.imports import ImportOptions
from identity_store.jobs import JobRecord
from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync.csv_import import ImportProgress, ImportRun, Interrupted
from idstore import logs
from idstore.cli_common import cli_actor, term
from idstore.opening import with_store
from idstore.worker_commands import UsageError

FAILURES_SHOWN = 10
JOB_ID_MAX = 64


def _job_id(value: str) -> str:
    if not value.isalnum() or len(value) > JOB_ID_MAX:
        shown = value if len(value) <= 40 else f"{value[:40]}..."
        raise argparse.ArgumentTypeError(f"not a job id: {shown!r}")
    return value


def _mapping(value: str) -> tuple[str, str | None]:
    column, sep, attribute = value.partition("=")
    if not sep or not column.strip():
        raise argparse.ArgumentTypeError(
            f"expected COLUMN=ATTRIBUTE (or COLUMN= to ignore the column), got {value[:80]!r}"
        )
    return column.strip(), attribute.strip() or None


def _char(value: str) -> str:
    return "\t" if value in ("\\t", "tab") else value


def _worker_name() -> str:
    return f"cli:{socket.gethostname()[:100]}:{os.getpid()}:import"


def _job_json(job: JobRecord) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "params": job.params,
        "summary": job.summary,
        "failures": job.failures,
        "createdBy": job.created_by,
        "createdAt": job.created_at.isoformat(),
        "startedAt": job.started_at.isoformat() if job.started_at else None,
        "finishedAt": job.finished_at.isoformat() if job.finished_at else None,
    }


def _options(args: argparse.Namespace) -> ImportOptions:
    return ImportOptions(
        format=CsvFormat(
            delimiter=_char(args.delimiter),
            quote_char=_char(args.quote_char),
            escape_char=_char(args.escape_char),
            encoding=args.encoding,
        ),
        mapping=dict(args.map or []),
        upsert_by=args.upsert_by,
        user_group=args.user_group,
        dry_run=args.dry_run,
    )


def _report_file(path: Path) -> TextIO:
    """A new file of mode 0600 for the per-row report (it names users)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists: the report goes to a new file") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path} is not a regular file")
    return open(fd, "w", encoding="utf-8", newline="")


async def _write_report(store: Store, job_id: str, out: TextIO) -> None:
    async for text in imports.report_lines(store, job_id):
        out.write(text)


def _print_job(job: JobRecord, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(_job_json(job), indent=2, default=str))
        return
    dry = " (dry run: nothing written)" if job.params.get("dryRun") else ""
    print(f"job {job.id} {job.status}: {term(job.summary.get('message'))}{dry}")
    for failure in job.failures[:FAILURES_SHOWN]:
        print(
            f"  row {failure.get('row')} (line {failure.get('line')}): {term(failure.get('error'))}"
        )
    hidden = job.failures_total - min(len(job.failures), FAILURES_SHOWN)
    if hidden > 0:
        print(
            f"  ... and {hidden} more: see --report FILE, or GET /api/v1/jobs/{job.id}/report.csv"
        )


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    logging.config.dictConfig(logs.log_config("warning"))
    if (args.file is None) == (args.resume is None):
        raise UsageError("name a FILE to import, or --resume JOB_ID")
    if args.background and (args.resume is not None or args.report is not None):
        raise UsageError("--background only queues a new file's job: no --resume, no --report")
    options = _options(args) if args.file is not None else None
    source: BinaryIO | None = None
    if args.file is not None:
        try:
            source = open(args.file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    report = _report_file(args.report) if args.report is not None else None
    try:
        return _run(args, settings, options, source, report)
    finally:
        if source is not None:
            source.close()
        if report is not None:
            report.close()


def _run(
    args: argparse.Namespace,
    settings: Settings,
    options: ImportOptions | None,
    source: BinaryIO | None,
    report: TextIO | None,
) -> int:
    name = _worker_name()
    actor = cli_actor()
    running: list[str] = [args.resume] if args.resume is not None else []

    async def work(store: Store) -> JobRecord | None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        bar = tqdm(total=0, unit="row", disable=None, file=sys.stderr, dynamic_ncols=True)

        def progress(p: ImportProgress) -> None:
            bar.total = p.totals.rows
            bar.update(p.totals.done - bar.n)
            bar.set_postfix(
                created=p.totals.created,
                updated=p.totals.updated,
                unchanged=p.totals.unchanged,
                failed=p.totals.failed,
                refresh=False,
            )

        run = ImportRun(store, name=name, stopping=stopping, on_progress=progress)
        try:
            if source is None:
                try:
                    finished = await run.resume(args.resume)
                except LookupError as exc:
                    raise UsageError(str(exc.args[0])) from None
            else:
                assert options is not None
                job = await imports.start_import(
                    store,
                    source,
                    options,
                    now=datetime.now(UTC),
                    created_by=actor.name,
                    file_name=Path(args.file).name,
                    worker=None if args.background else name,
                    lease=None if args.background else run.lease,
                )
                if args.background:
                    return job
                running.append(job.id)
                bar.reset(total=int(job.summary.get("rows", 0)))
                print(f"job {job.id}: {job.summary.get('rows')} rows", file=sys.stderr)
                finished = await run.run_claimed(job)
        finally:
            bar.close()
        if finished is not None and report is not None:
            await _write_report(store, finished.id, report)
        return finished

    try:
        job = asyncio.run(with_store(settings, work))
    except Interrupted as exc:
        print(f"idstore: {exc}; go on with: idstore import --resume {running[-1]}", file=sys.stderr)
        return 130
    if job is None:
        print("idstore: the job was taken over by another worker", file=sys.stderr)
        return 1
    _print_job(job, args)
    if args.background:
        return 0
    return 0 if job.status == "SUCCEEDED" and not job.summary.get("failed") else 1


def add_parsers(sub: Any) -> None:
    parser = sub.add_parser(
        "import",
        help="import users from a CSV file (a job, with a progress bar and a per-row report)",
        description="Create or update users from a CSV file: a header naming the columns "
        "(attributes, or mapped to them with --map), then a user per row. A row whose user "
        "exists (by userName, or --upsert-by externalId) updates it; a row that would change "
        "nothing is counted unchanged; a bad row fails alone.",
    )
    parser.add_argument("file", nargs="?", help="the CSV file")
    parser.add_argument("--resume", type=_job_id, metavar="JOB_ID", help="go on with a job")
    parser.add_argument("--user-group", help="the userGroup of every row that names none")
    parser.add_argument(
        "--upsert-by",
        choices=UPSERT_KEYS,
        default="userName",
        help="how a row finds its user (default userName)",
    )
    parser.add_argument("--dry-run", action="store_true", help="report only; write no user")
    parser.add_argument("--delimiter", default=",", help="cell separator (default ,; tab: \\t)")
    parser.add_argument("--quote-char", default='"', help="quote character ('' for none)")
    parser.add_argument("--escape-char", default="", help="escape character (default none)")
    parser.add_argument("--encoding", choices=ENCODINGS, default="utf-8")
    parser.add_argument(
        "--map",
        action="append",
        type=_mapping,
        metavar="COLUMN=ATTRIBUTE",
        help="the attribute a column holds (COLUMN= ignores it); repeat",
    )
    parser.add_argument(
        "--report", type=Path, help="write the per-row report (CSV) to this new file"
    )
    parser.add_argument(
        "--background",
        action="store_true",
        help="keep the file and queue the job for the workers; do not run it here",
    )
    parser.add_argument("--json", action="store_true", help="print the job as JSON")
    parser.set_defaults(handler=cmd_import)
