"""A user's ``status``: the steps of its synchronisation (SPEC §3), a JSON
list of ``{name, status, message, updated_at}`` (``PROFILE_SYNC``,
``AUTH0_SYNC``, ``RBAC_SYNC``...; ``OK``/``PENDING``/``ERROR``; ``updated_at``
an ISO 8601 time), one entry per step."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import StepStatus

PROFILE_SYNC = "PROFILE_SYNC"
"""The profile sync's step."""


def step(name: str, status: StepStatus, message: str | None, at: datetime) -> dict[str, Any]:
    """One step as stored."""
    return {"name": name, "status": status.value, "message": message, "updated_at": at.isoformat()}


def with_step(steps: Any, new: dict[str, Any]) -> list[dict[str, Any]]:
    """``steps`` with the step named like ``new`` replaced in its place (or
    ``new`` added at the end). A new list: the column is seen as changed."""
    kept = [s for s in steps or [] if isinstance(s, dict)]
    for i, existing in enumerate(kept):
        if existing.get("name") == new["name"]:
            return [*kept[:i], new, *[s for s in kept[i + 1 :] if s.get("name") != new["name"]]]
    return [*kept, new]
