"""Checks HTTP requests and answers against an OpenAPI 3.1 description: the
Auth0 emulator runs every Management API exchange through it, so every test
that uses the emulator also checks that our client sends what Auth0
documents and that the emulator answers what Auth0 documents.

What is checked, per operation (method + path template of the document):

- the request: its query parameters (each against its schema, after the
  string on the wire is read as the schema's type: ``"2"`` as an integer,
  ``"true"`` as a boolean; a parameter the operation does not declare, a
  missing required one), its path parameters (``/jobs/{id}``'s pattern), its
  content type (one the operation declares) and its body against the
  schema of that content type (JSON as it is; form and multipart fields
  read as the property's type);
- the answer: its status is one the operation declares, and a JSON body of
  a status that has a schema validates against it (a ``204`` without a body
  is not checked).

Validation is JSON Schema 2020-12 (the dialect of OpenAPI 3.1) by
``jsonschema``, with ``$ref``\\ s such as ``#/components/schemas/X`` resolved
by ``referencing`` inside the whole document.

Formats: ``jsonschema`` checks a ``format`` only through a format checker,
and its stock checker knows none of the formats Auth0's document uses
except ``email``, which it accepts as soon as the value contains an ``@``.
The document's formats are checked here by :data:`FORMATS`: ``email`` (a
local part, ``@``, a domain with a dot, no space), ``url`` and
``strict-uri`` (an absolute ``http(s)`` URL), ``user-id`` (a non-empty id
without spaces), ``client-id``, ``organization-id``. A format not in
:data:`FORMATS` is not checked (the test of this module lists which ones
the document uses, so a new one is noticed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

AUTH0_DOCUMENT = Path(__file__).with_name("auth0-management-api-v2.openapi.json")
"""Auth0's published OpenAPI description of the endpoints the sync uses
(Management API v2, descriptions stripped), as the project received it in
``shared/auth0/management-api-v2-subset.openapi.json``; kept here unchanged so
the suite needs nothing outside the repository."""

DOCUMENT_URI = "urn:idstore:auth0-management-api-v2"

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
_ID = re.compile(r"\S{1,255}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_ORGANIZATION_ID = re.compile(r"org_[A-Za-z0-9]{1,64}")


def _absolute_url(value: str) -> bool:
    if any(c.isspace() for c in value):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


FORMATS = {
    "email": lambda v: bool(_EMAIL.fullmatch(v)),
    "url": _absolute_url,
    "strict-uri": _absolute_url,
    "user-id": lambda v: bool(_ID.fullmatch(v)),
    "client-id": lambda v: bool(_CLIENT_ID.fullmatch(v)),
    "organization-id": lambda v: bool(_ORGANIZATION_ID.fullmatch(v)),
}
"""The formats of Auth0's document and how each is checked (module docstring)."""


def format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    for name, check in FORMATS.items():
        checker.checks(name)(lambda value, check=check: not isinstance(value, str) or check(value))
    return checker


def formats_used(node: Any) -> set[str]:
    """Every ``format`` named anywhere in ``node``."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("format"), str):
            found.add(node["format"])
        for value in node.values():
            found |= formats_used(value)
    elif isinstance(node, list):
        for value in node:
            found |= formats_used(value)
    return found


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True, slots=True)
class Problem:
    """One way a request breaks the contract."""

    part: str
    """``operation``, ``path``, ``query``, ``content-type`` or ``body``."""
    text: str
    """The sentence, naming the request."""
    detail: str
    """The same without the request's name (what the service would answer)."""

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path template of the document."""

    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]

    def pointer(self, *parts: str) -> str:
        return _pointer("paths", self.template, self.method.lower(), *parts)


class Contract:
    """An OpenAPI 3.1 document, ready to check exchanges against."""

    def __init__(self, document: Mapping[str, Any], *, prefix: str = "") -> None:
        self.document = document
        self.prefix = prefix
        """The part of a request path before the document's paths (``/api/v2``)."""
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
        self.checker = format_checker()
        self._validators: dict[str, Draft202012Validator] = {}
        operations: list[Operation] = []
        for template, item in document.get("paths", {}).items():
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            for method, spec in item.items():
                if method in ("get", "put", "post", "patch", "delete"):
                    operations.append(
                        Operation(method.upper(), template, re.compile(regex + "$"), spec)
                    )
        # Literal paths before templated ones (/jobs/users-imports before /jobs/{id}).
        operations.sort(key=lambda o: o.template.count("{"))
        self.operations = operations

    @classmethod
    def auth0(cls) -> Contract:
        """Auth0's Management API v2 description, for paths under ``/api/v2``."""
        return cls(orjson.loads(AUTH0_DOCUMENT.read_bytes()), prefix="/api/v2")

    def operation(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation ``method path`` is, with its path parameters."""
        if not path.startswith(self.prefix):
            return None
        local = path[len(self.prefix) :]
        for operation in self.operations:
            if operation.method == method.upper():
                match = operation.pattern.match(local)
                if match:
                    return operation, match.groupdict()
        return None

    def _validator(self, pointer: str) -> Draft202012Validator:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = Draft202012Validator(
                {"$ref": DOCUMENT_URI + pointer},
                registry=self.registry,
                format_checker=self.checker,
            )
            self._validators[pointer] = validator
        return validator

    def _resolve(self, schema: Any) -> Any:
        """``schema``, or what its ``$ref`` (inside the document) names."""
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 10:
            node: Any = self.document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            schema, seen = node, seen + 1
        return schema

    def _errors(self, pointer: str, instance: Any) -> list[str]:
        errors = sorted(self._validator(pointer).iter_errors(instance), key=_error_key)
        return [_describe(error) for error in errors]

    def _typed(self, schema: Any, value: str) -> Any:
        """A string from the wire (query, form, multipart) as ``schema``'s type."""
        kind = self._resolve(schema).get("type") if isinstance(schema, dict) else None
        if kind in ("integer", "number") and re.fullmatch(r"-?\d{1,18}", value):
            return int(value)
        if kind == "boolean" and value in ("true", "false"):
            return value == "true"
        return value

    # -- Requests ------------------------------------------------------------

    def check_request(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        content_type: str | None,
        body: Any,
    ) -> list[Problem]:
        """What is wrong with a request (nothing: it keeps the contract).

        ``body`` is the parsed body: a JSON document, or a mapping of form or
        multipart fields to their string values (a file's content as text);
        ``None`` when the request has none.
        """
        where = f"{method} {path}"
        problems: list[Problem] = []

        def problem(part: str, detail: str) -> None:
            problems.append(Problem(part, f"{where}: {part}: {detail}", detail))

        found = self.operation(method, path)
        if found is None:
            problem("operation", "no such operation in the document")
            return problems
        operation, path_values = found
        parameters = operation.spec.get("parameters", [])
        declared = {(p["in"], p["name"]): (i, p) for i, p in enumerate(parameters)}
        for name, value in path_values.items():
            entry = declared.get(("path", name))
            if entry is None:
                problem("path", f"parameter {name} is not declared")
                continue
            index, parameter = entry
            for error in self._errors(
                operation.pointer("parameters", str(index), "schema"),
                self._typed(parameter.get("schema"), value),
            ):
                problem("path", f"{name}: {error}")
        given: dict[str, list[str]] = {}
        for name, value in query:
            given.setdefault(name, []).append(value)
        for name, values in given.items():
            entry = declared.get(("query", name))
            if entry is None:
                problem("query", f"parameter {name!r} is not declared")
                continue
            index, parameter = entry
            if len(values) > 1:
                problem("query", f"parameter {name!r} given {len(values)} times")
            for error in self._errors(
                operation.pointer("parameters", str(index), "schema"),
                self._typed(parameter.get("schema"), values[0]),
            ):
                problem("query", f"{name}: {error}")
        for (place, name), (_, parameter) in declared.items():
            if place == "query" and parameter.get("required") and name not in given:
                problem("query", f"required parameter {name!r} is missing")
        request_body = operation.spec.get("requestBody")
        if request_body is None:
            if body not in (None, b"", {}):
                problem("body", "a body is sent but the operation takes none")
            return problems
        media = (content_type or "").split(";")[0].strip().lower()
        contents = request_body.get("content", {})
        if media not in contents:
            problem("content-type", f"{media or 'none'!r} is not one of {sorted(contents)}")
            return problems
        schema_pointer = operation.pointer("requestBody", "content", media, "schema")
        if media != "application/json" and isinstance(body, Mapping):
            properties = self._resolve(contents[media].get("schema", {})).get("properties", {})
            body = {
                name: self._typed(properties.get(name), value) if isinstance(value, str) else value
                for name, value in body.items()
            }
        for error in self._errors(schema_pointer, body):
            problem("body", error)
        return problems

    # -- Answers -------------------------------------------------------------

    def check_response(
        self, method: str, path: str, status: int, content_type: str | None, body: bytes
    ) -> list[str]:
        """What is wrong with an answer, as sentences (none: it keeps the contract)."""
        found = self.operation(method, path)
        where = f"{method} {path} -> {status}"
        if found is None:
            return [f"{where}: no such operation in the document"]
        operation, _ = found
        responses = operation.spec.get("responses", {})
        if str(status) not in responses:
            return [f"{where}: status {status} is not one of {sorted(responses)}"]
        contents = responses[str(status)].get("content") or {}
        if not body:
            return []
        media = (content_type or "").split(";")[0].strip().lower()
        if "application/json" not in contents:
            return []
        if media != "application/json":
            return [f"{where}: content type {media!r} instead of application/json"]
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return [f"{where}: body is not JSON ({exc})"]
        pointer = operation.pointer("responses", str(status), "content", media, "schema")
        return [f"{where}: response body: {e}" for e in self._errors(pointer, document)]


def _error_key(error: ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path)


def _describe(error: ValidationError) -> str:
    """The most relevant message of a validation error (inside a ``oneOf``:
    of the branch that came closest), with where it is."""
    best = best_match([error]) or error
    at = "/".join(str(p) for p in best.absolute_path) or "(root)"
    message = best.message if len(best.message) <= 300 else best.message[:300] + "..."
    return f"{message} at {at}"
