"""SQL functions whose spelling differs between SQLite and PostgreSQL, as
SQLAlchemy constructs compiled per dialect (``@compiles``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["in_code_point_order", "json_array_elements", "position"]


class in_code_point_order(FunctionElement[str]):
    """A string compared by code point: ``COLLATE "C"`` on PostgreSQL, whose default
    collation depends on the server's locale; SQLite's default (BINARY) already is."""

    name = "in_code_point_order"
    inherit_cache = True
    type = String()


@compiles(in_code_point_order)
def _code_point_order_default(
    element: in_code_point_order, compiler: SQLCompiler, **kw: Any
) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(in_code_point_order, "postgresql")
def _code_point_order_postgresql(
    element: in_code_point_order, compiler: SQLCompiler, **kw: Any
) -> str:
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


class position(FunctionElement[int]):
    """Where a string starts in another, case-sensitively, counting from 1 (0: absent).

    SQLite's ``LIKE`` ignores ASCII case, so caseExact substring tests use this."""

    name = "position"
    inherit_cache = True


@compiles(position, "sqlite")
def _position_sqlite(element: position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(position, "postgresql")
def _position_postgresql(element: position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


class json_array_elements(FunctionElement[Any]):
    """The elements of a JSON array column as rows with a ``value`` text column.

    Anything but an array (SQL or JSON null) yields no rows."""

    name = "json_array_elements"
    inherit_cache = True


@compiles(json_array_elements, "sqlite")
def _json_array_elements_sqlite(
    element: json_array_elements, compiler: SQLCompiler, **kw: Any
) -> str:
    array = compiler.process(element.clauses, **kw)
    return f"json_each(CASE json_type({array}) WHEN 'array' THEN {array} ELSE '[]' END)"


@compiles(json_array_elements, "postgresql")
def _json_array_elements_postgresql(
    element: json_array_elements, compiler: SQLCompiler, **kw: Any
) -> str:
    array = compiler.process(element.clauses, **kw)
    return (
        f"jsonb_array_elements_text(CASE jsonb_typeof({array}) WHEN 'array' "
        f"THEN {array} ELSE '[]'::jsonb END)"
    )
