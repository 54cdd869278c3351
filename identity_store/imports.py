"""CSV import of users (SPEC §1, after Mia-Platform's import; docs/
management-api.md, "CSV import"): the file checked and kept, the rows
created or updated in batches as a job (kind ``IMPORT``), a report of
every row.

:func:`start_import` reads the whole file once (:func:`check_file`: its
size, header, mapping and row count, so that a file that cannot be
imported is refused before a job exists), then writes the job (``QUEUED``,
or held by the caller that runs it) and the file itself, in pieces of a
mebibyte (``job_inputs``), in one transaction: every worker of every
process can run the job, or resume it, from the database alone.

A worker (:mod:`identity_sync.csv_import`) reads the rows back
(:func:`read_rows`), groups them (:func:`batches`) and writes each batch
with :func:`write_batch`, one transaction that holds:

- the job, locked and its lease renewed (a worker whose lease ran out and
  was taken over writes nothing: :class:`JobLostError`);
- each row's user created or updated through the user services' own steps
  (:mod:`identity_store.user_changes`: the validation, lifecycle, audit and
  outbox rows of a SCIM write), many users per statement; a row whose user
  would not change is counted ``unchanged`` and writes nothing, so the same
  file imported twice changes nothing the second time;
- the outcome of each row (``job_reports``) and the job's totals, with
  ``lastRow``: the job resumes after it.

A row that fails (a value not acceptable, a ``userName`` taken) fails alone;
when the database refuses a batch as a whole (a ``userName`` a concurrent
writer took meanwhile), its rows are written again one by one, so that only
the guilty row fails. A dry run does all of it and rolls the users back,
keeping the report.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any, cast

from sqlalchemy import Table, delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from . import import_rows, jobs, user_changes
from .actor import Actor
from .comparison import normalize
from .csv_files import CsvFormat, Record, RecordReader, StructureError, shown
from .errors import (
    ConcurrentUpdateError,
    ConflictError,
    StateError,
    ValidationError,
    ValueRefusedError,
)
from .import_rows import ColumnPlan, RowError, RowValues, UpsertKey
from .jobs import JobKind, JobRecord, JobStatus
from .models import IdpSource, JobInput, JobReport
from .prepared_reads import PreparedReads
from .read_models import UserRow, user_rows
from .settings import Settings
from .store import Store, database_errors

__all__ = [
    "INPUT_PIECE",
    "REPORT_COLUMNS",
    "FileTooLargeError",
    "ImportOptions",
    "JobLostError",
    "Outcome",
    "Row",
    "StructureError",
    "Totals",
    "batches",
    "check_file",
    "csv_cell",
    "delete_input",
    "finish_import",
    "read_rows",
    "report_lines",
    "start_import",
    "write_batch",
]

INPUT_PIECE = 1_048_576
"""Bytes of the file per ``job_inputs`` row."""

FEED = 65_536
"""Bytes parsed at a time: the event loop gets a turn between two."""

REPORT_COLUMNS = ("row", "line", "outcome", "userId", "key", "message")
"""The columns of the per-row report (``GET /api/v1/jobs/{id}/report.csv``)."""

CREATED = "created"
UPDATED = "updated"
UNCHANGED = "unchanged"
FAILED = "failed"

_INPUTS = cast(Table, JobInput.__table__)
_REPORTS = cast(Table, JobReport.__table__)


class FileTooLargeError(ValidationError):
    """The file is larger, or has more rows, than the settings allow (413)."""


class JobLostError(StateError):
    """The job is no longer this worker's: its lease ran out and another
    worker took it over (or it ended). Nothing of the batch was written."""


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How to read a file and what to do with its rows."""

    format: CsvFormat = field(default_factory=CsvFormat)
    mapping: Mapping[str, str | None] = field(default_factory=dict)
    """Column name -> attribute (``None`` or ``""``: ignore the column)."""
    upsert_by: UpsertKey = "userName"
    user_group: str | None = None
    """The ``userGroup`` of every row that does not name one."""
    dry_run: bool = False

    def params(self) -> dict[str, Any]:
        """The job's ``params``."""
        return {
            "delimiter": self.format.delimiter,
            "quoteChar": self.format.quote_char,
            "escapeChar": self.format.escape_char,
            "encoding": self.format.encoding,
            "mapping": dict(self.mapping),
            "upsertBy": self.upsert_by,
            "userGroup": self.user_group,
            "dryRun": self.dry_run,
        }

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> ImportOptions:
        """The options a job's ``params`` hold."""
        return cls(
            format=CsvFormat(
                delimiter=str(params.get("delimiter", ",")),
                quote_char=str(params.get("quoteChar", '"')),
                escape_char=str(params.get("escapeChar", "")),
                encoding=str(params.get("encoding", "utf-8")),
            ),
            mapping=dict(params.get("mapping") or {}),
            upsert_by=params.get("upsertBy", "userName"),
            user_group=params.get("userGroup"),
            dry_run=bool(params.get("dryRun", False)),
        )

    def check(self, settings: Settings) -> None:
        """:class:`ValidationError` naming an option that is not acceptable."""
        self.format.check()
        if len(self.mapping) > settings.import_max_columns:
            raise ValidationError(
                f"the mapping has {len(self.mapping):,} entries; "
                f"at most {settings.import_max_columns:,} (one per column)"
            )
        for name, target in self.mapping.items():
            for given in (name, target or ""):
                if len(given) > 255 or "\x00" in given:
                    raise ValidationError(
                        "the mapping's names are at most 255 characters, without NUL"
                    )

    def plan(self, header: Sequence[str]) -> ColumnPlan:
        return import_rows.plan_columns(header, self.mapping, self.upsert_by, self.user_group)


def _reader(options: ImportOptions, settings: Settings) -> RecordReader:
    return RecordReader(
        options.format,
        max_columns=settings.import_max_columns,
        max_cell_chars=settings.import_max_cell_chars,
    )


@dataclass(frozen=True, slots=True)
class Checked:
    """What :func:`check_file` found."""

    plan: ColumnPlan
    rows: int
    size: int


def check_file(source: IO[bytes], options: ImportOptions, settings: Settings) -> Checked:
    """Read the whole file from ``source`` (blocking: run it in a thread)
    and say whether it can be imported: no larger than ``import_max_bytes``,
    readable as CSV of its format (:class:`~identity_store.csv_files.RecordReader`),
    its header mapped (:func:`identity_store.import_rows.plan_columns`,
    checked as soon as the header is read), with at least one row and at
    most ``import_max_rows``. Rows that fail on their own do not refuse it.

    :raises FileTooLargeError: Too many bytes or rows.
    :raises ValidationError: An option, the header, the mapping, or the
        file's structure (:class:`~identity_store.csv_files.StructureError`).
    """
    options.check(settings)
    reader = _reader(options, settings)
    plan: ColumnPlan | None = None
    size = 0
    while piece := source.read(FEED):
        size += len(piece)
        if size > settings.import_max_bytes:
            raise FileTooLargeError(f"the file is larger than {settings.import_max_bytes:,} bytes")
        reader.feed(piece)
        if plan is None and reader.header is not None:
            plan = options.plan(reader.header)
        if reader.rows > settings.import_max_rows:
            raise FileTooLargeError(f"the file has more than {settings.import_max_rows:,} rows")
    reader.finish()
    assert reader.header is not None  # finish() refuses a file without one
    plan = plan or options.plan(reader.header)
    if reader.rows > settings.import_max_rows:
        raise FileTooLargeError(f"the file has more than {settings.import_max_rows:,} rows")
    if reader.rows == 0:
        raise ValidationError("the file has a header but no rows")
    return Checked(plan, reader.rows, size)


@dataclass(slots=True)
class Totals:
    """Where an import job stands: its ``summary``."""

    rows: int = 0
    """Data rows in the file."""
    done: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    last_row: int = 0
    """The last row whose outcome is committed: the job resumes after it."""

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "done": self.done,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "lastRow": self.last_row,
            "progress": round(self.done / self.rows, 4) if self.rows else 1.0,
        }

    @classmethod
    def of(cls, summary: Mapping[str, Any]) -> Totals:
        return cls(
            rows=int(summary.get("rows", 0)),
            done=int(summary.get("done", 0)),
            created=int(summary.get("created", 0)),
            updated=int(summary.get("updated", 0)),
            unchanged=int(summary.get("unchanged", 0)),
            failed=int(summary.get("failed", 0)),
            last_row=int(summary.get("lastRow", 0)),
        )

    def plus(self, outcomes: Sequence[Outcome]) -> Totals:
        counted = Totals(
            rows=self.rows,
            done=self.done + len(outcomes),
            created=self.created,
            updated=self.updated,
            unchanged=self.unchanged,
            failed=self.failed,
            last_row=max([self.last_row, *(o.row for o in outcomes)]),
        )
        for o in outcomes:
            name = o.outcome
            setattr(counted, name, getattr(counted, name) + 1)
        return counted


async def start_import(
    store: Store,
    source: IO[bytes],
    options: ImportOptions,
    *,
    now: datetime,
    created_by: str,
    token_id: str | None = None,
    file_name: str | None = None,
    worker: str | None = None,
    lease: timedelta | None = None,
) -> JobRecord:
    """Check the file (:func:`check_file`) and keep it with a new ``IMPORT``
    job: ``QUEUED`` for the workers, or (``worker`` and ``lease``) held by
    the caller, which runs it itself.

    :raises FileTooLargeError: Too many bytes or rows.
    :raises ValidationError: The file, its header, the mapping or an option.
    """
    checked = await asyncio.to_thread(check_file, source, options, store.settings)
    await asyncio.to_thread(source.seek, 0)
    params = {
        **options.params(),
        "fileName": file_name[:255] if file_name else None,
        "bytes": checked.size,
        "columns": checked.plan.attributes,
        "tokenId": token_id,
    }

    async def work(session: AsyncSession) -> JobRecord:
        job = await jobs.create_in(
            session,
            JobKind.IMPORT,
            now=now,
            params=params,
            summary=Totals(rows=checked.rows).summary(),
            created_by=created_by,
            worker=worker,
            lease=lease,
        )
        seq = 0
        while piece := await asyncio.to_thread(source.read, INPUT_PIECE):
            await session.execute(_INPUTS.insert().values(job_id=job.id, seq=seq, data=piece))
            seq += 1
        return job

    return await store.transaction(work)


# -- Reading the rows back ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the file: its values, or why it fails before any write."""

    row: int
    line: int
    values: RowValues | None
    error: str | None = None


async def _piece(store: Store, job_id: str, seq: int) -> bytes | None:
    async with store.reading() as session:
        data = await session.scalar(
            select(_INPUTS.c.data).where(_INPUTS.c.job_id == job_id, _INPUTS.c.seq == seq)
        )
    return bytes(data) if data is not None else None


def _row(plan: ColumnPlan, record: Record) -> Row:
    if record.error is not None:
        return Row(record.row, record.line, None, record.error)
    try:
        return Row(record.row, record.line, import_rows.row_values(plan, record.cells))
    except RowError as exc:
        return Row(record.row, record.line, None, exc.detail)


async def read_rows(
    store: Store, job: JobRecord, settings: Settings, *, after: int = 0
) -> AsyncGenerator[Row, None]:
    """The rows of ``job``'s file after row ``after``, read back from the
    database a piece at a time.

    :raises StateError: The job's file is no longer kept (it ended).
    :raises ValidationError: The file cannot be read any more as its
        options say (it could when it was taken).
    """
    options = ImportOptions.of(job.params)
    reader = _reader(options, settings)
    plan: ColumnPlan | None = None
    seq = 0
    while True:
        piece = await _piece(store, job.id, seq)
        if piece is None and seq == 0:
            raise StateError(f"the file of job {job.id} is no longer kept")
        parts = [piece[i : i + FEED] for i in range(0, len(piece), FEED)] if piece else [None]
        for part in parts:
            records = reader.feed(part) if part is not None else reader.finish()
            if plan is None and reader.header is not None:
                plan = options.plan(reader.header)
            for record in records:
                if record.row > after:
                    assert plan is not None
                    yield _row(plan, record)
            await asyncio.sleep(0)  # a turn for the event loop between two parts
        if piece is None:
            return
        seq += 1


async def batches(rows: AsyncIterator[Row], size: int) -> AsyncGenerator[list[Row], None]:
    """``rows`` in batches of ``size``; a batch also ends before a row whose
    key a row of it has already, so that the later row sees the earlier
    one's user as written (the file's last word wins)."""
    batch: list[Row] = []
    keys: set[str] = set()
    async for row in rows:
        key = row.values.key if row.values is not None else None
        if batch and (len(batch) >= size or (key is not None and key in keys)):
            yield batch
            batch, keys = [], set()
        batch.append(row)
        if key is not None:
            keys.add(key)
    if batch:
        yield batch


# -- Writing a batch -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one row."""

    row: int
    line: int
    outcome: str
    """``created``, ``updated``, ``unchanged`` or ``failed``."""
    user_id: str | None = None
    key: str | None = None
    """The row's ``userName`` or ``externalId``, as written."""
    message: str | None = None

    def entry(self) -> list[Any]:
        return [self.row, self.line, self.outcome, self.user_id, self.key, self.message]

    def failure(self) -> dict[str, Any]:
        return {"row": self.row, "line": self.line, "key": self.key, "error": self.message}


def _written_key(values: RowValues | None, key: UpsertKey) -> str | None:
    if values is None:
        return None
    return values.user_name if key == "userName" else values.columns.get("external_id")


class _DryRun(Exception):
    """Rolls a dry run's batch back, with what it would have done."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__("dry run")
        self.outcomes = outcomes


_KEY_COLUMNS = {"userName": "user_name_normalized", "externalId": "external_id"}


def _key_of(user: UserRow, key: UpsertKey) -> str | None:
    found = user.user_name_normalized if key == "userName" else user.external_id
    return str(found) if found is not None else None


async def _current(
    session: AsyncSession, prepared: PreparedReads | None, ids: Sequence[str]
) -> list[UserRow]:
    """The users ``ids`` (locked by the session's transaction) as they are:
    on PostgreSQL by the prepared read of users by id (one statement, about
    a tenth of the Python of the SQLAlchemy read; on its own connection,
    which sees what was last committed, and no one else may commit a change
    to these users while the lock is held)."""
    if prepared is not None:
        with database_errors():
            found = await prepared.users(ids, groups=False)
        return [cast(UserRow, r.user) for r in found]  # the prepared reads build read models
    return await user_rows(session, ids)


async def _upsert(
    session: AsyncSession,
    rows: Sequence[Row],
    options: ImportOptions,
    actor: Actor,
    settings: Settings,
    prepared: PreparedReads | None,
) -> list[Outcome]:
    """Each row's user created, updated, or left as it is, in the session's
    transaction; the outcome of each row.

    :raises IntegrityError: The database refused the batch as a whole (a
        ``userName`` taken meanwhile): the caller writes its rows one by one.
    :raises ConflictError: The same, met while writing an update.
    """
    key = options.upsert_by
    valid = [r for r in rows if r.values is not None]
    ids = await user_changes.lock_user_ids(
        session, _KEY_COLUMNS[key], [cast(RowValues, r.values).key for r in valid]
    )
    by_key: dict[str, list[UserRow]] = {}
    for user in await _current(session, prepared, ids):
        by_key.setdefault(_key_of(user, key) or "", []).append(user)
    taken: dict[str, str] = {}
    if key == "externalId":  # a new user's userName may be another user's
        names = [
            normalize(r.values.user_name)
            for r in valid
            if r.values is not None and r.values.user_name and r.values.key not in by_key
        ]
        taken = await user_changes.taken_user_names(session, names)
    outcomes: list[Outcome] = []
    created: list[UserRow] = []
    claimed: set[str] = set()
    groups: dict[str, Any] = {}  # user group -> its validator, read once per batch
    required = settings.required_idp_attributes
    for row in rows:
        written = _written_key(row.values, key)
        if row.values is None:
            outcomes.append(Outcome(row.row, row.line, FAILED, None, written, row.error))
            continue
        matches = by_key.get(row.values.key, [])
        try:
            if len(matches) > 1:
                raise ConflictError(
                    "externalId",
                    f"externalId {shown(row.values.key)} is held by {len(matches)} users",
                )
            if matches:
                found = matches[0]
                current = user_changes.input_of(found)
                data = import_rows.merged(row.values, current)
                if data == current:
                    outcomes.append(Outcome(row.row, row.line, UNCHANGED, found.id, written))
                    continue
                await user_changes.write_replacement(
                    session,
                    await user_changes.load_user(session, found.id),
                    data,
                    actor,
                    required_attributes=required,
                    max_values=settings.max_multi_values,
                    action="user.import",
                )
                outcomes.append(Outcome(row.row, row.line, UPDATED, found.id, written))
                continue
            data = import_rows.merged(row.values, None)
            name = normalize(data.user_name)
            if name in taken or name in claimed:
                raise ConflictError("userName", f"userName {data.user_name!r} is already taken")
            await user_changes.check_new_user(session, data, known_groups=groups)
            user = user_changes.build_user(
                session,
                data,
                actor,
                required_attributes=required,
                max_values=settings.max_multi_values,
                default_idp_source=IdpSource.IMPORT.value,
            )
        except ConflictError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise  # the session's transaction is broken: the batch goes row by row
            outcomes.append(Outcome(row.row, row.line, FAILED, None, written, exc.detail))
            continue
        except ValidationError as exc:
            outcomes.append(Outcome(row.row, row.line, FAILED, None, written, exc.detail))
            continue
        claimed.add(name)
        created.append(user)
        user_id = None if options.dry_run else user.id
        outcomes.append(Outcome(row.row, row.line, CREATED, user_id, written))
    await user_changes.insert_users(session, created)
    return outcomes


async def _record(
    session: AsyncSession,
    job_id: str,
    outcomes: Sequence[Outcome],
    totals: Totals,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
) -> Totals:
    """The batch's report and the job's new totals, in the session's transaction."""
    counted = totals.plus(outcomes)
    await session.execute(
        _REPORTS.insert().values(
            job_id=job_id,
            first_row=outcomes[0].row,
            last_row=outcomes[-1].row,
            entries=[o.entry() for o in outcomes],
        )
    )
    recorded = await jobs.record_in(
        session,
        job_id,
        worker=worker,
        now=now,
        lease=lease,
        summary=counted.summary(),
        failures=[o.failure() for o in outcomes if o.outcome == FAILED],
    )
    if recorded is None:
        raise JobLostError(f"job {job_id} is no longer this worker's")
    return counted


async def _hold(
    session: AsyncSession, job_id: str, *, worker: str, now: datetime, lease: timedelta
) -> None:
    """Lock the job and renew its lease, or :class:`JobLostError`."""
    if await jobs.record_in(session, job_id, worker=worker, now=now, lease=lease) is None:
        raise JobLostError(f"job {job_id} is no longer this worker's")


BATCH_REFUSED = (IntegrityError, ConflictError, ValueRefusedError, ConcurrentUpdateError)
"""What makes a batch go row by row: the database refused it as a whole."""


def _refusal(exc: Exception, row: Row) -> str:
    if isinstance(exc, IntegrityError):
        if row.values is not None and row.values.user_name:
            return f"userName {row.values.user_name!r} is already taken"
        return "a value must be unique and is already taken"
    if isinstance(exc, ConflictError | ValueRefusedError | ConcurrentUpdateError):
        return exc.detail
    return str(exc)


async def write_batch(
    store: Store,
    job_id: str,
    rows: Sequence[Row],
    options: ImportOptions,
    totals: Totals,
    *,
    actor: Actor,
    worker: str,
    now: datetime,
    lease: timedelta,
) -> Totals:
    """Write ``rows`` (module docstring): their users, their report and the
    job's new totals, in one transaction; the totals.

    :raises JobLostError: The job is no longer ``worker``'s: nothing was written.
    :raises UnavailableError: The database is away: nothing was written.
    """
    settings = store.settings

    async def work(session: AsyncSession) -> Totals:
        await _hold(session, job_id, worker=worker, now=now, lease=lease)
        outcomes = await _upsert(session, rows, options, actor, settings, store.prepared)
        if options.dry_run:
            raise _DryRun(outcomes)
        return await _record(session, job_id, outcomes, totals, worker=worker, now=now, lease=lease)

    try:
        counted = await store.transaction(work)
    except _DryRun as dry:
        outcomes = dry.outcomes
    except BATCH_REFUSED as exc:
        if len(rows) > 1:
            for row in rows:
                totals = await write_batch(
                    store,
                    job_id,
                    [row],
                    options,
                    totals,
                    actor=actor,
                    worker=worker,
                    now=now,
                    lease=lease,
                )
            return totals
        row = rows[0]
        written = _written_key(row.values, options.upsert_by)
        outcomes = [Outcome(row.row, row.line, FAILED, None, written, _refusal(exc, row))]
    else:
        if _statistics_stale(totals.created, counted.created):
            await _analyze(store)
        return counted

    async def report(session: AsyncSession) -> Totals:
        return await _record(session, job_id, outcomes, totals, worker=worker, now=now, lease=lease)

    return await store.transaction(report)


ANALYZED_TABLES = ("users", "user_multi_values")
"""The tables a batch reads its users from."""

FIRST_ANALYZE = 1000


def _statistics_stale(before: int, after: int) -> bool:
    """Whether the users created so far crossed 1,000, 2,000, 4,000... since
    the last batch."""
    if after < FIRST_ANALYZE:
        return False
    return (after // FIRST_ANALYZE).bit_length() > (before // FIRST_ANALYZE).bit_length()


async def _analyze(store: Store) -> None:
    """``ANALYZE`` the tables a batch reads, on PostgreSQL: a bulk load into
    a small or new table outgrows the planner's statistics long before
    autovacuum looks (a table never analyzed reads as empty), and the
    look-ups of the next batches, planned as on an empty table, would scan
    every user (measured: 0.4 s a batch at 10,000 users, growing with the
    table). Each time the users created double, from 1,000; a role that may
    not analyze the tables only gets PostgreSQL's warning."""
    if store.settings.is_sqlite:
        return
    async with store.reading() as session:
        await session.execute(text(f"ANALYZE {', '.join(ANALYZED_TABLES)}"))


async def finish_import(
    store: Store,
    job_id: str,
    totals: Totals,
    *,
    worker: str,
    now: datetime,
    status: JobStatus,
    message: str | None = None,
) -> JobRecord | None:
    """Close the job with its totals; the file is deleted with it unless the
    job ``FAILED`` (it may be resumed then). ``None`` when the job was no
    longer ``worker``'s."""

    async def work(session: AsyncSession) -> JobRecord | None:
        closed = await jobs.finish_in(
            session,
            job_id,
            worker=worker,
            now=now,
            status=status,
            summary=totals.summary(),
            message=message,
        )
        if closed is not None and status is not JobStatus.FAILED:
            await session.execute(delete(_INPUTS).where(_INPUTS.c.job_id == job_id))
        return closed

    return await store.transaction(work)


async def delete_input(store: Store, job_id: str) -> int:
    """Delete the file a job keeps; how many pieces it had."""

    async def work(session: AsyncSession) -> int:
        count = await session.scalar(
            select(func.count()).select_from(_INPUTS).where(_INPUTS.c.job_id == job_id)
        )
        await session.execute(delete(_INPUTS).where(_INPUTS.c.job_id == job_id))
        return int(count or 0)

    return await store.transaction(work)


# -- The report --------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection")."""

REPORT_PAGE = 20
"""Batches of the report read at a time."""


def csv_cell(value: Any) -> str:
    """``value`` as a report cell: a text a spreadsheet would run as a
    formula gets a leading ``'``."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


async def report_entries(store: Store, job_id: str) -> AsyncIterator[list[list[Any]]]:
    """The outcomes of ``job_id``'s rows, a batch at a time, in row order."""
    after = 0
    while True:
        async with store.reading() as session:
            found = (
                await session.execute(
                    select(_REPORTS.c.first_row, _REPORTS.c.entries)
                    .where(_REPORTS.c.job_id == job_id, _REPORTS.c.first_row > after)
                    .order_by(_REPORTS.c.first_row)
                    .limit(REPORT_PAGE)
                )
            ).all()
        for first_row, entries in found:
            yield list(entries)
            after = first_row
        if len(found) < REPORT_PAGE:
            return


def _csv_line(cells: Sequence[Any]) -> str:
    quoted = []
    for cell in cells:
        text = csv_cell(cell)
        if any(c in text for c in ',"\r\n'):
            text = '"' + text.replace('"', '""') + '"'
        quoted.append(text)
    return ",".join(quoted) + "\r\n"


async def report_lines(store: Store, job_id: str) -> AsyncIterator[str]:
    """The report of ``job_id`` as CSV text (RFC 4180), a batch at a time:
    :data:`REPORT_COLUMNS`, then one line per row, cells safe to open in a
    spreadsheet (:func:`csv_cell`)."""
    yield _csv_line(REPORT_COLUMNS)
    async for entries in report_entries(store, job_id):
        yield "".join(_csv_line(entry) for entry in entries)
