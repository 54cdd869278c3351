"""Filters and ``sortBy`` over the store's tables (RFC 7644 §3.4.2.2, §3.4.2.3).

The store takes a filter as a small tree (:mod:`.terms`: ``Compare``,
``Present``, ``And``, ``Or``, ``Not``, ``Within``, and ``SortKey`` for
``sortBy``) naming attributes by their full names in
:mod:`identity_store.attributes`, with values already of the attribute's type.
It knows nothing of SCIM's syntax: scim_server.filters parses what clients
send, with scim2-models, into such trees. Here they become SQL:
:func:`user_where` and :func:`group_where` (WHERE clauses, :mod:`.translate`),
:func:`user_order` and :func:`group_order` (ORDER BY, :mod:`.sorting`), with
the SQL each dialect spells its own way in :mod:`.dialect`. A filter the
store cannot run raises :class:`~identity_store.errors.InvalidFilterError`, a
sort :class:`~identity_store.errors.InvalidSortError`.

Why the translation is written here rather than taken from a library: no
well-kept library translates SCIM filters to SQL with SCIM's semantics.
scim2-filter-parser, the one that tries, silently drops a clause whose
attribute is not in its map (``nosuch eq "x"`` would return every row) and
knows nothing of attribute types, case-exactness, multi-valued attributes or
SQL's NULLs; scim2-models parses and checks filters, and evaluates them in
memory, but writes no SQL.
"""

from .sorting import group_order, user_order
from .terms import And, Compare, Filter, Not, Or, Present, SortKey, Within
from .translate import column_equality, group_where, user_equality, user_where

__all__ = [
    "And",
    "Compare",
    "Filter",
    "Not",
    "Or",
    "Present",
    "SortKey",
    "Within",
    "column_equality",
    "group_order",
    "group_where",
    "user_equality",
    "user_order",
    "user_where",
]
