"""``GET /userinfo``: the caller's own user, for the end user's bearer token
(OpenID Connect Core 1.0 §5.3, as Mia-Platform's User Manager Service
answers it).

The token is either

- an **Auth0 access token** (any bearer that is not an idstore token):
  verified by :class:`scim_server.access_tokens.AccessTokenVerifier`
  against the tenant's signing keys (RS256, issuer
  ``{IDSTORE_AUTH0_BASE_URL}/``, audience ``IDSTORE_USERINFO_AUDIENCE``);
  its ``sub`` is the user's ``authUserId``. Without an audience configured
  no such token is accepted;
- or an **idstore API token bound to a user** (``idstore token create
  --user``, as SCIM ``/Me`` takes), whatever its scopes.

Answers (docs/management-api.md "/userinfo"):

- 401 ``unauthorized`` with ``WWW-Authenticate: Bearer ...
  error="invalid_token"``: no bearer, an expired, forged, foreign or
  otherwise invalid token, or one whose subject is no live user of the
  store (the token does not name anyone here);
- 403 ``not-a-user-token``: a valid idstore token not bound to a user;
- 403 ``user-not-active``: the user is not ``ACTIVE``, is blocked, or its
  ``expirationDate`` has passed (the person is known, and may not use it);
- 503 ``keys-unavailable`` with ``Retry-After`` (the refresh interval,
  ``IDSTORE_USERINFO_JWKS_MIN_REFRESH_SECONDS``, at least 1): the tenant's
  signing keys were never fetched and cannot be now (the token may be good);
- 200: the OpenID Connect standard claims the store has (claims without a
  value are left out, as §5.3.2 asks), the user's id under
  ``IDSTORE_USERINFO_ID_KEY``, and the properties named in
  ``IDSTORE_USERINFO_ADDITIONAL_PROPERTIES``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from identity_store import resolver, tokens, user_profiles
from identity_store.errors import ConflictError, NotFoundError
from identity_store.user_profiles import UserProfile

from ..access_tokens import InvalidAccessToken, KeysUnavailable
from ..auth import authenticate
from ..state import AppState, app_state
from .problems import Problem, ProblemError
from .profile import bounded_email, e164, epoch, full_name, json_bytes, providers
from .routing import unknown_query

router = APIRouter(tags=["userinfo"])

INVALID_TOKEN = {"WWW-Authenticate": 'Bearer realm="idstore", error="invalid_token"'}

user_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="userBearer",
    bearerFormat="JWT",
    description="The end user's own token: an Auth0 access token for `IDSTORE_USERINFO_AUDIENCE` "
    "(RS256, signed by the tenant), or an idstore API token bound to a user.",
)


class UserInfo(BaseModel):
    """OpenID Connect's standard claims the store has (those without a value
    are left out), the user's id under `IDSTORE_USERINFO_ID_KEY`, and the
    properties of `IDSTORE_USERINFO_ADDITIONAL_PROPERTIES`."""

    model_config = ConfigDict(extra="allow")

    sub: str = Field(
        description="The user's id; the token's subject when `IDSTORE_USERINFO_ID_KEY` is "
        "another key."
    )
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    middle_name: str | None = None
    nickname: str | None = None
    preferred_username: str | None = Field(default=None, description="The SCIM `userName`.")
    profile: str | None = None
    email: str | None = Field(default=None, max_length=128)
    email_verified: bool | None = None
    phone_number: str | None = Field(default=None, description="E.164.")
    phone_number_verified: bool | None = None
    zoneinfo: str | None = None
    locale: str | None = None
    updated_at: int | None = Field(default=None, description="Epoch seconds.")


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "unauthorized", detail, headers=dict(INVALID_TOKEN))


def _bearer(request: Request) -> str:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ProblemError(
            401,
            "unauthorized",
            "a bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="idstore"'},
        )
    return secret.strip()


async def _own_token_user(request: Request, state: AppState) -> tuple[UserProfile, str]:
    """The user an idstore API token is bound to, and the subject to answer."""
    principal = await authenticate(request)
    if principal.user_id is None:
        raise ProblemError(
            403,
            "not-a-user-token",
            "the token is not bound to a user: /userinfo answers for a user's own token",
        )
    try:
        profile = await user_profiles.user_profile(state.store, principal.user_id)
    except NotFoundError:
        raise _unauthorized("the token's user does not exist any more") from None
    return profile, profile.user_id


async def _auth0_token_user(secret: str, state: AppState) -> tuple[UserProfile, str]:
    """The user an Auth0 access token names, and the token's subject."""
    verifier = state.access_tokens
    if verifier is None:
        raise _unauthorized(
            "only idstore API tokens are accepted here: no Auth0 audience is configured"
        )
    try:
        verified = await verifier.verify(secret)
    except InvalidAccessToken as exc:
        raise _unauthorized(str(exc)) from None
    except KeysUnavailable:
        # The keys are not asked for again before the refresh interval.
        wait = max(1, math.ceil(state.settings.userinfo_jwks_min_refresh_seconds))
        raise ProblemError(
            503,
            "keys-unavailable",
            "the token issuer's signing keys cannot be fetched now; retry later",
            headers={"Retry-After": str(wait)},
        ) from None
    try:
        profile = await user_profiles.profile_of_auth_user(state.store, verified.subject)
    except ConflictError:
        raise _unauthorized("the token's subject names more than one user") from None
    if profile is None:
        raise _unauthorized("the token's subject is no user of this store")
    return profile, verified.subject


def _refusal(profile: UserProfile) -> str | None:
    """Why the user may not use its token now, if it may not."""
    if profile.lifecycle != "ACTIVE":
        return f"the user is {profile.lifecycle}"
    if profile.blocked:
        return "the user is blocked"
    if profile.expiration_date is not None and profile.expiration_date <= datetime.now(UTC):
        return "the user's expirationDate has passed"
    return None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def standard_claims(profile: UserProfile) -> dict[str, Any]:
    email = bounded_email(profile.email)
    phone = e164(profile.phone_number)
    claims: dict[str, Any] = {
        "name": full_name(profile),
        "given_name": profile.given_name,
        "family_name": profile.family_name,
        "middle_name": profile.middle_name,
        "nickname": profile.nick_name,
        "preferred_username": profile.user_name,
        "profile": profile.profile_url,
        "email": email,
        "email_verified": profile.email_verified if email is not None else None,
        "phone_number": phone,
        "phone_number_verified": profile.phone_number_verified if phone is not None else None,
        "zoneinfo": profile.timezone,
        "locale": profile.locale,
        "updated_at": epoch(profile.updated_at),
    }
    return {k: v for k, v in claims.items() if v is not None}


def properties(profile: UserProfile) -> dict[str, Any]:
    """Every property of ``settings.USERINFO_PROPERTIES`` but ``permissions``."""
    last = profile.last_logged_in_at
    return {
        "userName": profile.user_name,
        "externalId": profile.external_id,
        "authUserId": profile.auth_user_id,
        "userGroup": profile.user_group,
        "userType": profile.user_type or "PERSON",
        "customData": profile.custom_data,
        "lifecycle": profile.lifecycle,
        "blocked": profile.blocked,
        "expirationDate": _iso(profile.expiration_date),
        "roles": sorted({r for g in profile.groups for r in g.role_ids} | set(profile.role_ids)),
        "groups": [{"id": g.group_id, "name": g.display_name} for g in profile.groups],
        "providers": providers(profile),
        "createdAt": _iso(profile.created_at),
        "lastLoggedInTime": epoch(last) if last is not None else None,
    }


async def permissions(profile: UserProfile, state: AppState) -> list[str]:
    """The user's effective permissions held everywhere, sorted."""
    held = await resolver.permissions(state.store, profile.user_id)
    return sorted({p.permission for p in held.permissions if p.resource is None})


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": Problem, "description": description} | (
        {"headers": headers} if headers else {}
    )


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("An unknown query parameter (`invalid-request`)."),
    401: _problem(
        "No bearer token, or one that is not valid (expired, forged, for another audience or "
        "issuer, of no user of the store) (`unauthorized`).",
        {
            "WWW-Authenticate": {
                "description": '`Bearer realm="idstore", error="invalid_token"`.',
                "schema": {"type": "string"},
            }
        },
    ),
    403: _problem(
        "An idstore token not bound to a user (`not-a-user-token`), or a user not `ACTIVE`, "
        "blocked or expired (`user-not-active`).",
    ),
    500: _problem("An unexpected failure (`internal`)."),
    503: _problem(
        "The issuer's signing keys cannot be fetched (`keys-unavailable`), or the database is "
        "unavailable (`unavailable`); with `Retry-After`.",
        {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}},
    ),
}


@router.get(
    "/userinfo",
    responses=RESPONSES,
    response_model=UserInfo,
    summary="The caller's own user (OpenID Connect UserInfo)",
)
async def userinfo(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(user_bearer)],
) -> Response:
    """For the end user's own token: an Auth0 access token (its `sub` is the
    user's `authUserId`) or an idstore API token bound to a user."""
    secret = _bearer(request)
    if (problem := unknown_query(request, set())) is not None:
        raise problem
    state = app_state(request)
    if secret.startswith(f"{tokens.PREFIX}_"):
        profile, subject = await _own_token_user(request, state)
    else:
        profile, subject = await _auth0_token_user(secret, state)
    if (why := _refusal(profile)) is not None:
        raise ProblemError(403, "user-not-active", f"{why}: it may not use its token now")
    settings = state.settings
    claims = {"sub": subject, **standard_claims(profile), settings.userinfo_id_key: profile.user_id}
    wanted = settings.userinfo_additional_properties
    if wanted:
        found = properties(profile)
        if "permissions" in wanted:
            found["permissions"] = await permissions(profile, state)
        claims.update({name: found[name] for name in wanted if found[name] is not None})
    return Response(
        json_bytes(claims), media_type="application/json", headers={"Cache-Control": "no-store"}
    )
