"""Deletion Sync (SPEC §4, docs/operations.md "Deletion sync"): users
``SUSPENDED`` before the start of the day lose their group memberships,
role bindings and roles, get the Auth0 event that revokes their access, and
go ``INACTIVE`` (or are deleted with ``IDSTORE_HARD_DELETE``).

The day is the run's clock (``ctx.as_of``: the tick, or ``--as-of``) in
``IDSTORE_JOBS_TIMEZONE``: a user suspended today keeps everything until
tomorrow's run, and one reactivated before the run is not touched.
"""

from __future__ import annotations

from identity_store import deprovisioning
from identity_store.settings import Settings

from .clock import Clock
from .worker import RunContext, batches


class DeletionSync:
    """The ``deletion-sync`` job: :func:`~identity_sync.worker.batches` of
    :func:`~identity_store.deprovisioning.deprovision_batch`."""

    name = "deletion-sync"
    summary = "deprovision users suspended before today: groups, bindings, roles, Auth0"

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock

    async def run(self, ctx: RunContext) -> str | None:
        cutoff = deprovisioning.deletion_cutoff(ctx.as_of, ctx.settings.jobs_timezone)
        hard_delete = ctx.settings.hard_delete
        users = 0
        async for batch in batches(
            ctx,
            lambda after: deprovisioning.deprovision_batch(
                ctx.store,
                cutoff=cutoff,
                limit=ctx.settings.job_batch_size,
                actor=ctx.actor,
                hard_delete=hard_delete,
                now=ctx.as_of,
                dry_run=ctx.dry_run,
                after=after,
            ),
        ):
            users += batch.users
            ctx.count("deprovisioned", batch.users)
            ctx.count("memberships_removed", batch.memberships)
            ctx.count("group_updates", batch.groups)
            ctx.count("bindings_removed", batch.bindings)
            ctx.count("roles_removed", batch.roles)
            ctx.count("deleted", batch.deleted)
        verb = "would be" if ctx.dry_run else "were"
        action = "deleted" if hard_delete else "deprovisioned"
        return f"{users} users suspended before {cutoff.isoformat()} {verb} {action}"
