"""``sortBy`` (RFC 7644 §3.4.2.3) as an ORDER BY expression.

Strings sort case-insensitively unless caseExact (by the stored comparison key
where there is one, else ``lower()``), by code point on both databases; a
multi-valued attribute sorts by its primary entry, else its first. Only what
:attr:`identity_store.attributes.Attribute.sortable` allows: not a complex,
refused or constant attribute, nor ``groups``, ``members`` or ``tags``, whose
entries have no primary one nor an order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.sql import ColumnElement

from .dialect import in_code_point_order
from .terms import SortKey
from .translate import GROUPS, USERS, Resource

__all__ = ["group_order", "user_order"]


def _order(resource: Resource, key: SortKey) -> ColumnElement[Any]:
    attribute = resource.table.for_sort(key.attribute)
    value = resource.values[attribute.name]
    row = value.rows.source() if value.rows is not None else resource.entity
    expression = value.read(row)
    text = attribute.type is str
    if text and not key.case_exact:
        expression = value.normalized(row) if value.normalized else func.lower(expression)
    if value.rows is not None:
        assert value.rows.order is not None  # Attribute.sortable: ordered rows only
        expression = (
            select(expression)
            .select_from(row)
            .where(value.rows.link(row))
            .order_by(*value.rows.order(row))
            .limit(1)
            .scalar_subquery()
        )
    return in_code_point_order(expression) if text else expression


def user_order(key: SortKey) -> ColumnElement[Any]:
    """The ORDER BY expression of ``sortBy`` over users.

    RFC 7644 puts resources without a value last when ascending and first when
    descending: order by ``expression.asc().nulls_last()`` /
    ``expression.desc().nulls_first()`` (SQLite would put NULLs first
    otherwise), then by ``User.id`` for a stable order.

    :raises InvalidSortError: If the attribute cannot be sorted by.
    """
    return _order(USERS, key)


def group_order(key: SortKey) -> ColumnElement[Any]:
    """The ORDER BY expression of ``sortBy`` over groups; see :func:`user_order`."""
    return _order(GROUPS, key)
