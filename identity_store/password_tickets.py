"""The password-change ticket URLs of bulk jobs asked for through the
management API (docs/management-api.md, "Bulk jobs and passwords").

A ticket URL is a credential: whoever has it sets the user's password until
it expires. The worker that makes them keeps them here (:func:`keep`), never
in the job's document, its logs or its failures; ``admin`` tokens read them
(:func:`for_job`, audited as ``job.tickets.read``); they are deleted once
Auth0 lets them expire (:func:`purge_expired`, which the worker runs, and
every read leaves out the expired ones). ``idstore auth0 password-change``
keeps nothing here: its tickets go to its ``--out`` file only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit
from .actor import Actor
from .models import PasswordTicket
from .row_inserts import insert_rows
from .store import Store

__all__ = ["KeptTicket", "for_job", "keep", "purge_expired"]

_TICKETS = cast(Table, PasswordTicket.__table__)


@dataclass(frozen=True, slots=True)
class KeptTicket:
    user_id: str
    email: str | None
    url: str
    created_at: datetime
    expires_at: datetime


async def keep(
    store: Store,
    job_id: str,
    tickets: Sequence[tuple[str, str | None, str]],
    *,
    now: datetime,
    expires_at: datetime,
) -> None:
    """Keep ``(user_id, email, url)`` of ``job_id`` until ``expires_at``, in one transaction."""
    if not tickets:
        return
    rows = [
        {
            "job_id": job_id,
            "user_id": user_id,
            "email": email[:320] if email else None,
            "url": url,
            "created_at": now,
            "expires_at": expires_at,
        }
        for user_id, email, url in tickets
    ]

    async def work(session: AsyncSession) -> None:
        await insert_rows(session, _TICKETS, rows)

    await store.transaction(work)


async def for_job(
    store: Store, job_id: str, actor: Actor, *, now: datetime, after: int | None, limit: int
) -> tuple[list[KeptTicket], int | None]:
    """The unexpired tickets of ``job_id`` after position ``after``, up to
    ``limit``, and the position to ask after next (``None``: the last page);
    the read is audited (``job.tickets.read``) in the same transaction."""
    query = (
        select(_TICKETS)
        .where(_TICKETS.c.job_id == job_id, _TICKETS.c.expires_at > now)
        .order_by(_TICKETS.c.id)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(_TICKETS.c.id > after)

    async def work(session: AsyncSession) -> tuple[list[KeptTicket], int | None]:
        rows = list((await session.execute(query)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        entry = audit.audit_row(
            actor, "job.tickets.read", "Job", job_id, {"tickets": len(rows)}, now
        )
        await insert_rows(session, audit.AUDIT, [entry])
        found = [KeptTicket(r.user_id, r.email, r.url, r.created_at, r.expires_at) for r in rows]
        return found, (rows[-1].id if more and rows else None)

    return await store.transaction(work)


async def purge_expired(store: Store, *, now: datetime) -> int:
    """Delete the tickets Auth0 no longer honours; how many."""

    async def work(session: AsyncSession) -> int:
        result = await session.execute(delete(_TICKETS).where(_TICKETS.c.expires_at <= now))
        return int(getattr(result, "rowcount", 0) or 0)

    return await store.transaction(work)
