"""Who is acting: carried from the HTTP layer (or CLI, or a worker) into the
store, which records it in the audit log and the lifecycle history."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """The token (or system job) behind a change, and the request it came in."""

    name: str
    token_id: str | None = None
    request_id: str | None = None


SYSTEM = Actor(name="system")
