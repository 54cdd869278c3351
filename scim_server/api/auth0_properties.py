"""Auth0 user properties merged into the management API's user reads
(``IDSTORE_AUTH0_USER_PROPERTIES``; docs/management-api.md, "Auth0
properties"). The properties come from a
:class:`~scim_server.auth0_gateway.PropertyProvider` the composition root
gives the application (cached, on the tenant's request budget); without
one, or with no properties configured, nothing is fetched and the users are
answered as they are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..auth0_gateway import PropertyProvider

__all__ = ["AUTH0_KEY", "merge_auth0_properties"]

AUTH0_KEY = "auth0"
"""The key of a user document that holds its Auth0 properties."""


async def merge_auth0_properties(
    users_json_list: Sequence[dict[str, Any]],
    provider: PropertyProvider | None,
    *,
    id_key: str = "authUserId",
) -> Sequence[dict[str, Any]]:
    """Add to each user document (in place; the list is returned) its Auth0
    properties under :data:`AUTH0_KEY`, Auth0's names as keys
    (``{"last_login": "...", "logins_count": 3}``): ``null`` for a user
    without an Auth0 account (no ``id_key``), ``{}`` when Auth0 has no such
    account, and no key at all when Auth0 could not be asked (throttled,
    unreachable: the read does not fail for it). One call asks about every
    account of the list at once."""
    if provider is None or not provider.names:
        return users_json_list
    wanted = [u[id_key] for u in users_json_list if isinstance(u.get(id_key), str) and u[id_key]]
    found = await provider.properties(wanted) if wanted else {}
    for user in users_json_list:
        auth_id = user.get(id_key)
        if not isinstance(auth_id, str) or not auth_id:
            user[AUTH0_KEY] = None
        elif auth_id in found:
            user[AUTH0_KEY] = dict(found[auth_id])
    return users_json_list
