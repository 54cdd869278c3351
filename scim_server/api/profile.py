"""``GET /users/{id}/profile``: a user's whole profile for an admin, in the
shape of cidaas's user detail ("get user by sub", by admin), so that
clients written for it read it (``admin`` only).

Field names are cidaas's (snake_case, ``customFields``); the values come
from :func:`identity_store.user_profiles.user_profile`, one read. What the
store holds and cidaas cannot say is adapted here, in one place:

- ``email`` is at most 128 characters in cidaas. A longer stored address
  (RFC 5321 allows 254) is answered as ``null`` with ``email_verified``
  false, never cut: a cut address is someone else's. SCIM still has it.
- ``phone_number`` is E.164 (``+`` and up to 15 digits). A stored number
  written with spaces, dashes, dots, brackets, a ``tel:`` prefix or a ``00``
  international prefix is answered in E.164; one that is not international
  (no country code) is answered as ``null``.
- Times are epoch seconds; ``last_logged_in_time`` is Auth0's ``last_login``
  as the Auth0 sync last saw it (``null`` before the first login).
- ``providers`` are the social identities stored with the user; an entry
  whose type is not ``CLASSICAL``, ``SOCIAL`` or ``ENTERPRISE`` (in any
  case), or that has no name, is left out.

Two paths answer, alike (tests/api/test_profile_paths.py). The reference is
FastAPI's operation :func:`read_profile`, which the OpenAPI description
documents, building :func:`document` in Python. The hot path is
:class:`FastProfileRoute`, a plain Starlette route placed before the API's
mount, for the plain ``GET`` of a well-formed id: the same token check
and errors, and on PostgreSQL the document the database built with these
adaptations written in SQL
(:func:`identity_store.user_profiles.cidaas_document_json`), sent as it
is. FastAPI's routing, dependency solving and parameter validation cost
more than the read itself (docs/benchmarks.md, "The profile by id").
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from identity_store import user_profiles
from identity_store.user_profiles import UserProfile

from ..auth import authenticate
from ..state import app_state
from . import problems
from .parameters import COMMON, UserIdPath
from .problems import problem_responses
from .routing import MOUNT, AdminRoute, Authorized, insufficient_scope
from .user_models import ULID

router = APIRouter(route_class=AdminRoute, tags=["profiles"])

MAX_EMAIL_LENGTH = user_profiles.MAX_EMAIL_LENGTH
"""cidaas's limit of ``email``."""
MAX_PHONE_INPUT = user_profiles.MAX_PHONE_INPUT
"""Longest stored phone number read as one (a longer value is no phone number)."""
E164 = re.compile(user_profiles.E164_PATTERN)
_PHONE_SEPARATORS = re.compile(r"[\s().\-/]")
PROVIDER_TYPES = user_profiles.PROVIDER_TYPES


class CidaasWire(BaseModel):
    """cidaas's field names as they are (snake_case); unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


EpochSeconds = Annotated[int, Field(description="Seconds since 1970-01-01T00:00:00Z.")]


class ProfileProvider(CidaasWire):
    """A social or enterprise identity of the user."""

    provider_type: Literal["CLASSICAL", "SOCIAL", "ENTERPRISE"]
    provider_name: str = Field(description="`google`, `facebook`, `azure`…")
    social_identity_ref: str | None = Field(
        default=None, description="The user's id at the provider."
    )
    username: str | None = Field(default=None, description="The user's name at the provider.")


class ProfileRoleObject(CidaasWire):
    role_key: str = Field(description="The role's id.")
    permissions: list[str] = Field(description="The role's permissions, sorted.")


class ProfileGroup(CidaasWire):
    """A group whose mapped roles the user holds: one it is a member of, or
    one containing such a group (nested groups)."""

    group_id: str
    group_name: str = Field(description="The group's `displayName`.")
    roles: list[str] = Field(description="The roles mapped to the group, sorted.")
    roles_obj: list[ProfileRoleObject] = Field(description="The same roles with permissions.")


class UserProfileDocument(CidaasWire):
    """cidaas's user detail of one user."""

    sub: str = Field(description="The user's id (the SCIM `id`).")
    username: str = Field(description="The SCIM `userName`.")
    given_name: str | None
    family_name: str | None
    middle_name: str | None
    name: str | None = Field(
        description="The formatted name, else the display name, else the name parts joined."
    )
    email: str | None = Field(
        max_length=MAX_EMAIL_LENGTH,
        description="The primary e-mail (else the first, else the `userName` when it is an "
        "address, as the Auth0 sync sends); `null` when longer than 128 characters.",
    )
    email_verified: bool
    phone_number: str | None = Field(
        pattern=E164.pattern,
        description="The primary phone number (else the first) in E.164; `null` when it has "
        "no country code.",
    )
    phone_number_verified: bool
    created_at: EpochSeconds
    updated_at: EpochSeconds
    last_logged_in_time: EpochSeconds | None = Field(
        description="Auth0's `last_login` as the Auth0 sync last saw it."
    )
    providers: list[ProfileProvider]
    customFields: dict[str, Any] = Field(
        description="The user's `customData` (its user group's schema); `{}` without."
    )
    groups: list[ProfileGroup] = Field(description="By `group_name`.")
    roles: list[str] = Field(description="The roles assigned to the user directly, sorted.")
    lifecycle: str = Field(description="`CREATED`, `ACTIVE`, `ERROR`, `SUSPENDED`, `INACTIVE`.")
    blocked: bool


def json_bytes(content: Any) -> bytes:
    """Compact JSON; the standard library takes what orjson refuses
    (integers beyond 64 bits in ``customData``)."""
    try:
        return orjson.dumps(content)
    except TypeError:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def e164(value: str | None) -> str | None:
    """``value`` in E.164, or ``None`` when it cannot be (module docstring)."""
    if not value or len(value) > MAX_PHONE_INPUT:
        return None
    number = value.strip()
    if number[:4].lower() == "tel:":
        number = number[4:].split(";", 1)[0]
    number = _PHONE_SEPARATORS.sub("", number)
    if number.startswith("00"):
        number = "+" + number[2:]
    return number if E164.fullmatch(number) else None


def bounded_email(value: str | None) -> str | None:
    return value if value is not None and len(value) <= MAX_EMAIL_LENGTH else None


def full_name(profile: UserProfile) -> str | None:
    if profile.formatted_name or profile.display_name:
        return profile.formatted_name or profile.display_name
    parts = [p for p in (profile.given_name, profile.middle_name, profile.family_name) if p]
    return " ".join(parts) or None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def providers(profile: UserProfile) -> list[dict[str, Any]]:
    """The stored social identities as cidaas's ``providers`` (module docstring)."""
    found = []
    for entry in profile.providers:
        kind = entry.get("type")
        name = _text(entry.get("name"))
        if not isinstance(kind, str) or kind.upper() not in PROVIDER_TYPES or name is None:
            continue
        found.append(
            {
                "provider_type": kind.upper(),
                "provider_name": name,
                "social_identity_ref": _text(entry.get("reference")),
                "username": _text(entry.get("username")),
            }
        )
    return found


def groups(profile: UserProfile) -> list[dict[str, Any]]:
    return [
        {
            "group_id": g.group_id,
            "group_name": g.display_name,
            "roles": list(g.role_ids),
            "roles_obj": [
                {"role_key": r, "permissions": list(profile.roles[r].permissions)}
                for r in g.role_ids
                if r in profile.roles
            ],
        }
        for g in profile.groups
    ]


def document(profile: UserProfile) -> dict[str, Any]:
    """The :class:`UserProfileDocument` of ``profile``, built as plain data
    (FastAPI's validation of a model costs more than the read)."""
    email = bounded_email(profile.email)
    last = profile.last_logged_in_at
    return {
        "sub": profile.user_id,
        "username": profile.user_name,
        "given_name": profile.given_name,
        "family_name": profile.family_name,
        "middle_name": profile.middle_name,
        "name": full_name(profile),
        "email": email,
        "email_verified": profile.email_verified and email is not None,
        "phone_number": (phone := e164(profile.phone_number)),
        "phone_number_verified": profile.phone_number_verified and phone is not None,
        "created_at": epoch(profile.created_at),
        "updated_at": epoch(profile.updated_at),
        "last_logged_in_time": epoch(last) if last is not None else None,
        "providers": providers(profile),
        "customFields": profile.custom_data or {},
        "groups": groups(profile),
        "roles": list(profile.role_ids),
        "lifecycle": profile.lifecycle,
        "blocked": profile.blocked,
    }


@router.get(
    "/users/{id}/profile",
    responses=problem_responses(*COMMON, 404),
    response_model=UserProfileDocument,
    summary="A user's whole profile (cidaas's user detail)",
)
async def read_profile(user_id: UserIdPath, caller: Authorized) -> Response:
    """Basic data, primary e-mail and phone number, social identities,
    custom data, and the groups whose roles the user holds, each role with
    its permissions. 404 for an unknown or deleted user."""
    profile = await user_profiles.user_profile(caller.store, user_id)
    return Response(json_bytes(document(profile)), media_type="application/json")


# -- The same read, served without FastAPI ----------------------------------------

_ULID = re.compile(ULID)


async def read_profile_fast(request: Request) -> Response:
    """:func:`read_profile` for the requests :class:`FastProfileRoute` takes:
    the same token check, the same errors, the same document."""
    principal = await authenticate(request)
    if not principal.allows(AdminRoute.scope):
        raise insufficient_scope(AdminRoute.scope)
    store = app_state(request).store
    user_id: str = request.path_params["id"]
    built = await user_profiles.cidaas_document_json(store, user_id)
    if built is not None:
        return Response(built, media_type="application/json")
    profile = await user_profiles.user_profile(store, user_id)
    return Response(json_bytes(document(profile)), media_type="application/json")


_HANDLED = tuple(kind for kind in problems.handlers() if kind is not Exception)
"""What the API's exception handlers answer alone; anything else is also
raised on to the server, which logs it (:func:`problems.handlers`)."""


class FastProfileRoute(Route):
    """``GET /api/v1/users/{id}/profile`` as a plain Starlette route of the
    server, placed before the API's mount: FastAPI's routing, dependency
    solving and parameter validation cost more than the read itself
    (docs/benchmarks.md, "The profile by id").

    It takes only what :func:`read_profile` would answer from the store:
    ``GET``, no query string, an id in the store's form (a ULID). Every
    other request (an id that cannot be one, a query parameter, another
    method) goes on to the mount and :func:`read_profile`, which stays the
    description's operation and answers it as before. Errors are the API's
    problems, from the API's own handler (:func:`problems.handle`)."""

    def __init__(self) -> None:
        super().__init__(
            MOUNT + "/users/{id}/profile",
            read_profile_fast,
            methods=["GET"],
            name="read_profile_fast",
            include_in_schema=False,
        )

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is not Match.FULL or not _ULID.fullmatch(child["path_params"]["id"]):
            return Match.NONE, {}
        return match, child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await read_profile_fast(request)
        except Exception as exc:
            await (await problems.handle(request, exc))(scope, receive, send)
            if not isinstance(exc, _HANDLED):
                raise
            return
        await response(scope, receive, send)
