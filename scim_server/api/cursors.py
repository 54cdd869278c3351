"""Page cursors of ``/api/v1`` lists: opaque to clients, the store's
``next_after`` (the last id of the page) underneath.

A cursor is ``base64url("<list>:<after>")`` without padding: the list's name
inside it makes a cursor of one list (roles) refused by another (bindings),
and a string that does not decode to one is
:class:`~identity_store.errors.InvalidCursorError` (400), mapped with the
store's other errors.
"""

from __future__ import annotations

import base64
import binascii

from identity_store.errors import InvalidCursorError

MAX_CURSOR_LENGTH = 1024
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"


def encode(kind: str, after: str | None) -> str | None:
    """The cursor of the page after ``after`` in list ``kind``; ``None`` at the end."""
    if after is None:
        return None
    return base64.urlsafe_b64encode(f"{kind}:{after}".encode()).rstrip(b"=").decode("ascii")


def decode(kind: str, cursor: str | None) -> str | None:
    """The ``after`` a cursor of list ``kind`` stands for; ``None`` for no cursor."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursorError("the cursor was not issued by this API") from exc
    prefix, separator, after = text.partition(":")
    if prefix != kind or not separator or not after or "\x00" in after:
        raise InvalidCursorError(f"the cursor was not issued for the {kind} list")
    return after
