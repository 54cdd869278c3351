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
