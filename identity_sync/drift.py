"""The drift check (SPEC §6; docs/auth0.md "Drift"): what the authentication
service holds compared with what the store says it should hold, user by
user, and a repair that lets the dispatcher bring the service back to the
store's state (``idstore auth0 drift [--repair]``).

Both sides are paged through: the service's accounts of the connection
(:meth:`~identity_sync.auth_service.AuthService.list_users`) and every id
the store's sync knows (:func:`identity_store.accounts.subject_ids`: its
users, and users removed for good whose account is still known), read as
the dispatcher reads them (:func:`identity_store.accounts.subjects`) and
planned by the same rules (:func:`~identity_sync.account_rules.plan`). A
user's account is the one the store names (``auth_user_id``, or what the
last delivery kept); failing that, one the store does not name but that is
the user's all the same (its metadata names the user, or it has the
deterministic id ``auth0|<user id>``). What is reported:

- ``missing``: the user should have an account (plan ENSURE) and there is none;
- ``unlinked``: the user has an account the store does not name (a
  creation whose answer was lost, an account made by hand);
- ``not_blocked`` / ``not_deleted``: the user is gone or ``INACTIVE``
  (plan BLOCK / DELETE) and the account is still unblocked / still there;
- ``differs``: the account's synced fields differ from the user's (the
  fields an update would send, named);
- ``orphan``: an account no user of the store has (reported only: whose it
  is is for a person to decide);
- ``unchecked``: the service could not be asked about the user.

A repair (:func:`repair`) forgets what was last delivered of each user
reported (but the orphans and the unchecked) and writes an ``upsert`` outbox
row for it (:func:`identity_store.accounts.enqueue_resync`): the dispatcher
then sends every field (or blocks, deletes, creates, adopts) as for any
change, paced and retried like one.

**Auth0 lists 1000 accounts at most.** Its user search returns the first
1000 results only, so for a larger connection the client refuses the
listing (:class:`~identity_sync.auth_service.Permanent`) rather than let
every account past the limit look missing. The check then asks about each
store user's account by id instead (``GET /api/v2/users/{id}``, one request
per user that has or should have one, paced by the tenant's budget): every
kind but ``orphan`` is still found; orphans need a listing of all accounts
(a user export job), which this check does not do, and the report says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from identity_store import accounts
from identity_store.accounts import AccountSubject
from identity_store.actor import Actor
from identity_store.settings import Settings
from identity_store.store import Store

from .account_rules import Action, changes, plan
from .auth_service import AuthAccount, AuthService, NotFound, Permanent, Transient

__all__ = [
    "PAGE_SIZE",
    "REPAIRED_KINDS",
    "DriftReport",
    "Finding",
    "Kind",
    "check",
    "repair",
]

PAGE_SIZE = 500
"""Store ids read per page."""

Kind = Literal[
    "missing", "unlinked", "not_blocked", "not_deleted", "differs", "orphan", "unchecked"
]

REPAIRED_KINDS: frozenset[str] = frozenset(
    {"missing", "unlinked", "not_blocked", "not_deleted", "differs"}
)
"""What :func:`repair` enqueues (orphans and unchecked users are reported only)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One difference between the store and the service."""

    kind: Kind
    user_id: str | None
    """The store's user (``None`` for an orphan)."""
    auth_user_id: str | None
    email: str | None
    fields: tuple[str, ...] = ()
    """The fields that differ (``differs``)."""
    detail: str = ""
    repairable: bool = True


@dataclass(slots=True)
class DriftReport:
    findings: list[Finding] = field(default_factory=list)
    users: int = 0
    """Store ids checked."""
    accounts: int | None = None
    """Accounts the service listed (``None``: it could not list them all)."""
    listing_refused: str | None = None
    """Why the service did not list its accounts (then orphans were not looked for)."""

    def of(self, kind: Kind) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def to_repair(self) -> list[str]:
        """The users :func:`repair` enqueues, in id order."""
        return sorted(
            {
                f.user_id
                for f in self.findings
                if f.user_id is not None and f.repairable and f.kind in REPAIRED_KINDS
            }
        )


class _Accounts:
    """The service's accounts, by id and by the store id in their metadata."""

    def __init__(self, listed: Sequence[AuthAccount] | None) -> None:
        self.listed = listed is not None
        self.by_id = {a.auth_user_id: a for a in listed or ()}
        self.by_store: dict[str, AuthAccount] = {}
        for a in listed or ():
            if a.store_user_id is not None:
                self.by_store.setdefault(a.store_user_id, a)
        self.matched: set[str] = set()


async def check(
    store: Store,
    service: AuthService,
    *,
    settings: Settings | None = None,
    page_size: int = PAGE_SIZE,
) -> DriftReport:
    """Compare the service with the store (module docstring)."""
    settings = settings or store.settings
    report = DriftReport()
    try:
        listed = [a async for a in service.list_users()]
    except Permanent as exc:
        report.listing_refused = exc.message
        known = _Accounts(None)
    else:
        report.accounts = len(listed)
        known = _Accounts(listed)
    limit = asyncio.Semaphore(settings.outbox_concurrency)
    after: str | None = None
    while True:
        ids = await accounts.subject_ids(store, service.name, after=after, limit=page_size)
        if not ids:
            break
        after = ids[-1]
        found = await accounts.subjects(store, service.name, ids)
        report.users += len(ids)

        async def one(subject: AccountSubject) -> list[Finding]:
            async with limit:
                return await _compare(service, settings, known, subject)

        for findings in await asyncio.gather(*(one(found[i]) for i in ids)):
            report.findings.extend(findings)
    if known.listed:
        for account in known.by_id.values():
            if account.auth_user_id in known.matched:
                continue
            detail = "no user of the store has it"
            if account.store_user_id:
                detail = f"its metadata names {account.store_user_id}, unknown to the store"
            report.findings.append(
                Finding(
                    "orphan",
                    None,
                    account.auth_user_id,
                    account.email,
                    detail=detail,
                    repairable=False,
                )
            )
    return report


async def _account(service: AuthService, known: _Accounts, auth_user_id: str) -> AuthAccount | None:
    if known.listed:
        return known.by_id.get(auth_user_id)
    try:
        return await service.get_user(auth_user_id)
    except NotFound:
        return None


async def _compare(
    service: AuthService, settings: Settings, known: _Accounts, subject: AccountSubject
) -> list[Finding]:
    p = plan(subject, hard_delete=settings.hard_delete)
    user_id = subject.user_id
    remote = subject.remote_id
    deterministic = service.remote_id(user_id)
    if not known.listed and p.action not in (Action.ENSURE, Action.BLOCK, Action.DELETE):
        return []  # nothing to ask the service about
    try:
        named = await _account(service, known, remote) if remote is not None else None
        other = None
        if named is None:
            other = known.by_store.get(user_id) if known.listed else None
            if other is None and deterministic != remote:
                other = await _account(service, known, deterministic)
    except (Transient, Permanent) as exc:
        return [Finding("unchecked", user_id, remote, subject.email, detail=exc.message)]
    for a in (named, other):
        if a is not None:
            known.matched.add(a.auth_user_id)
    email = subject.email
    if other is not None:
        why = "the store names none" if remote is None else f"the store names {remote}, gone"
        return [
            Finding(
                "unlinked",
                user_id,
                other.auth_user_id,
                email,
                detail=f"the user's account is {other.auth_user_id}; {why} ({p.reason})",
                repairable=p.action is Action.ENSURE,
            )
        ]
    if p.action is Action.ENSURE:
        assert p.profile is not None
        if named is None:
            where = f"{remote} is gone" if remote is not None else "none was ever created"
            return [Finding("missing", user_id, remote, email, detail=where)]
        wanted = changes(p.profile, named.fields())
        if wanted:
            return [
                Finding(
                    "differs",
                    user_id,
                    named.auth_user_id,
                    email,
                    fields=tuple(sorted(wanted)),
                    detail=", ".join(sorted(wanted)),
                )
            ]
        return []
    if named is None:
        return []
    if p.action is Action.BLOCK and not named.blocked:
        return [Finding("not_blocked", user_id, named.auth_user_id, email, detail=p.reason)]
    if p.action is Action.DELETE:
        return [Finding("not_deleted", user_id, named.auth_user_id, email, detail=p.reason)]
    return []


async def repair(
    store: Store, target: str, report: DriftReport, actor: Actor, *, now: datetime
) -> list[str]:
    """Enqueue the repair of every user reported (module docstring); their ids."""
    ids = report.to_repair()
    await accounts.enqueue_resync(store, target, ids, actor, now=now, reason="drift repair")
    return ids
