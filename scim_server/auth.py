"""Bearer-token authentication and scopes (RFC 7644 §2, SPEC §7)."""

from __future__ import annotations

from starlette.requests import Request

from identity_store import tokens
from identity_store.tokens import Principal

from .errors import ScimError
from .state import AppState, app_state

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="idstore"'}


async def authenticate(request: Request, state: AppState | None = None) -> Principal:
    """The principal of the request's ``Authorization: Bearer`` token, or 401
    (``state``: the application's, when the caller already holds it)."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ScimError(401, "a bearer token is required", headers=CHALLENGE)
    if state is None:
        state = app_state(request)
    secret = secret.strip()
    digest = tokens.hash_secret(secret)
    principal = state.tokens.get(digest)
    if principal is None:
        principal = await tokens.verify_secret(state.store, secret)
        if principal is not None:
            state.tokens.put(digest, principal)
    if principal is None:
        raise ScimError(
            401,
            "the bearer token is invalid, expired or revoked",
            headers={"WWW-Authenticate": 'Bearer realm="idstore", error="invalid_token"'},
        )
    return principal


def require(principal: Principal, scope: str) -> None:
    """403 unless ``principal`` holds ``scope`` (``scim:write`` implies ``scim:read``)."""
    if not principal.allows(scope):
        raise ScimError(
            403,
            f"the token lacks the {scope!r} scope",
            headers={
                "WWW-Authenticate": f'Bearer realm="idstore", error="insufficient_scope", '
                f'scope="{scope}"'
            },
        )
