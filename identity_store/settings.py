"""The product's settings, read from environment variables in one place.

Every layer (HTTP server, store, sync workers, migrations, CLI) receives the
same :class:`Settings` object; nothing reads the environment at import time.
It lives in the lowest package so that every layer may import it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SQLITE_FILE = "idstore.db"

DEFAULT_GRAPH_ATTRIBUTE_MAP = {
    "onPremisesSamAccountName": "idp_username",
    "userPrincipalName": "idp_cloud_username",
    "employeeId": "idp_workforce_id",
}
"""Microsoft Graph user property -> store attribute (profile sync)."""

GRAPH_FILLABLE = frozenset(
    {
        "idp_username",
        "idp_cloud_username",
        "idp_workforce_id",
        "display_name",
        "given_name",
        "family_name",
        "title",
        "department",
        "employee_number",
        "preferred_language",
    }
)
"""Store attributes the profile sync may fill: single-valued, plain strings."""

AUTH0_READABLE_PROPERTIES = frozenset(
    {
        "app_metadata",
        "blocked",
        "created_at",
        "email",
        "email_verified",
        "family_name",
        "given_name",
        "identities",
        "last_ip",
        "last_login",
        "logins_count",
        "name",
        "nickname",
        "phone_number",
        "picture",
        "updated_at",
        "user_metadata",
        "username",
    }
)
"""Auth0 user properties ``auth0_user_properties`` may name: those the
Management API's ``fields`` parameter takes (``user_id`` is always read)."""

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

USERINFO_PROPERTIES = frozenset(
    {
        "userName",
        "externalId",
        "authUserId",
        "userGroup",
        "userType",
        "customData",
        "lifecycle",
        "blocked",
        "expirationDate",
        "roles",
        "groups",
        "permissions",
        "providers",
        "createdAt",
        "lastLoggedInTime",
    }
)
"""The user's properties ``GET /api/v1/userinfo`` may add to the OIDC claims
(``IDSTORE_USERINFO_ADDITIONAL_PROPERTIES``; docs/management-api.md)."""

OIDC_CLAIMS = frozenset(
    {
        "sub",
        "name",
        "given_name",
        "family_name",
        "middle_name",
        "nickname",
        "preferred_username",
        "profile",
        "picture",
        "website",
        "email",
        "email_verified",
        "gender",
        "birthdate",
        "zoneinfo",
        "locale",
        "phone_number",
        "phone_number_verified",
        "address",
        "updated_at",
    }
)
"""OpenID Connect Core 1.0 §5.1's standard claims: the user id may not be
answered under one of them but ``sub``."""

_CLAIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")


def require_https_unless_loopback(url: str) -> str:
    """``url`` itself when it is ``https://``, or ``http://`` to a loopback
    host (an emulator in tests); a ``ValueError`` otherwise: credentials and
    personal data never travel in clear text over a network."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"{url!r} is not an absolute URL")
    if parts.scheme == "https":
        return url.rstrip("/")
    if parts.scheme == "http" and (host in LOOPBACK_HOSTS or host.startswith("127.")):
        return url.rstrip("/")
    raise ValueError(f"{url!r} must use https:// (http:// only for a loopback host)")


def default_database_url() -> str:
    """A SQLite file in the working directory, so the product runs with no server."""
    return f"sqlite+aiosqlite:///{Path.cwd() / DEFAULT_SQLITE_FILE}"


class Settings(BaseSettings):
    """Configuration of the whole product.

    Conventional names (``DATABASE_URL``, ``HOST``, ``PORT``) are read as they
    are; every other variable is prefixed with ``IDSTORE_``.
    """

    model_config = SettingsConfigDict(env_prefix="IDSTORE_", extra="ignore", frozen=True)

    database_url: str = Field(default_factory=default_database_url, validation_alias="DATABASE_URL")
    """SQLAlchemy URL: ``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://...``."""

    host: str = Field(default="127.0.0.1", validation_alias="HOST")
    """Interface the HTTP server binds to."""

    port: int = Field(default=8000, ge=0, le=65535, validation_alias="PORT")
    """TCP port the HTTP server listens on."""

    log_level: str = "info"
    """Log level of the server and workers (``debug``, ``info``, ``warning``...)."""

    base_url: str | None = None
    """Public base URL (``https://idstore.example.com``) used in ``meta.location``
    and ``$ref``; when unset, the URL of each request is used."""

    db_pool_size: int = Field(default=10, ge=1)
    """Connections kept open per process (PostgreSQL only) for everything but
    the hottest reads. A request beyond them takes one of ``db_max_overflow``,
    then waits for a free connection.

    Every process may open ``db_pool_size + db_max_overflow +
    db_read_pool_size`` connections (20 by default); size them so that
    ``replicas x that + other clients <= max_connections - reserved``
    (docs/operations.md, "Connection budget")."""

    db_max_overflow: int = Field(default=5, ge=0)
    """Connections opened beyond ``db_pool_size`` under a burst, closed again
    when returned (PostgreSQL only)."""

    db_read_pool_size: int = Field(default=5, ge=1)
    """PostgreSQL connections, per process, of the pool that serves the
    hottest reads (:mod:`identity_store.prepared_reads`), beside the
    ``db_pool_size`` of everything else."""

    db_echo: bool = False
    """Log every SQL statement (debugging only)."""

    max_page_size: int = Field(default=1000, ge=1)
    """Largest ``count`` a SCIM list request may ask for (RFC 7644 §3.4.2.4)."""

    default_page_size: int = Field(default=100, ge=1)
    """``count`` of a SCIM list request that does not give one."""

    bulk_max_operations: int = Field(default=1000, ge=1)
    """``maxOperations`` advertised and enforced for ``/Bulk`` (RFC 7644 §3.7)."""

    max_payload_size: int = Field(default=1_048_576, ge=1024)
    """Largest request body in bytes (``maxPayloadSize``), for every endpoint."""

    max_json_depth: int = Field(default=64, ge=2)
    """Deepest nesting of arrays and objects a request body may have; a deeper
    body is refused (400) before it is parsed."""

    max_patch_operations: int = Field(default=100, ge=1)
    """Most operations one user PATCH may carry (RFC 7644 §3.5.2); more is
    413, as ``/Bulk`` answers past ``maxOperations`` (§3.7.4)."""

    max_multi_values: int = Field(default=100, ge=1)
    """Most values a user's multi-valued attribute (``emails``,
    ``phoneNumbers``, ``addresses``...) may hold, and the most values one
    request may give one of them."""

    max_filter_length: int = Field(default=4096, ge=64)
    """Longest SCIM filter accepted, in characters."""

    required_idp_attributes: Annotated[tuple[str, ...], NoDecode] = (
        "idp_username",
        "idp_cloud_username",
    )
    """IdP attributes a user needs to be ``ACTIVE`` rather than ``CREATED``
    (SPEC §4); a comma-separated list in the environment."""

    hard_delete: bool = False
    """Remove users for good at the deletion sync instead of keeping them
    ``INACTIVE`` (Mia-Platform's ``AUTH_HARD_DELETE``)."""

    token_cache_seconds: float = Field(default=10.0, ge=0)
    """How long a verified token is trusted without a database look-up; a
    revoked token keeps working at most this long. 0 disables the cache."""

    dev_token: bool = True
    """On the embedded SQLite default, ``idstore serve`` prints a development
    token while no other token exists. Its secret is kept beside the database
    file (``<database>.dev-token``, mode 0600), so the same token works across
    restarts. Never done on PostgreSQL."""

    # -- The worker and its scheduled jobs (docs/operations.md, "Worker") --

    worker_in_process: bool = True
    """On the embedded SQLite default, ``idstore serve`` runs the worker (the
    scheduled jobs) in its own process. Never on PostgreSQL: run
    ``idstore worker`` there."""

    jobs_timezone: str = "UTC"
    """Time zone of the cron schedules and of the deletion sync's "day"
    (an IANA name such as ``Europe/Rome``)."""

    job_profile_sync_schedule: str = "every 5m"
    """When ``profile-sync`` runs: ``every <n>s|m|h|d``, a cron expression
    (five fields, in ``jobs_timezone``), or ``off``."""

    job_deletion_sync_schedule: str = "0 2 * * *"
    """When ``deletion-sync`` runs (default: 02:00 every day)."""

    job_expiry_schedule: str = "every 1m"
    """When ``expiry`` runs."""

    job_lease_seconds: float = Field(default=60.0, ge=1.0)
    """How long a claimed run stays its worker's without a heartbeat; the
    worker renews it every third of that. A worker killed mid-run is taken
    over this long after its last heartbeat."""

    job_retry_seconds: float = Field(default=300.0, ge=0)
    """How long after a run of a tick failed a worker tries that tick again
    (a database or directory outage must not cost a nightly job its night)."""

    job_max_attempts: int = Field(default=3, ge=1)
    """A tick whose run failed is tried again (after ``job_retry_seconds``)
    while it has had fewer attempts than this (every worker that held it
    counts one: its first run, take-overs, retries); then the next tick is
    the next chance."""

    job_batch_size: int = Field(default=500, ge=1, le=10_000)
    """Users one transaction of a job handles."""

    worker_poll_seconds: float = Field(default=15.0, gt=0)
    """Longest a worker sleeps between looks at its schedules (it wakes
    earlier for a tick); also how soon it notices a run to take over."""

    # -- CSV import of users (docs/management-api.md, "CSV import") --

    import_max_bytes: int = Field(default=104_857_600, ge=1024)
    """Largest CSV file ``POST /api/v1/users/import`` and ``idstore import``
    take, in bytes (413 beyond). The file is kept in the database until its
    job ends, so that any worker can run or resume it."""

    import_max_rows: int = Field(default=1_000_000, ge=1)
    """Most data rows one file may hold (413 beyond)."""

    import_max_columns: int = Field(default=256, ge=1, le=10_000)
    """Most columns a file's header may name (400 beyond)."""

    import_max_cell_chars: int = Field(default=16_384, ge=16, le=100_000)
    """Longest cell, in characters; a longer one fails its row. (A field
    past the CSV reader's own limit, 131,072 characters, refuses the file:
    it is nearly always a quote never closed.)"""

    import_batch_size: int = Field(default=1000, ge=1, le=5000)
    """Rows of a CSV import written in one transaction."""

    import_poll_seconds: float = Field(default=2.0, gt=0)
    """How often an idle worker looks for an import job to run (or to take
    over from a worker that died)."""

    # -- Profile sync: Microsoft Graph (SPEC §6) --

    graph_base_url: str = "https://graph.microsoft.com"
    """Microsoft Graph; plain ``http://`` only for a loopback host."""

    graph_login_url: str = "https://login.microsoftonline.com"
    """Microsoft identity platform's token endpoint host."""

    graph_tenant_id: str | None = None
    graph_client_id: str | None = None
    graph_client_secret: SecretStr | None = None
    """Client credentials of the app registration (``User.Read.All``).
    Without all three the profile sync reports "not configured"."""

    graph_attribute_map: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_GRAPH_ATTRIBUTE_MAP)
    )
    """Graph user property -> store attribute the profile sync fills; in the
    environment ``graphProperty=store_attribute`` pairs separated by commas."""

    graph_requests_per_second: float = Field(default=50.0, gt=0)
    """Most requests per second the profile sync sends to Graph (all of its
    concurrent look-ups together)."""

    graph_concurrency: int = Field(default=8, ge=1, le=64)
    """Look-ups in flight at once."""

    graph_timeout_seconds: float = Field(default=10.0, gt=0)

    profile_sync_max_attempts: int = Field(default=3, ge=1)
    """Runs that may look a ``CREATED`` user up without filling its required
    attributes before it goes ``ERROR``."""

    @field_validator(
        "required_idp_attributes",
        "auth0_user_properties",
        "userinfo_additional_properties",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("auth0_user_properties")
    @classmethod
    def _readable_properties(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - AUTH0_READABLE_PROPERTIES)
        if unknown:
            shown = ", ".join(repr(u[:64]) for u in unknown[:5])
            raise ValueError(
                f"not Auth0 user properties that can be read: {shown}; known: "
                + ", ".join(sorted(AUTH0_READABLE_PROPERTIES))
            )
        return tuple(dict.fromkeys(value))

    @field_validator("graph_attribute_map", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = {}
            for part in value.split(","):
                if not part.strip():
                    continue
                source, sep, target = part.partition("=")
                if not sep or not source.strip() or not target.strip():
                    raise ValueError(f"expected graphProperty=store_attribute, got {part!r}")
                pairs[source.strip()] = target.strip()
            return pairs
        return value

    @field_validator("graph_attribute_map")
    @classmethod
    def _known_targets(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value.values()) - set(GRAPH_FILLABLE))
        if unknown:
            raise ValueError(f"cannot fill {unknown}; fillable: {sorted(GRAPH_FILLABLE)}")
        return value

    # -- The outbox and the Auth0 sync (docs/auth0.md) --

    auth_service: Literal["auth0", "none"] = "auth0"
    """The authentication-service module users are pushed to (``none``: no
    dispatcher delivers ``auth0`` rows; they wait)."""

    auth0_base_url: str | None = None
    """The tenant, such as ``https://tenant.eu.auth0.com``; plain ``http://``
    only for a loopback host. Without it (or the client credentials) nothing
    is sent and the rows wait."""

    auth0_client_id: str | None = None
    auth0_client_secret: SecretStr | None = None
    """The machine-to-machine application's credentials (client-credentials
    grant, audience ``{auth0_base_url}/api/v2/``)."""

    auth0_connection: str = "Username-Password-Authentication"
    """The database connection users are created in."""

    auth0_connection_id: str | None = None
    """That connection's id (``con_...``): bulk import jobs need it."""

    auth0_password_on_create: bool = True
    """Create accounts with a random password (``secrets``): a database
    connection requires one; the user sets their own by a password-change
    ticket."""

    auth0_password_length: int = Field(default=32, ge=12, le=128)

    auth0_requests_per_second: float = Field(default=10.0, gt=0)
    """The tenant's Management API rate limit, shared by every worker (a
    budget held in the database)."""

    auth0_burst: int = Field(default=10, ge=1, le=1000)
    """Requests that may go at once after a quiet spell."""

    auth0_timeout_seconds: float = Field(default=10.0, gt=0)

    auth0_import_threshold: int = Field(default=1000, ge=0)
    """A backlog of users without an Auth0 account above this many is created
    by bulk import jobs instead of one request each (0: never)."""

    auth0_import_poll_seconds: float = Field(default=5.0, gt=0)
    """How often a running import job is polled."""

    auth0_password_tickets_per_second: float = Field(
        default=2.0,
        gt=0,
        validation_alias=AliasChoices(
            "auth0_password_tickets_per_second",
            "IDSTORE_AUTH0_PASSWORD_TICKETS_PER_SECOND",
            "IDSTORE_AUTH0_BULK_CHANGE_PASSWORD_RATE_LIMIT_PER_SECOND",
        ),
    )
    """Rate of a bulk password-change job's tickets (within the overall
    budget); also read as ``IDSTORE_AUTH0_BULK_CHANGE_PASSWORD_RATE_LIMIT_PER_SECOND``
    (the User Manager Service's name)."""

    auth0_ticket_result_url: str | None = None
    """Where a password-change ticket sends the user afterwards."""

    auth0_ticket_ttl_seconds: int = Field(default=432_000, ge=60, le=2_592_000)
    """How long a password-change ticket is valid (Auth0's ``ttl_sec``; its
    default is 5 days); the URLs a bulk job keeps are deleted after it."""

    auth0_user_properties: Annotated[tuple[str, ...], NoDecode] = ()
    """Auth0 user properties merged into ``GET /api/v1/users`` answers, a
    comma-separated list of names among :data:`AUTH0_READABLE_PROPERTIES`
    (``last_login,logins_count``); empty (the default): nothing is fetched."""

    auth0_properties_cache_seconds: float = Field(default=300.0, ge=0, le=86_400)
    """How long Auth0 properties read for a user are reused (0: not cached)."""

    auth0_properties_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    """Users whose Auth0 properties one process keeps at most."""

    outbox_dry_run: bool = False
    """Log what the dispatcher would send; send nothing, keep the rows."""

    outbox_batch_size: int = Field(default=50, ge=1, le=1000)
    """Users one claim of the dispatcher takes."""

    outbox_concurrency: int = Field(default=8, ge=1, le=64)
    """Deliveries in flight at once in one worker (each a different user)."""

    outbox_lease_seconds: float = Field(default=60.0, ge=1.0)
    """How long a claimed user stays a worker's without a heartbeat."""

    outbox_max_attempts: int = Field(default=10, ge=1)
    """Failed deliveries of a change before it is dead-lettered (throttling
    does not count)."""

    outbox_backoff_seconds: float = Field(default=2.0, gt=0)
    outbox_backoff_max_seconds: float = Field(default=900.0, gt=0)
    """Retry ``n`` waits ``min(max, base * 2**(n-1))`` with full jitter."""

    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    """How long an idle dispatcher waits before looking for due rows again."""

    # -- Roles and permissions (docs/authorization.md) --

    rond_base_url: str | None = None
    """A Rönd deployment (standalone mode) whose bindings follow the store's:
    every change of roles or bindings is pushed to its ``/grant/bindings``
    and ``/revoke/bindings`` endpoints through the outbox (target ``rond``).
    Unset (the default): nothing is pushed and no ``rond`` rows are written."""

    rond_requests_per_second: float = Field(default=20.0, gt=0)
    """Requests per second to Rönd, shared by every worker."""

    rond_timeout_seconds: float = Field(default=10.0, gt=0)

    authz_max_batch: int = Field(default=1000, ge=1, le=10_000)
    """Checks one ``POST /api/v1/authz/check-batch`` may carry."""

    authz_batch_parallelism: int = Field(default=2, ge=1, le=16)
    """PostgreSQL connections one ``check-batch`` of at least 200 checks of
    several users may use at once (its checks split by user, every part
    reading one exported snapshot): database cores a batch may keep busy.
    1 runs every batch as one statement."""

    rbac_max_list: int = Field(default=1000, ge=1, le=100_000)
    """Entries one role or binding may list (permissions, roles, subjects,
    groups), and role ids one replacement of a user's or group's roles."""

    # -- Users of the management API (docs/management-api.md) --

    user_search_scan: int = Field(default=10_000, ge=100, le=1_000_000)
    """Users one page of ``GET /api/v1/users?q=`` examines at most: a
    substring search no index serves is bounded per page (the page may hold
    fewer users than asked while ``nextCursor`` goes on)."""

    # -- /userinfo (docs/management-api.md "/userinfo") --

    userinfo_audience: str | None = None
    """The API identifier Auth0 issues end users' access tokens for
    (``aud``): ``GET /api/v1/userinfo`` accepts Auth0 access tokens for it,
    signed by the tenant at ``auth0_base_url`` (its JWKS, issuer
    ``{auth0_base_url}/``). Unset: only idstore API tokens bound to a user."""

    userinfo_id_key: str = "sub"
    """The key ``/userinfo`` answers the user's id (the SCIM ``id``) under.
    Another key than ``sub`` leaves ``sub`` to the token's subject (the Auth0
    user id)."""

    userinfo_additional_properties: Annotated[tuple[str, ...], NoDecode] = ()
    """User properties ``/userinfo`` adds to the OpenID Connect claims, a
    comma-separated list of :data:`USERINFO_PROPERTIES` (``permissions``: the
    user's effective permissions)."""

    userinfo_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    """Clock skew allowed when checking an access token's ``exp``, ``nbf`` and ``iat``."""

    userinfo_jwks_cache_seconds: float = Field(default=600.0, ge=1)
    """How long the tenant's signing keys are used before they are fetched
    again (a failed fetch keeps the keys held)."""

    userinfo_jwks_min_refresh_seconds: float = Field(default=30.0, ge=0)
    """Least time between two fetches of the signing keys: a token signed
    with a key not held makes a fetch at most this often, so a flood of
    tokens with made-up key ids cannot hammer the tenant."""

    @field_validator("userinfo_additional_properties")
    @classmethod
    def _known_properties(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - USERINFO_PROPERTIES)
        if unknown:
            raise ValueError(f"unknown {unknown}; known: {sorted(USERINFO_PROPERTIES)}")
        return tuple(dict.fromkeys(value))

    @field_validator("userinfo_id_key")
    @classmethod
    def _claim_name(cls, value: str) -> str:
        if not _CLAIM_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a claim name (a letter or _, then up to 63 letters, "
                "digits, _ . : -)"
            )
        if value != "sub" and value in OIDC_CLAIMS:
            raise ValueError(f"{value!r} is a standard OpenID Connect claim")
        return value

    @field_validator("userinfo_audience")
    @classmethod
    def _audience(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or len(value) > 1024):
            raise ValueError("the audience must be 1-1,024 characters")
        return value

    @model_validator(mode="after")
    def _userinfo_consistent(self) -> Settings:
        if self.userinfo_id_key in self.userinfo_additional_properties:
            raise ValueError(
                f"IDSTORE_USERINFO_ID_KEY {self.userinfo_id_key!r} is also one of "
                "IDSTORE_USERINFO_ADDITIONAL_PROPERTIES"
            )
        if self.userinfo_audience is not None and self.auth0_base_url is None:
            raise ValueError(
                "IDSTORE_USERINFO_AUDIENCE needs IDSTORE_AUTH0_BASE_URL (the tokens' issuer, "
                "whose signing keys verify them)"
            )
        return self

    @field_validator("graph_base_url", "graph_login_url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        return require_https_unless_loopback(value)

    @field_validator("auth0_base_url")
    @classmethod
    def _auth0_https_unless_loopback(cls, value: str | None) -> str | None:
        return None if value is None else require_https_unless_loopback(value).rstrip("/")

    @field_validator("rond_base_url")
    @classmethod
    def _rond_https_unless_loopback(cls, value: str | None) -> str | None:
        return None if value is None else require_https_unless_loopback(value).rstrip("/")

    @field_validator("jobs_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def graph_configured(self) -> bool:
        """Whether the profile sync has what it needs to ask Microsoft Graph."""
        return bool(self.graph_tenant_id and self.graph_client_id and self.graph_client_secret)

    @property
    def auth0_configured(self) -> bool:
        """Whether the Auth0 sync has what it needs to call the Management API."""
        return bool(self.auth0_base_url and self.auth0_client_id and self.auth0_client_secret)

    @property
    def is_sqlite(self) -> bool:
        """Whether the store is the embedded SQLite database."""
        return self.database_url.startswith("sqlite")
