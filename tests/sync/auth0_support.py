"""What the Auth0 sync tests share: users in the store, the client and the
dispatcher wired as the worker wires them, and the tenant read back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from identity_store import user_groups, users
from identity_store.actor import Actor
from identity_store.store import Store
from identity_store.user_changes import WRITABLE_COLUMNS
from identity_store.users import UserInput, UserRecord
from identity_sync.auth0 import Auth0Client
from identity_sync.clock import ManualClock
from identity_sync.dispatcher import Companion, Dispatcher
from tests.emulators.auth0 import Auth0Emulator

ACTOR = Actor(name="test", request_id="req-test")


async def add_user_groups(store: Store, *names: str) -> None:
    """Configure these user groups (no schema, accounts allowed), as users
    may only be put in configured ones."""
    for name in names:
        data = user_groups.UserGroupInput(
            label=None, auth_user_creation_disabled=False, crud_schema={}
        )
        await user_groups.create_user_group(store, name, data, ACTOR)


async def add_users(
    store: Store,
    count: int,
    *,
    prefix: str = "user",
    start: int = 0,
    **columns: Any,
) -> list[str]:
    """``count`` ``ACTIVE`` users ``{prefix}{i}@example.com`` (each with its
    ``auth0`` upsert row, as any creation writes); their ids, in order."""
    ids = []
    for i in range(start, start + count):
        name = f"{prefix}{i}@example.com"
        record = await users.create_user(
            store,
            UserInput(
                user_name=name,
                columns={
                    "idp_username": f"{prefix}{i}",
                    "idp_cloud_username": name,
                    "given_name": f"Given{i}",
                    "family_name": prefix.capitalize(),
                    **columns,
                },
                multi_values=[{"attribute": "emails", "value": name, "primary": True}],
            ),
            ACTOR,
        )
        ids.append(record.user.id)
    return ids


async def change_user(
    store: Store, user_id: str, *, email: str | None = None, **columns: Any
) -> None:
    """Change ``columns`` of the user (and its primary e-mail to ``email``),
    keeping the rest, as a SCIM PATCH would."""

    def changed(current: UserRecord) -> UserInput:
        kept = {c: getattr(current.user, c) for c in WRITABLE_COLUMNS}
        values = [
            {
                "attribute": v.attribute,
                "value": email if email is not None and v.attribute == "emails" else v.value,
                "display": v.display,
                "type": v.type,
                "primary": v.primary,
                "verified": v.verified,
            }
            for v in sorted(current.user.multi_values, key=lambda v: v.position)  # type: ignore[union-attr]
        ]
        return UserInput(
            user_name=current.user.user_name, columns={**kept, **columns}, multi_values=values
        )

    await users.update_user(store, user_id, changed, ACTOR)


def dispatcher(
    store: Store,
    service: Auth0Client,
    clock: ManualClock,
    *,
    name: str = "dispatcher",
    companions: Sequence[Companion] = (),
) -> Dispatcher:
    return Dispatcher(store, service, clock=clock, name=name, companions=companions)


def accounts_by_store_id(auth0: Auth0Emulator) -> dict[str, dict[str, Any]]:
    """The tenant's accounts, by the store id in their metadata."""
    found = {}
    for account in auth0.users.values():
        store_id = (account.get("app_metadata") or {}).get("idstore_user_id")
        assert store_id not in found, f"two accounts name {store_id}"
        found[store_id] = account
    return found


def no_duplicates(auth0: Auth0Emulator) -> None:
    """No e-mail was ever given a second account, and no two accounts share one."""
    assert [e for e, n in auth0.created_per_email.items() if n > 1] == []
    emails = [a["email"] for a in auth0.users.values()]
    assert len(emails) == len(set(emails))
