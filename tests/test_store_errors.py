"""Database failures as the store's errors (identity_store.store.database_error):
a connection the server dropped, however SQLAlchemy wraps asyncpg's error
for it, is the store's UnavailableError (503), anything else stays unmapped."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.exc import InternalError

from identity_store.errors import UnavailableError
from identity_store.store import database_error


class _Wrapped(Exception):
    """SQLAlchemy's adapter of an asyncpg error: asyncpg's as its cause."""


LOST = [
    # (name, the driver's error under SQLAlchemy's InternalError, mapped to Unavailable)
    (
        "a connection dropped mid-operation",
        asyncpg.exceptions._base.InternalClientError("cannot switch to state 15"),
        True,
    ),
    ("connection is closed", asyncpg.InterfaceError("connection is closed"), True),
    ("another driver error", ValueError("not a connection's"), False),
]


@pytest.mark.parametrize(("cause", "unavailable"), [c[1:] for c in LOST], ids=[c[0] for c in LOST])
def test_an_internal_error_of_a_lost_connection_is_unavailable(
    cause: Exception, unavailable: bool
) -> None:
    wrapped = _Wrapped(str(cause))
    wrapped.__cause__ = cause
    mapped = database_error(InternalError("SELECT 1", (), wrapped))
    assert isinstance(mapped, UnavailableError) if unavailable else mapped is None
