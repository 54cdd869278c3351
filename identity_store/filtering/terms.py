"""A filter as the store reads it: a small tree of frozen values, with neither a
SCIM library nor SQL in it (RFC 7644 §3.4.2.2, already resolved).

Attributes are named by their full name in :mod:`identity_store.attributes`
(``urn:ietf:params:scim:schemas:core:2.0:User:emails.value``), whatever the
client wrote; compared values are already of the attribute's type. The SCIM
layer (scim_server.filters) builds these trees from what clients send; the
store translates them (:mod:`identity_store.filtering`). This module imports
nothing from the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

Operator: TypeAlias = Literal["eq", "co", "sw", "ew", "gt", "ge", "lt", "le"]
"""RFC 7644 §3.4.2.2's comparison operators but ``ne``, which is ``Not`` of ``eq``."""

OPERATORS: frozenset[str] = frozenset({"eq", "co", "sw", "ew", "gt", "ge", "lt", "le"})
SUBSTRING_OPERATORS: frozenset[str] = frozenset({"co", "sw", "ew"})


@dataclass(frozen=True, slots=True)
class Compare:
    """``attribute op value``: true when the attribute's value (one entry's, for
    a multi-valued attribute) compares so; false when it has none."""

    attribute: str
    op: Operator
    value: Any
    """In the attribute's type: ``str``, ``bool``, ``datetime`` (aware, UTC),
    ``bytes``, ``int`` or ``float``; ``None`` with ``eq`` tests absence."""
    case_exact: bool
    """Whether strings compare as they are (RFC 7643 §2.2), else by their
    comparison key (NFC, lower case)."""


@dataclass(frozen=True, slots=True)
class Present:
    """``attribute pr``: the attribute has a non-empty value (RFC 7644 §3.4.2.2)."""

    attribute: str


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    term: Filter


@dataclass(frozen=True, slots=True)
class Within:
    """``attribute[condition]``: one entry of a multi-valued attribute meets the
    whole condition (RFC 7644 §3.4.2.2 valuePath). The condition names the
    attribute's sub-attributes by their full names, or the attribute itself for
    a list of strings (``tags[value eq "x"]``)."""

    attribute: str
    condition: Filter


Filter: TypeAlias = Compare | Present | And | Or | Not | Within


@dataclass(frozen=True, slots=True)
class SortKey:
    """``sortBy`` (RFC 7644 §3.4.2.3): the attribute, and whether strings sort as
    they are or by their comparison key. The direction is the caller's."""

    attribute: str
    case_exact: bool
