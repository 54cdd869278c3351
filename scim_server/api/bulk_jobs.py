"""Bulk jobs and passwords (``admin`` only; docs/management-api.md, "Bulk
jobs and passwords"):

- ``POST /jobs/bulk-activation``: the chosen users get their Auth0 accounts
  through Auth0's bulk import jobs;
- ``POST /jobs/bulk-change-password``: a password-change ticket for each
  chosen user, at ``IDSTORE_AUTH0_PASSWORD_TICKETS_PER_SECOND``;
- ``GET /jobs/{id}/tickets``: the ticket URLs such a job made, while valid;
- ``POST /users/change-password``: one user's ticket, answered at once.

The two jobs are only written here, ``QUEUED`` with their audit row
(:func:`identity_store.jobs.submit`), and answered 202 with the job's
document; a worker runs them (``identity_sync.bulk_jobs``; on SQLite the
server's own). Their status is ``GET /jobs/{id}``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import Field, field_validator
from starlette.responses import Response

from identity_store import accounts, jobs, password_tickets
from identity_store.accounts import MAX_USERS_LISTED, AccountSubject, Selection
from identity_store.errors import InvalidCursorError, NotFoundError
from identity_store.jobs import JobKind
from identity_store.settings import Settings

from ..auth0_gateway import AccountMissing, Auth0Refused, Auth0Unavailable
from . import cursors
from .jobs import Job, job
from .models import NO_CONTROL, Cursor, UserId, Wire
from .parameters import COMMON, WITH_BODY, CursorQuery
from .problems import ProblemError, problem_responses
from .routing import MOUNT, AdminRoute, Authorized

router = APIRouter(route_class=AdminRoute, tags=["jobs"])

TARGET = "auth0"

SelectableLifecycle = Literal["CREATED", "ACTIVE", "ERROR", "SUSPENDED"]

UserGroupName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=NO_CONTROL,
        description="A user group (`userGroup`): 1-128 characters, no control characters.",
    ),
]
EmailAddress = Annotated[
    str,
    Field(
        min_length=3,
        max_length=254,
        pattern=r"^[^\x00-\x20\x7f-\x9f@]+@[^\x00-\x20\x7f-\x9f@]+$",
        description="An e-mail address of the user (any of its e-mails, in any case).",
    ),
]
JobIdPath = Annotated[
    str,
    Path(
        alias="id",
        min_length=1,
        max_length=26,
        pattern=r"^[0-9A-Za-z]+$",
        description="The job's id (a ULID).",
    ),
]


class UserFilter(Wire):
    """The live users of a user group and/or a lifecycle (`{}`: every live user)."""

    user_group: UserGroupName | None = None
    lifecycle: SelectableLifecycle | None = Field(
        default=None, description="`INACTIVE` users are never selected."
    )


class SelectByIds(Wire):
    """These users (at most 10,000, each once)."""

    ids: Annotated[
        list[UserId],
        Field(
            min_length=1,
            max_length=MAX_USERS_LISTED,
            json_schema_extra={"uniqueItems": True},
            description="User ids, each once (at most 10,000; more: a filter). "
            "An id that is no live user is a failure of the job.",
        ),
    ]

    @field_validator("ids")
    @classmethod
    def _distinct(cls, ids: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, user_id in enumerate(ids):
            if user_id in seen:
                raise ValueError(f"id {user_id!r} is listed twice (again at index {index})")
            seen.add(user_id)
        return ids


class SelectByFilter(Wire):
    """The live users the filter chooses."""

    filter: UserFilter


BulkSelection = Annotated[
    SelectByIds | SelectByFilter,
    Field(description="Whose accounts: `ids`, or a `filter`; one of them."),
]


def _selection(body: SelectByIds | SelectByFilter) -> Selection:
    if isinstance(body, SelectByIds):
        return Selection(user_ids=tuple(body.ids))
    if body.filter.user_group is None and body.filter.lifecycle is None:
        return Selection(everyone=True)
    return Selection(user_group=body.filter.user_group, lifecycle=body.filter.lifecycle)


class Ticket(Wire):
    user_id: str
    email: str | None
    ticket_url: str = Field(description="A credential: whoever has it sets the password.")
    expires_at: datetime


class TicketPage(Wire):
    items: list[Ticket]
    next_cursor: Cursor | None = None


class ById(Wire):
    id: UserId


class ByEmail(Wire):
    email: EmailAddress


PasswordChange = Annotated[
    ById | ByEmail, Field(description="Whose password: `id` or `email`, one of them.")
]


class UserTicket(Wire):
    user_id: str
    email: str | None
    auth_user_id: str
    ticket_url: str = Field(description="A credential: whoever has it sets the password.")
    expires_at: datetime


def _needs_auth0(settings: Settings, *, imports: bool = False) -> None:
    """409 when the jobs could never run: Auth0 is off or not configured."""
    if settings.auth_service != "auth0" or not settings.auth0_configured:
        raise ProblemError(
            409,
            "state-conflict",
            "Auth0 is not configured (IDSTORE_AUTH0_BASE_URL, _CLIENT_ID, _CLIENT_SECRET)",
        )
    if imports and not settings.auth0_connection_id:
        raise ProblemError(
            409,
            "state-conflict",
            "IDSTORE_AUTH0_CONNECTION_ID is not set: Auth0's import jobs need the connection's id",
        )


_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "The job, queued for a worker.",
        "headers": {"Location": {"description": "The job's URL.", "schema": {"type": "string"}}},
    }
}


async def _submit(
    caller: Authorized, kind: JobKind, body: BulkSelection, response: Response
) -> Job:
    summary = {"done": 0, "tickets": 0, "failed": 0} if kind is JobKind.BULK_PASSWORD_CHANGE else {}
    record = await jobs.submit(
        caller.store,
        kind,
        caller.actor,
        now=datetime.now(UTC),
        params={"selection": _selection(body).params()},
        summary=summary,
    )
    response.headers["Location"] = f"{MOUNT}/jobs/{record.id}"
    return job(record)


@router.post(
    "/jobs/bulk-activation",
    status_code=202,
    responses=problem_responses(*WITH_BODY, 409) | _ACCEPTED,
    summary="Give the chosen users their Auth0 accounts, through Auth0's import jobs",
)
async def bulk_activation(body: BulkSelection, caller: Authorized, response: Response) -> Job:
    """Users of a group with `authUserCreationDisabled` are activated too (that
    is what activating is for); a user with an account counts as `already`; a
    suspended user, or one without an e-mail, is a failure. 409
    `state-conflict` when Auth0 or its connection id is not configured."""
    _needs_auth0(caller.settings, imports=True)
    return await _submit(caller, JobKind.BULK_ACTIVATION, body, response)


@router.post(
    "/jobs/bulk-change-password",
    status_code=202,
    responses=problem_responses(*WITH_BODY, 409) | _ACCEPTED,
    summary="A password-change ticket for each chosen user",
)
async def bulk_change_password(body: BulkSelection, caller: Authorized, response: Response) -> Job:
    """At `IDSTORE_AUTH0_PASSWORD_TICKETS_PER_SECOND`. The ticket URLs are read
    with `GET /jobs/{id}/tickets` until they expire; a user without an Auth0
    account is a failure. 409 `state-conflict` when Auth0 is not configured."""
    _needs_auth0(caller.settings)
    return await _submit(caller, JobKind.BULK_PASSWORD_CHANGE, body, response)


@router.get(
    "/jobs/{id:ulid}/tickets",
    responses=problem_responses(*COMMON, 404),
    summary="The ticket URLs of a bulk change-password job, while they are valid",
)
async def job_tickets(
    job_id: JobIdPath,
    caller: Authorized,
    response: Response,
    count: Annotated[int, Query(ge=1, le=1000, description="Page size (1-1,000).")] = 1000,
    cursor: CursorQuery = None,
) -> TicketPage:
    """Each ticket is a credential (whoever has it sets that user's password):
    answered with `Cache-Control: no-store`, each read audited
    (`job.tickets.read`), deleted once expired
    (`IDSTORE_AUTH0_TICKET_TTL_SECONDS`). 404 when there is no such
    change-password job."""
    asked = await jobs.get(caller.store, job_id)
    if asked is None or asked.kind != JobKind.BULK_PASSWORD_CHANGE.value:
        raise NotFoundError("bulk change-password job", job_id)
    after = cursors.decode("tickets", cursor)
    if after is not None and not (after.isascii() and after.isdigit() and len(after) <= 18):
        raise InvalidCursorError("the cursor was not issued for the tickets list")
    position = int(after) if after is not None else None
    found, next_after = await password_tickets.for_job(
        caller.store, job_id, caller.actor, now=datetime.now(UTC), after=position, limit=count
    )
    response.headers["Cache-Control"] = "no-store"
    return TicketPage(
        items=[
            Ticket(user_id=t.user_id, email=t.email, ticket_url=t.url, expires_at=t.expires_at)
            for t in found
        ],
        next_cursor=cursors.encode("tickets", None if next_after is None else str(next_after)),
    )


def _the_user(found: list[AccountSubject], body: ById | ByEmail) -> AccountSubject:
    if not found:
        what = f"id {body.id!r}" if isinstance(body, ById) else "this e-mail address"
        raise ProblemError(404, "not-found", f"no live user has {what}")
    if len(found) > 1:
        raise ProblemError(
            409,
            "conflict",
            f"{len(found)} users have this e-mail address; ask by `id`",
        )
    return found[0]


@router.post(
    "/users/change-password",
    responses=problem_responses(*WITH_BODY, 404, 409),
    summary="A password-change ticket for one user, by id or e-mail",
)
async def change_password(
    body: PasswordChange, caller: Authorized, response: Response
) -> UserTicket:
    """Answered at once with the ticket's URL, valid for
    `IDSTORE_AUTH0_TICKET_TTL_SECONDS`; audited (`auth0.ticket`), the URL
    never stored. 404 when no live user has that id or e-mail; 409
    `state-conflict` when the user has no Auth0 account (or Auth0 is not
    configured), `conflict` when several users share the e-mail; 503 with
    `Retry-After` when Auth0 cannot answer now."""
    found = await accounts.find_subject(
        caller.store,
        TARGET,
        user_id=body.id if isinstance(body, ById) else None,
        email=body.email if isinstance(body, ByEmail) else None,
    )
    user = _the_user(found, body)
    issuer = caller.state.tickets
    if issuer is None:
        _needs_auth0(caller.settings)
        raise ProblemError(409, "state-conflict", "password-change tickets are not available")
    remote = user.remote_id
    if remote is None:
        raise ProblemError(409, "state-conflict", "the user has no Auth0 account")
    now = datetime.now(UTC)
    try:
        url = await issuer.password_change_ticket(remote)
    except AccountMissing as exc:
        raise ProblemError(
            409, "state-conflict", "the user has no Auth0 account (Auth0 has none)"
        ) from exc
    except Auth0Unavailable as exc:
        wait = max(1, round(exc.retry_after)) if exc.retry_after else 5
        raise ProblemError(
            503,
            "unavailable",
            f"Auth0 cannot answer now: {exc.message}",
            headers={"Retry-After": str(wait)},
        ) from exc
    except Auth0Refused as exc:
        raise ProblemError(
            503, "unavailable", f"Auth0 refused the request: {exc}", headers={"Retry-After": "60"}
        ) from exc
    await accounts.record_ticket(caller.store, TARGET, user.user_id, caller.actor, now=now)
    response.headers["Cache-Control"] = "no-store"
    return UserTicket(
        user_id=user.user_id,
        email=user.email,
        auth_user_id=remote,
        ticket_url=url,
        expires_at=now + timedelta(seconds=caller.settings.auth0_ticket_ttl_seconds),
    )
