"""``POST /users/import``: a CSV file of users, imported as a job
(``admin`` only; docs/management-api.md, "CSV import").

The request is ``multipart/form-data``: the file in the part ``file``, the
options in parts of their own. Its body is read within
``IDSTORE_IMPORT_MAX_BYTES`` (and a mebibyte for the options and the
multipart framing), refused with 413 past it; the file goes to a temporary
file (memory up to a mebibyte, then disk) for the length of the request.
The store checks it whole (:func:`identity_store.imports.start_import`:
the options, its structure, its header and mapping, its size and rows) and
keeps it in the database with the job, before the answer: 202 and the job,
which a worker runs. A file that cannot be imported is refused before any
job exists.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response

from identity_store import imports
from identity_store.csv_files import ENCODINGS, CsvFormat
from identity_store.import_rows import ATTRIBUTES, UPSERT_KEYS, UpsertKey
from identity_store.imports import FileTooLargeError, ImportOptions

from .jobs import Job, job
from .models import NO_CONTROL
from .parameters import COMMON
from .problems import ProblemError, problem_responses
from .routing import MOUNT, AdminRoute, Authorized

router = APIRouter(route_class=AdminRoute, tags=["jobs"])

FRAMING = 1_048_576
"""Bytes a request may carry beyond the file: the options, the multipart framing."""

MAX_FIELD_BYTES = 65_536
"""Largest option part (the mapping, as JSON)."""

FIELDS = (
    "file",
    "delimiter",
    "encoding",
    "quoteChar",
    "escapeChar",
    "mapping",
    "userGroup",
    "upsertBy",
    "dryRun",
)
_SEPARATORS = sorted(string.punctuation + "\t")

FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "additionalProperties": False,
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "The CSV file: a header naming the columns, then a user per row "
            "(at most `IDSTORE_IMPORT_MAX_BYTES` bytes, `IDSTORE_IMPORT_MAX_ROWS` rows, "
            "`IDSTORE_IMPORT_MAX_COLUMNS` columns, `IDSTORE_IMPORT_MAX_CELL_CHARS` "
            "characters a cell).",
        },
        "delimiter": {
            "type": "string",
            "enum": _SEPARATORS,
            "default": ",",
            "description": "The separator of the cells: ASCII punctuation or a tab.",
        },
        "encoding": {"type": "string", "enum": list(ENCODINGS), "default": "utf-8"},
        "quoteChar": {
            "type": "string",
            "enum": ["", *_SEPARATORS],
            "default": '"',
            "description": "Quotes a cell holding the separator or a line break (empty: none).",
        },
        "escapeChar": {
            "type": "string",
            "enum": ["", *_SEPARATORS],
            "default": "",
            "description": "Escapes the next character (empty: none).",
        },
        "mapping": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "A JSON object: column name → attribute, or `null` to ignore the "
            "column. A column not in it must be named after an attribute: "
            + ", ".join(f"`{a}`" for a in ATTRIBUTES)
            + ", or `customData.<key>`.",
        },
        "userGroup": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "pattern": NO_CONTROL,
            "description": "The `userGroup` of every row that does not name one: 1-128 "
            "characters, no control characters.",
        },
        "upsertBy": {
            "type": "string",
            "enum": list(UPSERT_KEYS),
            "default": "userName",
            "description": "How a row finds its user: by `userName` (without regard to case) "
            "or by `externalId`. A row whose user exists updates it; otherwise it creates one.",
        },
        "dryRun": {
            "type": "boolean",
            "default": False,
            "description": "Report what each row would do; write no user.",
        },
    },
}

REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": FORM_SCHEMA,
                "encoding": {"file": {"contentType": "text/csv, application/octet-stream"}},
            }
        },
    }
}


def _invalid(detail: str) -> ProblemError:
    return ProblemError(400, "invalid-request", detail)


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, "too-large", f"the request body exceeds {limit:,} bytes")
        yield chunk


async def _form(request: Request, limit: int) -> FormData:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise ProblemError(
            415, "unsupported-media-type", "send the file as multipart/form-data (part 'file')"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, "too-large", f"the request body exceeds {limit:,} bytes")
    parser = MultiPartParser(
        request.headers,
        _limited(request.stream(), limit),
        max_files=1,
        max_fields=len(FIELDS),
        max_part_size=MAX_FIELD_BYTES,
    )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise _invalid(
            f"the body is not multipart/form-data this endpoint reads: {exc.message}"
        ) from None


def _text(form: FormData, name: str) -> str | None:
    values = form.getlist(name)
    if len(values) > 1:
        raise _invalid(f"the part {name!r} is given {len(values)} times")
    if not values:
        return None
    value = values[0]
    if not isinstance(value, str):
        raise _invalid(f"the part {name!r} is an option, not a file")
    if "\x00" in value:
        raise _invalid(f"the part {name!r} holds a NUL character")
    return value


def _mapping(text: str | None) -> dict[str, str | None]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise _invalid("mapping must be a JSON object: column name -> attribute or null") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, str) or v is None for v in value.values()
    ):
        raise _invalid("mapping must be a JSON object: column name -> attribute or null")
    return value


def _boolean(name: str, text: str | None) -> bool:
    if text is None or text.strip().lower() in ("", "false", "0", "no"):
        return False
    if text.strip().lower() in ("true", "1", "yes"):
        return True
    raise _invalid(f"{name} must be true or false")


def _options(form: FormData) -> ImportOptions:
    unknown = sorted({str(k) for k in form if k not in FIELDS})
    if unknown:
        shown = ", ".join(repr(name[:64]) for name in unknown[:10])
        raise _invalid(f"unknown part(s): {shown}; the parts are {', '.join(FIELDS)}")
    upsert_by = _text(form, "upsertBy") or "userName"
    if upsert_by not in UPSERT_KEYS:
        raise _invalid("upsertBy must be userName or externalId")
    quote = _text(form, "quoteChar")
    user_group = _text(form, "userGroup")
    if user_group is not None and not (
        0 < len(user_group) <= 128 and re.fullmatch(NO_CONTROL, user_group)
    ):
        raise _invalid("userGroup must be 1-128 characters, without control characters")
    return ImportOptions(
        format=CsvFormat(
            delimiter=_text(form, "delimiter") or ",",
            quote_char='"' if quote is None else quote,
            escape_char=_text(form, "escapeChar") or "",
            encoding=(_text(form, "encoding") or "utf-8").strip().lower(),
        ),
        mapping=_mapping(_text(form, "mapping")),
        upsert_by=_key(upsert_by),
        user_group=user_group,
        dry_run=_boolean("dryRun", _text(form, "dryRun")),
    )


def _key(value: str) -> UpsertKey:
    return "externalId" if value == "externalId" else "userName"


def _file(form: FormData) -> UploadFile:
    files = form.getlist("file")
    if not files:
        raise _invalid("the part 'file' (the CSV file) is missing")
    upload = files[0]
    if not isinstance(upload, UploadFile):
        raise _invalid(
            "the part 'file' must be a file (with a filename in its Content-Disposition)"
        )
    return upload


@router.post(
    "/users/import",
    status_code=202,
    responses=problem_responses(*COMMON)
    | {
        202: {
            "description": "The file is kept and the job waits for a worker: follow it at "
            "`Location` (`GET /jobs/{id}`), then download `GET /jobs/{id}/report.csv`.",
            "headers": {
                "Location": {"description": "The job's URL.", "schema": {"type": "string"}}
            },
        },
        413: {
            "description": "The file is larger than `IDSTORE_IMPORT_MAX_BYTES` or has more "
            "rows than `IDSTORE_IMPORT_MAX_ROWS` (`too-large`).",
            "model": problem_responses(413)[413]["model"],
        },
        415: {
            "description": "The body is not `multipart/form-data` (`unsupported-media-type`).",
            "model": problem_responses(415)[415]["model"],
        },
    },
    openapi_extra=REQUEST_BODY,
    summary="Import users from a CSV file, as a job",
)
async def import_users(request: Request, caller: Authorized, response: Response) -> Job:
    """Creates the users the file has and the store has not, updates those
    it has (found by `userName` or `externalId`), and leaves alone those
    that would not change (`unchanged`: importing a file again changes
    nothing). 400 `invalid-request` before any job exists when an option,
    the header, the mapping or the file's structure is not valid (a quote
    never closed, a name twice in the header...); a row that fails on its
    own fails in the report only."""
    settings = caller.settings
    form = await _form(request, settings.import_max_bytes + FRAMING)
    try:
        options = _options(form)
        upload = _file(form)
        try:
            record = await imports.start_import(
                caller.store,
                upload.file,
                options,
                now=datetime.now(UTC),
                created_by=caller.actor.name,
                token_id=caller.principal.token_id,
                file_name=upload.filename,
            )
        except FileTooLargeError as exc:
            raise ProblemError(413, "too-large", exc.detail) from exc
    finally:
        await form.close()
    response.headers["Location"] = f"{MOUNT}/jobs/{record.id}"
    return job(record)
