"""What the ``idstore`` commands share: reading a user id from the command
line, the operator as an actor, and values made safe for the terminal."""

from __future__ import annotations

import argparse
import getpass
import re
import uuid
from datetime import datetime
from typing import Any

from identity_store.actor import Actor

__all__ = ["USER_ID", "cli_actor", "term", "user_id_arg"]

USER_ID = re.compile(r"[0-9A-Za-z]{1,64}")
"""What a user id given on the command line may be: ids are ULIDs (26
letters and digits); anything else is refused before the database sees it."""


def user_id_arg(value: str) -> str:
    """An ``argparse`` type: ``value`` when it may be a user id."""
    if not USER_ID.fullmatch(value):
        shown = value if len(value) <= 40 else f"{value[:40]}..."
        raise argparse.ArgumentTypeError(
            f"not a user id: {shown!r} (letters and digits, at most 64)"
        )
    return value


def cli_actor() -> Actor:
    """The operator at the command line, as the history and the audit log name it."""
    try:
        who = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without USER)
        who = ""
    name = f"cli:{who}" if who else "cli"
    return Actor(name=name[:255], request_id=f"cli-{uuid.uuid4().hex}")


def term(value: Any) -> str:
    """A value for the terminal: ``-`` for none, times in ISO 8601, and no
    control characters (a userName or message could carry escape sequences)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    text = str(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
