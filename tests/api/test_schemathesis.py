"""schemathesis against the OpenAPI description, on both databases: no
5xx, and every response conforms to its description (status, media type,
headers, body schema).

One check is answered case by case: schemathesis's "schema-valid request
rejected" (``positive_data_acceptance``) expects a 2xx for any request the
description allows, but some rules of the store involve several fields, or
the database, and no schema says them. Each such refusal is excused only
when its problem matches one row of :data:`EXCUSED` exactly; anything else
fails the test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.core.failures import FailureGroup
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.python import asgi
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from identity_store.settings import Settings
from scim_server.api import create_api
from scim_server.app import create_app

schema = schemathesis.openapi.from_dict(create_api(Settings()).openapi())
BASE_URL = "http://testserver/api/v1"

EXCUSED: list[tuple[str, re.Pattern[str], str]] = [
    (
        "invalid-cursor",
        re.compile(
            r"the cursor was not issued (by this API|for the (roles|bindings|subjects) list)"
        ),
        "a string of cursor characters this API did not issue",
    ),
    (
        "invalid-request",
        re.compile(r"resourceType and resourceId go together"),
        "one of the two resource query parameters without the other",
    ),
    (
        "invalid-request",
        re.compile(r"a binding needs at least one subject or group"),
        "a binding (or Rönd grant) whose subjects and groups are both empty",
    ),
    (
        "invalid-request",
        re.compile(r"a binding needs at least one role or permission"),
        "a binding (or Rönd grant) whose roles and permissions are both empty",
    ),
    (
        "invalid-request",
        re.compile(r"missing resource id"),
        "Rönd's grant on a resource type without resourceId",
    ),
    (
        "invalid-request",
        re.compile(r"empty subjects and groups lists or resource ids"),
        "Rönd's revoke with nothing to revoke",
    ),
    (
        "invalid-request",
        re.compile(r"unknown (role|user|group) id\(s\): .+", re.DOTALL),
        "ids of roles, users or groups that do not exist (the database is empty)",
    ),
    (
        "invalid-request",
        re.compile(
            r"column \d+ of the header (holds bytes that are not valid [\w-]+|holds a NUL "
            r"character|has no name|is [\d,]+ characters long; at most \d+ allowed)"
            r"|the header names .+ twice \(columns \d+ and \d+\)"
            r"|the header \(line \d+\) (has [\d,]+ columns; at most [\d,]+ are allowed"
            r"|is not CSV of this format: .+)"
            r"|line \d+ is longer than [\d,]+ characters"
            r"|the record starting at line \d+ (has a quoted field that is never closed"
            r"|is longer than .+|has a field longer than .+)"
            r"|the file is empty: it has no header|the file has a header but no rows"
            r"|the file is not utf-16: UTF-16 stream does not start with BOM"
            r"|column .+ is no attribute: map it to one .+"
            r"|columns .+ and .+ both hold \w+"
            r"|upsertBy is (userName|externalId): a column must hold (userName|externalId)",
            re.DOTALL,
        ),
        "a CSV file (POST /users/import) whose content cannot be imported: its structure, "
        "its header, or a header its mapping does not fit (the schema says a file is bytes)",
    ),
    (
        "invalid-request",
        re.compile(
            r"mapping must be a JSON object: column name -> attribute or null"
            r"|the mapping (names column .+, which the header lacks|maps .+, which is no "
            r"attribute .+)|the part 'mapping' holds a NUL character"
            r"|delimiter, quoteChar and escapeChar must be different characters",
            re.DOTALL,
        ),
        "the import's options that no schema says: the mapping is JSON in a text part "
        "(naming the file's columns), the three characters must differ",
    ),
    (
        "invalid-value",
        re.compile(r".+ contains a NUL character", re.DOTALL),
        "a NUL character in a field Rönd's bodies ignore (their models take any field, as "
        "Rönd's decoder does): every body is refused whole for one, as PostgreSQL text "
        "cannot hold it",
    ),
]
"""(problem kind, its exact detail, why no schema can say it): the refusals
of schema-valid requests that are right."""


def _excused(response: Any) -> str | None:
    """The reason a refused schema-valid request is right, or ``None``."""
    if response.status_code != 400:
        return None
    problem = response.json()
    kind = problem["type"].removeprefix("urn:idstore:problem:")
    for excused_kind, detail, why in EXCUSED:
        if kind == excused_kind and detail.fullmatch(problem["detail"]):
            return why
    return None


@pytest.fixture
def served(settings: Settings, engine: AsyncEngine) -> Iterator[Starlette]:
    """The application, whose lifespan schemathesis runs in its own event
    loop (so the store opens there); shut down after the test."""
    try:
        yield create_app(settings)
    finally:
        asgi.shutdown_lifespans()


@schema.parametrize()
@hypothesis_settings(
    max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_every_operation_conforms_to_its_description(
    case: Any, served: Starlette, api_tokens: dict[str, str]
) -> None:
    """No 5xx and a described answer to whatever schemathesis sends (its
    probes included: the same request without a token, with another method)."""
    # This test's application (one per database), where from_asgi would put it.
    case.operation.app = case.operation.schema.app = served
    headers = {"Authorization": f"Bearer {api_tokens['admin']}"}
    response = case.call(headers=headers, base_url=BASE_URL)
    try:
        case.validate_response(response, headers=headers, transport_kwargs={"base_url": BASE_URL})
    except FailureGroup as failures:
        unexcused = [
            failure
            for failure in failures.exceptions
            if not (isinstance(failure, RejectedPositiveData) and _excused(response))
        ]
        if unexcused:
            raise
