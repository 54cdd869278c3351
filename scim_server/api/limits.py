"""The configured list limits, which the request models cannot know: each
list a body gives is at most ``IDSTORE_RBAC_MAX_LIST`` entries, a batch at
most ``IDSTORE_AUTHZ_MAX_BATCH`` checks. Refused as a validation problem
naming the field, like the models' own limits."""

from __future__ import annotations

from collections.abc import Sized

from .problems import FieldError, ProblemError


def at_most(limit: int, **lists: Sized | None) -> None:
    """400 naming every list in ``lists`` (by its camelCase name) longer than ``limit``."""
    errors = [
        FieldError(
            location=["body", name],
            detail=f"List should have at most {limit} items, not {len(value)}",
            type="too_long",
        )
        for name, value in lists.items()
        if value is not None and len(value) > limit
    ]
    if errors:
        raise ProblemError(
            400,
            "invalid-request",
            f"body.{errors[0].location[1]}: {errors[0].detail}",
            errors=errors,
        )
