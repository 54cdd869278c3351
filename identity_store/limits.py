"""Limits of what a write may store, checked before any write so that a value
out of bounds is a clear validation error on both databases: lengths of
string columns (SQLite does not enforce ``VARCHAR(n)``; PostgreSQL would fail
the statement), the depth and size of free-form JSON, the range of
timestamps."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase

from .errors import ValidationError


@cache
def _lengths(model: type[DeclarativeBase]) -> dict[str, int]:
    """The string columns of ``model`` that have a length, and their length."""
    return {
        column.key: column.type.length
        for column in model.__table__.columns
        if isinstance(column.type, String) and column.type.length is not None
    }


def check_lengths(
    model: type[DeclarativeBase], values: Mapping[str, Any], label: str | None = None
) -> None:
    """Raise :class:`ValidationError` naming the first string in ``values``
    (column name → value) longer than its column allows."""
    lengths = _lengths(model)
    for name, value in values.items():
        if not isinstance(value, str):
            continue
        length = lengths.get(name)
        if length is not None and len(value) > length:
            where = f"{label}.{name}" if label else name
            raise ValidationError(
                f"{where} is {len(value)} characters long; at most {length} allowed"
            )


MAX_FREE_FORM_DEPTH = 32
"""Deepest nesting of a free-form JSON value (``customData``): every read that
trims a representation walks it, and serialisers refuse a few hundred levels."""

MAX_FREE_FORM_BYTES = 65_536
"""Largest free-form JSON value, serialised."""


def check_free_form(name: str, value: Any) -> None:
    """Raise :class:`ValidationError` when the JSON ``value`` nests deeper than
    :data:`MAX_FREE_FORM_DEPTH` or serialises to more than
    :data:`MAX_FREE_FORM_BYTES` (walked without recursion, depth first)."""
    if not value:  # None, or empty: one level, a few bytes
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_FREE_FORM_DEPTH:
            raise ValidationError(f"{name} nests deeper than {MAX_FREE_FORM_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_FREE_FORM_BYTES:
        raise ValidationError(
            f"{name} is {size} bytes as JSON; at most {MAX_FREE_FORM_BYTES} allowed"
        )


def check_moment(name: str, value: Any) -> None:
    """Raise :class:`ValidationError` for a timestamp that has no UTC
    equivalent (``0001-01-01T00:00:00+05:00`` is before year 1 in UTC)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError as exc:
            raise ValidationError(f"{name} is out of range: {value.isoformat()}") from exc
