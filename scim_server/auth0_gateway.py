"""What the HTTP layer asks of Auth0, as two small interfaces the
composition root fills (``idstore/auth0_gateway.py``, backed by
:mod:`identity_sync`): the server never imports the sync, and runs without
Auth0 when they are absent (``None`` in :class:`~scim_server.state.AppState`).

- :class:`PropertyProvider`: configured Auth0 user properties of accounts,
  for the management API's user reads (``IDSTORE_AUTH0_USER_PROPERTIES``);
- :class:`TicketIssuer`: one password-change ticket, for ``POST
  /api/v1/users/change-password``. Its failures are the exceptions below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "AccountMissing",
    "Auth0Refused",
    "Auth0Unavailable",
    "PropertyProvider",
    "TicketIssuer",
]


class Auth0Unavailable(Exception):
    """Auth0 cannot answer now (throttled, 5xx, unreachable): try later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class AccountMissing(Exception):
    """Auth0 has no such account."""


class Auth0Refused(Exception):
    """Auth0 refused the request for good (a missing scope, bad credentials)."""


class PropertyProvider(Protocol):
    @property
    def names(self) -> tuple[str, ...]:
        """The Auth0 property names it reads (none: it reads nothing)."""
        ...

    async def properties(self, auth_user_ids: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
        """Each known account's properties (``{}``: Auth0 has no such
        account); an account Auth0 could not be asked about is absent."""
        ...


class TicketIssuer(Protocol):
    async def password_change_ticket(self, auth_user_id: str) -> str:
        """A ticket's URL (a credential: never logged). Raises
        :class:`AccountMissing`, :class:`Auth0Unavailable`, :class:`Auth0Refused`."""
        ...
