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

from identity_store import tokens
from identity_store.database import create_session_factory
from identity_store.models import User
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
        re.compile(r"userGroup .+ is not a configured user group", re.DOTALL),
        "a user in a user group that does not exist (the database is empty)",
    ),
    (
        "invalid-request",
        re.compile(r"crudSchema.* \(not a valid JSON Schema, draft 2020-12\)", re.DOTALL),
        "a crudSchema the JSON Schema meta-schema refuses (a keyword of the wrong type): "
        "the description says only that it is an object",
    ),
    (
        "invalid-request",
        re.compile(r"crudSchema.* does not resolve inside the schema; .+", re.DOTALL),
        "a crudSchema whose $ref names nothing inside it",
    ),
    (
        "invalid-request",
        re.compile(r"crudSchema\.\$schema: only JSON Schema draft 2020-12 .+", re.DOTALL),
        "a crudSchema naming another dialect in $schema",
    ),
    (
        "invalid-request",
        re.compile(r"column \d+ of the header holds bytes that are not valid [\w-]+", re.DOTALL),
        "import file (bytes to the schema): a header cell not in the chosen encoding",
    ),
    (
        "invalid-request",
        re.compile(r"column \d+ of the header holds a NUL character", re.DOTALL),
        "import file (bytes to the schema): a NUL character in a header cell",
    ),
    (
        "invalid-request",
        re.compile(r"column \d+ of the header has no name", re.DOTALL),
        "import file (bytes to the schema): an empty header cell",
    ),
    (
        "invalid-request",
        re.compile(
            r"column \d+ of the header is [\d,]+ characters long; at most \d+ allowed", re.DOTALL
        ),
        "import file (bytes to the schema): a header cell past the name limit",
    ),
    (
        "invalid-request",
        re.compile(r"the header names .+ twice \(columns \d+ and \d+\)", re.DOTALL),
        "import file (bytes to the schema): a header naming a column twice",
    ),
    (
        "invalid-request",
        re.compile(
            r"the header \(line \d+\) has [\d,]+ columns; at most [\d,]+ are allowed", re.DOTALL
        ),
        "import file (bytes to the schema): a header past the column limit",
    ),
    (
        "invalid-request",
        re.compile(r"the header \(line \d+\) is not CSV of this format: .+", re.DOTALL),
        "import file (bytes to the schema): a header the csv reader refuses in the chosen dialect",
    ),
    (
        "invalid-request",
        re.compile(r"line \d+ is longer than [\d,]+ characters", re.DOTALL),
        "import file (bytes to the schema): a line past the line limit",
    ),
    (
        "invalid-request",
        re.compile(
            r"the record starting at line \d+ has a quoted field that is never closed", re.DOTALL
        ),
        "import file (bytes to the schema): an unbalanced quote",
    ),
    (
        "invalid-request",
        re.compile(r"the record starting at line \d+ is longer than .+", re.DOTALL),
        "import file (bytes to the schema): a record past the record limit",
    ),
    (
        "invalid-request",
        re.compile(r"the record starting at line \d+ has a field longer than .+", re.DOTALL),
        "import file (bytes to the schema): a field past the cell limit",
    ),
    (
        "invalid-request",
        re.compile(r"the file is empty: it has no header", re.DOTALL),
        "import file (bytes to the schema): an empty file",
    ),
    (
        "invalid-request",
        re.compile(r"the file has a header but no rows", re.DOTALL),
        "import file (bytes to the schema): a header alone",
    ),
    (
        "invalid-request",
        re.compile(r"the file is not utf-16: UTF-16 stream does not start with BOM", re.DOTALL),
        "import file (bytes to the schema): utf-16 chosen for a file without a BOM",
    ),
    (
        "invalid-request",
        re.compile(r"column .+ is no attribute: map it to one .+", re.DOTALL),
        "import file (bytes to the schema): a header cell that names no attribute, unmapped",
    ),
    (
        "invalid-request",
        re.compile(r"columns .+ and .+ both hold \w+", re.DOTALL),
        "import file (bytes to the schema): two columns mapped to one attribute",
    ),
    (
        "invalid-request",
        re.compile(
            r"upsertBy is (userName|externalId): a column must hold (userName|externalId)",
            re.DOTALL,
        ),
        "import file (bytes to the schema): no column holds the upsert key",
    ),
    (
        "invalid-request",
        re.compile(r"mapping must be a JSON object: column name -> attribute or null", re.DOTALL),
        "import option: the mapping part is JSON text, not an object",
    ),
    (
        "invalid-request",
        re.compile(r"the mapping names column .+, which the header lacks", re.DOTALL),
        "import option: the mapping names a column the file does not have",
    ),
    (
        "invalid-request",
        re.compile(r"the mapping maps .+, which is no attribute .+", re.DOTALL),
        "import option: the mapping names an attribute that does not exist",
    ),
    (
        "invalid-request",
        re.compile(r"the part 'mapping' holds a NUL character", re.DOTALL),
        "import option: a NUL character in the mapping part",
    ),
    (
        "invalid-request",
        re.compile(r"delimiter, quoteChar and escapeChar must be different characters", re.DOTALL),
        "import option: the three CSV characters must differ",
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


@pytest.fixture
async def user_token(engine: AsyncEngine) -> str:
    """A token bound to an ``ACTIVE`` user: what an end user calls
    ``/userinfo`` with (its operation's scheme is ``userBearer``), so that
    schemathesis checks the user's claims, not only a refusal."""
    async with create_session_factory(engine)() as session:
        user = User(
            user_name="end.user@example.com",
            user_name_normalized="end.user@example.com",
            lifecycle="ACTIVE",
            tags=[],
            status=[],
            providers=[],
        )
        session.add(user)
        await session.flush()
        _, secret = await tokens.create_token(session, "end-user", ["scim:read"], user_id=user.id)
        await session.commit()
    return secret


def _schemes(case: Any) -> set[str]:
    """The security schemes the operation names."""
    return {name for entry in case.operation.definition.raw.get("security", []) for name in entry}


@schema.parametrize()
@hypothesis_settings(
    max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_every_operation_conforms_to_its_description(
    case: Any, served: Starlette, api_tokens: dict[str, str], user_token: str
) -> None:
    """No 5xx and a described answer to whatever schemathesis sends (its
    probes included: the same request without a token, with another method).
    Operations for end users (``/userinfo``) get an end user's token, the
    others an ``admin`` one."""
    # This test's application (one per database), where from_asgi would put it.
    case.operation.app = case.operation.schema.app = served
    secret = user_token if "userBearer" in _schemes(case) else api_tokens["admin"]
    headers = {"Authorization": f"Bearer {secret}"}
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
