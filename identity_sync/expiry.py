"""Expiry (SPEC §4, docs/operations.md "Expiry"): users whose
``expiration_date`` passed (``CREATED``, ``ACTIVE`` or ``ERROR``) go
``SUSPENDED`` and get an Auth0 ``block`` event. One indexed query per batch,
no timer per user: the date is compared with the run's clock (``ctx.as_of``),
so a date moved into the future before it passes changes nothing.
"""

from __future__ import annotations

from identity_store import deprovisioning
from identity_store.settings import Settings

from .clock import Clock
from .worker import RunContext, batches


class Expiry:
    """The ``expiry`` job: :func:`~identity_sync.worker.batches` of
    :func:`~identity_store.deprovisioning.expire_batch`."""

    name = "expiry"
    summary = "suspend users whose expiration date passed"

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock

    async def run(self, ctx: RunContext) -> str | None:
        users = 0
        async for batch in batches(
            ctx,
            lambda after: deprovisioning.expire_batch(
                ctx.store,
                now=ctx.as_of,
                limit=ctx.settings.job_batch_size,
                actor=ctx.actor,
                dry_run=ctx.dry_run,
                after=after,
            ),
        ):
            users += batch.users
            ctx.count("suspended", batch.users)
        verb = "would be" if ctx.dry_run else "were"
        return f"{users} users expired by {ctx.as_of.isoformat()} {verb} suspended"
