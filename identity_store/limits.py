"""Length limits of string columns, checked before any write so that an
over-long value is a clear validation error on both databases (SQLite does not
enforce ``VARCHAR(n)``; PostgreSQL would fail the statement)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase

from .errors import ValidationError


def check_lengths(
    model: type[DeclarativeBase], values: Mapping[str, Any], label: str | None = None
) -> None:
    """Raise :class:`ValidationError` naming the first string in ``values``
    (column name → value) longer than its column allows."""
    columns = model.__table__.columns
    for name, value in values.items():
        if not isinstance(value, str) or name not in columns:
            continue
        column_type = columns[name].type
        if (
            isinstance(column_type, String)
            and column_type.length is not None
            and len(value) > column_type.length
        ):
            where = f"{label}.{name}" if label else name
            raise ValidationError(
                f"{where} is {len(value)} characters long; at most {column_type.length} allowed"
            )
