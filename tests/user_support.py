"""What the tests of the one-statement user writes and of the batched
deletes share: a user's input with one work e-mail, and the change that
renames it (what a PATCH of ``displayName`` computes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from identity_store import users
from identity_store.users import UserInput


def user_input(user_name: str, **columns: Any) -> UserInput:
    """A user named ``user_name`` with ``columns``, its one e-mail its name."""
    return UserInput(
        user_name=user_name,
        columns=columns,
        multi_values=[{"attribute": "emails", "value": user_name, "type": "work"}],
    )


def renamed(display_name: str) -> Callable[[Any], UserInput]:
    """The change that sets the current user's ``displayName``."""

    def change(current: Any) -> UserInput:
        data = users.current_input(current.user)
        data.columns["display_name"] = display_name
        return data

    return change
