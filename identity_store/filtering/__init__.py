"""TEMPORARY bridge until the filter translation moves into the store (issue 9)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement


def user_where(tree: Any) -> ColumnElement[bool]:
    return tree  # type: ignore[no-any-return]


def group_where(tree: Any) -> ColumnElement[bool]:
    return tree  # type: ignore[no-any-return]


def user_order(key: Any) -> ColumnElement[Any]:
    from scim_server.filters import user_sort_column

    return user_sort_column(key)


def group_order(key: Any) -> ColumnElement[Any]:
    from scim_server.filters import group_sort_column

    return group_sort_column(key)


def sort_name(key: Any) -> str | None:
    return key  # type: ignore[no-any-return]


def column_equality(where: ColumnElement[bool]) -> tuple[str, Any] | None:
    from scim_server.filters import column_equality as equality

    return equality(where)
