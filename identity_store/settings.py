"""The product's settings, read from environment variables in one place.

Every layer (HTTP server, store, sync workers, migrations, CLI) receives the
same :class:`Settings` object; nothing reads the environment at import time.
It lives in the lowest package so that every layer may import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SQLITE_FILE = "idstore.db"


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

    auth0_client_secret: SecretStr | None = None
    """Secret of the Auth0 machine-to-machine application (sync module)."""

    @field_validator("required_idp_attributes", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def is_sqlite(self) -> bool:
        """Whether the store is the embedded SQLite database."""
        return self.database_url.startswith("sqlite")
