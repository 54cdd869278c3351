"""SCIM filters (RFC 7644 §3.4.2.2) and ``sortBy`` (§3.4.2.3), read into the
store's filter tree (:mod:`identity_store.filtering.terms`).

What scim2-models does for us: the grammar (``ScimFilter`` parses with lark,
including ``not``, grouping, ``and`` binding tighter than ``or``, value paths
and Entra's ``emails[type eq "work"].value eq "x"``, which it rewrites into
``emails[type eq "work" and value eq "x"]``); attribute resolution in any
letter case, with or without the schema URN (``ScimFilter.resolve`` /
``resolve_comparison``, which also sends ``emails co "x"`` to ``emails.value``,
RFC 7643 §2.4); the case-exactness of every attribute (RFC 7643 §2.2); the
operators each type accepts (no ``gt`` on booleans or binaries, only ``eq`` on
the write-only ``password``, RFC 7644 §3.4.2.2); coercion of the compared
value to the attribute's type (``coerce_value``: ISO dateTime strings,
booleans, base64); and a bound on nesting depth. The comparison key of strings
(NFC, lower case unless caseExact: ``AttributeBinding.comparable``) is the
store's own ``normalize``, which tests/test_filtering.py holds equal to it.

What this module adds: strict resolution of every attribute to its full name
(the key of identity_store.attributes, whatever the client wrote), the rules
below, and the tree it hands the store (:func:`user_filter`,
:func:`group_filter`), which translates it to SQL
(:mod:`identity_store.filtering`: two-valued logic, multi-valued attributes,
case, what it refuses).

- **Extension attributes without their URN** (``employeeNumber``) are looked up
  in the extensions after the core schema, which RFC 7644 §3.10 allows ("SHOULD
  fully qualify"); scim2-models alone would not resolve them.
- **Microsoft Entra ID's** ``manager eq "id"`` means ``manager.value eq "id"``.
- **ne** is the negation of ``eq`` (``Not(Compare("eq"))``): ``title ne "x"``
  matches users without a title, as scim2-models' in-memory ``match`` has it.
- **Values** reach the tree in the attribute's type. A dateTime without a zone
  is read as UTC (scim2-models' ``match`` would find it equal to nothing).
- **Refused** with ``invalidFilter``: a filter longer than ``max_length`` or of
  more than :data:`MAX_TERMS` terms, a compared string holding a lone UTF-16
  surrogate, a substring operator on a non-string, and a number compared to a
  dateTime. What the store cannot filter on (``password``, ``$ref``...) is the
  store's to refuse (:class:`~identity_store.errors.InvalidFilterError`); its
  attribute table is asked as each term is read, before the compared value is
  coerced, so that its reason comes before any complaint about the value.

``sortBy`` (:func:`user_sort_key`) raises ``invalidValue`` rather than
``invalidFilter``: it is not a filter, and RFC 7644 §3.12 describes
``invalidValue`` as a value "not compatible with the operation or attribute
type".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from scim2_models import (
    InvalidFilterException,
    InvalidValueException,
    Path,
    Resource,
    SCIMException,
    ScimFilter,
)
from scim2_models.path import (
    AttributeBinding,
    AttrPath,
    CompareOperator,
    Comparison,
    FilterNode,
    FilterVisitor,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
    coerce_value,
)

from identity_store.attributes import GROUP_ATTRIBUTES, USER_ATTRIBUTES, AttributeTable
from identity_store.filtering import terms

from .schemas import ScimGroup, ScimUser

__all__ = ["MAX_TERMS", "group_filter", "group_sort_key", "user_filter", "user_sort_key"]

MAX_TERMS = 50
"""How many comparisons and presence tests one filter may hold."""
MAX_HOT_ATTRIBUTES = 256
"""How many attribute spellings (``userName``, ``username``...) each resource
remembers for :func:`_hot_comparison`; past that, new ones take the full path."""


@dataclass(frozen=True)
class _Resource:
    """A resource type: its SCIM model, and the store's table of its attributes."""

    model: type[Resource[Any]]
    filter_type: type[ScimFilter[Any]]
    table: AttributeTable
    hot: dict[str, tuple[str, bool]] = field(default_factory=dict, compare=False, hash=False)
    """Attribute as the client wrote it → ``(full name, case_exact)``, for
    plain-string attributes whose ``attr eq "value"`` was read once in full
    (:func:`_hot_comparison`)."""

    @property
    def extension_urns(self) -> tuple[str, ...]:
        return tuple(self.model.get_extension_models())


_USERS = _Resource(ScimUser, ScimFilter[ScimUser], USER_ATTRIBUTES)
_GROUPS = _Resource(ScimGroup, ScimFilter[ScimGroup], GROUP_ATTRIBUTES)


def _refuse(detail: str) -> InvalidFilterException:
    return InvalidFilterException(detail=detail)


def _entra_manager(attr_path: AttrPath) -> AttrPath:
    """``manager eq "id"`` as ``manager.value eq "id"``.

    Microsoft Entra ID's SCIM validator sends ``id eq "x" and manager eq "y"``:
    it applies RFC 7643 §2.4's ``value`` convention, meant for multi-valued
    attributes, to the enterprise extension's singular ``manager``.
    """
    enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user"
    if (
        attr_path.sub_attr is None
        and attr_path.attr.lower() == "manager"
        and (attr_path.uri is None or attr_path.uri.lower() == enterprise)
    ):
        return AttrPath(attr=attr_path.attr, sub_attr="value", uri=attr_path.uri)
    return attr_path


_OPERATORS: dict[CompareOperator, terms.Operator] = {
    CompareOperator.eq: "eq",
    CompareOperator.co: "co",
    CompareOperator.sw: "sw",
    CompareOperator.ew: "ew",
    CompareOperator.gt: "gt",
    CompareOperator.ge: "ge",
    CompareOperator.lt: "lt",
    CompareOperator.le: "le",
}


@dataclass(frozen=True)
class _Scope:
    """The multi-valued attribute a value path's inner filter names the entries of
    (RFC 7644 §3.4.2.2 valuePath)."""

    attr_path: AttrPath
    binding: AttributeBinding


class _Reader(FilterVisitor[terms.Filter]):
    """Turns a parsed, model-checked filter into the store's tree, asking the
    store's attribute table about each attribute as it goes."""

    def __init__(
        self, resource: _Resource, scim_filter: ScimFilter[Any], scope: _Scope | None = None
    ) -> None:
        self.resource = resource
        self.filter = scim_filter
        self.scope = scope

    # Nodes

    def visit_logical_expr(self, node: LogicalExpr) -> terms.Filter:
        items = tuple(self.visit(term) for term in node.terms)
        return terms.And(items) if node.op == LogicalOperator.and_ else terms.Or(items)

    def visit_not(self, node: Not) -> terms.Filter:
        return terms.Not(self.visit(node.expr))

    def visit_present(self, node: Present) -> terms.Filter:
        binding = self.bind(node.attr_path, comparison=False)
        self.resource.table.for_filter(binding.urn)
        return terms.Present(binding.urn)

    def visit_comparison(self, node: Comparison) -> terms.Filter:
        binding = self.bind(_entra_manager(node.attr_path), comparison=True)
        self.resource.table.for_compare(binding.urn)
        if node.op == CompareOperator.ne:
            # RFC 7644 §3.4.2.2 "not equal"; an absent value is not equal to any.
            value = _coerce(binding, node.value, CompareOperator.eq)
            return terms.Not(terms.Compare(binding.urn, "eq", value, binding.case_exact))
        value = _coerce(binding, node.value, node.op)
        return terms.Compare(binding.urn, _OPERATORS[node.op], value, binding.case_exact)

    def visit_value_path(self, node: ValuePath) -> terms.Filter:
        if self.scope is not None:  # the grammar already refuses this
            raise _refuse("value paths cannot be nested")
        binding = self.bind(node.attr_path, comparison=False)
        self.resource.table.for_within(binding.urn)
        inner = _Reader(self.resource, self.filter, _Scope(node.attr_path, binding))
        return terms.Within(binding.urn, inner.visit(node.val_filter))

    # Resolution

    def bind(self, attr_path: AttrPath, *, comparison: bool) -> AttributeBinding:
        """Resolve an attribute path strictly: an unknown attribute is an invalidFilter."""
        if self.scope is not None:
            full_path = self._in_scope(attr_path)
            if full_path is None:
                return self.scope.binding
            attr_path = full_path
        resolve = self.filter.resolve_comparison if comparison else self.filter.resolve
        binding = resolve(attr_path, strict=True)
        assert binding is not None  # the filter is bound to one model
        return binding

    def _in_scope(self, attr_path: AttrPath) -> AttrPath | None:
        """The full path of an attribute named inside ``attr[...]``.

        None stands for the entry itself, for a multi-valued attribute of strings,
        whose entries scim2-models' ``match`` names ``value`` (``tags[value eq "x"]``).
        """
        assert self.scope is not None
        outer = self.scope.binding
        if attr_path.uri is not None or attr_path.sub_attr is not None:
            raise _refuse(f"'{attr_path}' in '{outer.urn}[...]' must name a sub-attribute")
        if isinstance(outer.field_type, type) and issubclass(outer.field_type, BaseModel):
            return replace(self.scope.attr_path, sub_attr=attr_path.attr)
        if attr_path.attr.lower() != "value":
            raise _refuse(f"entries of '{outer.urn}' are named 'value' in '{outer.urn}[...]'")
        return None


def _kind(binding: AttributeBinding) -> type:
    """What an attribute compares as: bool, datetime, bytes, or else str."""
    target = binding.target_type
    for kind in (bool, datetime, bytes):
        if isinstance(target, type) and issubclass(target, kind):
            return kind
    return str


def _coerce(binding: AttributeBinding, raw: Any, op: CompareOperator) -> Any:
    """The compared value in the attribute's type, per scim2-models (which also refused
    the operators the type forbids when the filter was built): ``str``, ``bool``,
    ``datetime`` (aware, in UTC), ``bytes``, or ``None``."""
    kind = _kind(binding)
    if op in (CompareOperator.co, CompareOperator.sw, CompareOperator.ew):
        # scim2-models leaves the operand of these unchecked, whatever its type.
        if kind is not str:
            raise _refuse(f"operator '{op.value}' applies to strings, not to '{binding.urn}'")
        if raw is not None and not isinstance(raw, str):
            raise _refuse(f"operator '{op.value}' takes a quoted string, not {raw!r}")
    if kind is datetime and raw is not None and not isinstance(raw, str):
        # scim2-models (pydantic, lax) reads a number as a Unix timestamp; RFC 7643
        # §2.3.5 has dateTime values written as xsd:dateTime strings.
        raise _refuse(f"'{binding.urn}' is a dateTime: compare it to a quoted ISO 8601 value")
    value = coerce_value(binding, raw, op)
    if isinstance(value, datetime):
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError as exc:
            # 0001-01-01T00:00:00+14:00 is a moment of the year 0 in UTC, which
            # no database (nor Python) can represent.
            raise _refuse(f"{raw!r} has no UTC equivalent in years 1 to 9999") from exc
    if isinstance(value, str) and type(value) is not str:
        # The store's tree holds plain values: the text of scim2-models' Reference
        # or of an enumeration member (``Type.work``).
        return str.__str__(value)
    return value


# -- Parsing -------------------------------------------------------------------------


def _terms(node: FilterNode) -> Iterator[FilterNode]:
    """The terms of a filter: its comparisons and presence tests."""
    if isinstance(node, LogicalExpr):
        for term in node.terms:
            yield from _terms(term)
    elif isinstance(node, Not):
        yield from _terms(node.expr)
    elif isinstance(node, ValuePath):
        yield from _terms(node.val_filter)
    else:
        yield node


def _unstorable(node: FilterNode) -> str | None:
    """What makes a compared string one no database can be asked about: a
    lone UTF-16 surrogate (from a ``\\uD800``-style escape) or a NUL
    character (``\\u0000``, which PostgreSQL refuses in text); ``None``."""
    for term in _terms(node):
        if isinstance(term, Comparison) and isinstance(term.value, str):
            if "\x00" in term.value:
                return "a compared string has a NUL character"
            try:
                term.value.encode()
            except UnicodeEncodeError:
                return "a compared string has an unpaired UTF-16 surrogate"
    return None


def _qualified(node: FilterNode, resource: _Resource, scim_filter: ScimFilter[Any]) -> FilterNode:
    """The filter with the URN of its extension added to each extension attribute
    named without one (``employeeNumber``).

    Library gap: scim2-models resolves an unqualified name against the core schema
    only, while RFC 7644 §3.10 merely has clients qualify extension attributes
    ("SHOULD"). The core schema still wins (``userType`` is the core one).
    """
    if isinstance(node, LogicalExpr):
        return replace(
            node, terms=tuple(_qualified(term, resource, scim_filter) for term in node.terms)
        )
    if isinstance(node, Not):
        return replace(node, expr=_qualified(node.expr, resource, scim_filter))
    if isinstance(node, Comparison | Present | ValuePath):
        path = node.attr_path
        if path.uri is None and scim_filter.resolve(path, strict=False) is None:
            for urn in resource.extension_urns:
                candidate = replace(path, uri=urn)
                if scim_filter.resolve(candidate, strict=False) is not None:
                    return replace(node, attr_path=candidate)
    return node


_SIMPLE = re.compile(r'^\s*([A-Za-z][\w$-]*)\s+(eq|EQ|Eq|eQ)\s+"((?:[^"\\]|\\.)*)"\s*$')


def _simple_comparison(expression: str) -> Comparison | None:
    """``attr eq "value"``, the form of nearly every look-up a provisioning
    client makes, as a syntax tree built without the grammar: parsing each new
    value with lark costs more than the rest of the request. The node goes
    through the same validation and translation as a parsed one; anything
    else (or a value that is not a valid JSON string) takes the grammar."""
    match = _SIMPLE.match(expression)
    if match is None:
        return None
    try:
        value = json.loads(f'"{match.group(3)}"')
    except json.JSONDecodeError:
        return None
    try:
        return Comparison(AttrPath(attr=match.group(1)), CompareOperator.eq, value)
    except ValueError:
        return None


def _parse(resource: _Resource, expression: str, max_length: int) -> ScimFilter[Any]:
    if len(expression) > max_length:
        raise InvalidFilterException(
            filter=expression[:100], detail=f"the filter is longer than {max_length} characters"
        )
    simple = _simple_comparison(expression)
    scim_filter = resource.filter_type(simple if simple is not None else expression)
    if sum(1 for _ in _terms(scim_filter.ast)) > MAX_TERMS:
        raise InvalidFilterException(
            filter=expression[:100], detail=f"the filter has more than {MAX_TERMS} terms"
        )
    problem = _unstorable(scim_filter.ast)
    if problem is not None:
        raise InvalidFilterException(filter=expression[:100], detail=problem)
    qualified = _qualified(scim_filter.ast, resource, scim_filter)
    if qualified != scim_filter.ast:
        # Rebuilding has scim2-models check operators and values of the attributes
        # it could not resolve before.
        scim_filter = resource.filter_type(qualified)
    return scim_filter


def _storable(value: str) -> bool:
    """No NUL character and no lone surrogate (:func:`_unstorable`)."""
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _hot_comparison(
    resource: _Resource, expression: str, max_length: int
) -> tuple[re.Match[str] | None, terms.Filter | None]:
    """``attr eq "value"`` on an attribute already read once in full, built
    straight from what that reading found; ``(match, None)`` when the
    expression must take the full path (``match``: its simple shape, if any).

    Only attributes whose values are plain strings are remembered (see
    :func:`_remember`): for those the full path's outcome depends on the
    attribute alone (resolution, the store's table, the operator check)
    except for the value's checks, which are repeated here (a NUL character
    or a lone surrogate goes the full path, which refuses it)."""
    if len(expression) > max_length:
        return None, None
    match = _SIMPLE.match(expression)
    if match is None:
        return None, None
    known = resource.hot.get(match.group(1))
    if known is None:
        return match, None
    try:
        value = json.loads(f'"{match.group(3)}"')
    except json.JSONDecodeError:
        return match, None
    if not isinstance(value, str) or not _storable(value):
        return match, None
    return match, terms.Compare(known[0], "eq", value, known[1])


def _remember(
    resource: _Resource, match: re.Match[str], scim_filter: ScimFilter[Any], tree: terms.Filter
) -> None:
    """Remember the attribute of a simple ``attr eq "value"`` read in full,
    when it is a plain string whose value reached the tree unchanged."""
    if len(resource.hot) >= MAX_HOT_ATTRIBUTES or not isinstance(tree, terms.Compare):
        return
    node = scim_filter.ast
    if not isinstance(node, Comparison) or node.op != CompareOperator.eq:
        return
    if type(tree.value) is not str or tree.value != node.value:
        return
    binding = _Reader(resource, scim_filter).bind(_entra_manager(node.attr_path), comparison=True)
    if binding.target_type is not str or binding.urn != tree.attribute:
        return
    resource.hot[match.group(1)] = (tree.attribute, tree.case_exact)


def _filter(resource: _Resource, expression: str, max_length: int) -> terms.Filter:
    match, hot = _hot_comparison(resource, expression, max_length)
    if hot is not None:
        return hot
    scim_filter = _parse(resource, expression, max_length)
    tree = _Reader(resource, scim_filter).visit(scim_filter.ast)
    if match is not None:
        _remember(resource, match, scim_filter, tree)
    return tree


def user_filter(expression: str, *, max_length: int = 4096) -> terms.Filter:
    """The store's tree of a SCIM filter over users, for
    :func:`identity_store.filtering.user_where`.

    :raises InvalidFilterException: On a syntax error, an unknown attribute, an
        operator or value the attribute does not take, or a filter beyond
        ``max_length`` or :data:`MAX_TERMS`.
    :raises InvalidFilterError: If the store cannot filter on an attribute the
        filter names (``password``, ``$ref``...).
    """
    return _filter(_USERS, expression, max_length)


def group_filter(expression: str, *, max_length: int = 4096) -> terms.Filter:
    """The store's tree of a SCIM filter over groups, for
    :func:`identity_store.filtering.group_where`.

    :raises InvalidFilterException, InvalidFilterError: As :func:`user_filter`.
    """
    return _filter(_GROUPS, expression, max_length)


# -- Sorting -------------------------------------------------------------------------


def _sort_key(resource: _Resource, attribute: str) -> terms.SortKey:
    try:
        node = Path(attribute).ast
    except SCIMException as exc:
        raise InvalidValueException(detail=f"sortBy {attribute!r}: {exc.detail}") from exc
    if not isinstance(node, AttrPath):
        raise InvalidValueException(detail=f"sortBy must name an attribute, not {attribute!r}")
    try:
        scim_filter = _parse(resource, str(Present(node)), max_length=4096)
        present = scim_filter.ast
        assert isinstance(present, Present)
        binding = _Reader(resource, scim_filter).bind(present.attr_path, comparison=True)
    except SCIMException as exc:
        raise InvalidValueException(detail=f"sortBy {attribute!r}: {exc.detail}") from exc
    return terms.SortKey(binding.urn, binding.case_exact)


def user_sort_key(attribute: str) -> terms.SortKey:
    """The store's sort key of ``sortBy`` over users (RFC 7644 §3.4.2.3), for
    :func:`identity_store.filtering.user_order`, which says whether the
    attribute can be sorted by (:class:`~identity_store.errors.InvalidSortError`).

    :raises InvalidValueException: (400 ``invalidValue``) if the attribute is
        unknown or malformed.
    """
    return _sort_key(_USERS, attribute)


def group_sort_key(attribute: str) -> terms.SortKey:
    """The store's sort key of ``sortBy`` over groups; see :func:`user_sort_key`."""
    return _sort_key(_GROUPS, attribute)
