"""End users' access tokens issued by Auth0, verified (``GET
/api/v1/userinfo``; RFC 7519, RFC 8725 "JWT Best Current Practices").

A token is accepted when all of these hold, checked in this order, the
cheap refusals first (a forged token costs no key look-up):

1. it is at most :data:`MAX_TOKEN_LENGTH` characters and has three parts;
2. its header names ``alg`` ``RS256`` (pinned: ``none``, ``HS256`` with the
   public key as a secret and every other algorithm are refused) and a
   ``kid`` of at most 256 characters;
3. the tenant's key set lists that ``kid`` (:class:`KeySource`: the
   composition root passes the Auth0 tenant's JWKS client), an RSA key of
   2048 bits or more;
4. PyJWT verifies the signature with that key, and ``iss`` (the tenant,
   ``{IDSTORE_AUTH0_BASE_URL}/``), ``aud`` (``IDSTORE_USERINFO_AUDIENCE``,
   alone or in a list), ``exp`` and ``nbf`` and ``iat`` when present (with
   ``IDSTORE_USERINFO_LEEWAY_SECONDS``); ``exp``, ``iss``, ``aud`` and
   ``sub`` are required;
5. ``sub`` is a string of 1-255 characters without control characters.

Any refusal is :class:`InvalidAccessToken` naming why (401). A key source
that cannot say whether the key exists (the tenant's key set was never
fetched and cannot be now) raises :class:`KeysUnavailable` (503): the token
may well be good.

The key source lives in another layer (the HTTP client of a remote system);
this module only says what it must do (:class:`KeySource`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = [
    "MAX_TOKEN_LENGTH",
    "AccessTokenVerifier",
    "InvalidAccessToken",
    "KeySource",
    "KeysUnavailable",
    "VerifiedToken",
]

MAX_TOKEN_LENGTH = 8192
"""Longest token read (Auth0's access tokens are about 1 KB)."""
MAX_KID_LENGTH = 256
MIN_RSA_BITS = 2048
ALGORITHM = "RS256"
_SUBJECT = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,255}")
_KEYS_KEPT = 64
"""Verification keys built from the key set and kept (by key id)."""


class KeysUnavailable(Exception):
    """The key source cannot tell: no key set is held and none can be fetched."""


class InvalidAccessToken(Exception):
    """The token is not accepted; the message says why."""


class KeySource(Protocol):
    """The tenant's signing keys."""

    async def signing_key(self, kid: str) -> Mapping[str, Any] | None:
        """The JWK of ``kid`` (a dict as the JWKS lists it), ``None`` when
        the tenant does not list it; :class:`KeysUnavailable` when that
        cannot be known now."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    subject: str
    claims: dict[str, Any]


class AccessTokenVerifier:
    """Verifies the tokens of one issuer for one audience (module docstring)."""

    def __init__(
        self, keys: KeySource, *, issuer: str, audience: str, leeway: float = 30.0
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._built: dict[str, tuple[Mapping[str, Any], RSAPublicKey]] = {}

    def _key(self, kid: str, jwk: Mapping[str, Any]) -> RSAPublicKey:
        """The public key of ``jwk``, built once per key set entry."""
        kept = self._built.get(kid)
        if kept is not None and kept[0] is jwk:
            return kept[1]
        try:
            key = jwt.PyJWK(dict(jwk), algorithm=ALGORITHM).key
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidAccessToken(f"the tenant's key {kid!r} cannot be used ({exc})") from exc
        if not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_BITS:
            raise InvalidAccessToken(f"the tenant's key {kid!r} is not an RSA key of 2048 bits")
        if len(self._built) >= _KEYS_KEPT:
            self._built.clear()
        self._built[kid] = (jwk, key)
        return key

    async def verify(self, token: str) -> VerifiedToken:
        """The token's subject and claims (module docstring for the checks)."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidAccessToken(f"the token is longer than {MAX_TOKEN_LENGTH:,} characters")
        if token.count(".") != 2:
            raise InvalidAccessToken("the token is not a JSON Web Token")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
            raise InvalidAccessToken("the token's header cannot be read") from exc
        alg = header.get("alg")
        if alg != ALGORITHM:
            shown = alg[:32] if isinstance(alg, str) else type(alg).__name__
            raise InvalidAccessToken(f"the token's algorithm {shown!r} is not accepted (RS256)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
            raise InvalidAccessToken("the token's header names no key id")
        jwk = await self.keys.signing_key(kid)
        if jwk is None:
            raise InvalidAccessToken("the token is signed with a key the issuer does not list")
        try:
            claims = jwt.decode(
                token,
                key=self._key(kid, jwk),
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidAccessToken("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidAccessToken("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidAccessToken("the token is not issued for this API (aud)") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidAccessToken("the token is not issued by the configured tenant") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidAccessToken("the token's signature does not verify") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidAccessToken(f"the token has no {exc.claim!r} claim") from exc
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
            raise InvalidAccessToken("the token is not valid") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
            raise InvalidAccessToken("the token's subject is not a user id")
        return VerifiedToken(subject, claims)
