"""The ``profile-sync`` job (SPEC §4, §6; docs/operations.md "Profile sync"):
users ``CREATED`` without their required IdP attributes get them from
Microsoft Graph and go ``ACTIVE``, or ``ERROR`` after
``profile_sync_max_attempts`` runs that could not fill them.

A run pages through the ``CREATED`` users (``job_batch_size`` at a time, by
id); for each batch it looks the users up concurrently
(:class:`~identity_sync.graph.GraphClient`: paced, bounded, throttling
honoured), then stores what it found in one transaction
(:func:`identity_store.profiles.apply_lookups`). The store of a batch, and
the read of the next page, run while the next batch is looked up, so that
Graph's allowance is not left unused while the database works; the run
reaches its checkpoint between two batches, once the previous one is
committed. A user with nothing missing moves
on without a look-up. A Graph outage
(:class:`~identity_sync.graph.GraphUnavailable`) stops the run where it is:
the batch being looked up is dropped, so its users keep their state and no
attempt is counted against them (the batch being stored still commits), and
the run fails with the reason. A dry run looks up and counts what would
change, and writes nothing.

One run counts at most one look-up per user: pages go forward by id, and a
run taken over after its worker died skips the users it counted already
(:attr:`identity_store.profiles.PendingUser.counted`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from identity_store import profiles
from identity_store.profiles import Lookup, PendingUser
from identity_store.settings import Settings

from .clock import Clock
from .graph import GraphClient, GraphUnavailable, LookupRefused
from .worker import RunContext

NOT_CONFIGURED = (
    "not configured: set IDSTORE_GRAPH_TENANT_ID, IDSTORE_GRAPH_CLIENT_ID and "
    "IDSTORE_GRAPH_CLIENT_SECRET"
)
NOT_FOUND = "not found in the directory (404)"
NO_KEY = "no directory object id to look it up by (idpReferenceId and externalId are empty)"
UNMAPPED = "no Graph property maps to it (IDSTORE_GRAPH_ATTRIBUTE_MAP)"


@dataclass(slots=True)
class _Notes:
    """What one batch's look-ups met, kept apart until the batch is stored
    (a batch dropped by an outage reports nothing)."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def error(self, message: str, **about: Any) -> None:
        self.errors.append({"message": message, **about})


class ProfileSync:
    """Fills ``CREATED`` users' IdP attributes from Microsoft Graph."""

    name = "profile-sync"
    summary = "fill CREATED users' missing IdP attributes from Microsoft Graph"

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.sources: dict[str, list[str]] = defaultdict(list)
        """Store attribute -> the Graph properties that fill it, in map order."""
        for prop, attribute in settings.graph_attribute_map.items():
            self.sources[attribute].append(prop)

    async def run(self, ctx: RunContext) -> str | None:
        settings = ctx.settings
        if not settings.graph_configured:
            return NOT_CONFIGURED
        # A run taken over (or released and resumed) skips whom it counted.
        counted_by = ctx.actor if ctx.run.attempts > 1 else None

        def read(after: str | None) -> asyncio.Task[list[PendingUser]]:
            return asyncio.create_task(
                profiles.created_users(
                    ctx.store,
                    after_id=after,
                    limit=settings.job_batch_size,
                    counted_by=counted_by,
                )
            )

        async with GraphClient(settings, ctx.clock) as graph:
            reading: asyncio.Task[list[PendingUser]] | None = read(None)
            storing: asyncio.Task[None] | None = None
            try:
                while reading is not None:
                    batch = await reading
                    # The next page is read while this one is looked up.
                    reading = read(batch[-1].id) if batch else None
                    if not batch:
                        break
                    todo = [user for user in batch if not user.counted]
                    notes = _Notes()
                    notes.counts["counted_before_take_over"] = len(batch) - len(todo)
                    lookups = await self._look_up(graph, todo, notes)
                    if storing is not None:
                        await storing
                        storing = None
                    ctx.checkpoint()
                    storing = asyncio.create_task(self._store(ctx, lookups, notes))
            finally:
                if reading is not None:
                    with contextlib.suppress(Exception):
                        await reading  # a read only; its result is not needed
                if storing is not None:
                    # The batch being stored is whole: let it commit, whatever
                    # stopped the run (its counts are then the run's).
                    await asyncio.shield(storing)
        return self._summary(ctx)

    async def _store(self, ctx: RunContext, lookups: list[Lookup], notes: _Notes) -> None:
        """Store one batch's look-ups and add what happened to the run's record."""
        applied = await profiles.apply_lookups(
            ctx.store,
            lookups,
            ctx.actor,
            ctx.as_of,
            ctx.settings.profile_sync_max_attempts,
            dry_run=ctx.dry_run,
        )
        for kind, n in (notes.counts + applied.counts).items():
            ctx.count(kind, n)
        for error in notes.errors + applied.errors:
            ctx.error(**error)

    def _summary(self, ctx: RunContext) -> str:
        c = ctx.counts
        verb = "would be" if ctx.dry_run else "went"
        text = (
            f"{c['looked_up']} looked up ({c['not_found']} not in the directory); "
            f"{c['activated']} {verb} ACTIVE, {c['errored']} {verb} ERROR, "
            f"{c['still_created']} still CREATED; {c['filled']} attributes filled"
        )
        return f"dry run: {text}" if ctx.dry_run else text

    async def _look_up(
        self, graph: GraphClient, users: Sequence[PendingUser], notes: _Notes
    ) -> list[Lookup]:
        """Every user's look-up, concurrently (the client bounds how many are
        in flight); :class:`GraphUnavailable` as soon as one meets an outage,
        the others cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._look_up_one(graph, user, notes)) for user in users]
        except ExceptionGroup as failed:
            unavailable = failed.subgroup(GraphUnavailable)
            if unavailable is not None:
                raise _first(unavailable) from None
            raise
        return [task.result() for task in tasks]

    async def _look_up_one(self, graph: GraphClient, user: PendingUser, notes: _Notes) -> Lookup:
        if not user.missing:
            return Lookup(user)
        reasons = {name: UNMAPPED for name in user.missing if name not in self.sources}
        wanted = [name for name in user.empty if name in self.sources]
        properties = [prop for name in wanted for prop in self.sources[name]]
        if not properties:
            return Lookup(user, reasons=reasons)
        if user.lookup_key is None:
            return Lookup(user, reasons={**reasons, **dict.fromkeys(wanted, NO_KEY)})
        try:
            found = await graph.get_user(user.lookup_key, properties)
        except LookupRefused as exc:
            notes.counts["refused_lookups"] += 1
            notes.error(f"look-up refused: {exc}", user_id=user.id)
            refusal = f"look-up refused: {exc}"
            return Lookup(user, reasons={**reasons, **dict.fromkeys(wanted, refusal)})
        notes.counts["looked_up"] += 1
        if found is None:
            notes.counts["not_found"] += 1
            return Lookup(user, reasons={**reasons, **dict.fromkeys(wanted, NOT_FOUND)})
        values: dict[str, str] = {}
        for name in wanted:
            why: list[str] = []
            for prop in self.sources[name]:
                if prop in found.values:
                    values[name] = found.values[prop]
                    break
                if prop in found.refused:
                    problem = f"{prop} refused: {found.refused[prop]}"
                    notes.error(
                        f"{name}: the directory's value refused: {problem}", user_id=user.id
                    )
                    notes.counts["refused_values"] += 1
                    why.append(problem)
                else:
                    why.append(f"{prop} empty in the directory")
            else:
                reasons[name] = "; ".join(why)
        return Lookup(user, values=values, reasons=reasons)


def _first(group: BaseExceptionGroup[GraphUnavailable]) -> GraphUnavailable:
    """The first leaf exception of ``group``."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
